import pytest

from rlhf_dist.utils import mean_rows


def test_mean_rows_is_keywise_mean():
    assert mean_rows([{"a": 1.0, "b": 4.0}, {"a": 3.0, "b": 0.0}]) == {"a": 2.0, "b": 2.0}


def test_mean_rows_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no metrics"):
        mean_rows([])
