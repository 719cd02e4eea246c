"""``rlhf-dist eval``: evaluate saved models on a prompt set and write the comparison table.

Example (the toy task's held-out prompts, a reward model as judge, win rates against SFT)::

    rlhf-dist eval --models sft=out/sft,ppo=out/ppo,dpo=out/dpo --reward-model out/rm \\
        --prompts toy --reference toy --baseline sft --output-dir out/eval

As an agent (``--env NAME``, or a ``-c`` config whose ``env.name`` is set; the toy calculator
task: ``-c configs/tiny/agent_calculator.yaml``), every answer is a multi-turn trajectory
against that environment and the table gains success rate, environment reward, turns, tool
calls and tool errors per trajectory (:mod:`rlhf_dist.eval.agent`).

Writes ``eval.json``, ``eval.md`` and ``samples.jsonl`` (see :mod:`rlhf_dist.eval.report`)
into ``--output-dir``, prints the table, and logs every number to W&B (offline unless a key is
configured; ``--no-wandb`` turns it off) and ``metrics.jsonl``.  Every path is checked before
anything is loaded: a missing one exits with status 2 and a message naming its flag.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from rlhf_dist.config.tool_args import add_section_args, given, resolve_sections, typed_flag

PROG = "rlhf-dist eval"
# the typed sections' keys eval reads; each one's flag is generated (config/tool_args.py)
KEYS = (
    "rollout.n_samples_per_prompt",
    "rollout.max_new_tokens",
    "rollout.temperature",
    "rollout.top_p",
    "rollout.top_k",
    "rollout.rollout_batch_size",
    "seed",
    "rollout.backend",
    "data.max_length",
    "data.max_prompt_length",
    "data.prompt_key",
    "data.response_key",
    "data.label_key",
    "env.max_turns",
    "env.max_trajectory_tokens",
    "env.step_timeout_s",
    "env.on_error",
    "env.tool_format",
)
DEFAULTS = {"rollout.rollout_batch_size": 16, "seed": 0}


class UsageError(ValueError):
    """A bad command line: printed with the program name, exit status 2."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate saved models: reward-model "
        "score, win rate vs a baseline, perplexity, Distinct-1/2, "
        "Self-BLEU and, on the toy task, harmlessness / helpfulness.",
    )
    g = p.add_argument_group("models")
    g.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="a causal LM directory (or hub name); repeatable; the name defaults "
        "to the directory name",
    )
    g.add_argument(
        "--models",
        action="append",
        default=[],
        metavar="NAME=PATH,...",
        help="several named models at once, comma-separated",
    )
    g.add_argument(
        "--reward-model",
        metavar="PATH",
        help="reward model scoring the answers (reward mean/std, win rates)",
    )
    g.add_argument(
        "--baseline",
        metavar="NAME",
        help="win rate of every model against this one (needs --reward-model)",
    )
    g.add_argument(
        "--reward-fn",
        metavar="NAME|module:function",
        help="a verifier scoring each answer 1 (correct) or 0: a built-in (math, "
        "exact_match, regex_format) or module:function; reports accuracy "
        "(pass@1) and pass@k with k = --n-samples-per-prompt; each prompt's "
        "label comes from the --label-key column",
    )
    g.add_argument(
        "--env",
        metavar="NAME|module:Class",
        default=None,
        help="evaluate as an agent: each answer is a multi-turn trajectory against "
        "this environment (env.name: a built-in such as toy_calculator or "
        "module:Class; env.args / env.tools as KEY=VALUE overrides or from -c); "
        "reports success_rate, env_reward_mean, turns, tool calls and tool "
        "errors per trajectory; the --label-key column is each row's label",
    )
    g.add_argument(
        "--tie-eps",
        type=float,
        default=0.0,
        help="score differences up to this are ties (default 0)",
    )
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:0 …")
    d = p.add_argument_group("data")
    d.add_argument(
        "--prompts",
        default="toy",
        metavar="FILE|toy",
        help="prompts: 'toy' (held-out toy prompts), a jsonl/json/parquet/csv "
        "file, a directory or a hub dataset (default toy)",
    )
    d.add_argument(
        "--split", default=None, help="split to read (default: eval for toy, train for files)"
    )
    d.add_argument(
        "--max-prompts",
        type=_positive_int,
        default=None,
        metavar="N",
        help="use the first N prompts",
    )
    d.add_argument(
        "--reference",
        default=None,
        metavar="FILE|toy",
        help="prompt/response rows for perplexity ('toy': held-out SFT answers)",
    )
    p.add_argument(
        "--greedy",
        action="store_true",
        help="greedy decoding instead of sampling (rollout.do_sample=false)",
    )
    # sampling, lengths and the prompts' columns (data.prompt_key; data.response_key of
    # --reference; data.label_key for --reward-fn); perplexity and reward scores stay on the
    # HF model whatever the backend
    add_section_args(
        p, KEYS, DEFAULTS, title="sampling, lengths and columns (the typed rollout / data sections)"
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--output-dir",
        required=True,
        metavar="DIR",
        help="where eval.json, eval.md, samples.jsonl (and the W&B run) go",
    )
    o.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    o.add_argument("--wandb-project", default="rlhf_dist")
    o.add_argument("--run-name", default=None, help="W&B run name")
    return p


# --------------------------------------------------------------------------- checks


def _name_of(path: str) -> str:
    return Path(os.path.normpath(path)).name or path


def _split_named(value: str, flag: str, require_name: bool) -> Tuple[Optional[str], str]:
    """``NAME=PATH`` → (NAME, PATH); a bare ``PATH`` → (None, PATH) unless a name is required."""
    name, sep, path = value.partition("=")
    if sep and name and "/" not in name and not os.path.exists(value):
        if not path:
            raise UsageError(f"{flag}: {value!r} has no path after '='")
        return name, path
    if require_name:
        raise UsageError(f"{flag}: expected NAME=PATH, got {value!r}")
    return None, value


def parse_models(
    model_args: Sequence[str], models_args: Sequence[str]
) -> Dict[str, Tuple[str, str]]:
    """name → (path, flag that gave it), in command-line order (``--model`` first)."""
    entries: List[Tuple[str, str, str]] = []
    for value in model_args:
        name, path = _split_named(value, "--model", require_name=False)
        entries.append((name or _name_of(path), path, "--model"))
    for group in models_args:
        for value in filter(None, (v.strip() for v in group.split(","))):
            name, path = _split_named(value, "--models", require_name=True)
            entries.append((name, path, "--models"))
    if not entries:
        raise UsageError("no model to evaluate: give --model PATH or --models NAME=PATH,...")
    out: Dict[str, Tuple[str, str]] = {}
    for name, path, flag in entries:
        if name in out:
            raise UsageError(
                f"{flag}: model name {name!r} is used twice; name them with --models NAME=PATH,..."
            )
        out[name] = (path, flag)
    return out


def check_model_path(path: str, flag: str) -> None:
    """A local path that does not exist, or a directory that holds no model → :class:`UsageError`
    naming ``flag`` and the path."""
    from rlhf_dist.models._common import require_model_dir

    try:
        require_model_dir(path, flag)
    except ValueError as err:
        raise UsageError(str(err)) from None


def check_data_path(path: Optional[str], flag: str) -> None:
    from rlhf_dist.data import classify_path

    if path is not None and classify_path(path) == "missing path":
        raise UsageError(f"{flag}: {path!r} does not exist")


def check_args(args: argparse.Namespace, agent: bool = False) -> Dict[str, Tuple[str, str]]:
    """Every check that needs no model loaded (``agent``: an environment is named); returns
    the parsed models."""
    models = parse_models(args.model, args.models)
    for path, flag in models.values():
        check_model_path(path, flag)
    if args.reward_model is not None:  # its paths and its head, before any answer is sampled
        from rlhf_dist.config import ModelConfig
        from rlhf_dist.models.scalar_loader import check_reward_source

        try:
            check_reward_source(ModelConfig(name_or_path=args.reward_model), "--reward-model")
        except ValueError as err:
            raise UsageError(str(err)) from None
    check_data_path(args.prompts, "--prompts")
    check_data_path(args.reference, "--reference")
    if args.baseline is not None:
        if args.baseline not in models:
            raise UsageError(
                f"--baseline: {args.baseline!r} is not a model name (models: {', '.join(models)})"
            )
        if args.reward_model is None:
            raise UsageError("--baseline needs --reward-model to judge the answers")
    if args.tie_eps < 0:
        raise UsageError(f"--tie-eps must be >= 0, got {args.tie_eps}")
    if given(args, "data.label_key") and args.reward_fn is None and not agent:
        raise UsageError(
            f"{typed_flag(args, 'data.label_key')} gives labels to --reward-fn "
            "or an environment (--env): name one"
        )
    check_backend_args(args, models)
    return models


def check_backend_args(args: argparse.Namespace, models: Dict[str, Tuple[str, str]]) -> None:
    """``--backend``'s checks of every model (vllm: installed, a local directory it can
    serve); a :class:`~rlhf_dist.config.ConfigError` naming the flag."""
    from rlhf_dist.rollout.backends import check_backend

    for path, flag in models.values():
        check_backend(
            args.backend,
            path,
            args.max_prompt_length + args.max_new_tokens,
            field="--backend",
            model_field=f"{flag} {path}",
        )


# --------------------------------------------------------------------------- run


# eval.json's settings under their names there (older flag names), from args' attributes
_SETTINGS = {
    "num_samples": "n_samples_per_prompt",
    "batch_size": "rollout_batch_size",
    "labels_key": "label_key",
}


def _settings(args: argparse.Namespace, n_prompts: int, n_reference: int) -> Dict[str, object]:
    keys = (
        "prompts",
        "prompt_key",
        "split",
        "max_prompts",
        "reference",
        "response_key",
        "reward_model",
        "baseline",
        "tie_eps",
        "max_new_tokens",
        "num_samples",
        "greedy",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "batch_size",
        "max_length",
        "max_prompt_length",
        "device",
        "backend",
        "reward_fn",
        "labels_key",
        "env",
        "max_turns",
        "max_trajectory_tokens",
    )
    return {
        **{k: getattr(args, _SETTINGS.get(k, k)) for k in keys},
        "num_prompts": n_prompts,
        "num_reference": n_reference,
    }


def _wandb_metrics(metrics: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    return {
        f"eval/{name}/{key}": value
        for name, row in metrics.items()
        for key, value in row.items()
        if value is not None and math.isfinite(value)
    }


def load_verifier(spec: Optional[str], label_key: Optional[str]):
    """``--reward-fn`` as a reward function (``rlhf_dist.rewards``), or None."""
    if spec is None:
        return None
    from rlhf_dist.rewards import RewardFunction
    from rlhf_dist.rewards.verifiers import NEEDS_LABELS

    if spec in NEEDS_LABELS and label_key is None:
        raise UsageError(
            f"--reward-fn {spec} compares answers with each prompt's label: "
            "give --label-key (data.label_key, the label column)"
        )
    return RewardFunction(spec, field="--reward-fn")


def run(args: argparse.Namespace) -> int:
    from rlhf_dist.config import LoggingConfig
    from rlhf_dist.eval.evaluate import evaluate_models
    from rlhf_dist.eval.inputs import load_prompts, load_reference
    from rlhf_dist.eval.report import report_markdown, write_report
    from rlhf_dist.utils import Tracker

    from rlhf_dist.config import ModelConfig

    from rlhf_dist.envs import check_env

    cfg = resolve_sections(
        args,
        KEYS,
        DEFAULTS,
        (["rollout.do_sample=false"] if args.greedy else [])
        + ([f"env.name={args.env}"] if args.env else []),
    )
    rollout = cfg.rollout
    agent = cfg if cfg.env.enabled else None
    args.env = cfg.env.name
    check_env(cfg.env)  # the environment, its args and tools import: before any model loads
    models = check_args(args, agent=agent is not None)
    # a label column from the YAML (data.label_key) is only read with a verifier or an env
    label_key = args.label_key if args.reward_fn is not None or agent else None
    verifier = load_verifier(args.reward_fn, label_key)
    prompt_set = load_prompts(
        args.prompts, args.prompt_key, args.split, args.max_prompts, label_key
    )
    reference = (
        load_reference(args.reference, args.prompt_key, args.response_key, args.split)
        if args.reference is not None
        else None
    )
    settings = _settings(args, len(prompt_set.prompts), len(reference or []))
    logging_cfg = LoggingConfig(
        backend="none" if args.no_wandb else "wandb",
        project=args.wandb_project,
        name=args.run_name,
        progress_bar=False,
    )
    with Tracker(logging_cfg, args.output_dir, settings, is_main=True, job_type="eval") as tracker:
        # the policies in model.dtype (and a vllm engine with them); the engine's memory, batch
        # and length limits from resources.rollout
        report = evaluate_models(
            {
                name: ModelConfig(name_or_path=path, dtype=cfg.model.dtype)
                for name, (path, _) in models.items()
            },
            prompt_set.prompts,
            kinds=prompt_set.kinds if prompt_set.has_kinds else None,
            reward_model=args.reward_model,
            reference=reference,
            baseline=args.baseline,
            tie_eps=args.tie_eps,
            rollout=rollout,
            seed=args.seed,
            batch_size=args.rollout_batch_size,
            max_length=args.max_length,
            max_prompt_length=args.max_prompt_length,
            device=args.device,
            backend=args.backend,
            verifier=verifier,
            labels=prompt_set.labels,
            engines=cfg.resources.rollout,
            agent=agent,
        )
        paths = write_report(
            report, args.output_dir, {name: path for name, (path, _) in models.items()}, settings
        )
        tracker.log(_wandb_metrics(report.metrics), step=0)
    print(report_markdown(report))
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['samples']}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from rlhf_dist.config import ConfigError
    from rlhf_dist.data import DataError
    from rlhf_dist.models import ModelError
    from rlhf_dist.envs import EnvError
    from rlhf_dist.rewards import RewardError

    try:
        return run(args)
    except (UsageError, ConfigError, DataError, ModelError, RewardError, EnvError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
