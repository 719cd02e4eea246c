"""bench/bench_train.py: its arithmetic and its JSON line format, on a trivially small case.

No assertion on speed (DESIGN.md: benchmarks print JSON; tests never assert on time).
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    rows = [{"step": 1, "perf/tokens_per_s": 100.0, "perf/step_time_s": 1.0},
            {"step": 3, "perf/tokens_per_s": 200.0, "perf/step_time_s": 0.5},
            {"step": 2, "perf/tokens_per_s": 150.0, "perf/step_time_s": 2.0},
            {"step": 3, "eval/loss": 1.0}]
    ranks = [{"step_end_s": [1.0, 3.5, 4.5], "step_end_cpu_s": [10.0, 12.0, 13.0]},
             {"step_end_s": [1.1, 3.6, 4.6], "step_end_cpu_s": [20.0, 21.0, 23.0]}]
    out = bench.throughput(rows, ranks, warmup=1)
    assert out["steps"] == 3
    assert out["tokens_per_s"] == pytest.approx(400 / 2.5)
    assert out["tokens_per_s_median"] == pytest.approx((150 + 200) / 2)
    assert out["tokens_per_step"] == pytest.approx(200)
    assert out["tokens_per_s_wall"] == pytest.approx(400 / 3.5)  # rank 0: 4.5 - 1.0
    assert out["tokens_per_cpu_s"] == pytest.approx(400 / (3.0 + 3.0))


def test_bench_prints_one_json_line_per_case_on_a_tiny_run(tmp_path):
    cmd = [sys.executable, str(BENCH), "--jobs", "dpo", "--zero", "0", "--ranks", "1",
           "--steps", "2", "--warmup", "1", "--batch", "2", "--pairs", "8",
           "--num-prompts", "16", "--hidden", "32", "--layers", "1", "--heads", "2",
           "--intermediate", "64", "--max-length", "64", "--max-prompt-length", "32",
           "--variants", "default,grouped+precomputed", "--out-dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r.get("variant") for r in lines] == ["default", "grouped+precomputed"], done.stdout
    rec, precomputed = lines
    assert "error" not in rec and "error" not in precomputed, rec.get("log_tail")
    assert "ref_precompute_s" not in rec and precomputed["ref_precompute_s"] > 0
    for key in ("bench", "impl", "job", "zero", "ranks", "steps", "tokens_per_s",
                "tokens_per_s_median", "tokens_per_s_wall", "tokens_per_cpu_s",
                "peak_rss_mb_per_rank", "param_mb_per_rank", "optim_mb_per_rank",
                "ref_param_mb_per_rank"):
        assert key in rec, key
    assert (rec["bench"], rec["impl"], rec["job"], rec["zero"], rec["ranks"], rec["steps"]) == \
        ("train", "rlhf_dist", "dpo", 0, 1, 2)
    assert rec["tokens_per_s"] > 0
    assert len(rec["peak_rss_mb_per_rank"]) == 1 and rec["peak_rss_mb_per_rank"][0] > 0
    # 1 layer x 32 wide llama: every rank holds all parameters and two Adam moments of each
    assert rec["param_numel_local"] == [rec["param_numel_total"]]
    assert rec["param_mb_per_rank"][0] == pytest.approx(rec["param_numel_total"] * 4 / 2**20,
                                                        abs=1e-3)
    assert rec["optim_state_mb_per_rank"][0] == pytest.approx(2 * rec["param_mb_per_rank"][0],
                                                              abs=2e-3)  # MiB rounded to 1e-3
