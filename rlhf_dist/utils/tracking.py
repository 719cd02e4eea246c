"""Experiment tracking: ``metrics.jsonl`` + console always; W&B, TensorBoard and MLflow when
``logging.backend`` lists them (the last two in :mod:`rlhf_dist.utils.sinks`); progress bars.

Only the main rank logs; on other ranks :class:`Tracker` is a no-op.  Each backend's package is
imported lazily (they are slow to import) and only when it is listed.

W&B mode: ``WANDB_MODE`` in the environment wins; otherwise ``logging.mode``, where ``auto``
means online only when a key is configured (``WANDB_API_KEY`` or a netrc entry for the W&B
host), offline otherwise.  Nothing here waits on the network: offline mode touches none, and a
failing online ``wandb.init`` (no key, no route, timeout) falls back to offline with a warning.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from rlhf_dist.config import LoggingConfig

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
WANDB_RUN_ID_FILE = "wandb_run_id"
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}


# --------------------------------------------------------------------------- W&B mode


# wandb's default server, and the W&B API host it forwards to; wandb accepts a netrc entry
# for either (wandb.sdk.lib.wbauth.wbnetrc).
_DEFAULT_WANDB_HOSTS = ("api.forge.coreweave.com", "api.wandb.ai")


def _wandb_hosts() -> Sequence[str]:
    """netrc ``machine`` names that hold a key for the server W&B will talk to."""
    base_url = os.environ.get("WANDB_BASE_URL")
    return (urlsplit(base_url).netloc,) if base_url else _DEFAULT_WANDB_HOSTS


def _netrc_has_key(hosts: Sequence[str]) -> bool:
    """True when the netrc file (``$NETRC`` or ``~/.netrc``) has a password for one of hosts."""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    if not path.is_file():
        return False
    try:
        parsed = netrc.netrc(str(path))
    except (netrc.NetrcParseError, OSError) as err:
        logger.warning("cannot read %s (%s); treating W&B as not logged in", path, err)
        return False
    entries = [parsed.authenticators(host) for host in hosts]
    return any(entry and entry[2] for entry in entries)


def wandb_key_configured() -> bool:
    """A W&B API key is available without asking anyone: env var or netrc entry."""
    return bool(os.environ.get("WANDB_API_KEY")) or _netrc_has_key(_wandb_hosts())


def resolve_wandb_mode(mode: str) -> str:
    """The mode passed to ``wandb.init``: env ``WANDB_MODE`` > ``mode`` (auto → key check)."""
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        return _MODE_ALIASES.get(env_mode, env_mode)
    if mode == "auto":
        return "online" if wandb_key_configured() else "offline"
    return mode


# --------------------------------------------------------------------------- tracker


def _as_floats(metrics: Mapping[str, Any]) -> Dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key == "step":
            raise ValueError("metric name 'step' is reserved; pass the step as Tracker.log(step=)")
        try:
            out[key] = float(value)  # python/numpy numbers and 0-d tensors
        except (TypeError, ValueError):
            raise TypeError(f"metric {key!r}: expected a number, got {value!r}") from None
    return out


def _console_line(metrics: Mapping[str, float], step: int) -> str:
    parts = [f"{key} {value:.4g}" for key, value in metrics.items()]
    return " | ".join([f"step {step}"] + parts)


class WandbSink:
    """The W&B run of a job: ``mode`` the mode it really uses ("online"/"offline"/
    "disabled"), ``run_dir`` its directory (``<output_dir>/wandb/offline-run-*`` offline; None
    when disabled).  A resumed job resumes the W&B run of its first start (its id is kept in
    ``<output_dir>/wandb_run_id``); W&B cannot delete rows, so its history keeps the dead
    run's rows past the checkpoint next to the new ones at the same ``step``."""

    def __init__(
        self,
        cfg: LoggingConfig,
        output_dir: Path,
        run_config: Dict[str, Any],
        job_type: str,
        resume_step: Optional[int],
        init_timeout: float = 60.0,
    ):
        import wandb  # lazy: slow import

        mode = resolve_wandb_mode(cfg.mode)
        kwargs = dict(
            project=cfg.project,
            name=cfg.name,
            group=cfg.group,
            tags=list(cfg.tags) or None,
            config=run_config,
            dir=str(output_dir),
            job_type=job_type,
        )
        id_file = output_dir / WANDB_RUN_ID_FILE
        if resume_step is not None and id_file.is_file():
            kwargs.update(id=id_file.read_text().strip(), resume="allow")
        settings = wandb.Settings(init_timeout=init_timeout, reinit="create_new")
        if os.environ.get("WANDB_BASE_URL"):  # read now: wandb caches env at its first init
            settings.base_url = os.environ["WANDB_BASE_URL"]
        try:
            run = wandb.init(mode=mode, settings=settings, **kwargs)
        except Exception as err:  # noqa: BLE001 - any init failure must not stop training
            if mode != "online":
                raise
            logger.warning(
                "wandb.init online failed (%s); logging offline instead",
                str(err).splitlines()[0] if str(err) else type(err).__name__,
            )
            mode = "offline"
            run = wandb.init(mode=mode, settings=settings, **kwargs)
        if mode != "disabled":
            id_file.write_text(run.id)
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        self.run, self.mode = run, mode
        sync_dir = getattr(run.settings, "sync_dir", None)
        self.run_dir = Path(sync_dir) if sync_dir and mode != "disabled" else None

    def log(self, values: Dict[str, float], step: int) -> None:
        self.run.log({"step": step, **values})

    def finish(self, exit_code: int) -> None:
        self.run.finish(exit_code=exit_code)


def _sink_classes() -> Dict[str, Any]:
    """``logging.backend`` name -> its sink class (:data:`~rlhf_dist.config.LOGGING_BACKENDS`
    lists the same names)."""
    from rlhf_dist.utils.sinks import MlflowSink, TensorBoardSink

    return {"wandb": WandbSink, "tensorboard": TensorBoardSink, "mlflow": MlflowSink}


class Tracker:
    """One tracking run per job.  ``log`` writes ``<output_dir>/metrics.jsonl`` (one JSON object
    per call: ``step`` plus the metric names as given), a console line, and the same metrics at
    the same step to each backend of ``logging.backend`` (W&B, TensorBoard, MLflow).

    ``resume_step`` (a resumed run: the checkpoint's step) keeps one history per run: rows of
    ``metrics.jsonl`` after that step (logged by the run that died) are dropped, TensorBoard's
    events after it are purged, and the W&B / MLflow run of the first start is continued
    rather than a second one opened (neither can delete points: the dead run's points past the
    checkpoint stay next to the new ones at the same ``step``).

    ``run_dir`` / ``mode``: the W&B run's (:class:`WandbSink`), None without W&B or on
    non-main ranks.
    """

    def __init__(
        self,
        logging_cfg: LoggingConfig,
        output_dir: str | os.PathLike,
        run_config: Dict[str, Any],
        is_main: bool,
        job_type: str,
        init_timeout: float = 60.0,
        resume_step: Optional[int] = None,
    ):
        self.is_main = is_main
        self.output_dir = Path(output_dir)
        self.metrics_path = self.output_dir / METRICS_FILE
        self.mode: Optional[str] = None
        self.run_dir: Optional[Path] = None
        self._sinks: List[Any] = []
        self._finished = False
        if not is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.rewind(resume_step)
        classes = _sink_classes()
        for name in logging_cfg.backends:
            try:
                self._sinks.append(
                    classes[name](
                        logging_cfg,
                        self.output_dir,
                        run_config,
                        job_type,
                        resume_step,
                        init_timeout,
                    )
                )
            except BaseException:
                self.finish(exit_code=1)  # the backends already started are closed
                raise
        for sink in self._sinks:
            if isinstance(sink, WandbSink):
                self.mode, self.run_dir = sink.mode, sink.run_dir

    def rewind(self, step: int) -> None:
        """Drop the ``metrics.jsonl`` rows after ``step`` (work redone after a resume)."""
        if not self.is_main or not self.metrics_path.is_file():
            return
        kept = [row for row in read_metrics(self.metrics_path) if row["step"] <= step]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record ``metrics`` (names as given, e.g. ``train/loss``) at ``step``."""
        if not self.is_main:
            return
        if self._finished:
            raise RuntimeError("Tracker.log called after finish()")
        values = _as_floats(metrics)
        record = {"step": int(step), **values}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        logger.info(_console_line(values, step))
        for sink in self._sinks:
            sink.log(values, int(step))

    def finish(self, exit_code: int = 0) -> None:
        """Close every backend's run (flushes W&B's offline file, TensorBoard's events).  Safe
        to call twice."""
        if self._finished:
            return
        self._finished = True
        failed = None
        for sink in self._sinks:  # each backend closed, even after another one failed
            try:
                sink.finish(exit_code)
            except Exception as err:  # noqa: BLE001 - raised after the others are closed
                failed = failed or err
        if failed is not None:
            raise failed

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def read_metrics(path: str | os.PathLike) -> List[Dict[str, float]]:
    """Rows of a ``metrics.jsonl`` (or of ``<path>/metrics.jsonl`` for a run directory).

    A truncated last line (a crash mid-write) is skipped; a bad line elsewhere raises.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
    return rows


# --------------------------------------------------------------------------- progress


def progress(
    iterable: Optional[Iterable] = None,
    total: Optional[int] = None,
    desc: str = "",
    enabled: bool = True,
):
    """A tqdm bar (``n/total``, rate, ETA) when ``enabled`` (pass ``is_main and
    logging.progress_bar``); otherwise a disabled tqdm, i.e. a plain pass-through over
    ``iterable`` that still accepts ``update``/``set_postfix``/``close``.
    """
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, dynamic_ncols=True)
