"""Fixed and adaptive KL controllers (Ziegler et al. 2019)."""

import pytest
import torch

from rlhf_dist.algo import AdaptiveKLController, FixedKLController, make_kl_controller


def test_fixed_never_changes():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, 1000)
    assert ctl.value == 0.05
    assert ctl.state_dict() == {"value": 0.05}


def test_adaptive_by_hand():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(9.0, 1000)  # error 9/6 - 1 = 0.5 -> clipped 0.2; mult 1 + 0.2 * 0.1 = 1.02
    assert ctl.value == pytest.approx(0.204)
    ctl.update(torch.tensor(5.7), 1000)  # error -0.05; mult 1 - 0.005 = 0.995
    assert ctl.value == pytest.approx(0.204 * 0.995)
    ctl.update(0.0, 500)  # error -1 -> clipped -0.2; mult 1 - 0.01 = 0.99
    assert ctl.value == pytest.approx(0.204 * 0.995 * 0.99)


def test_state_dict_round_trip():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(9.0, 1000)
    fresh = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    fresh.load_state_dict(ctl.state_dict())
    assert fresh.value == ctl.value == pytest.approx(0.204)
    fixed = FixedKLController(0.1)
    fixed.load_state_dict({"value": 0.3})
    assert fixed.value == 0.3


def test_factory_and_validation():
    assert isinstance(make_kl_controller("fixed", kl_coef=0.1), FixedKLController)
    ctl = make_kl_controller("adaptive", init_kl_coef=0.1, target=1.0, horizon=10)
    assert isinstance(ctl, AdaptiveKLController) and ctl.value == 0.1
    with pytest.raises(ValueError, match=r"'pid'.*'adaptive', 'fixed'"):
        make_kl_controller("pid", kl_coef=0.1)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0, horizon=10)
    with pytest.raises(ValueError, match="kl_coef"):
        FixedKLController(-1.0)
