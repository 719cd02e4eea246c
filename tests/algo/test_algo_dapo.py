"""DAPO's soft overlong punishment, by hand."""

import pytest
import torch

from rlhf_dist.algo import overlong_penalty


def test_overlong_penalty_by_hand():
    # limit 24, buffer 8: free up to 16, then -1/8 per token, -1 at 24 (x factor 0.5)
    lengths = torch.tensor([3, 16, 17, 20, 24])
    assert overlong_penalty(lengths, 24, 8).tolist() == [0.0, 0.0, -0.125, -0.5, -1.0]
    assert overlong_penalty(lengths, 24, 8, factor=0.5).tolist() == [0.0, 0.0, -0.0625, -0.25, -0.5]


def test_overlong_buffer_must_fit_the_limit():
    with pytest.raises(ValueError, match=r"buffer must be in \(0, max_len=24\], got 30"):
        overlong_penalty(torch.tensor([1]), 24, 30)


def test_config_refuses_a_buffer_longer_than_the_generation():
    from rlhf_dist.config import ConfigError, load_config
    from rlhf_dist.config.sizes import ppo_sizes

    cfg = load_config(None, ["ppo.overlong_buffer=40", "rollout.max_new_tokens=32"])
    with pytest.raises(
        ConfigError, match="ppo.overlong_buffer: 40 is longer than rollout.max_new_tokens=32"
    ):
        ppo_sizes(cfg)


def test_informative_groups_by_hand():
    from rlhf_dist.algo import informative_groups

    # groups of 3: [1, 1, 1] equal, [0, 1, 0] differ, [0.5, 0.5, 0.5000001] differ, [-2]*3 equal
    scores = torch.tensor(
        [1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5000001, -2.0, -2.0, -2.0], dtype=torch.float64
    )
    assert informative_groups(scores, 3).tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        informative_groups(scores, 1)
    with pytest.raises(ValueError, match=r"\(G \* n_samples,\) with n_samples=5"):
        informative_groups(scores, 5)
