"""The demo pipeline: pretrain → SFT → RM → PPO (Ray) → DPO → RLAIF-DPO (full preset: also
ORPO and online DPO), then evaluate.

Each training stage runs as its own ``python -m rlhf_dist.cli STAGE`` process — the same
command a user types — with the stage's config written to ``<out>/<stage>/stage.yaml``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import yaml

from rlhf_dist.demo.verifier_task import write_verifier_data
from rlhf_dist.toy import ToyTask
from rlhf_dist.toy.tool_task import write_tool_task_data

TINY = {
    "arch": "llama",
    "hidden_size": 128,
    "num_layers": 4,
    "num_heads": 4,
    "intermediate_size": 384,
}
DATA = {"path": "toy", "max_length": 64, "max_prompt_length": 32}
# An NLL term on the chosen answers (RPO) keeps DPO from unlearning them along with the
# rejected ones — without it the tiny policy drifts towards refusing everything.
DPO = {"beta": 0.1, "nll_coef": 0.2}
# The stages PPO/GRPO start from (base, SFT, RM, the verifier's SFT) train on the plain
# shuffled order, not the default length-grouped one, as configs/tiny/sft.yaml and rm.yaml
# do: the thresholds of tests/test_demo.py were measured on the models it gives.
PLAIN_ORDER = {"group_by_length": False}


@dataclass
class Preset:
    """Step counts of one demo size (``quick`` for CI, ``full`` by default).

    SFT is deliberately short (a few steps): it teaches the answer format and some refusals,
    leaving the preference stages (PPO, DPO, RLAIF) something to improve.
    """

    pretrain_epochs: int
    sft_steps: int
    rm_epochs: int
    dpo_epochs: int
    ppo_iterations: int
    rollout_batch_size: int
    rlaif_prompts: int
    rlaif_samples: int
    eval_samples: int
    # the preference family's extra rows: ORPO (no reference) and online DPO (Ray); left out
    # of the quick preset (CI) for the test suite's time
    preference_family: bool = False
    # the toy agent task (multi-turn SFT, GRPO against the calculator tool): its section of
    # the report; left out of the quick preset (tests/ray/test_ray_agent.py trains it in CI)
    agent_task: bool = False


PRESETS: Dict[str, Preset] = {
    "quick": Preset(
        pretrain_epochs=6,
        sft_steps=6,
        rm_epochs=2,
        dpo_epochs=1,
        ppo_iterations=15,
        rollout_batch_size=16,
        rlaif_prompts=48,
        rlaif_samples=2,
        eval_samples=4,
    ),
    "full": Preset(
        pretrain_epochs=12,
        sft_steps=6,
        rm_epochs=3,
        dpo_epochs=2,
        ppo_iterations=30,
        rollout_batch_size=32,
        rlaif_prompts=224,
        rlaif_samples=4,
        eval_samples=4,
        preference_family=True,
        agent_task=True,
    ),
}


@dataclass
class Stage:
    name: str
    command: str
    config: dict


def _common(out: Path, name: str, seed: int) -> dict:
    return {
        "output_dir": str(out / name),
        "seed": seed,
        "data": dict(DATA),
        "logging": {
            "backend": "wandb",
            "project": "rlhf_dist-demo",
            "group": out.name,
            "name": name,
            "progress_bar": True,
        },
        "checkpoint": {"keep_last": 1},
    }


def _trainer(out: Path, name: str, seed: int, epochs: int, lr: float, **sections) -> dict:
    cfg = _common(out, name, seed)
    cfg["train"] = {
        "epochs": epochs,
        "lr": lr,
        "warmup_ratio": 0.05,
        "train_batch_size": 16,
        "micro_batch_size": 8,
        "eval_batch_size": 32,
        "eval_every": 5,
    }
    cfg["deepspeed"] = {"zero_stage": 2}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def write_ranking_data(out: Path, seed: int) -> Path:
    """The toy task's ranked responses (harmful: refusal ≻ off-topic answer ≻ compliance;
    benign: helpful ≻ off-topic ≻ refusal) as a jsonl file: the RM learns from all C(3,2)
    pairs, so changing the subject does not please it on harmful requests."""
    path = out / "toy_ranking.jsonl"
    rows = ToyTask(seed=seed).ranking_rows("train")
    path.write_text(
        "".join(
            json.dumps({"prompt": r["prompt"], "responses": r["responses"]}) + "\n" for r in rows
        )
    )
    return path


def verifier_stages(out: Path, seed: int) -> List[Stage]:
    """The verifiable-reward stages (configs/tiny/grpo_verifier.yaml's recipe): a short SFT
    of a fresh tiny model on the safe/unsafe task, then GRPO with ``exact_match``."""
    data_dir = write_verifier_data(out / "verifier_data", seed)
    data = {**DATA, "eval_ratio": 0.0}
    sft = _common(out, "verifier_sft", seed)
    sft.update(
        data={**data, "path": str(data_dir / "sft.jsonl")},
        train={
            "epochs": 5,
            "max_steps": 50,
            "lr": 3e-3,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.05,
            "train_batch_size": 16,
            "micro_batch_size": 8,
            "eval_batch_size": 32,
            "eval_every": 0,
            **PLAIN_ORDER,
        },
        deepspeed={"zero_stage": 0},
    )
    grpo = _common(out, "grpo_verifier", seed)
    grpo.update(
        model={"name_or_path": str(out / "verifier_sft" / "model")},
        data={**data, "path": str(data_dir / "train.jsonl"), "label_key": "answer"},
        train={"lr": 1e-3, "micro_batch_size": 4},
        deepspeed={"zero_stage": 0},
        rollout={"rollout_batch_size": 16, "n_samples_per_prompt": 8, "max_new_tokens": 4},
        ppo={
            "iterations": 30,
            "mini_batch_size": 32,
            "advantage_estimator": "group_norm",
            "kl_coef": 0.01,
            "kl_in_loss": True,
            "kl_estimator": "k3",
            "dynamic_sampling": True,
            "use_reward_model": False,
            "rewards": [{"fn": "exact_match"}],
        },
        resources={"actor": {"devices_per_node": 1}, "reference_in_actor": True},
    )
    return [Stage("verifier_sft", "sft", sft), Stage("grpo_verifier", "ppo", grpo)]


# configs/tiny/agent_calculator.yaml's recipe (its header): the data command's arguments,
# the multi-turn SFT's model and steps
AGENT_DATA = {"num_prompts": 2048, "eval_ratio": 0.0625, "direct_ratio": 0.5}
AGENT_MODEL = {
    "arch": "llama",
    "hidden_size": 64,
    "num_layers": 4,
    "num_heads": 2,
    "intermediate_size": 256,
}


def agent_stages(out: Path, seed: int) -> List[Stage]:
    """The toy agent task (configs/tiny/agent_calculator.yaml's recipe): a multi-turn SFT of a
    fresh tiny model on the tool task's rows (half of them without the tool), then GRPO
    against ``env.name: toy_calculator``.  In the full demo's report (``Preset.agent_task``);
    the quick one leaves them out: they take minutes (``rlhf-dist demo --only agent``)."""
    data_dir = write_tool_task_data(out / "agent_data", seed, **AGENT_DATA)
    sft = _common(out, "agent_sft", seed)
    sft.update(
        model={"tiny": dict(AGENT_MODEL)},
        data={
            "path": str(data_dir / "sft.jsonl"),
            "eval_ratio": 0.0,
            "max_length": 128,
            "max_prompt_length": 48,
        },
        train={
            "epochs": 100,
            "max_steps": 600,
            "lr": 3e-3,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.05,
            "train_batch_size": 32,
            "micro_batch_size": 32,
            "eval_batch_size": 32,
            "eval_every": 0,
            **PLAIN_ORDER,
        },
        deepspeed={"zero_stage": 0},
    )
    grpo = _common(out, "agent_grpo", seed)
    grpo.update(
        model={"name_or_path": str(out / "agent_sft" / "model")},
        data={
            "path": str(data_dir / "train.jsonl"),
            "label_key": "answer",
            "eval_ratio": 0.0,
            "max_prompt_length": 48,
        },
        train={"lr": 1e-4, "micro_batch_size": 32},
        deepspeed={"zero_stage": 0},
        rollout={
            "rollout_batch_size": 16,
            "n_samples_per_prompt": 8,
            "max_new_tokens": 24,
            "temperature": 1.0,
        },
        env={"name": "toy_calculator", "max_turns": 3, "max_trajectory_tokens": 128},
        ppo={
            "iterations": 10,
            "mini_batch_size": 32,
            "advantage_estimator": "group_norm",
            "kl_coef": 0.01,
            "kl_in_loss": True,
            "kl_estimator": "k3",
            "use_reward_model": False,
        },
        resources={"actor": {"devices_per_node": 1}, "reference_in_actor": True},
    )
    return [Stage("agent_sft", "sft", sft), Stage("agent_grpo", "ppo", grpo)]


def stages(out: Path, preset: Preset, seed: int) -> List[Stage]:
    """The training stages in order; later ones start from earlier ones' exported models."""
    base, sft, rm = (str(out / s / "model") for s in ("base", "sft", "rm"))
    ranking = write_ranking_data(out, seed)
    return [
        Stage(
            "base",
            "pretrain",
            _trainer(
                out,
                "base",
                seed,
                preset.pretrain_epochs,
                3e-3,
                model={"tiny": TINY},
                train=PLAIN_ORDER,
            ),
        ),
        Stage(
            "sft",
            "sft",
            _trainer(
                out,
                "sft",
                seed,
                1,
                5e-4,
                model={"name_or_path": base},
                train={"max_steps": preset.sft_steps, **PLAIN_ORDER},
            ),
        ),
        Stage(
            "rm",
            "rm",
            _trainer(
                out,
                "rm",
                seed,
                preset.rm_epochs,
                1e-3,
                model={"name_or_path": sft},
                train=PLAIN_ORDER,
                data={"path": str(ranking), "eval_path": "toy"},
            ),
        ),
        Stage(
            "ppo",
            "ppo",
            {
                **_common(out, "ppo", seed),
                "model": {"name_or_path": sft},
                "reward_model": {"name_or_path": rm},
                "train": {"lr": 2e-4, "micro_batch_size": 4},
                "deepspeed": {"zero_stage": 3, "role_zero_stage": {"critic": 2}},
                "rollout": {"rollout_batch_size": preset.rollout_batch_size, "max_new_tokens": 24},
                "ppo": {
                    "iterations": preset.ppo_iterations,
                    "mini_batch_size": 8,
                    "kl_coef": 0.1,
                    "critic_lr": 2e-4,
                },
                "resources": {"actor": {"devices_per_node": 2}},
            },
        ),
        Stage(
            "dpo",
            "dpo",
            _trainer(
                out, "dpo", seed, preset.dpo_epochs, 1e-4, model={"name_or_path": sft}, dpo=DPO
            ),
        ),
    ]


def preference_stages(out: Path, preset: Preset, seed: int) -> List[Stage]:
    """ORPO (reference-free: the odds-ratio term plus the chosen answers' NLL) on the toy
    pairs, and online DPO: each iteration 16 prompts × 4 sampled answers scored by the RM,
    the best and worst of each a pair, a DPO step; both from the SFT policy."""
    sft, rm = (str(out / s / "model") for s in ("sft", "rm"))
    return [
        Stage(
            "orpo",
            "dpo",
            _trainer(
                out,
                "orpo",
                seed,
                preset.dpo_epochs,
                1e-4,
                model={"name_or_path": sft},
                dpo={"loss_type": "orpo", "beta": 0.5},
            ),
        ),
        Stage(
            "online_dpo",
            "online-dpo",
            {
                **_common(out, "online_dpo", seed),
                "model": {"name_or_path": sft},
                "reward_model": {"name_or_path": rm},
                "train": {
                    "lr": 2e-4,
                    "lr_scheduler": "constant",
                    "train_batch_size": 16,
                    "micro_batch_size": 8,
                },
                "deepspeed": {"zero_stage": 2},
                "rollout": {
                    "rollout_batch_size": 16,
                    "n_samples_per_prompt": 4,
                    "max_new_tokens": 24,
                },
                "ppo": {"iterations": preset.ppo_iterations},
                "dpo": DPO,
                "resources": {"actor": {"devices_per_node": 1}, "reference_in_actor": True},
            },
        ),
    ]


def rlaif_stage(out: Path, preset: Preset, seed: int, pairs: Path) -> Stage:
    data = {**DATA, "path": str(pairs)}
    cfg = _trainer(
        out,
        "rlaif",
        seed,
        preset.dpo_epochs,
        1e-4,
        model={"name_or_path": str(out / "sft" / "model")},
        dpo=DPO,
    )
    cfg["data"] = data
    return Stage("rlaif", "dpo", cfg)


def run_stage(stage: Stage, out: Path, say: Callable[[str], None]) -> float:
    """Run one training stage as a CLI process with its config in ``<stage>/stage.yaml``."""
    stage_dir = out / stage.name
    stage_dir.mkdir(parents=True, exist_ok=True)
    config = stage_dir / "stage.yaml"
    config.write_text(yaml.safe_dump(stage.config, sort_keys=False))
    return _run(stage.name, [stage.command, "-c", str(config)], stage_dir, say)


def run_command(name: str, argv: List[str], out: Path, say: Callable[[str], None]) -> float:
    """Run another ``rlhf-dist`` command (label, eval) the same way."""
    return _run(name, argv, out / name, say)


def _run(name: str, argv: List[str], work_dir: Path, say: Callable[[str], None]) -> float:
    """``python -m rlhf_dist.cli ARGV``; output to ``<work_dir>/stage.log``, progress shown."""
    work_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    say(f"[{name}] rlhf-dist {' '.join(argv)}")
    log_path = work_dir / "stage.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlhf_dist.cli", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        _follow(proc, work_dir / "metrics.jsonl", log_path, name, say)
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-25:]
        raise RuntimeError(
            f"demo stage {name!r} failed (exit {proc.returncode}); last lines "
            f"of {log_path}:\n" + "\n".join(tail)
        )
    elapsed = time.perf_counter() - start
    say(f"[{name}] done in {elapsed:.0f}s")
    return elapsed


def _follow(
    proc: subprocess.Popen, metrics: Path, log_path: Path, name: str, say: Callable[[str], None]
) -> None:
    """Every few seconds while the stage runs: its step, total and ETA (read from the
    trainer's progress bar in the log) and its latest logged metrics."""
    shown: Optional[str] = None
    while not _exited(proc, 3.0):
        lines = metrics.read_text().strip().splitlines() if metrics.exists() else []
        line = " ".join(filter(None, [_progress(log_path), _short(lines[-1]) if lines else ""]))
        if line and line != shown:
            shown = line
            say(f"[{name}] {line}")


def _exited(proc: subprocess.Popen, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``proc`` to end (returns as soon as it does)."""
    try:
        proc.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


# tqdm's status: "  14/28 [00:05<00:05, 2.71it/s]"
_BAR = re.compile(r"(\d+)/(\d+) \[([\d:]+)<([\d:?]+)")


def _progress(log_path: Path) -> str:
    """``step n/N, ETA mm:ss`` from the last progress-bar update in the stage's log."""
    found = _BAR.findall(log_path.read_text(errors="ignore")[-4000:])
    if not found:
        return ""
    done, total, _, eta = found[-1]
    return f"{done}/{total} ETA {eta}"


def _short(line: str) -> str:
    row = json.loads(line)
    keys = [
        k
        for k in row
        if k.split("/")[-1] in ("loss", "accuracy", "score_mean", "reward_accuracy", "ref_kl")
    ]
    return " ".join(f"{k}={row[k]:.3f}" for k in keys[:3])
