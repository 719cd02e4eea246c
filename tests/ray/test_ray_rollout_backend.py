"""A rollout backend is one registered class: a deterministic backend defined here (not a
built-in) runs GRPO iterations through the real driver, Ray workers and DeepSpeed engines;
the driver hands it the prompt batches, seeds, rows and versions and trains on what it
returns."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import load_config
from rlhf_dist.rollout import Rollout, register_rollout
from rlhf_dist.rollout.generate import rollout_batch
from rlhf_dist.utils.seeding import SAMPLING, derive_seed

from ray_helpers import CONFIGS, QUIET

pytestmark = pytest.mark.slow
TOKEN = 20  # every answer repeats this token: answer k of a group is k+1 of them, then EOS


class FixedAnswers(Rollout):
    """Samples nothing: the n answers of every prompt are fixed token ids, made on the driver;
    the actor's ranks give their behaviour log-probs."""

    def __init__(self, cfg, tokenizer):
        super().__init__(cfg, tokenizer)
        self.seen = []  # (seed, number of rows, labels) per generate call
        self.versions = []

    def sync_weights(self, version):
        self.versions.append(version)
        return {}

    def generate(self, prompts, seed, rows):
        n, eos = self.cfg.rollout.n_samples_per_prompt, self.tokenizer.eos_token_id
        answers = fixed_answers(len(prompts) * n, n, eos, self.pad_token_id)
        sequences = torch.cat([prompts["input_ids"].repeat_interleave(n, 0), answers], 1)
        experience = rollout_batch(
            sequences,
            prompts["attention_mask"].repeat_interleave(n, 0),
            [eos],
            self.pad_token_id,
            n,
        )
        self.seen.append((seed, len(prompts), [row["label"] for row in rows]))
        return self.with_behaviour_logprobs(experience), {
            "rollout/fixed_rows": float(len(experience))
        }


def fixed_answers(rows: int, n: int, eos: int, pad: int) -> torch.Tensor:
    answers = torch.full((rows, n + 1), pad)
    for row in range(rows):
        k = row % n
        answers[row, : k + 1] = TOKEN
        answers[row, k + 1] = eos
    return answers


def answer_chars(prompts, responses):
    return [float(len(r)) for r in responses]


@pytest.fixture
def fixed_backend():
    register_rollout("fixed_answers", FixedAnswers)
    yield
    from rlhf_dist.config.registries import ROLLOUT_BACKENDS

    ROLLOUT_BACKENDS.unregister("fixed_answers")


def test_a_registered_backend_runs_through_the_real_driver(fixed_backend, tmp_path):
    from rlhf_dist.models import load_tokenizer
    from rlhf_dist.trainers.ppo import PPOTrainer

    cfg = load_config(
        str(CONFIGS / "grpo_verifier.yaml"),
        [
            f"output_dir={tmp_path}",
            *QUIET,
            "rollout.backend=fixed_answers",
            "rollout.rollout_batch_size=4",
            "rollout.n_samples_per_prompt=4",
            "ppo.mini_batch_size=16",
            "ppo.iterations=2",
            "ppo.dynamic_sampling=false",
            "ppo.rewards=[]",
            "ppo.reward_fn=test_ray_rollout_backend:answer_chars",
            "ppo.kl_coef=0.0",
            "checkpoint.save_every=0",
        ],
    )
    history, margins = [], []

    class Recording(PPOTrainer):
        def iterate(self):
            history.append(super().iterate())
            return history[-1]

        def score(self, experience):
            # per group: log π(longest answer) − log π(shortest), the behaviour log-probs
            logps = experience["old_logprobs"].sum(-1).view(-1, 4)
            margins.append(float((logps[:, 3] - logps[:, 0]).mean()))
            return super().score(experience)

    trainer = Recording(cfg)
    trainer.fit()
    backend = trainer.rollout
    assert isinstance(backend, FixedAnswers)
    # the driver's seeds, one prompt batch per iteration, and the weight versions
    assert [seed for seed, _, _ in backend.seen] == [derive_seed(42, i, SAMPLING) for i in range(2)]
    assert [size for _, size, _ in backend.seen] == [4, 4]
    assert all(label in ("safe", "unsafe") for _, _, labels in backend.seen for label in labels)
    assert backend.versions == [0, 1]
    # what it returned is what was scored and trained: hand-computed lengths and rewards
    tok = load_tokenizer(cfg.model)
    texts = tok.batch_decode(
        fixed_answers(4, 4, tok.eos_token_id, tok.pad_token_id), skip_special_tokens=True
    )
    for metrics in history:
        assert metrics["rollout/fixed_rows"] == 16.0
        assert metrics["response/length_mean"] == pytest.approx((2 + 3 + 4 + 5) / 4)
        assert metrics["reward/score_mean"] == pytest.approx(sum(map(len, texts)) / 4)
    # the update learned from it: the longer (higher-reward) answers became likelier
    assert margins[1] > margins[0] + 0.5, margins
