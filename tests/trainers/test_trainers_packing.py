"""``train.padding_free=true`` trains SFT, the reward model and DPO through real DeepSpeed
engines (ZeRO-2, one rank in this process) to the same per-step losses, eval losses and
score statistics as the padded batches, while counting the same tokens."""

from __future__ import annotations

import pytest

from rlhf_dist.data import is_packed
from trainer_helpers import fit_in_process, read_metrics, series

pytestmark = pytest.mark.slow

ARGS = ("train.max_steps=6", "train.eval_every=3", "deepspeed.zero_stage=2")


def _trainer(job: str):
    from rlhf_dist.trainers.dpo import DPOTrainer
    from rlhf_dist.trainers.rm import RMTrainer
    from rlhf_dist.trainers.sft import SFTTrainer

    return {"sft": SFTTrainer, "rm": RMTrainer, "dpo": DPOTrainer}[job]


# DPO's padded side is its default layout (shared_prompt); the other jobs pad rows.  Not the
# RM's score_mean: Bradley-Terry is blind to a shift of every score, so the head's bias has a
# gradient of float noise only, which Adam turns into steps of ±lr (measured: 9e-4 apart)
@pytest.mark.parametrize(
    "job,keys",
    [
        ("sft", ("train/loss", "eval/loss", "eval/ppl")),
        ("rm", ("train/loss", "train/accuracy", "eval/loss", "train/score_std")),
        ("dpo", ("train/loss", "train/reward_margin", "eval/loss", "eval/reward_accuracy")),
    ],
)
def test_padding_free_trains_to_the_padded_losses(tmp_path, job, keys):
    trainers = {
        free: fit_in_process(
            _trainer(job),
            job,
            tmp_path / str(free),
            *ARGS,
            f"train.padding_free={str(free).lower()}",
        )
        for free in (False, True)
    }
    for free, trainer in trainers.items():  # the run's own batches are packed, or not
        assert is_packed(trainer.collate([trainer.train_set[i] for i in range(2)])) == free
    padded, packed = (read_metrics(trainers[free].out) for free in (False, True))
    for key in keys:
        a, b = series(padded, key), series(packed, key)
        assert a.keys() == b.keys() and len(a) >= 1, key
        for step in a:
            assert b[step] == pytest.approx(a[step], abs=2e-4, rel=1e-4), (key, step)
    assert series(padded, "train/loss")[1] != series(padded, "train/loss")[6]  # it trained
    # the same real tokens per step: padding was never counted, and none was added
    tokens = [
        [
            round(r["perf/tokens_per_s"] * r["perf/step_time_s"])
            for r in rows
            if "perf/tokens_per_s" in r
        ]
        for rows in (padded, packed)
    ]
    assert tokens[0] and tokens[0] == tokens[1]
