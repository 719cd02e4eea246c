"""The weight sync to the vLLM engines, checked (real Ray, real DeepSpeed, a real vLLM engine
on CPU; issue 30 item 4).  An actor group (ZeRO-3 over 2 ranks, trained in full or through a
LoRA adapter) and one engine, in this process's private local Ray:

* bucketed and one-parameter-at-a-time syncs load the same bits: after the actor trained, a
  bucketed sync moves the engine to the actor's greedy tokens; a per-parameter sync and a
  one-bucket sync of the same weights give the engine bit-identical log-probs, and every sync's
  CRC32 of every parameter the engine loaded equals the actor's, the same in every mode;
* each engine reports back the version it was sent;
* a sync that drops one parameter on the engine's side (the test hook
  ``vllm_receiver.SKIP_FOR_TEST``, set inside the engine's process) passes unnoticed when it
  is not checked and stops with an error naming the engine and the parameter when it is;
* a stalled engine (its process stopped with SIGSTOP) becomes a ``WorkerLost`` naming it
  within ``resources.timeout_s``, in a sync and in a generation -- never a hang.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("vllm")

from ray_helpers import CONFIGS  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

HEADS = "model.tiny.num_heads=2"  # head size 32 (vLLM's CPU kernels start there)
ACTORS = {
    "full": ("train.lr=3e-2",),
    "lora": ("train.lr=1e-1", "model.lora.r=8", "model.lora.alpha=16"),
}
SMALL_MB = 0.05  # 52 kB buckets: the tiny llama's 21 parameters in 10 (embedding, lm_head alone)
SKIPPED = "model.layers.1.self_attn.q_proj.weight"  # LoRA: a merged, adapted weight
STALL_TIMEOUT_S = 15


@pytest.fixture(scope="module", params=sorted(ACTORS))
def sync_roles(request, tmp_path_factory):
    """Actor (ZeRO-3, 2 ranks), reference and one vLLM engine of a random tiny llama; every
    sync checked (``rollout.verify_sync_every=1``)."""
    import ray

    from rlhf_dist.config import load_config, resolve_ppo_sizes
    from rlhf_dist.models import load_tokenizer
    from rlhf_dist.trainers.ppo import learner_train_section
    from rlhf_dist.workers.cluster import cpus_needed, create_roles, start_ray, stop
    from rlhf_dist.workers.vllm_rollout import VLLMRollout

    cfg = load_config(
        str(CONFIGS / "ppo.yaml"),
        [
            f"output_dir={tmp_path_factory.mktemp('sync')}",
            HEADS,
            "rollout.backend=vllm",
            "rollout.do_sample=false",
            "rollout.max_new_tokens=12",
            "rollout.rollout_batch_size=8",
            "ppo.mini_batch_size=8",
            "resources.timeout_s=300",
            "logging.backend=none",
            "rollout.verify_sync_every=1",
            *ACTORS[request.param],
        ],
    )
    resolve_ppo_sizes(cfg)
    tokenizer = load_tokenizer(cfg.model)
    rollout = VLLMRollout(cfg, tokenizer)
    started = start_ray(None, cpus_needed(cfg, ["actor", "reference"], rollout))
    rollout.check()
    roles = create_roles(cfg, with_reward=False, with_critic=False, rollout=rollout)
    try:
        roles.actor.build(learner_train_section(cfg, cfg.train.lr, 2), total_steps=10).result()
        rollout.connect()
        yield request.param, cfg, tokenizer, roles
    finally:
        stop(roles, started)
        if ray.is_initialized() and started:
            ray.shutdown()


def _prompts(cfg, tokenizer):
    from rlhf_dist.data import PromptCollator, build_prompt_dataset
    from rlhf_dist.protocol import Batch

    rows = build_prompt_dataset(cfg.data, tokenizer, split="train")
    batch = PromptCollator(tokenizer.pad_token_id)([rows[i] for i in range(8)])
    return Batch.from_dict(batch).select(["input_ids", "attention_mask"])


def _set_bucket_mb(roles, mb: float) -> None:
    """``rollout.sync_bucket_mb`` in every process that reads it: the actor's ranks (the
    sender plans the gathers) and the engine (the receiver plans the same buckets)."""
    import ray

    def set_mb(worker, value):
        worker.cfg.rollout.sync_bucket_mb = value

    ray.get(
        [
            w.__ray_call__.remote(set_mb, mb)
            for w in roles.actor.workers + roles.rollout.engines.workers
        ]
    )


def _skip_in_engines(roles, name) -> None:
    import ray

    def arm(worker, value):
        from rlhf_dist.rollout import vllm_receiver

        vllm_receiver.SKIP_FOR_TEST = value

    ray.get([w.__ray_call__.remote(arm, name) for w in roles.rollout.engines.workers])


def _sync(roles, version: int, mb: float):
    """One sync in bucket size ``mb``: the engine's report (checked: its checksums)."""
    _set_bucket_mb(roles, mb)
    engines = roles.rollout.engines
    seconds = engines.sync_from(roles.actor, version)
    assert 0 < seconds < 60
    [[report]] = engines.reports  # one engine, one worker
    assert report.version == version
    assert report.checksums == report.expected and len(report.checksums) == len(
        roles.actor.weight_specs()
    )
    return report


def test_bucketed_and_per_parameter_syncs_load_the_same_bits(sync_roles):
    import ray
    import torch

    kind, cfg, tokenizer, roles = sync_roles
    engines, pad = roles.rollout.engines, tokenizer.pad_token_id
    prompts = _prompts(cfg, tokenizer)
    first = _sync(roles, 1, 0)
    before = engines.generate(prompts, 0, pad)
    # train the actor: every greedy token gets advantage -1
    hf = roles.actor.generate(prompts, 0, pad)
    update = hf.with_(advantages=-hf["action_mask"].float())
    for step in range(3):
        roles.actor.ppo_learner(update, len(update), 1, step).epoch(0).result()
    moved = roles.actor.generate(prompts, 0, pad)
    assert (moved["sequences"] != hf["sequences"]).any(), "training left every answer as it was"

    bucketed = _sync(roles, 2, SMALL_MB)
    assert bucketed.checksums != first.checksums  # the weights moved ...
    after = engines.generate(prompts, 0, pad)  # ... and the engine with them
    assert torch.equal(after["sequences"], moved["sequences"])
    assert not torch.equal(after["engine_logprobs"], before["engine_logprobs"])

    per_parameter = _sync(roles, 3, 0)
    one_bucket = _sync(roles, 4, 1024)
    assert per_parameter.checksums == bucketed.checksums == one_bucket.checksums
    for mode in (per_parameter, one_bucket):
        assert mode.expected == bucketed.expected
    again = engines.generate(prompts, 0, pad)
    assert torch.equal(again["sequences"], after["sequences"])
    assert torch.equal(again["engine_logprobs"], after["engine_logprobs"])  # bit for bit
    held = engines.workers[0].__ray_call__.remote(lambda worker: worker.engine.version)
    assert ray.get(held) == 4  # the engine's own record of what it holds


def test_a_dropped_parameter_is_caught_by_the_checked_sync_naming_it(sync_roles):
    from rlhf_dist.workers.rollout_engines import WeightSyncError

    kind, cfg, tokenizer, roles = sync_roles
    engines = roles.rollout.engines
    names = [name for name, _, _ in roles.actor.weight_specs()]
    assert SKIPPED in names
    _skip_in_engines(roles, SKIPPED)
    try:
        engines.cfg.rollout.verify_sync_every = 0  # not checked: nothing notices
        engines.sync_from(roles.actor, 5)
        assert engines.reports[0][0].checksums is None
        engines.cfg.rollout.verify_sync_every = 1
        with pytest.raises(WeightSyncError) as caught:
            engines.sync_from(roles.actor, 6)
    finally:
        engines.cfg.rollout.verify_sync_every = 1
        _skip_in_engines(roles, None)
    message = str(caught.value)
    assert message.startswith(
        f"rollout engine rank 0: weights differ from the actor's after the sync of version 6: "
        f"parameter {SKIPPED} (actor CRC32 "
    ), message
    assert message.endswith(
        f", engine not loaded) is the first of 1 of {len(names)} parameters that differ"
    ), message
    assert caught.value.where == "rollout engine rank 0"
    _sync(roles, 7, SMALL_MB)  # the hook off: checked and equal again


def test_a_stalled_engine_is_a_lost_worker_named_in_sync_and_generation(sync_roles):
    """Runs last on its actor (the stopped engine is let go after)."""
    import ray

    from rlhf_dist.workers.errors import WorkerLost

    kind, cfg, tokenizer, roles = sync_roles
    if kind != "full":
        pytest.skip("the stall is the engine's: one actor shows it")
    engines = roles.rollout.engines
    [where] = engines.locations()
    assert where["ip"] == ray.util.get_node_ip_address()  # this machine: a signal reaches it
    engines.timeout_s = STALL_TIMEOUT_S
    os.kill(where["pid"], signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(
            WorkerLost,
            match=(
                rf"rollout engine ranks \[0\]: no answer within {STALL_TIMEOUT_S}s "
                r"\(resources.timeout_s\) in the weight sync of version 8"
            ),
        ) as lost:
            engines.sync_from(roles.actor, 8)
        assert lost.value.where == "rollout engine ranks [0]"
        assert STALL_TIMEOUT_S <= time.monotonic() - started < STALL_TIMEOUT_S + 10
        started = time.monotonic()
        with pytest.raises(
            WorkerLost,
            match=(
                rf"rollout engine ranks \[0\]: no answer within "
                rf"{STALL_TIMEOUT_S}s \(resources.timeout_s\)"
            ),
        ):
            engines.generate(_prompts(cfg, tokenizer), 0, tokenizer.pad_token_id)
        assert STALL_TIMEOUT_S <= time.monotonic() - started < STALL_TIMEOUT_S + 10
    finally:
        os.kill(where["pid"], signal.SIGCONT)
        engines.timeout_s = cfg.resources.timeout_s
