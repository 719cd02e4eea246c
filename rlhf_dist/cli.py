"""``rlhf-dist COMMAND -c CONFIG.yaml key.sub=value …``

Works the same standalone, under ``deepspeed [--hostfile H] --module rlhf_dist.cli …`` and under
``torchrun … -m rlhf_dist.cli …``.  The config is loaded and validated before anything heavy is
imported, so a bad key fails in a second.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

from rlhf_dist.config import ConfigError, load_config, to_yaml
from rlhf_dist.config.usage import JOBS, job_of, unread_keys, user_keys
from rlhf_dist.data.errors import DataError
from rlhf_dist.models._common import ModelError
from rlhf_dist.trainers.preemption import PREEMPTED_EXIT, Preempted
from rlhf_dist.workers.errors import WorkerError, first_line

# command -> "module:function" taking a Config; imported only when the command runs.
# `dpo` runs DPO as dpo.mode says (launcher, or ray: DPO on the Ray actor group).
TRAINERS: Dict[str, str] = {
    "pretrain": "rlhf_dist.trainers.pretrain:run",
    "sft": "rlhf_dist.trainers.sft:run",
    "rm": "rlhf_dist.trainers.rm:run",
    "dpo": "rlhf_dist.trainers.dpo:run",
    "ppo": "rlhf_dist.trainers.ppo:run",
    "online-dpo": "rlhf_dist.trainers.online_dpo:run",
}

# alias -> (command, the keys it sets, after the user's): a shorthand, nothing more.
ALIASES: Dict[str, Tuple[str, List[str]]] = {
    "dpo-ray": ("dpo", ["dpo.mode=ray"]),
}

# commands with their own argument parser: "module:main" taking argv.
TOOLS: Dict[str, str] = {
    "demo": "rlhf_dist.demo:main",
    "eval": "rlhf_dist.eval.cli:main",
    "label": "rlhf_dist.rlaif.cli:main",
    "serve-rm": "rlhf_dist.serving.rm_server:main",
}


def _resolve(target: str) -> Callable:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _trainer_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"rlhf-dist {command}")
    parser.add_argument("-c", "--config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument(
        "--help-config",
        action="store_true",
        help="print every key this job reads, with its type, default and doc",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of a user error (bad config, data, model "
        "path) or a failed worker instead of the one-line message",
    )
    return parser


def _run_trainer(command: str, argv: List[str], alias: Optional[str] = None) -> int:
    """``command``'s job on the config of ``argv``; an ``alias`` (:data:`ALIASES`) adds its
    keys after the user's."""
    args = _trainer_parser(alias or command).parse_args(argv)
    forced = ALIASES[alias][1] if alias else []
    try:  # the job's sizes too: a bad one fails here, before anything starts
        cfg = load_config(args.config, [*args.overrides, *forced], job=command)
    except ConfigError as err:
        if args.help_config and command in JOBS:  # the keys' docs need no valid config
            print(_help_config(command), end="")
            return 0
        return _report(alias or command, "config error", str(err), 2)
    job = job_of(command, cfg)  # its name: `dpo` with dpo.mode=ray is dpo-ray
    if args.help_config:
        print(_help_config(job), end="")
        return 0
    _warn_unread(job, cfg, args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    try:
        _resolve(TRAINERS[command])(cfg)
    except Preempted as stop:
        return _report(job, "preempted", str(stop), PREEMPTED_EXIT)
    except Exception as err:  # noqa: BLE001 - sorted below: user errors, workers, bugs
        if args.debug:
            raise
        found = _known_error(err)
        if found is not None:  # the user's to fix (status 2), or a numerical fault (1)
            kind, culprit, status = found
            where = f"{err.where}: " if isinstance(err, WorkerError) and err.where else ""
            return _report(job, kind, where + first_line(culprit), status)
        if isinstance(err, WorkerError):  # a worker died or failed: named, no traceback
            return _report(job, "worker failed", first_line(err), 1)
        raise  # a bug: the traceback is what helps
    return 0


def _help_config(job: str) -> str:
    from rlhf_dist.config.docs import help_text, key_docs

    spec = JOBS[job]
    keys = [k.key for k in key_docs(spec.sections)]
    return help_text(spec.sections, dict(unread_keys(job, keys)))


def _warn_unread(job: str, cfg, path: Optional[str], overrides: List[str]) -> None:
    """One warning per key the user set that ``job`` (laid out as ``cfg`` says) does not
    read (rank 0 only)."""
    if os.environ.get("RANK", "0") != "0":
        return
    for key, why in unread_keys(job, user_keys(path, overrides), cfg):
        logging.getLogger("rlhf_dist.config").warning("%s is ignored: %s", key, why)


def _known_error(err: Optional[BaseException]):
    """(kind, the mistake or fault behind ``err`` -- itself or what a worker raised, exit
    status) for a user error or a numerical fault, else None."""
    from rlhf_dist.algo.finite import NonFiniteError
    from rlhf_dist.rewards import RewardError

    kinds = {
        ConfigError: ("config error", 2),
        DataError: ("data error", 2),
        ModelError: ("model error", 2),
        FileNotFoundError: ("missing file", 2),
        RewardError: ("reward error", 2),
        NonFiniteError: ("numerical fault", 1),
    }
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        for cls in type(err).__mro__:
            if cls in kinds:
                return (kinds[cls][0], err, kinds[cls][1])
        err = getattr(err, "cause", None) or err.__cause__  # RayTaskError.cause: the original
    return None


def _report(command: str, kind: str, message: str, status: int) -> int:
    """One line on stderr (from rank 0 only under a launcher), and the exit status."""
    if os.environ.get("RANK", "0") == "0":
        print(f"rlhf-dist {command}: {kind}: {message}", file=sys.stderr)
    return status


def _usage() -> str:
    names = ", ".join(sorted(TRAINERS) + sorted(TOOLS))
    aliases = "; ".join(
        f"{alias} = {command} {' '.join(keys)}" for alias, (command, keys) in ALIASES.items()
    )
    return (
        f"usage: rlhf-dist COMMAND [-c CONFIG] [key=value ...]\ncommands: {names}\n"
        f"aliases: {aliases}"
    )


def _drop_local_rank(argv: List[str]) -> List[str]:
    """The deepspeed launcher inserts ``--local_rank=N`` before the command; LOCAL_RANK in the
    environment says the same, so the flag is dropped wherever it stands."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--local_rank", "--local-rank"):
            skip = True
        elif not arg.startswith(("--local_rank=", "--local-rank=")):
            out.append(arg)
    return out


def _setup_logging() -> None:
    """Console logging once per process: INFO on rank 0 (metrics lines, resume notices),
    warnings only on the other ranks."""
    if logging.getLogger().handlers:
        return
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def main(argv: Optional[List[str]] = None) -> int:
    argv = _drop_local_rank(list(sys.argv[1:] if argv is None else argv))
    _setup_logging()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in ALIASES:
        return _run_trainer(ALIASES[command][0], rest, alias=command)
    if command in TRAINERS:
        return _run_trainer(command, rest)
    if command in TOOLS:
        return int(_resolve(TOOLS[command])(rest) or 0)
    print(f"rlhf-dist: unknown command {command!r}\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
