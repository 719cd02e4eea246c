import json
import logging

import numpy as np
import pytest
import torch

from rlhf_dist.config import LoggingConfig
from rlhf_dist.utils import Tracker, progress, read_metrics, resolve_wandb_mode

RUN_CONFIG = {"seed": 7, "train": {"lr": 0.001, "epochs": 2}}


def make_tracker(out, backend="wandb", mode="auto", is_main=True, **kw):
    cfg = LoggingConfig(
        backend=backend,
        mode=mode,
        project="rlhf-test",
        name="run-a",
        group="grp",
        tags=["unit", "cpu"],
    )
    return Tracker(cfg, out, RUN_CONFIG, is_main=is_main, job_type="sft", **kw)


def test_metrics_jsonl_holds_exact_values_one_line_per_call(tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="rlhf_dist.utils.tracking"):
        with make_tracker(out, backend="none") as tracker:
            tracker.log({"train/loss": 1.5, "train/lr": 1e-4}, step=1)
            tracker.log({"eval/reward": np.float32(0.25), "perf/tokens": torch.tensor(96)}, step=2)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == {"step": 1, "train/loss": 1.5, "train/lr": 1e-4}
    assert read_metrics(out) == [
        {"step": 1, "train/loss": 1.5, "train/lr": 1e-4},
        {"step": 2, "eval/reward": 0.25, "perf/tokens": 96.0},
    ]
    assert all(type(v) is float for k, v in json.loads(lines[1]).items() if k != "step")
    assert "step 1 | train/loss 1.5 | train/lr 0.0001" in caplog.text
    assert "step 2 | eval/reward 0.25 | perf/tokens 96" in caplog.text
    # backend none: no W&B at all
    assert tracker.run_dir is None and tracker.mode is None
    assert not (out / "wandb").exists()


def test_offline_wandb_run_records_metrics_config_and_names(tmp_path, wandb_run_reader):
    out = tmp_path / "run"
    tracker = make_tracker(out)
    tracker.log({"train/loss": 2.0, "train/reward": -0.5}, step=10)
    tracker.log({"train/loss": 0.75, "eval/acc": 0.625}, step=20)
    tracker.finish()

    assert tracker.mode == "offline"
    assert tracker.run_dir.parent == out / "wandb"
    assert tracker.run_dir.name.startswith("offline-run-")
    run = wandb_run_reader(tracker.run_dir)
    rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in run["history"]]
    assert rows == [
        {"step": 10, "train/loss": 2.0, "train/reward": -0.5},
        {"step": 20, "train/loss": 0.75, "eval/acc": 0.625},
    ]
    assert run["summary"]["train/loss"] == 0.75
    assert run["summary"]["train/reward"] == -0.5
    assert run["summary"]["eval/acc"] == 0.625
    assert run["summary"]["step"] == 20
    meta = run["run"]
    assert (meta.project, meta.display_name, meta.run_group, meta.job_type) == (
        "rlhf-test",
        "run-a",
        "grp",
        "sft",
    )
    assert list(meta.tags) == ["unit", "cpu"]
    config = {item.key: json.loads(item.value_json) for item in meta.config.update}
    assert config["seed"] == 7 and config["train"] == {"lr": 0.001, "epochs": 2}
    assert len(read_metrics(out)) == 2  # metrics.jsonl is written alongside W&B


def test_non_main_rank_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with make_tracker(out, is_main=False) as tracker:
        tracker.log({"train/loss": 1.0}, step=1)
    assert not out.exists()
    assert tracker.run_dir is None


def test_auto_mode_is_offline_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode("auto") == "offline"
    with make_tracker(tmp_path / "run", mode="auto") as tracker:
        tracker.log({"train/loss": 1.0}, step=1)
    assert tracker.mode == "offline"
    assert tracker.run_dir.name.startswith("offline-run-")


@pytest.mark.parametrize(
    "machine, base_url, expected",
    [
        ("api.wandb.ai", None, "online"),
        ("api.forge.coreweave.com", None, "online"),  # wandb 0.31's default server
        ("example.com", None, "offline"),
        ("localhost:8080", "http://localhost:8080", "online"),  # self-hosted: host:port
        ("api.wandb.ai", "http://localhost:8080", "offline"),
    ],
)
def test_auto_mode_follows_netrc_entry_for_the_wandb_host(
    offline_wandb_env, monkeypatch, machine, base_url, expected
):
    monkeypatch.delenv("WANDB_MODE")
    if base_url:
        monkeypatch.setenv("WANDB_BASE_URL", base_url)
    netrc_file = offline_wandb_env / ".netrc"
    netrc_file.write_text(f"machine {machine}\n  login user\n  password {'k' * 40}\n")
    netrc_file.chmod(0o600)
    assert resolve_wandb_mode("auto") == expected


def test_auto_mode_is_online_with_env_key(monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_wandb_mode("auto") == "online"
    assert resolve_wandb_mode("offline") == "offline"


def test_env_wandb_mode_wins_over_config(monkeypatch):
    assert resolve_wandb_mode("online") == "offline"  # fixture set WANDB_MODE=offline
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode("online") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"


def test_disabled_wandb_still_writes_metrics_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "run"
    with make_tracker(out) as tracker:
        tracker.log({"train/loss": 0.5}, step=3)
    assert (tracker.mode, tracker.run_dir) == ("disabled", None)
    assert read_metrics(out) == [{"step": 3, "train/loss": 0.5}]
    assert not (out / "wandb").exists()


@pytest.mark.parametrize("api_key", [None, "k" * 40], ids=["no-key", "unreachable-host"])
def test_failed_online_init_falls_back_to_offline(
    tmp_path, monkeypatch, caplog, api_key, wandb_run_reader
):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    if api_key:
        monkeypatch.setenv("WANDB_API_KEY", api_key)
    with caplog.at_level(logging.WARNING, logger="rlhf_dist.utils.tracking"):
        with make_tracker(tmp_path / "run", mode="online", init_timeout=1.0) as tracker:
            tracker.log({"train/loss": 3.0}, step=1)
    assert tracker.mode == "offline"
    assert "logging offline instead" in caplog.text
    # with a key, wandb tried the server we named (it caches env at its first init otherwise)
    assert ("127.0.0.1:9" if api_key else "No API key") in caplog.text
    assert wandb_run_reader(tracker.run_dir)["summary"]["train/loss"] == 3.0


def test_finish_is_idempotent_and_log_after_finish_fails(tmp_path):
    tracker = make_tracker(tmp_path / "run")
    tracker.finish()
    tracker.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        tracker.log({"train/loss": 1.0}, step=1)


def test_bad_metric_values_are_rejected(tmp_path):
    with make_tracker(tmp_path / "run", backend="none") as tracker:
        with pytest.raises(ValueError, match="reserved"):
            tracker.log({"step": 1.0}, step=1)
        with pytest.raises(TypeError, match="train/name"):
            tracker.log({"train/name": "abc"}, step=1)


def test_read_metrics_skips_a_truncated_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train/loss": 0.5}\n{"step": 2, "train/lo')
    assert read_metrics(path) == [{"step": 1, "train/loss": 0.5}]
    path.write_text('{"step": 1\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_metrics(path)


def test_progress_bar_only_when_enabled(capsys):
    assert list(progress(range(3), desc="train", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    assert list(progress(range(3), desc="train", enabled=True)) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "train" in err and "3/3" in err
    bar = progress(total=4, desc="ppo", enabled=True)  # manual updates, no iterable
    bar.update(4)
    bar.close()
    assert "4/4" in capsys.readouterr().err


def test_a_resumed_run_keeps_one_history_and_the_same_wandb_run(tmp_path, wandb_run_reader):
    """The dead run logged steps 1-3 (its checkpoint was at 2): the resumed tracker drops
    step 3's row from metrics.jsonl and resumes the first W&B run (same id, a second offline
    run directory that `wandb sync` merges into it)."""
    out = tmp_path / "run"
    first = make_tracker(out)
    for step in (1, 2, 3):
        first.log({"train/loss": float(step)}, step=step)
    first.finish(exit_code=1)
    resumed = make_tracker(out, resume_step=2)
    resumed.log({"train/loss": 30.0}, step=3)
    resumed.finish()
    assert [(r["step"], r["train/loss"]) for r in read_metrics(out)] == [
        (1, 1.0),
        (2, 2.0),
        (3, 30.0),
    ]
    assert resumed.run_dir != first.run_dir
    assert (
        wandb_run_reader(resumed.run_dir)["run"].run_id
        == wandb_run_reader(first.run_dir)["run"].run_id
        == (out / "wandb_run_id").read_text()
    )
