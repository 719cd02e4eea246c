"""``rlhf-dist label``: RLAIF preference labelling from the command line.

    rlhf-dist label --policy outputs/sft/model --judge rm:outputs/rm/model --prompts toy \\
        -k 4 --output pairs.jsonl
    rlhf-dist label --policy outputs/sft/model \\
        --judge rlhf_dist.rlaif.judges:toy_rule_judge --prompts prompts.jsonl -k 4 \\
        --strategy best_worst --min-margin 0.5 --output pairs.jsonl
    rlhf-dist dpo -c configs/tiny/dpo.yaml data.path=pairs.jsonl

A judge module is imported with the current directory on ``sys.path`` (``--judge
myjudges:score`` finds ``./myjudges.py``).  Every argument is checked (and the judge loaded)
before the policy is; an argument error
exits with status 2 and names the flag.  Writes ``OUTPUT`` (jsonl pairs) and
``OUTPUT-stem.stats.json`` (counts, scores, settings, wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

from rlhf_dist.config import ConfigError
from rlhf_dist.config.tool_args import add_section_args, resolve_sections, typed_flag
from rlhf_dist.data import DataError
from rlhf_dist.eval.inputs import load_prompts
from rlhf_dist.models._common import require_model_dir
from rlhf_dist.rlaif.judges import JudgeError, load_judge
from rlhf_dist.rlaif.ranking import STRATEGIES

PROG = "rlhf-dist label"
# the typed sections' keys label reads; each one's flag is generated (config/tool_args.py)
KEYS = (
    "rollout.n_samples_per_prompt",
    "rollout.max_new_tokens",
    "rollout.temperature",
    "rollout.top_p",
    "rollout.top_k",
    "rollout.rollout_batch_size",
    "data.max_prompt_length",
    "seed",
    "rollout.backend",
    "data.prompt_key",
)
SHORT = {"rollout.n_samples_per_prompt": "-k"}
DEFAULTS = {"rollout.n_samples_per_prompt": 4, "seed": 0}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Label preference pairs with a judge "
        "(RLAIF): sample K responses per prompt, score, pair them up.",
    )
    p.add_argument("--policy", required=True, help="local directory of the HF causal LM to sample")
    p.add_argument(
        "--judge",
        required=True,
        help="rm:PATH (a reward model saved by `rlhf-dist rm`) or "
        "package.module:function taking (prompts, responses) -> scores, e.g. "
        "rlhf_dist.rlaif.judges:toy_rule_judge",
    )
    p.add_argument(
        "--prompts",
        required=True,
        help="'toy', a local jsonl/json/parquet/csv file or directory, or a hub dataset",
    )
    p.add_argument("--split", default="train", help="split of --prompts (default: train)")
    p.add_argument("--max-prompts", type=int, default=None, help="use only the first N prompts")
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="all_pairs",
        help="all_pairs: every C(K,2) pair of the ranking; best_worst: one per prompt",
    )
    p.add_argument(
        "--min-margin",
        type=float,
        default=0.0,
        help="skip pairs whose score difference is below this (ties always skipped)",
    )
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument("--output", required=True, help="pairs file to write (.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_section_args(
        p,
        KEYS,
        DEFAULTS,
        SHORT,
        title="sampling, lengths and the prompt column (the typed rollout / data sections)",
    )
    return p


def _is_model_dir(path: str) -> bool:
    try:
        require_model_dir(os.path.expanduser(path), "--policy")
    except ValueError:
        return False
    return os.path.isdir(os.path.expanduser(path))


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag errors (exit 2) before anything heavy happens."""
    checks = [
        (
            _is_model_dir(args.policy),
            f"--policy: {args.policy!r} is not a model directory (a "
            "saved HF causal LM with its config.json)",
        ),
        (
            args.n_samples_per_prompt >= 2,
            f"{typed_flag(args, 'rollout.n_samples_per_prompt')} (rollout.n_samples_per_prompt): "
            f"must be >= 2 to form pairs, got {args.n_samples_per_prompt}",
        ),
        (
            args.max_prompts is None or args.max_prompts >= 1,
            f"--max-prompts: must be >= 1, got {args.max_prompts}",
        ),
        (args.min_margin >= 0, f"--min-margin: must be >= 0, got {args.min_margin}"),
        (
            args.output.endswith(".jsonl"),
            f"--output: {args.output!r} must end in .jsonl (the preference loader reads it by "
            "its suffix)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    _check_backend(parser, args)


def _check_backend(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--backend``'s checks of ``--policy`` (vllm: installed, a model it can serve)."""
    from rlhf_dist.rollout.backends import check_backend

    try:
        check_backend(
            args.backend,
            args.policy,
            args.max_prompt_length + args.max_new_tokens,
            field="--backend",
            model_field="--policy",
        )
    except ConfigError as err:
        parser.error(str(err))


def _summary(stats, output: str) -> str:
    skipped = stats.skipped
    return (
        f"label: {stats.prompts} prompts, {stats.responses} responses "
        f"({stats.empty_responses} empty), {stats.pairs} pairs of {stats.candidate_pairs} "
        f"candidates (skipped: {skipped['tie']} ties, {skipped['duplicate']} duplicates, "
        f"{skipped['below_margin']} below margin) -> {output}"
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # the typed rollout section: its checks, named by flag and key
        cfg = resolve_sections(args, KEYS, DEFAULTS, ["rollout.do_sample=true"])
    except ConfigError as err:
        parser.error(str(err))
    _check(parser, args)
    started = time.time()
    if os.getcwd() not in sys.path:  # `--judge myjudges:score` finds ./myjudges.py, as with
        sys.path.insert(0, os.getcwd())  # `python -m`; the console script does not add it
    try:
        judge = load_judge(args.judge, device=args.device)
    except JudgeError as err:
        parser.error(str(err))
    from rlhf_dist.rlaif.label import label_with_stats, sample_responses, stats_path, write_pairs

    try:
        prompts = load_prompts(args.prompts, args.prompt_key, args.split, args.max_prompts).prompts
    except DataError as err:
        parser.error(f"--prompts: {err}")
    responses = sample_responses(
        args.policy,
        prompts,
        args.n_samples_per_prompt,
        cfg.rollout,
        args.seed,
        args.device,
        args.max_prompt_length,
        show_progress=not args.no_progress,
        backend=args.backend,
        engines=cfg.resources.rollout,
        dtype=cfg.model.dtype,
    )
    try:
        rows, stats = label_with_stats(prompts, responses, judge, args.strategy, args.min_margin)
    except ValueError as err:
        print(f"{PROG}: --judge {args.judge}: {err}", file=sys.stderr)
        return 1
    write_pairs(rows, args.output)
    report = {
        **stats.to_dict(),
        "settings": {
            "policy": args.policy,
            "judge": args.judge,
            "prompts": args.prompts,
            "split": args.split,
            "k": args.n_samples_per_prompt,
            "strategy": args.strategy,
            "min_margin": args.min_margin,
            "seed": args.seed,
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "top_k": args.top_k,
            "backend": args.backend,
        },
        "output": args.output,
        "wall_s": round(time.time() - started, 3),
    }
    stats_file = stats_path(args.output)
    stats_file.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(_summary(stats, args.output))
    print(f"label: stats -> {stats_file}")
    if not rows:
        print(
            f"{PROG}: no preference pairs were produced (every candidate pair was skipped); "
            "nothing to train on",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
