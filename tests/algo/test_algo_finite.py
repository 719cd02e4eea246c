"""Where the non-finite values are, counting masked-in positions only."""

import pytest
import torch

from rlhf_dist.algo import NonFiniteError, check_finite, nonfinite_rows

NAN, INF = float("nan"), float("inf")


def test_rows_with_a_nan_or_inf_where_the_mask_is_set():
    values = torch.tensor([[0.0, 1.0], [NAN, 2.0], [3.0, INF], [NAN, 0.0]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0], [0, 1]])
    assert nonfinite_rows(values) == [1, 2, 3]
    assert nonfinite_rows(values, mask) == [1]  # row 2's inf and row 3's nan are masked out
    assert nonfinite_rows(torch.tensor([1.0, -INF, 0.0])) == [1]


def test_check_finite_names_the_tensor_and_rows():
    check_finite("advantages", torch.zeros(3, 2))
    with pytest.raises(NonFiniteError, match=r"^non-finite reward in rows \[0, 2\] of 3$") as info:
        check_finite("reward", torch.tensor([NAN, 1.0, INF]), skippable=True)
    assert info.value.skippable
    many = torch.full((20,), NAN)
    with pytest.raises(NonFiniteError, match=r"rows \[0, 1, 2, 3, 4, 5, 6, 7, '...'\] of 20"):
        check_finite("x", many)
