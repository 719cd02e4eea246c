"""PPO on Ray with every role offloaded to CPU memory between its calls
(``resources.<role>.offload_when_idle``), against the same run without: configs/tiny/ppo.yaml
(actor ZeRO-3 over 2 ranks with the tiny model's parameters kept whole, frozen ZeRO-3 reward
and reference) with the critic at ZeRO-2, shortened to 2 iterations of 8 prompts.  Offloading must
change no number: every logged metric but the timings, and the exported actor and critic, bit for
bit.
"""

from __future__ import annotations

import pytest

from ray_helpers import cli, load_tensors, max_abs_diff

pytestmark = pytest.mark.slow

ROLES = ("actor", "critic", "reward", "reference")
SHORT = (
    "ppo.iterations=2",
    "rollout.rollout_batch_size=8",
    "rollout.max_new_tokens=8",
    "ppo.mini_batch_size=8",
    "deepspeed.role_zero_stage={critic: 2}",
)
OFFLOAD = tuple(f"resources.{role}.offload_when_idle=true" for role in ROLES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo_offload")
    return {
        name: cli("ppo", "ppo", root / name, *SHORT, *extra).check()
        for name, extra in (("plain", ()), ("offload", OFFLOAD))
    }


def numbers(run):
    """Every logged metric except wall-clock timings (``perf/``), row by row."""
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in run.metrics]


def test_offload_when_idle_changes_no_number(runs):
    plain, offload = numbers(runs["plain"]), numbers(runs["offload"])
    assert plain == offload
    assert len(runs["plain"].series("reward/score_mean")) == 2
    for model in ("model", "critic"):
        diffs = max_abs_diff(
            load_tensors(runs["plain"].out / model), load_tensors(runs["offload"].out / model)
        )
        assert set(diffs.values()) == {0.0}, diffs


def test_every_role_waits_in_cpu_memory_between_phases(runs):
    """After each iteration every rank of every role is offloaded, having spent time moving
    its states; the frozen models kept every bit; the plain run reports no offload."""
    for role in ROLES:
        assert runs["offload"].series(f"perf/{role}_offloaded") == [1.0, 1.0]
        assert all(s > 0 for s in runs["offload"].series(f"perf/{role}_offload_s"))
        assert runs["plain"].series(f"perf/{role}_offloaded") == []
    for frozen in ("reference", "reward"):
        assert runs["offload"].last(f"frozen/{frozen}_checksum_start") == runs["offload"].last(
            f"frozen/{frozen}_checksum_end"
        )
