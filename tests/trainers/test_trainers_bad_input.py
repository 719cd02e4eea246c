"""Bad input fails fast — before any DeepSpeed engine is built or a step is taken — with a
message naming the culprit.  Each job is a real process (the CLI; the launcher for the batch
size, whose divisibility depends on the number of ranks)."""

from __future__ import annotations

import pytest

from trainer_helpers import cli, launch

pytestmark = pytest.mark.slow

# Generous for a loaded 2-core CI box; measured 2-4 s for the CLI, ~8 s through the launcher.
FAST_S = 45


def _assert_failed_early(run, *needles):
    """Exit 2 with one line naming the culprit, no traceback (``--debug`` shows one)."""
    assert run.returncode == 2, run.log[-3000:]
    assert "Traceback" not in run.log, run.log[-3000:]
    for needle in needles:
        assert needle in run.log, f"{needle!r} not in:\n{run.log[-3000:]}"
    assert run.seconds < FAST_S, run.seconds
    # nothing of a started job: config.yaml is written once the engines exist
    assert not (run.out / "config.yaml").exists()
    assert not (run.out / "checkpoints").exists()
    assert not (run.out / "metrics.jsonl").exists()


def test_missing_model_path(tmp_path):
    run = cli("sft", tmp_path / "out", "model.name_or_path=/nonexistent/x")
    _assert_failed_early(
        run, "rlhf-dist sft: model error: model.name_or_path", "/nonexistent/x", "does not exist"
    )


def test_missing_tokenizer_path(tmp_path):
    run = cli("dpo", tmp_path / "out", "model.tokenizer_path=/nonexistent/tok")
    _assert_failed_early(
        run, "rlhf-dist dpo: model error: model.tokenizer_path", "/nonexistent/tok"
    )


def test_missing_dataset_file_is_reported_once_under_the_launcher(tmp_path):
    run = launch("sft", tmp_path / "out", "data.path=/nonexistent/d.jsonl")
    _assert_failed_early(
        run, "rlhf-dist sft: data error: ", "/nonexistent/d.jsonl", "no such data file"
    )
    assert run.log.count("rlhf-dist sft: data error") == 1  # rank 1 stays quiet


def test_debug_shows_the_traceback(tmp_path):
    run = cli("sft", tmp_path / "out", "data.path=/nonexistent/d.jsonl", "--debug")
    assert run.returncode == 1 and "Traceback" in run.log and "DataFileNotFoundError" in run.log


def test_zero_stage_5(tmp_path):
    run = cli("dpo", tmp_path / "out", "deepspeed.zero_stage=5")
    assert run.returncode == 2
    _assert_failed_early(run, "deepspeed.zero_stage: got 5, expected one of [0, 1, 2, 3]")


def test_batch_size_that_does_not_divide_over_two_ranks(tmp_path):
    run = launch("rm", tmp_path / "out", "train.train_batch_size=6", "train.micro_batch_size=2")
    _assert_failed_early(
        run,
        "train.train_batch_size: 6 is not divisible by "
        "train.micro_batch_size=2 × data-parallel ranks=2 (= 4)",
    )


def test_diverging_run_stops_naming_the_step_and_the_nonfinite_loss(tmp_path):
    """lr 1e30: the first Adam step moves every weight by ~1e30, the next forward overflows,
    and the run stops on that step's loss before its backward (exit 1, one line)."""
    run = cli(
        "sft",
        tmp_path / "out",
        "train.lr=1e30",
        "train.max_steps=4",
        "deepspeed.zero_stage=0",
        "train.warmup_ratio=0",
        "train.max_grad_norm=0",
    )
    assert run.returncode == 1, run.log[-3000:]
    assert "Traceback" not in run.log
    line = next(x for x in run.log.splitlines() if x.startswith("rlhf-dist sft: numerical"))
    assert line.startswith("rlhf-dist sft: numerical fault: sft step 2: non-finite loss (")
    assert "on ranks [0] of 1" in line


def test_skip_step_drops_nonfinite_updates_on_every_rank_then_gives_up(tmp_path):
    """The same divergence on two launcher ranks under ZeRO-1 with skip_step: from step 2 on
    every loss is NaN, DeepSpeed drops each update on both ranks, the steps are counted, and
    the fourth in a row (max_skipped_steps=3) stops the run, both ranks together."""
    run = launch(
        "sft",
        tmp_path / "out",
        "train.lr=1e30",
        "train.max_steps=8",
        "deepspeed.zero_stage=1",
        "train.warmup_ratio=0",
        "train.max_grad_norm=0",
        "train.on_nonfinite=skip_step",
    )
    assert run.returncode == 1, run.log[-3000:]
    assert "Traceback" not in run.log
    lines = [x for x in run.log.splitlines() if "rlhf-dist sft: numerical" in x]
    assert len(lines) == 1  # rank 0 only
    assert lines[0].endswith(
        "numerical fault: sft step 5: non-finite loss (nan here) on ranks "
        "[0, 1] of 2; DeepSpeed dropped the update; 4 steps in a row "
        "skipped (train.max_skipped_steps=3)"
    )
    rows = run.metrics
    assert [r["step"] for r in rows if "train/loss" in r] == [1]
    assert [(r["step"], r["fault/skipped_steps"]) for r in rows if "fault/skipped_steps" in r] == [
        (2, 1),
        (3, 2),
        (4, 3),
    ]
