"""The suite's time ceilings (tests/ceiling.py) fail a session whose test runs too long, naming
it, and leave a quick one alone: checked on an inner pytest run with the ceilings scaled down."""

import pytest

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("sleep_s, fails", [(0.5, True), (0.0, False)])
def test_a_test_over_the_ceiling_fails_the_session(pytester, monkeypatch, sleep_s, fails):
    from pathlib import Path

    pytester.makepyfile(test_inner=f"import time\n\ndef test_waits():\n    time.sleep({sleep_s})\n")
    monkeypatch.setenv("RLHF_TEST_CEILING_SCALE", str(0.2 / 150))  # call ceiling 0.2 s
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    result = pytester.runpytest_subprocess("-p", "ceiling", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert result.ret == (1 if fails else 0)
    over = [line for line in result.outlines if "test_inner.py::test_waits (call)" in line]
    assert bool(over) == fails, result.outlines
