"""The PPO driver's check before any update: a NaN/inf reward, advantage or return stops the
iteration with a skippable NonFiniteError naming the tensor and rows (padding ignored)."""

import pytest
import torch

from rlhf_dist.algo import NonFiniteError
from rlhf_dist.protocol import Batch
from rlhf_dist.trainers.ppo import check_experience


def experience(**fields):
    base = {
        "scores": torch.tensor([0.5, 1.0]),
        "action_mask": torch.tensor([[1, 1, 0], [1, 0, 0]]),
        "advantages": torch.zeros(2, 3),
        "returns": torch.zeros(2, 3),
    }
    return Batch.from_dict({**base, **fields})


def test_finite_experience_passes_and_padding_is_ignored():
    check_experience(
        experience(advantages=torch.tensor([[0.0, 1.0, float("nan")], [2.0, float("inf"), 0.0]]))
    )


@pytest.mark.parametrize(
    "field,value,name",
    [
        ("scores", torch.tensor([0.5, float("nan")]), r"reward \(RM score \+ reward functions\)"),
        ("advantages", torch.tensor([[0.0, float("inf"), 0.0], [0.0, 0.0, 0.0]]), "advantages"),
        ("returns", torch.tensor([[0.0, 0.0, 0.0], [float("nan"), 0.0, 0.0]]), "returns"),
    ],
)
def test_nonfinite_experience_is_named_and_skippable(field, value, name):
    with pytest.raises(NonFiniteError, match=rf"^non-finite {name} in rows") as info:
        check_experience(experience(**{field: value}))
    assert info.value.skippable
