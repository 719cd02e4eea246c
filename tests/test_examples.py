"""examples/ppo_single.py, the one-process PPO loop: a tiny run, in this process, that does
the iterations and optimiser steps the config asks for, trains the actor and the critic, leaves
the frozen reference and reward model untouched, and reports finite numbers."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from rlhf_dist.config import load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ppo_single.py"

TINY = "{arch: llama, hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}"
ITERATIONS, EPOCHS, MINI_BATCH, NEW_TOKENS = 3, 2, 2, 6


def _example():
    spec = importlib.util.spec_from_file_location("ppo_single", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _overrides(tmp_path, estimator, prompts, samples):
    return [
        f"output_dir={tmp_path}",
        "seed=3",
        f"model.tiny={TINY}",
        f"reward_model.tiny={TINY}",
        f"critic_model.tiny={TINY}",
        "data.path=toy",
        "data.toy.num_prompts=40",
        "data.max_prompt_length=32",
        "data.max_length=38",
        "train.lr=1e-3",
        f"train.micro_batch_size={MINI_BATCH // 2}",
        f"rollout.rollout_batch_size={prompts}",
        f"rollout.n_samples_per_prompt={samples}",
        f"rollout.max_new_tokens={NEW_TOKENS}",
        f"rollout.min_new_tokens={NEW_TOKENS}",
        f"ppo.iterations={ITERATIONS}",
        f"ppo.ppo_epochs={EPOCHS}",
        f"ppo.mini_batch_size={MINI_BATCH}",
        f"ppo.advantage_estimator={estimator}",
        "ppo.kl_coef=0.1",
        "logging.backend=none",
    ]


def _weights(model):
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def _changed(before, model):
    return [name for name, p in model.state_dict().items() if not torch.equal(before[name], p)]


@pytest.mark.parametrize("estimator,prompts,samples", [("gae", 4, 1), ("group_norm", 2, 2)])
def test_ppo_single_trains_what_it_should(tmp_path, estimator, prompts, samples):
    ex = _example()
    loop = ex.PPOLoop(load_config(None, _overrides(tmp_path, estimator, prompts, samples)))
    m = loop.m
    assert (m.critic is None) == (estimator == "group_norm")
    # the reference is the actor's initial copy (same seed), so the first KL is exactly 0
    assert _changed(_weights(m.actor), m.reference) == []
    before = {role: _weights(getattr(m, role)) for role in ("actor", "reference", "reward")}
    if m.critic is not None:
        before["critic"] = _weights(m.critic)

    history = []
    for iteration in range(ITERATIONS):
        experience, metrics = ex.iterate(loop, iteration)
        assert len(experience) == prompts * samples
        # min_new_tokens = max_new_tokens: every response is exactly that long
        assert experience["action_mask"].sum(-1).tolist() == [NEW_TOKENS] * len(experience)
        history.append(metrics)

    assert len(history) == ITERATIONS
    bad = [
        (i, k, v) for i, row in enumerate(history) for k, v in row.items() if not math.isfinite(v)
    ]
    assert bad == []
    for key in (
        "reward/score_mean",
        "kl/ref_kl",
        "actor/policy_loss",
        "actor/approx_kl",
        "actor/clipfrac",
        "actor/entropy",
    ):
        assert key in history[0], key
    assert history[0]["kl/ref_kl"] == pytest.approx(0.0, abs=1e-6)
    assert history[-1]["kl/ref_kl"] != 0.0  # the actor has moved away from the reference
    # one optimiser step per minibatch: rows / mini_batch per epoch, EPOCHS epochs, each iteration
    steps = ITERATIONS * EPOCHS * (prompts * samples) // MINI_BATCH
    optimisers = [("actor", loop.actor_opt)] + (
        [("critic", loop.critic_opt)] if m.critic is not None else []
    )
    for role, optimiser in optimisers:
        counts = {float(s["step"]) for s in optimiser.state.values()}
        assert counts == {float(steps)}, role
        assert _changed(before[role], getattr(m, role)), f"{role} did not train"
    assert ("critic/value_loss" in history[0]) == (m.critic is not None)
    for frozen in ("reference", "reward"):
        assert _changed(before[frozen], getattr(m, frozen)) == [], f"{frozen} changed"


def test_ppo_single_main_prints_one_line_per_iteration(tmp_path, capsys):
    ex = _example()
    argv = _overrides(tmp_path, "gae", 2, 1) + ["ppo.iterations=2"]
    assert ex.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" reward/")[0] for line in lines] == ["iteration 1/2", "iteration 2/2"]
    assert all("kl/ref_kl=" in line and "critic/value_loss=" in line for line in lines)
