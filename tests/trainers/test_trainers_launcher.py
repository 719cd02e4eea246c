"""SFT, RM and DPO as 2 CPU ranks through the real deepspeed launcher, ZeRO-2 and ZeRO-3:
losses fall, held-out accuracies beat chance, the DPO reference stays bit-for-bit frozen, the
HF exports reproduce the run's own eval numbers, and the offline W&B run holds the metrics.

Runs come from the session fixture ``launcher_run`` (conftest.py), one per job × stage.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from rlhf_dist.config import ModelConfig, load_config
from rlhf_dist.trainers import batches as B
from trainer_helpers import last, read_wandb_offline, series, trainer_state

pytestmark = pytest.mark.slow
STAGES = [2, 3]
LN2 = math.log(2.0)


def _config(run):
    return load_config(str(run.out / "config.yaml"))


def _eval_batches(run, build_dataset, collator_cls, tokenizer):
    """The eval split as the run saw it: rank 0's then rank 1's micro-batches."""
    cfg = _config(run)
    data = build_dataset(cfg.data, tokenizer, split="eval")
    order = B.epoch_order(len(data), 0, 0, shuffle=False)
    collate = collator_cls(tokenizer.pad_token_id)
    for rank in range(2):
        micro = B.rank_micro_batches(order, rank, 2, cfg.train.eval_batch_size, drop_last=False)
        yield from B.iterate(data, micro, collate)


def _exported_tokenizer(run):
    from rlhf_dist.models import load_tokenizer

    return load_tokenizer(ModelConfig(name_or_path=str(run.out / "model")))


# --------------------------------------------------------------------------- SFT


@pytest.mark.parametrize("stage", STAGES)
def test_sft_loss_falls(launcher_run, stage):
    run = launcher_run("sft", stage)
    losses = series(run.metrics, "train/loss")
    assert sorted(losses) == list(range(1, 15))  # one epoch: 224 examples / 16 per step
    tail = sum(losses[s] for s in (12, 13, 14)) / 3
    # measured: 6.72 → 5.18 (ZeRO-2) and 6.73 → 5.15 (ZeRO-3); a random 2.2k-token LM starts
    # near ln(vocab) and the toy responses are very repetitive
    assert tail < losses[1] - 1.0, losses
    evals = series(run.metrics, "eval/loss")
    assert evals[14] < evals[7] < losses[1], evals
    state = trainer_state(run.out)
    assert (state["world_size"], state["global_step"], state["job"]) == (2, 14, "sft")
    newest = run.out / "checkpoints" / "step_000014"
    assert {p.name for p in newest.glob("rng_state_rank*.pt")} == {
        "rng_state_rank0.pt",
        "rng_state_rank1.pt",
    }


# --------------------------------------------------------------------------- RM


@pytest.mark.parametrize("stage", STAGES)
def test_rm_heldout_accuracy_beats_chance(launcher_run, stage):
    rows = launcher_run("rm", stage).metrics
    # measured: eval accuracy 0.875 (ZeRO-2) / 0.8125 (ZeRO-3) on the 32 held-out pairs,
    # Bradley-Terry eval loss 0.30 / 0.34 against ln 2 = 0.693 for a coin flip
    assert last(rows, "eval/accuracy") > 0.7
    assert last(rows, "eval/loss") < LN2 - 0.2
    assert last(rows, "eval/loss") < series(rows, "eval/loss")[7]


def test_rm_export_reloads_with_score_stats_and_reproduces_eval(launcher_run):
    """ZeRO-3: the gathered export, reloaded with ``load_scalar_model``, scores the held-out
    pairs exactly as the run's final evaluation did, and carries the score statistics."""
    from rlhf_dist.algo import bradley_terry_loss
    from rlhf_dist.data import PreferenceCollator, build_preference_dataset
    from rlhf_dist.models import load_scalar_model

    run = launcher_run("rm", 3)
    tokenizer = _exported_tokenizer(run)
    model = load_scalar_model(
        ModelConfig(name_or_path=str(run.out / "model")), tokenizer, role="reward"
    ).eval()
    mean, std = model.score_stats
    assert mean == pytest.approx(last(run.metrics, "train/score_mean"), rel=1e-9)
    assert std == pytest.approx(last(run.metrics, "train/score_std"), rel=1e-9)
    assert std > 0

    correct = loss_sum = pairs = 0.0
    with torch.no_grad():
        for batch in _eval_batches(run, build_preference_dataset, PreferenceCollator, tokenizer):
            scores = model.sequence_scores(batch["input_ids"], batch["attention_mask"])
            chosen, rejected = scores.chunk(2)
            correct += float((chosen > rejected).sum())
            loss_sum += float(bradley_terry_loss(chosen, rejected)) * len(chosen)
            pairs += len(chosen)
    assert pairs == 32
    assert correct / pairs == last(run.metrics, "eval/accuracy")
    assert loss_sum / pairs == pytest.approx(last(run.metrics, "eval/loss"), abs=1e-5)


# --------------------------------------------------------------------------- DPO


@pytest.mark.parametrize("stage", STAGES)
def test_dpo_reward_accuracy_rises_and_reference_is_untouched(launcher_run, stage):
    rows = launcher_run("dpo", stage).metrics
    assert rows[0]["step"] == 0 and rows[0]["params/trainable"] > 0  # sizes, at the start
    first = rows[1]
    # step 1's batch is scored before any update: policy == reference, every reward is 0
    assert first["step"] == 1
    assert first["train/chosen_reward"] == first["train/rejected_reward"] == 0.0
    assert first["train/reward_accuracy"] == 0.0
    assert first["train/loss"] == pytest.approx(LN2, abs=1e-6)
    # measured at steps 14 → 28: eval reward accuracy 0.81 → 0.88 (ZeRO-2), 0.84 → 0.84
    # (ZeRO-3) on 32 held-out pairs; margin 0.96 → 1.26 / 0.98 → 1.27; loss 0.41 → 0.35 / 0.36
    acc, margin = series(rows, "eval/reward_accuracy"), series(rows, "eval/reward_margin")
    loss = series(rows, "eval/loss")
    assert acc[28] > 0.7, acc
    assert margin[28] > margin[14] > 0.5, margin
    assert loss[28] < loss[14] < LN2 - 0.2, loss
    # the reference: CRC32 of its full weights (name order), at start and end
    start, end = last(rows, "ref/checksum_start"), last(rows, "ref/checksum_end")
    assert start == end and start > 0


def test_dpo_zero2_reference_is_bit_identical_to_a_fresh_init(launcher_run):
    """The logged checksum is the CRC32 of the reference's full state dict (name order): the
    same bytes as a reference rebuilt here from the same seed."""
    from rlhf_dist.models import load_causal_lm, load_tokenizer

    run = launcher_run("dpo", 2)
    cfg = _config(run)
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(cfg.seed)
    fresh = load_causal_lm(cfg.model, tokenizer)
    from rlhf_dist.utils.checksum import state_checksum

    assert last(run.metrics, "ref/checksum_end") == state_checksum(fresh.state_dict())


# --------------------------------------------------------------------------- export, W&B


def test_zero3_sft_export_reproduces_the_final_eval_loss(launcher_run):
    """The HF export of a ZeRO-3 run (shards gathered) reloads with ``from_pretrained`` and
    gives, on the eval split, the eval loss the run logged at its last step."""
    from transformers import AutoModelForCausalLM

    from rlhf_dist.algo import sft_loss
    from rlhf_dist.data import SFTCollator, build_sft_dataset
    from rlhf_dist.models import causal_lm_logits

    run = launcher_run("sft", 3)
    tokenizer = _exported_tokenizer(run)
    model = AutoModelForCausalLM.from_pretrained(
        run.out / "model", attn_implementation=_config(run).model.attn_implementation
    ).eval()
    total = tokens = 0.0
    with torch.no_grad():
        for batch in _eval_batches(run, build_sft_dataset, SFTCollator, tokenizer):
            logits = causal_lm_logits(model, batch["input_ids"], batch["attention_mask"])
            n = float((batch["labels"][:, 1:] != -100).sum())
            total += float(sft_loss(logits, batch["labels"])) * n
            tokens += n
    assert total / tokens == pytest.approx(last(run.metrics, "eval/loss"), abs=1e-4)


def _offline_run(run, timeout=30.0):
    """The offline W&B run of a job, once its writer has appended the exit record."""
    (run_dir,) = (run.out / "wandb").glob("offline-run-*")
    deadline = time.monotonic() + timeout
    while True:
        record = read_wandb_offline(run_dir)
        if record["exit"] or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def test_wandb_offline_run_holds_the_logged_metrics(launcher_run):
    run = launcher_run("sft", 3)
    wandb = _offline_run(run)
    assert wandb["exit"], "the offline run file has no exit record"
    rows = run.metrics
    history = {row["step"]: row for row in wandb["history"] if "train/loss" in row}
    assert {s: row["train/loss"] for s, row in history.items()} == series(rows, "train/loss")
    assert wandb["summary"]["train/loss"] == last(rows, "train/loss")
    assert wandb["summary"]["eval/loss"] == last(rows, "eval/loss")
    config = wandb["config"]  # the resolved config, uploaded at init
    assert config["train"]["epochs"] == 1 and config["deepspeed"]["zero_stage"] == 3
    assert config["output_dir"] == str(run.out)
    assert (wandb["project"], wandb["job_type"]) == ("rlhf_dist-tiny", "sft")
