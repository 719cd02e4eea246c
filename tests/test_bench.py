"""bench/bench_train.py: its arithmetic and its JSON line format, on a trivially small case.

No assertion on speed (DESIGN.md: benchmarks print JSON; tests never assert on time).
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import with_shared_ray

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "bench_train.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_skips_warmup_and_sums_ranks_cpu_time():
    bench = _bench_module()
    # 3 steps: 100 tokens in 1 s (warm-up), 300 tokens in 2 s, 100 tokens in 0.5 s
    rows = [
        {"step": 1, "perf/tokens_per_s": 100.0, "perf/step_time_s": 1.0},
        {"step": 3, "perf/tokens_per_s": 200.0, "perf/step_time_s": 0.5},
        {"step": 2, "perf/tokens_per_s": 150.0, "perf/step_time_s": 2.0},
        {"step": 3, "eval/loss": 1.0},
    ]
    ranks = [
        {"step_end_s": [1.0, 3.5, 4.5], "step_end_cpu_s": [10.0, 12.0, 13.0]},
        {"step_end_s": [1.1, 3.6, 4.6], "step_end_cpu_s": [20.0, 21.0, 23.0]},
    ]
    out = bench.throughput(rows, ranks, warmup=1)
    assert out["steps"] == 3
    assert out["tokens_per_s"] == pytest.approx(400 / 2.5)
    assert out["tokens_per_s_median"] == pytest.approx((150 + 200) / 2)
    assert out["tokens_per_step"] == pytest.approx(200)
    assert out["tokens_per_s_wall"] == pytest.approx(400 / 3.5)  # rank 0: 4.5 - 1.0
    assert out["tokens_per_cpu_s"] == pytest.approx(400 / (3.0 + 3.0))


@pytest.mark.slow  # a bench script run end to end in a subprocess
def test_bench_prints_one_json_line_per_case_on_a_tiny_run(tmp_path):
    cmd = [
        sys.executable,
        str(BENCH),
        "--jobs",
        "dpo",
        "--zero",
        "0",
        "--ranks",
        "1",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch",
        "2",
        "--pairs",
        "8",
        "--num-prompts",
        "16",
        "--hidden",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--intermediate",
        "64",
        "--max-length",
        "64",
        "--max-prompt-length",
        "32",
        "--variants",
        "default,precomputed",
        "--out-dir",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [(r["bench"], r.get("variant")) for r in lines] == [
        ("train", "default"),
        ("train", "precomputed"),
        ("train_variant_ratio", "precomputed"),
    ], done.stdout
    rec, precomputed, ratio = lines
    assert ratio["ratio_tokens_per_cpu_s"] == pytest.approx(
        precomputed["tokens_per_cpu_s"] / rec["tokens_per_cpu_s"]
    )
    assert "error" not in rec and "error" not in precomputed, rec.get("log_tail")
    assert "ref_precompute_s" not in rec and precomputed["ref_precompute_s"] > 0
    for key in (
        "bench",
        "impl",
        "job",
        "zero",
        "ranks",
        "steps",
        "tokens_per_s",
        "tokens_per_s_median",
        "tokens_per_s_wall",
        "tokens_per_cpu_s",
        "peak_rss_mb_per_rank",
        "param_mb_per_rank",
        "optim_mb_per_rank",
        "ref_param_mb_per_rank",
        "foreign_cores",
        "probe_gflops",
    ):
        assert key in rec, key
    assert (rec["bench"], rec["impl"], rec["job"], rec["zero"], rec["ranks"], rec["steps"]) == (
        "train",
        "rlhf_dist",
        "dpo",
        0,
        1,
        2,
    )
    assert rec["tokens_per_s"] > 0
    assert len(rec["peak_rss_mb_per_rank"]) == 1 and rec["peak_rss_mb_per_rank"][0] > 0
    # 1 layer x 32 wide llama: every rank holds all parameters and two Adam moments of each
    assert rec["param_numel_local"] == [rec["param_numel_total"]]
    assert rec["param_mb_per_rank"][0] == pytest.approx(
        rec["param_numel_total"] * 4 / 2**20, abs=1e-3
    )
    assert rec["optim_state_mb_per_rank"][0] == pytest.approx(
        2 * rec["param_mb_per_rank"][0], abs=2e-3
    )  # MiB rounded to 1e-3


def _case(variant, repeat, cpu_rate, wall_rate, held=(1.0, 2.0, 0.5)):
    return {
        "job": "dpo",
        "zero": 0,
        "ranks": 1,
        "variant": variant,
        "repeat": repeat,
        "tokens_per_cpu_s": cpu_rate,
        "tokens_per_s": wall_rate,
        "foreign_cores": 0.0,
        "param_mb_per_rank": [held[0]],
        "optim_state_mb_per_rank": [held[1]],
        "optim_master_mb_per_rank": [held[2]],
        "ref_param_mb_per_rank": [held[0]],
    }


def test_variant_ratio_lines_pair_each_variant_with_default(capsys):
    bench = _bench_module()
    ours = [
        _case("default", 0, 100.0, 50.0),
        _case("packed", 0, 120.0, 55.0),
        _case("default", 1, 200.0, 50.0),
        _case("packed", 1, 220.0, 60.0),
        _case("default", 2, 100.0, 40.0),
        _case("packed", 2, 130.0, 50.0, (1.0, 0.5, 0)),
    ]
    bench.variant_ratio_lines(ours)
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["bench"], line["variant"], line["vs"], line["repeats"]) == (
        "train_variant_ratio",
        "packed",
        "default",
        3,
    )
    assert line["ratio_tokens_per_cpu_s"] == pytest.approx(130 / 100)  # medians
    spread = line["spread_tokens_per_cpu_s"]
    assert spread["pairs_tokens_per_cpu_s"] == pytest.approx([1.1, 1.2, 1.3])
    assert spread["pair_median"] == pytest.approx(1.2) and spread["unreliable"] is False
    assert line["spread_tokens_per_s"]["pair_max"] == pytest.approx(1.25)
    assert line["held_mb"] == line["default_held_mb"] == 4.5  # param + optim + master + ref


def test_foreign_load_is_machine_cpu_less_the_waited_childs_over_wall(monkeypatch):
    """Counters replaced by a script: over 2 s of wall time the machine was busy 5 CPU-s, of
    which the waited-for child tree used 3 -> 1 core of other processes."""
    load = _bench_script("_load")
    clock = iter([100.0, 102.0])
    busy = iter([50.0, 55.0])
    own = iter([7.0, 10.0])
    monkeypatch.setattr(load.ForeignLoad, "clock", staticmethod(lambda: next(clock)))
    monkeypatch.setattr(load, "machine_busy_s", lambda: next(busy))
    monkeypatch.setattr(load, "_children_cpu_s", lambda: next(own))
    with load.ForeignLoad() as meter:
        pass
    assert meter.cores == pytest.approx(1.0)


def test_foreign_load_reads_real_counters():
    load = _bench_script("_load")
    with load.ForeignLoad() as meter:  # a child that is waited for: its CPU is not foreign
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert meter.cores >= 0.0 and load.machine_busy_s() > 0 and load._children_cpu_s() > 0


# --------------------------------------------------------------------------- bench/ppo.py

PPO_BENCH = REPO / "bench" / "ppo.py"
PPO_TINY = [
    "--hidden",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--intermediate",
    "64",
    "--iterations",
    "2",
    "--warmup",
    "1",
    "--num-prompts",
    "40",
    "--prompts",
    "4",
    "--grpo-prompts",
    "2",
    "--group-size",
    "2",
    "--max-new-tokens",
    "6",
    "--mini-batch",
    "4",
    "--micro-batch",
    "2",
    "--probe-idle",
    "0.2",
]
PPO_FIELDS = (
    "case",
    "estimator",
    "impl",
    "iterations",
    "warmup",
    "rows_per_iter",
    "tokens_per_iter",
    "s_per_iter",
    "s_per_iter_median",
    "cpu_s_per_iter",
    "time_generate_s",
    "time_score_s",
    "time_learn_s",
    "cpu_generate_s",
    "cpu_score_s",
    "cpu_learn_s",
    "samples_per_s",
    "tokens_per_s",
    "samples_per_cpu_s",
    "tokens_per_cpu_s",
    "cpu_by",
    "response_length_mean",
    "score_mean_per_iter",
    "foreign_cores",
)


def _bench_script(name):
    """bench/NAME.py as a module (bench/ on sys.path while it loads, as when it is run)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "bench"))
    return module


def test_ppo_summary_leaves_out_warmup_and_divides_sums():
    common = _bench_script("_ppo_common")
    records = [  # iteration 1 is warm-up
        {"time_s": 9.0, "cpu_s": 9.0, "rows": 4, "tokens": 40, "time_generate_s": 9.0},
        {
            "time_s": 2.0,
            "cpu_s": 3.0,
            "rows": 4,
            "tokens": 40,
            "time_generate_s": 1.0,
            "time_score_s": 0.5,
            "time_learn_s": 0.25,
            "cpu_learn_s": 1.0,
            "cpu_by/driver": 1.0,
            "cpu_by/worker_actor": 2.0,
        },
        {
            "time_s": 4.0,
            "cpu_s": 5.0,
            "rows": 4,
            "tokens": 60,
            "time_generate_s": 3.0,
            "time_score_s": 0.5,
            "time_learn_s": 0.25,
            "cpu_learn_s": 2.0,
            "cpu_by/driver": 1.0,
            "cpu_by/worker_actor": 4.0,
        },
    ]
    out = common.summarize(records, warmup=1)
    assert out["measured"] == 2 and out["iterations"] == 3
    assert out["s_per_iter"] == pytest.approx(3.0)
    assert out["cpu_s_per_iter"] == pytest.approx(4.0)
    assert out["tokens_per_s"] == pytest.approx(100 / 6.0)
    assert out["tokens_per_cpu_s"] == pytest.approx(100 / 8.0)
    assert out["samples_per_s"] == pytest.approx(8 / 6.0)
    assert out["time_generate_s"] == pytest.approx(2.0)
    assert out["cpu_learn_s"] == pytest.approx(1.5)
    assert out["time_other_s"] == pytest.approx(3.0 - 2.0 - 0.5 - 0.25)
    assert out["cpu_by"] == {"driver": 1.0, "worker_actor": 3.0}


def test_pair_spread_pairs_by_repeat_and_flags_foreign_load():
    """Ratios are taken within a repeat (cases run back to back), a repeat one case lacks is
    left out, and a line that saw other processes' CPU above the limit flags the ratio."""
    load = _bench_script("_load")
    ours = [
        {"repeat": 0, "tokens_per_cpu_s": 10.0, "foreign_cores": 0.0},
        {"repeat": 1, "tokens_per_cpu_s": 12.0, "foreign_cores": 0.05},
        {"repeat": 2, "tokens_per_cpu_s": 9.0, "foreign_cores": 0.0},
    ]
    theirs = [
        {"repeat": 0, "tokens_per_cpu_s": 8.0, "foreign_cores": 0.1},
        {"repeat": 2, "tokens_per_cpu_s": 10.0, "foreign_cores": 0.0},
    ]
    out = load.pair_spread(ours, theirs, "tokens_per_cpu_s")
    assert out["pairs_tokens_per_cpu_s"] == [0.9, 1.25]
    assert (out["pair_min"], out["pair_median"], out["pair_max"]) == (0.9, 1.075, 1.25)
    assert out["foreign_cores_max"] == 0.1 and out["unreliable"] is False
    theirs[1]["foreign_cores"] = 0.3
    assert load.pair_spread(ours, theirs, "tokens_per_cpu_s")["unreliable"] is True


def _run_ppo_bench(tmp_path, cases):
    cmd = [
        sys.executable,
        str(PPO_BENCH),
        "--cases",
        ",".join(cases),
        *PPO_TINY,
        "--out-dir",
        str(tmp_path),
    ]
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=with_shared_ray()
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    cases_out = {r["case"]: r for r in lines if r["bench"] == "ppo"}
    ratios = {r["ratio"]: r for r in lines if r["bench"] == "ppo_ratio"}
    assert sorted(cases_out) == sorted(cases), done.stdout
    for rec in cases_out.values():
        assert "error" not in rec, rec.get("log_tail")
        if "skipped" in rec:
            continue
        for key in PPO_FIELDS:
            assert key in rec, (rec["case"], key)
        assert rec["response_length_mean"] == 6.0  # EOS stopping off: every response is full
        assert rec["tokens_per_s"] > 0 and rec["cpu_s_per_iter"] > 0
        assert len(rec["probe_gflops"]) == 2 and min(rec["probe_gflops"]) > 0
    return cases_out, ratios


@pytest.mark.slow  # a bench script run end to end in a subprocess
def test_ppo_bench_one_process_cases_print_json_and_do_the_same_maths(tmp_path):
    cases, ratios = _run_ppo_bench(tmp_path, ["single", "inproc", "trl_grpo"])
    single, inproc = cases["single"], cases["inproc"]
    assert single["rows_per_iter"] == inproc["rows_per_iter"] == 4
    assert single["tokens_per_iter"] == inproc["tokens_per_iter"]
    # same prompts, weights and sampling seed: the first rollouts score the same
    assert inproc["score_mean_per_iter"][0] == pytest.approx(
        single["score_mean_per_iter"][0], abs=1e-4
    )
    assert set(ratios["inproc/single"]) >= {"s_per_iter", "cpu_s_per_iter"}
    trl = cases["trl_grpo"]
    if "skipped" not in trl:
        assert trl["rows_per_iter"] == 2 * 2 and trl["response_length_mean"] == 6.0


@pytest.mark.slow
def test_ppo_bench_ray_cases_match_the_single_process_loop(tmp_path):
    """The Ray PPO case (one Ray job: the GRPO cases' Ray plumbing is the same, and GRPO's
    group sizes on Ray are checked by tests/ray/test_ray_ppo.py)."""
    cases, ratios = _run_ppo_bench(tmp_path, ["ray", "single"])
    ray_rec, single_rec = cases["ray"], cases["single"]
    assert ray_rec["rows_per_iter"] == single_rec["rows_per_iter"]
    assert ray_rec["score_mean_per_iter"][0] == pytest.approx(
        single_rec["score_mean_per_iter"][0], abs=1e-4
    )
    # CPU of the whole tree: the driver, every role worker, Ray's own processes
    assert {"driver", "worker_actor", "worker_reference", "worker_reward", "worker_critic"} <= set(
        ray_rec["cpu_by"]
    )
    assert ray_rec["probe"]["call_ms"] > 0 and ray_rec["probe"]["experience_bytes"] > 0
    line = ratios["ray/single"]
    assert line["target"] == 1.25 and isinstance(line["meets_target_cpu"], bool)


def test_gpu_mfu_counts_6n_for_sft_and_8n_for_dpo():
    mfu = _bench_script("gpu/mfu")
    rec = {
        "bench": "train",
        "job": "dpo",
        "zero": 3,
        "variant": "packed",
        "tokens_per_s": 1000.0,
        "param_numel_total": 5 * 10**8,
    }
    line = mfu.mfu_line(rec, peak_tflops=1000.0)
    assert line["flops_per_token"] == 8 * 5 * 10**8  # policy fwd + bwd, reference fwd
    assert line["tflops"] == pytest.approx(4.0) and line["mfu"] == pytest.approx(0.004)
    assert mfu.mfu_line({**rec, "job": "sft"}, 1000.0)["flops_per_token"] == 6 * 5 * 10**8


# --------------------------------------------------------------------------- bench/gpu


def test_gpu_preflight_names_missing_and_mismatched_requirements(tmp_path, monkeypatch):
    """preflight.unmet: a requirement not installed and one of the wrong version, each named
    with what was found, read from real distribution metadata (a dist-info on sys.path)."""
    info = tmp_path / "gpu_probe-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gpu-probe\nVersion: 1.0\n"
        "Requires-Dist: torch<1.0\nRequires-Dist: no-such-dist-xyz\n"
        "Requires-Dist: pytest>=7\n"
        "Requires-Dist: absent-extra-only; extra == 'x'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    preflight = _bench_script("gpu/preflight")
    problems = preflight.unmet(["gpu-probe"])
    import torch

    assert f"gpu-probe: torch<1.0 (found {torch.__version__})" in problems
    assert "gpu-probe: no-such-dist-xyz (not installed)" in problems
    assert not any("pytest" in p or "absent-extra-only" in p for p in problems)
    assert preflight.unmet(["no-such-dist-xyz"]) == ["no-such-dist-xyz: not installed"]


def test_gpu_worker_must_see_exactly_one_device(monkeypatch):
    import pytest

    from rlhf_dist.engine.dist import require_one_device

    require_one_device(1, "actor rank 0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(
        RuntimeError,
        match=r"^critic rank 1: sees 2 CUDA devices "
        r"\(CUDA_VISIBLE_DEVICES=0,1\)",
    ):
        require_one_device(2, "critic rank 1")
