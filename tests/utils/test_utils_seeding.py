import random

import numpy as np
import torch

from rlhf_dist.utils import (
    load_rng_state,
    rng_state,
    save_rng_state,
    seed_everything,
    set_rng_state,
)
from rlhf_dist.utils.seeding import rng_state_file


def draws():
    """Draws from every generator, including the cached-gaussian paths of python and numpy."""
    return (
        [random.random(), random.gauss(0, 1), random.randint(0, 10**9)],
        np.random.rand(3).tolist() + [np.random.normal()],
        torch.rand(4).tolist() + torch.randn(3).tolist() + torch.randint(0, 100, (3,)).tolist(),
    )


def test_rng_state_round_trip_repeats_draws_exactly():
    seed_everything(3)
    draws()
    random.gauss(0, 1)  # leave a cached gaussian in python's state
    np.random.normal()  # and in numpy's
    state = rng_state()
    after_save = draws()
    draws()
    set_rng_state(state)
    assert draws() == after_save


def test_rng_state_survives_torch_save_per_rank(tmp_path):
    seed_everything(11)
    path = save_rng_state(tmp_path, rank=1)
    assert path == rng_state_file(tmp_path, 1) == tmp_path / "rng_state_rank1.pt"
    expected = draws()
    seed_everything(999)  # a resumed process starts elsewhere
    load_rng_state(tmp_path, rank=1)  # weights_only=True load
    assert draws() == expected


def test_seed_everything_is_reproducible():
    seed_everything(5)
    first = draws()
    seed_everything(5)
    assert draws() == first
    seed_everything(6)
    assert draws() != first
