"""Resume: a 2-rank ZeRO-3 SFT run (gradient accumulation 2) saving every 2 steps; fresh runs
that start from a copy of one of its checkpoints continue with the same losses — from the
middle of an epoch and from exactly an epoch boundary — and a truncated checkpoint next to a
good one is ignored, with a log line naming it."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from rlhf_dist.config import load_config
from rlhf_dist.trainers import batches as B
from trainer_helpers import CONFIGS, launch, series

pytestmark = pytest.mark.slow

# 64 toy prompts → 56 training examples; micro 4 × 2 ranks × accumulation 2 = 16 per step
OVERRIDES = (
    "data.toy.num_prompts=64",
    "train.epochs=3",
    "train.train_batch_size=16",
    "train.micro_batch_size=4",
    "train.eval_every=0",
    "deepspeed.zero_stage=3",
    "logging.backend=none",
    "checkpoint.export_hf=false",
)
SAVE_EVERY = 2


def _steps_per_epoch() -> int:
    """From the dataset itself, as the trainer computes it."""
    from rlhf_dist.data import build_sft_dataset
    from rlhf_dist.models import load_tokenizer

    cfg = load_config(str(CONFIGS / "sft.yaml"), list(OVERRIDES))
    train = build_sft_dataset(cfg.data, load_tokenizer(cfg.model), split="train")
    accum = cfg.resolve(2).train.gradient_accumulation_steps
    assert (len(train), accum) == (56, 2)
    return B.steps_per_epoch(len(train), 2, cfg.train.micro_batch_size, accum)


@pytest.fixture(scope="module")
def plan():
    spe = _steps_per_epoch()
    boundary = spe * SAVE_EVERY // math.gcd(spe, SAVE_EVERY)  # first saved epoch boundary
    mid = boundary - SAVE_EVERY
    assert spe == 3 and mid % spe != 0 and boundary % spe == 0 and mid > spe
    return {"steps_per_epoch": spe, "mid": mid, "boundary": boundary, "total": 3 * spe}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "full"
    return launch(
        "sft", out, *OVERRIDES, f"checkpoint.save_every={SAVE_EVERY}", "checkpoint.keep_last=100"
    ).check()


def _checkpoint(run, step):
    return run.out / "checkpoints" / f"step_{step:06d}"


def _resume_from(full_run, out, step, extra_dirs=()):
    """A fresh output dir holding only a copy of the full run's checkpoint ``step`` (plus the
    given ``(source, name)`` copies), then the same job with ``checkpoint.resume=auto``."""
    shutil.copytree(_checkpoint(full_run, step), out / "checkpoints" / f"step_{step:06d}")
    for source, name in extra_dirs:
        shutil.copytree(source, out / "checkpoints" / name)
    return launch(
        "sft",
        out,
        *OVERRIDES,
        f"checkpoint.save_every={SAVE_EVERY}",
        "checkpoint.keep_last=100",
        "checkpoint.resume=auto",
    ).check()


def _assert_same_losses_after(full_run, resumed, step, total):
    want = series(full_run.metrics, "train/loss")
    got = series(resumed.metrics, "train/loss")
    assert sorted(got) == list(range(step + 1, total + 1))  # starts right after the checkpoint
    for s in got:
        assert got[s] == pytest.approx(want[s], abs=1e-5), (s, got[s], want[s])
    lrs, want_lrs = series(resumed.metrics, "train/lr"), series(full_run.metrics, "train/lr")
    assert all(lrs[s] == pytest.approx(want_lrs[s], rel=1e-9) for s in got)
    final = series(resumed.metrics, "eval/loss")[total]
    assert final == pytest.approx(series(full_run.metrics, "eval/loss")[total], abs=1e-5)


def test_full_run_saved_where_planned(full_run, plan):
    saved = sorted(p.name for p in (full_run.out / "checkpoints").glob("step_*"))
    assert saved == [f"step_{s:06d}" for s in (2, 4, 6, 8, 9)]
    losses = series(full_run.metrics, "train/loss")
    assert sorted(losses) == list(range(1, plan["total"] + 1))
    assert len(set(losses.values())) == len(losses)  # every step a different batch / loss


def test_resume_mid_epoch_repeats_the_losses(full_run, plan, tmp_path):
    step = plan["mid"]
    state = json.loads((_checkpoint(full_run, step) / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["micro_batches_consumed"]) == (1, 1, 2)
    resumed = _resume_from(full_run, tmp_path / "mid", step)
    _assert_same_losses_after(full_run, resumed, step, plan["total"])


def test_resume_at_epoch_boundary_ignoring_a_truncated_checkpoint(full_run, plan, tmp_path):
    step, total = plan["boundary"], plan["total"]
    state = json.loads((_checkpoint(full_run, step) / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"]) == (step // plan["steps_per_epoch"], 0)

    # a newer checkpoint cut off mid-write: no COMPLETE marker and a file missing
    newer = tmp_path / "truncated"
    shutil.copytree(_checkpoint(full_run, step + SAVE_EVERY), newer)
    (newer / "COMPLETE").unlink()
    next(newer.glob("engine/*optim_states.pt")).unlink()
    # … and a staging directory a crash left behind
    staging = tmp_path / "staging"
    shutil.copytree(_checkpoint(full_run, step + SAVE_EVERY), staging)
    out = tmp_path / "boundary"
    truncated_name = f"step_{step + SAVE_EVERY:06d}"
    resumed = _resume_from(
        full_run, out, step, [(newer, truncated_name), (staging, f".tmp-step_{total:06d}")]
    )
    _assert_same_losses_after(full_run, resumed, step, total)

    ignored = [line for line in resumed.log.splitlines() if "ignoring incomplete" in line]
    assert len(ignored) == 1 and truncated_name in ignored[0], resumed.log[-3000:]
    assert f"step_{step:06d}" in ignored[0].split("resuming from")[1]
    removed = [line for line in resumed.log.splitlines() if "unfinished checkpoint" in line]
    assert len(removed) == 1 and f".tmp-step_{total:06d}" in removed[0]
    # the resumed run saved that step again, whole this time
    assert (out / "checkpoints" / truncated_name / "COMPLETE").is_file()
    assert not (out / "checkpoints" / f".tmp-step_{total:06d}").exists()
