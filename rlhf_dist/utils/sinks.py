"""TensorBoard and MLflow as ``logging.backend`` entries (W&B's is in ``tracking.py``): the
same metrics at the same steps as ``metrics.jsonl``, one run per job across resumes.

* ``tensorboard``: event files under ``<output_dir>/tensorboard`` (``tensorboard --logdir``
  there); a resumed job purges the events after its checkpoint's step, so the history is one.
* ``mlflow``: ``MLFLOW_TRACKING_URI`` when set, else a local file store in
  ``<output_dir>/mlruns`` (``mlflow ui --backend-store-uri <output_dir>/mlruns``); experiment
  ``logging.project``, run name ``logging.name``, the resolved config as the run's
  ``config.json`` artifact; a resumed job continues its first start's run (its id is kept in
  ``<output_dir>/mlflow_run_id``).

Each needs its package (``pip install -e ".[tensorboard]"`` / ``".[mlflow]"``); a missing one
is a :class:`~rlhf_dist.config.ConfigError` naming the extra.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

from rlhf_dist.config import ConfigError, LoggingConfig

MLFLOW_RUN_ID_FILE = "mlflow_run_id"


def _require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"logging.backend={extra}: the {module} package is not installed; "
            f'pip install -e ".[{extra}]"'
        )


class TensorBoardSink:
    def __init__(
        self,
        cfg: LoggingConfig,
        output_dir: Path,
        run_config: Dict[str, Any],
        job_type: str,
        resume_step: Optional[int],
        init_timeout: float = 60.0,
    ):
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = output_dir / "tensorboard"
        # purge_step: events at steps >= it, written by the run that died, are dropped
        self.writer = SummaryWriter(
            str(self.log_dir), purge_step=None if resume_step is None else resume_step + 1
        )

    def log(self, values: Dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, exit_code: int) -> None:
        self.writer.close()


class MlflowSink:
    def __init__(
        self,
        cfg: LoggingConfig,
        output_dir: Path,
        run_config: Dict[str, Any],
        job_type: str,
        resume_step: Optional[int],
        init_timeout: float = 60.0,
    ):
        _require("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a local file store: MLflow 3 asks for this opt-in to use one
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (output_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(uri)
        id_file = output_dir / MLFLOW_RUN_ID_FILE
        if resume_step is not None and id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(cfg.project)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(cfg.project)
        )
        tags = {"job_type": job_type, **{f"tag.{t}": "1" for t in cfg.tags}}
        if cfg.group:
            tags["group"] = cfg.group
        run = self.client.create_run(experiment_id, run_name=cfg.name, tags=tags)
        self.run_id = run.info.run_id
        id_file.write_text(self.run_id)
        self.client.log_dict(self.run_id, run_config, "config.json")

    def log(self, values: Dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(key, value, stamp, step) for key, value in values.items()]
        )

    def finish(self, exit_code: int) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if exit_code == 0 else "FAILED")
