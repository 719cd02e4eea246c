"""The per-test time ceilings of the suite (a pytest plugin, loaded by ``tests/conftest.py``).

A test's own run (its "call") may take CALL_CEILING_S; the set-up of a shared fixture, which
trains models once for many tests (the demo, the PPO runs), SETUP_CEILING_S.  Longer fails the
session, naming the test: a new slow test is seen the day it lands (tests/README.md, "Time
budget").  ``RLHF_TEST_CEILING_SCALE`` stretches both on a slower machine.
"""

import os

_SCALE = float(os.environ.get("RLHF_TEST_CEILING_SCALE", "1"))
CALL_CEILING_S = 150.0 * _SCALE
SETUP_CEILING_S = 420.0 * _SCALE  # the demo fixture: 200-300 s on a 2-core machine
_over_ceiling = []


def pytest_runtest_logreport(report):
    ceiling = {"call": CALL_CEILING_S, "setup": SETUP_CEILING_S}.get(report.when)
    if ceiling is not None and report.duration > ceiling:
        _over_ceiling.append(
            f"{report.nodeid} ({report.when}): {report.duration:.1f} s > {ceiling:.1f} s"
        )


def pytest_terminal_summary(terminalreporter):
    if _over_ceiling:
        terminalreporter.section("over the time ceiling", red=True)
        for line in _over_ceiling:
            terminalreporter.line(line)


def pytest_sessionfinish(session, exitstatus):
    if _over_ceiling and exitstatus == 0:
        session.exitstatus = 1
