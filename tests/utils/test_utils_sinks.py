"""TensorBoard and MLflow backends (``logging.backend``), read back from what they wrote: the
same metrics at the same steps as ``metrics.jsonl``, and one history per run across a resume
(TensorBoard purges the dead run's events past the checkpoint; MLflow continues the first
start's run)."""

import json

import pytest

from rlhf_dist.config import LOGGING_BACKENDS, ConfigError, LoggingConfig
from rlhf_dist.utils import Tracker, read_metrics

RUN_CONFIG = {"seed": 7, "train": {"lr": 0.001}}


def _run(out, backend, steps, scale=1.0, resume_step=None):
    cfg = LoggingConfig(backend=backend, project="rlhf-test", name="run-a", tags=["cpu"])
    with Tracker(
        cfg, out, RUN_CONFIG, is_main=True, job_type="sft", resume_step=resume_step
    ) as tracker:
        for step in steps:
            tracker.log({"train/loss": scale * step, "eval/acc": 0.1 * step}, step=step)


def _interrupted_then_resumed(out, backend):
    """A run logs steps 1-4 and dies; the resume from the step-2 checkpoint logs 3-5 anew
    (other values: the redone steps differ from the dead run's)."""
    _run(out, backend, [1, 2, 3, 4])
    _run(out, backend, [3, 4, 5], scale=10.0, resume_step=2)
    return {row["step"]: row["train/loss"] for row in read_metrics(out)}


def test_tensorboard_events_are_the_metrics_with_one_history(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    expected = _interrupted_then_resumed(out, ["tensorboard"])
    assert expected == {1: 1.0, 2: 2.0, 3: 30.0, 4: 40.0, 5: 50.0}
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "eval/acc"}
    loss = {e.step: e.value for e in events.Scalars("train/loss")}
    assert loss == pytest.approx(expected)
    assert len(events.Scalars("train/loss")) == 5  # the dead run's steps 3 and 4 purged


def test_mlflow_run_holds_the_metrics_config_and_survives_a_resume(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    expected = _interrupted_then_resumed(out, "mlflow")
    client = MlflowClient((out / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("rlhf-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == (out / "mlflow_run_id").read_text()  # one run for both starts
    assert (run.info.run_name, run.info.status, run.data.tags["job_type"]) == (
        "run-a",
        "FINISHED",
        "sft",
    )
    history = client.get_metric_history(run.info.run_id, "train/loss")
    latest = {}
    for point in sorted(history, key=lambda m: m.timestamp):  # the resumed start's last
        latest[point.step] = point.value
    assert latest == pytest.approx(expected)
    artifact = client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))
    assert json.loads(open(artifact).read()) == RUN_CONFIG


def test_every_backend_and_all_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    from rlhf_dist.utils.tracking import _sink_classes

    assert set(_sink_classes()) == set(LOGGING_BACKENDS)
    _run(tmp_path / "all", list(LOGGING_BACKENDS), [1, 2])
    out = tmp_path / "all"
    assert (out / "tensorboard").is_dir() and (out / "mlruns").is_dir()
    assert list((out / "wandb").glob("offline-run-*"))
    assert [row["step"] for row in read_metrics(out)] == [1, 2]


@pytest.mark.parametrize(
    "value, message",
    [
        (["wandb", "wandb"], "names a backend twice"),
        (["none", "mlflow"], "none cannot be"),
        ("tb", "got 'tb', expected one of"),
        ([3], "a name or a list of names"),
    ],
)
def test_bad_backend_lists_name_the_key(value, message):
    with pytest.raises(ConfigError, match=rf"^logging\.backend: .*{message}"):
        LoggingConfig(backend=value)


def test_a_missing_package_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    with pytest.raises(
        ConfigError,
        match=r"^logging\.backend=tensorboard: the tensorboard "
        r"package is not installed; pip install -e "
        r'"\.\[tensorboard\]"',
    ):
        _run(tmp_path / "x", "tensorboard", [1])


def test_no_backend_and_a_failing_one(tmp_path, monkeypatch):
    """``backend: null`` is none; a backend that fails to start closes those already started,
    and one that fails to finish does not keep the others open."""
    from rlhf_dist.utils import tracking

    assert LoggingConfig(backend=None).backends == []
    closed = []

    class Sink:
        def __init__(self, *args):
            self.name = args[0].project

        def finish(self, exit_code):
            closed.append((self.name, exit_code))
            if self.name == "bad-finish":
                raise RuntimeError("cannot close")

    class Broken:
        def __init__(self, *args):
            raise ConfigError("logging.backend=mlflow: the mlflow package is not installed")

    monkeypatch.setattr(
        tracking, "_sink_classes", lambda: {"wandb": Sink, "tensorboard": Sink, "mlflow": Broken}
    )
    cfg = LoggingConfig(backend=["wandb", "tensorboard", "mlflow"], project="p")
    with pytest.raises(ConfigError, match="mlflow package is not installed"):
        Tracker(cfg, tmp_path, RUN_CONFIG, is_main=True, job_type="sft")
    assert closed == [("p", 1), ("p", 1)]
    closed.clear()
    tracker = Tracker(
        LoggingConfig(backend=["wandb", "tensorboard"], project="bad-finish"),
        tmp_path,
        RUN_CONFIG,
        is_main=True,
        job_type="sft",
    )
    with pytest.raises(RuntimeError, match="cannot close"):
        tracker.finish()
    assert closed == [("bad-finish", 0), ("bad-finish", 0)]  # the second closed as well
