import pytest

from rlhf_dist.utils import Timer, tokens_per_second
from rlhf_dist.utils import timing


def test_timer_accumulates_sections_and_resets_on_pop(monkeypatch):
    clock = iter([0.0, 1.5, 10.0, 10.25, 20.0, 23.0, 30.0, 31.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    syncs = []
    timer = Timer(sync=lambda: syncs.append(1))
    with timer("generate"):
        pass
    with timer("generate"):
        pass
    with pytest.raises(RuntimeError):
        with timer("update"):  # a failing section still counts
            raise RuntimeError("boom")
    assert timer.seconds("generate") == 1.75
    assert timer.pop() == {"perf/time_generate": 1.75, "perf/time_update": 3.0}
    assert len(syncs) == 6
    assert timer.pop() == {}
    with timer("score"):
        pass
    assert timer.pop() == {"perf/time_score": 1.0}


def test_timer_measures_real_time():
    timer = Timer(prefix="t/")
    with timer("noop"):
        pass
    (value,) = timer.pop().values()
    assert 0.0 <= value < 1.0


def test_tokens_per_second():
    assert tokens_per_second(1000, 2.0) == 500.0
    assert tokens_per_second(10, 0.0) == 0.0
