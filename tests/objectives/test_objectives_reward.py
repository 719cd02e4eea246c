"""The reward model's objective on a padded preference batch (chosen rows first), by hand."""

import math

import pytest
import torch

from rlhf_dist.objectives import reward_objective, split_pairs


def test_split_pairs_takes_chosen_first():
    chosen, rejected = split_pairs(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert chosen.tolist() == [1.0, 2.0] and rejected.tolist() == [3.0, 4.0]


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_reward_objective_by_hand(margin):
    scores = torch.tensor([2.0, 0.0, 1.0, 1.0], requires_grad=True)  # chosen 2, 0; rejected 1, 1
    loss, metrics = reward_objective(scores, margin)
    # margins r_c - r_r = +1, -1; loss = mean(log(1 + exp(-(d - m))))
    want = (math.log1p(math.exp(-(1 - margin))) + math.log1p(math.exp(-(-1 - margin)))) / 2
    assert float(loss) == pytest.approx(want, abs=1e-6) and metrics["loss"] == pytest.approx(want)
    assert metrics["accuracy"] == 0.5 and metrics["margin_mean"] == 0.0
    assert metrics["chosen_mean"] == 1.0 and metrics["rejected_mean"] == 1.0
    loss.backward()  # d loss / d r_c = -σ(-(d - m)) / B: the chosen score is pushed up
    assert scores.grad[0] < 0 and scores.grad[2] > 0
