"""Session artefacts of the Ray-system tests, built once: a supervised (SFT) tiny policy and
a reward model trained from it on the toy task (each one CLI job, ZeRO-0, one process), and
a seed-initialised tiny model saved to disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ray_helpers import GAE, cli, models, save_tiny_model


@dataclass(frozen=True)
class ToyModels:
    sft: Path  # HF model dir of the SFT policy (the PPO actor's and reference's start)
    rm: Path  # HF model dir of the reward model (the RM and the critic's start)


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory) -> ToyModels:
    """SFT 6 epochs (84 steps) then RM 3 epochs (42 steps) from the SFT weights: the SFT policy
    already prefers refusals/helpful answers, the RM separates them (eval accuracy ~0.9)."""
    root = tmp_path_factory.mktemp("toy_models")
    cli(
        "sft", "sft", root / "sft", "train.epochs=6", "train.eval_every=0", "deepspeed.zero_stage=0"
    ).check()
    cli(
        "rm",
        "rm",
        root / "rm",
        "train.epochs=3",
        "train.eval_every=0",
        "deepspeed.zero_stage=0",
        f"model.name_or_path={root / 'sft' / 'model'}",
    ).check()
    return ToyModels(sft=root / "sft" / "model", rm=root / "rm" / "model")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny configs' llama, random init from seed 42, with the toy tokenizer, on disk."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def gae_run(toy_models, tmp_path_factory):
    """configs/tiny/ppo.yaml (actor ZeRO-3 × 2 ranks; critic, reward, reference 1 rank each)
    with the critic at ZeRO-2, from the SFT policy; the critic starts from the RM; a
    checkpoint at iteration RESUME_AT (test_ray_ppo.py, test_ray_faults.py)."""
    out = tmp_path_factory.mktemp("ppo") / "gae"
    return cli("ppo", "ppo", out, *models(toy_models), *GAE).check()
