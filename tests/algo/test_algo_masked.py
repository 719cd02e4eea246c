"""masked_sum / masked_mean / masked_var / masked_whiten against hand-computed numbers."""

import math

import pytest
import torch

from rlhf_dist.algo import masked_mean, masked_sum, masked_var, masked_whiten

NAN = float("nan")
# Row 0 right-padded, row 1 left-padded; masked slots hold junk (100, NaN) that must not leak.
X = torch.tensor([[1.0, 2.0, 3.0, 100.0], [NAN, 4.0, 6.0, 8.0]])
MASK = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
# Unmasked values: 1, 2, 3, 4, 6, 8 -> sum 24, n 6, mean 4;
# squared deviations 9, 4, 1, 0, 4, 16 -> 34; biased var 34/6, unbiased var 34/5 = 6.8.


def test_sum_and_mean_ignore_junk_and_accept_bool_mask():
    for mask in (MASK, MASK.bool(), MASK.float()):
        assert masked_sum(X, mask).item() == 24.0
        assert masked_mean(X, mask).item() == 4.0
        assert masked_mean(X, mask, dim=1).tolist() == [2.0, 6.0]
        assert masked_sum(X, mask, dim=1).tolist() == [6.0, 18.0]


def test_mean_of_empty_slice_is_zero_not_nan():
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    assert masked_mean(X, mask, dim=1).tolist() == [1.5, 0.0]
    assert masked_mean(X, torch.zeros_like(mask)).item() == 0.0


def test_var_biased_and_unbiased():
    assert masked_var(X, MASK, unbiased=False).item() == pytest.approx(34 / 6, rel=1e-6)
    assert masked_var(X, MASK).item() == pytest.approx(6.8, rel=1e-6)


def test_var_errors():
    with pytest.raises(ValueError, match="no unmasked"):
        masked_var(X, torch.zeros_like(MASK))
    one = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(X, one)
    assert masked_var(X, one, unbiased=False).item() == 0.0


def test_whiten_values_and_zero_outside_mask():
    std = math.sqrt(6.8 + 1e-8)
    expected = [[(1 - 4) / std, (2 - 4) / std, (3 - 4) / std, 0.0], [0.0, 0.0, 2 / std, 4 / std]]
    out = masked_whiten(X, MASK)
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-6, rtol=1e-6)
    kept = torch.tensor(
        [[v + 4 if m else 0.0 for v, m in zip(r, mr)] for r, mr in zip(expected, MASK.tolist())]
    )
    torch.testing.assert_close(masked_whiten(X, MASK, shift_mean=False), kept, atol=1e-6, rtol=1e-6)


def test_whitened_values_have_zero_mean_unit_unbiased_var():
    x = torch.randn(5, 7)
    mask = torch.rand(5, 7) > 0.3
    out = masked_whiten(x, mask)
    assert abs(masked_mean(out, mask).item()) < 1e-5
    assert masked_var(out, mask).item() == pytest.approx(1.0, abs=1e-4)


def test_bf16_reduced_in_float32():
    # bf16 values are exact in float32, so the float32 reduction must match an exact python
    # sum of the bf16-rounded values to float32 accuracy (rel 1e-5), and return float32.
    x = (torch.randn(4, 300) * 10).bfloat16()
    mask = torch.rand(4, 300) > 0.5
    vals = [float(v) for v, m in zip(x.flatten().tolist(), mask.flatten().tolist()) if m]
    out = masked_mean(x, mask)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(math.fsum(vals) / len(vals), rel=1e-5, abs=1e-5)
    assert masked_whiten(x, mask).dtype == torch.float32


def test_mean_gradient_is_one_over_n_on_mask_only():
    x = X.clone().requires_grad_(True)
    masked_mean(x, MASK).backward()
    expected = MASK.float() / 6
    assert torch.equal(x.grad, expected)
