"""The asynchronous pipeline (rollout/async_rollout.py) around a scripted sampler that runs
ahead (no Ray): which weights version samples which batch, when the weights are synced,
that no row reaches the learner more than k versions stale, the checkpoint of the batches in
flight, and the errors."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from rlhf_dist.config import ConfigError, load_config
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout import Rollout
from rlhf_dist.rollout.async_rollout import AsyncRollout, StaleExperienceError, check_staleness
from rlhf_dist.rollout.generate import rollout_batch

CONFIG = "configs/tiny/grpo_verifier.yaml"


class AheadSampler(Rollout):
    """Samples in 'its own processes': every call is recorded, the weights it holds are the
    last version synced, and its log-probs are that version's number (so a test can see
    which weights sampled a batch)."""

    runs_ahead = True

    def __init__(self, cfg, tokenizer):
        super().__init__(cfg, tokenizer)
        self.events, self.weights = [], None
        self.gate = threading.Event()  # batches from number ``gated_from`` on wait for it
        self.gated_from, self.calls = None, 0

    def sync_weights(self, version):
        self.events.append(("sync", version))
        self.weights = version
        return {"perf/weight_sync_s": 0.5}

    def produce(self, prompts, seed, rows):
        if self.gated_from is not None and self.calls >= self.gated_from:
            self.gate.wait(10)
        self.calls += 1
        self.events.append(("produce", seed, self.weights))
        eos = self.tokenizer.eos_token_id
        ids = torch.cat([prompts["input_ids"], torch.tensor([[30, eos]] * len(prompts))], 1)
        batch = rollout_batch(ids, prompts["attention_mask"], [eos], self.pad_token_id, 1)
        return batch.with_(
            engine_logprobs=torch.full(batch["action_mask"].shape, float(self.weights))
        ), {}

    def finish(self, experience):
        return experience.with_(old_logprobs=torch.zeros_like(experience["engine_logprobs"])), {
            "finished": 1.0
        }


@pytest.fixture
def pipeline(tok):
    def build(k):
        cfg = load_config(CONFIG, [f"rollout.max_staleness={k}"])
        rollout = AsyncRollout(AheadSampler(cfg, tok))
        rollout.start(None, None)
        return rollout

    return build


class Prompts:
    """draw(): batch i has seed i and one row labelled i."""

    def __init__(self):
        self.drawn = 0

    def __call__(self):
        i, self.drawn = self.drawn, self.drawn + 1
        return (
            Batch({"input_ids": torch.tensor([[5, 6]]), "attention_mask": torch.tensor([[1, 1]])}),
            i,
            [{"label": i}],
        )


@pytest.mark.parametrize("k", [1, 2])
def test_batches_are_sampled_ahead_never_more_than_k_versions_stale(pipeline, k):
    rollout, draw = pipeline(k), Prompts()
    versions, idle = [], []
    for step in range(6):
        rows, experience, metrics = rollout.next_batch(draw, step)
        assert rows == [{"label": step}]  # batches come back in the order drawn
        versions.append(int(experience["versions"][0]))
        assert (
            experience["engine_logprobs"][experience["action_mask"].bool()].eq(versions[-1]).all()
        )  # the weights that sampled it are the version it carries
        metrics.update(check_staleness(experience["versions"], step, k))
        assert metrics["finished"] == 1.0 and metrics["async/staleness_max"] <= k
        idle.append(metrics["perf/learner_idle_s"])
    # k = 1: batch i+1 sampled with the weights of i; k = 2: two batches per sync
    assert versions == ([0, 0, 1, 2, 3, 4] if k == 1 else [0, 0, 0, 2, 2, 4])
    syncs = [e[1] for e in rollout.inner.events if e[0] == "sync"]
    assert syncs == ([0, 1, 2, 3, 4, 5] if k == 1 else [0, 2, 4])
    assert draw.drawn == 7 and len(rollout.queue) == 1  # batch 6 in flight at the end


def test_sampling_overlaps_the_caller_and_is_waited_for(pipeline):
    rollout, draw = pipeline(1), Prompts()
    rollout.inner.gated_from = 1  # the next batch is still being sampled ...
    rollout.next_batch(draw, 0)
    threading.Timer(0.3, rollout.inner.gate.set).start()
    _, _, metrics = rollout.next_batch(draw, 1)  # ... so the learner waits for it
    assert metrics["perf/learner_idle_s"] >= 0.25
    since = time.perf_counter()
    time.sleep(0.3)  # the learner trains; the producer has finished its batch and waits
    _, _, metrics = rollout.next_batch(draw, 2)
    # idle since the gated batch ended, just before the previous call returned
    assert 0.25 <= metrics["perf/rollout_idle_s"] <= time.perf_counter() - since + 0.1


def test_a_checkpoint_keeps_the_batches_in_flight(pipeline, tok):
    rollout, draw = pipeline(2), Prompts()
    for step in range(2):
        rollout.next_batch(draw, step)
    pending = rollout.pending_state()
    assert [p["version"] for p in pending] == [0]
    assert [p["rows"] for p in pending] == [[{"label": 2}]]
    resumed = pipeline(2)
    resumed.restore_pending(pending)
    rows, experience, _ = resumed.next_batch(draw, 2)
    assert rows == [{"label": 2}] and int(experience["versions"][0]) == 0
    # the uninterrupted pipeline gives the same batch at the same step
    rows_u, experience_u, _ = rollout.next_batch(Prompts(), 2)
    assert torch.equal(experience["sequences"], experience_u["sequences"])
    assert [e for e in resumed.inner.events if e[0] == "sync"] == [("sync", 2)]


def test_stale_rows_are_refused_naming_the_versions():
    with pytest.raises(
        StaleExperienceError,
        match=r"rows \[1\] were sampled by policy version "
        r"3, 2 versions before the learner's 5 "
        r"\(rollout.max_staleness=1\)",
    ):
        check_staleness(torch.tensor([4, 3, 5]), 5, 1)
    assert check_staleness(torch.tensor([4, 5]), 5, 1) == {
        "async/staleness_mean": 0.5,
        "async/staleness_max": 1.0,
    }


def test_a_backend_on_the_actors_ranks_cannot_run_ahead(tok):
    from rlhf_dist.rollout.hf import HFRollout

    cfg = load_config(CONFIG, ["rollout.max_staleness=1"])
    with pytest.raises(
        ConfigError,
        match="rollout.max_staleness: the 'hf' backend samples with the actor's own processes",
    ):
        AsyncRollout(HFRollout(cfg, tok))
    with pytest.raises(ConfigError, match="rollout.max_staleness: needs engines on devices"):
        load_config(
            CONFIG,
            ["rollout.max_staleness=1", "rollout.backend=vllm", "resources.colocate_rollout=true"],
        )
    with pytest.raises(ConfigError, match="rollout.max_staleness: needs rollout.top_p=1"):
        load_config(CONFIG, ["rollout.max_staleness=1", "rollout.top_p=0.9"])
