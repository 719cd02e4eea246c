"""Crash-safe checkpoint directories (pure filesystem; no torch, no distributed calls).

Layout under ``<output_dir>/checkpoints/``::

    step_000012/            a committed checkpoint
        COMPLETE            marker, written last before the rename
        trainer_state.json  {"global_step": 12, ...caller's state}
        ...                 whatever the engine / ranks wrote (weights, optimizer, rng files)
    .tmp-step_000016/       being written (or left by a crash): never resumed from

Protocol (the caller does the barriers):
  1. main rank: ``clean_staging()`` once at start; barrier.
  2. every rank: ``path = staging(step)``; write its files there; barrier.
  3. main rank: ``commit(step, trainer_state)`` → ``trainer_state.json``, fsync, ``COMPLETE``,
     rename to ``step_000012``, prune to the newest ``keep_last``; barrier.
A checkpoint is complete iff it is a ``step_*`` directory holding ``COMPLETE``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from rlhf_dist.config import CheckpointConfig

logger = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
STAGING_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
_STEP_RE = re.compile(r"^step_(\d+)$")


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def is_complete(path: str | os.PathLike) -> bool:
    return (Path(path) / COMPLETE).is_file()


def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (directory entries); silently skipped where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def _write_durable(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class CheckpointDir:
    """The checkpoints of one run, in ``root`` (normally ``<output_dir>/checkpoints``)."""

    def __init__(self, root: str | os.PathLike, keep_last: int):
        if keep_last < 1:
            raise ValueError(f"checkpoint.keep_last: must be >= 1, got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last

    @classmethod
    def for_run(cls, output_dir: str | os.PathLike, cfg: CheckpointConfig) -> "CheckpointDir":
        return cls(Path(output_dir) / "checkpoints", cfg.keep_last)

    # ------------------------------------------------------------------ writing

    def staging(self, step: int) -> Path:
        """The temporary directory for ``step`` (created; any rank may call it)."""
        path = self.root / f"{STAGING_PREFIX}{step_name(step)}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, step: int, trainer_state: Dict[str, Any]) -> Path:
        """Main rank, after every rank has written into ``staging(step)``: seal and publish it."""
        staging = self.staging(step)
        state = {**trainer_state, "global_step": int(step)}
        _write_durable(staging / TRAINER_STATE, json.dumps(state, indent=2, sort_keys=True))
        _fsync_tree(staging)
        _write_durable(staging / COMPLETE, f"{step}\n")
        _fsync_path(staging)
        final = self.root / step_name(step)
        self._replace_dir(staging, final)
        _fsync_path(self.root)
        self.prune()
        logger.info("saved checkpoint %s", final)
        return final

    def _replace_dir(self, src: Path, dst: Path) -> None:
        """Rename ``src`` to ``dst``; an existing ``dst`` (same step saved again) is replaced."""
        if not dst.exists():
            os.replace(src, dst)
            return
        old = self.root / f"{_OLD_PREFIX}{dst.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)

    def prune(self) -> List[Path]:
        """Delete complete checkpoints older than the newest ``keep_last``; return them."""
        complete, _ = self._scan()
        doomed = [path for _, path in complete[: -self.keep_last]]
        for path in doomed:
            shutil.rmtree(path)
            logger.info("removed old checkpoint %s", path)
        return doomed

    def clean_staging(self) -> List[Path]:
        """Main rank, at start (before any rank stages): remove leftovers of a crashed save."""
        if not self.root.is_dir():
            return []
        stale = [
            p
            for p in sorted(self.root.iterdir())
            if p.is_dir() and p.name.startswith((STAGING_PREFIX, _OLD_PREFIX))
        ]
        for path in stale:
            logger.warning("removing unfinished checkpoint %s from an earlier run", path)
            shutil.rmtree(path)
        return stale

    # ------------------------------------------------------------------ reading

    def _scan(self) -> Tuple[List[Tuple[int, Path]], List[Path]]:
        """(complete step dirs sorted by step, incomplete/staging dirs)."""
        complete, incomplete = [], []
        if not self.root.is_dir():
            return complete, incomplete
        for path in sorted(self.root.iterdir()):
            if not path.is_dir():
                continue
            match = _STEP_RE.match(path.name)
            if match and is_complete(path):
                complete.append((int(match.group(1)), path))
            elif match or path.name.startswith(STAGING_PREFIX):
                incomplete.append(path)
        complete.sort()
        return complete, incomplete

    def latest(self) -> Optional[Path]:
        """The newest complete checkpoint, or None; warns about each incomplete one ignored."""
        complete, incomplete = self._scan()
        good = complete[-1][1] if complete else None
        for path in incomplete:
            logger.warning(
                "ignoring incomplete checkpoint %s; resuming from %s",
                path,
                good if good is not None else "scratch (no complete checkpoint)",
            )
        return good

    def resolve(self, resume: str) -> Optional[Path]:
        """``checkpoint.resume`` → a checkpoint directory: none → None, auto → ``latest()``,
        otherwise a path that must exist and be complete (ValueError otherwise)."""
        if resume == "none":
            return None
        if resume == "auto":
            return self.latest()
        path = Path(resume)
        if not path.is_dir():
            raise ValueError(f"checkpoint.resume: {path} does not exist or is not a directory")
        if not is_complete(path):
            raise ValueError(
                f"checkpoint.resume: {path} is not a complete checkpoint (no "
                f"{COMPLETE} marker; the save was interrupted)"
            )
        return path

    @staticmethod
    def load_state(path: str | os.PathLike) -> Dict[str, Any]:
        """The ``trainer_state.json`` of a complete checkpoint."""
        path = Path(path)
        if not is_complete(path):
            raise ValueError(f"{path} is not a complete checkpoint (no {COMPLETE} marker)")
        return json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
