"""Learning-rate multipliers, computed by hand."""

import math

import pytest

from rlhf_dist.engine import lr_multiplier


def test_constant_with_warmup():
    f = lr_multiplier("constant", total_steps=10, warmup_steps=4, min_ratio=0.1)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert f(10) == f(100) == 1.0


def test_linear_decays_to_min_ratio():
    # warm-up 2 steps, then 1 - 0.9 * (s - 2) / 8 over the 8 remaining steps
    f = lr_multiplier("linear", total_steps=10, warmup_steps=2, min_ratio=0.1)
    expected = [0.5, 1.0, 1.0, 0.8875, 0.775, 0.6625, 0.55, 0.4375, 0.325, 0.2125, 0.1]
    assert [f(s) for s in range(11)] == pytest.approx(expected, abs=1e-12)
    assert f(25) == pytest.approx(0.1)  # clamped past the end


def test_cosine_without_warmup():
    # 0.2 + 0.8 * 0.5 * (1 + cos(pi * s / 4))
    f = lr_multiplier("cosine", total_steps=4, warmup_steps=0, min_ratio=0.2)
    half = 0.5 * (1 + math.cos(math.pi / 4))
    expected = [1.0, 0.2 + 0.8 * half, 0.6, 0.2 + 0.8 * (1 - half), 0.2]
    assert [f(s) for s in range(5)] == pytest.approx(expected, abs=1e-12)
    assert f(1) == pytest.approx(0.8828427124746190, abs=1e-12)


def test_cosine_after_warmup_starts_at_one():
    f = lr_multiplier("cosine", total_steps=6, warmup_steps=2, min_ratio=0.0)
    assert [f(s) for s in range(7)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.8535533905932737, 0.5, 0.14644660940672627, 0.0], abs=1e-12
    )


def test_degenerate_totals_do_not_divide_by_zero():
    assert lr_multiplier("linear", total_steps=0, warmup_steps=0, min_ratio=0.5)(0) == 1.0
    f = lr_multiplier("linear", total_steps=3, warmup_steps=3, min_ratio=0.5)
    assert [f(s) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 0.5])


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match=r"unknown lr schedule 'step'.*constant.*cosine.*linear"):
        lr_multiplier("step", 10, 0, 0.1)
