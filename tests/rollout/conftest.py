"""Fixtures for the rollout tests: the toy tokenizer, tiny random llamas, left-padded prompts.

Helpers are handed out as fixtures (factories), so no test imports this file.
"""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import ModelConfig, RolloutConfig

PROMPTS = [[5, 17, 300, 42, 9], [77, 8], [100, 200, 300], [400, 401, 402, 403]]


@pytest.fixture(scope="session")
def tok():
    from rlhf_dist.toy import toy_tokenizer

    return toy_tokenizer()


def _left_pad(prompts, pad_id: int = 0):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


@pytest.fixture
def left_pad():
    return _left_pad


@pytest.fixture
def prompts():
    return [list(p) for p in PROMPTS]


@pytest.fixture
def make_lm(tok):
    """``make_lm(eos_bias=None)``: a tiny random llama (seed 0) in eval mode; with
    ``eos_bias`` its LM head gets a bias adding that much to the EOS logit (a random model
    almost never emits EOS otherwise)."""
    from rlhf_dist.models import load_causal_lm

    def make(eos_bias=None):
        torch.manual_seed(0)
        model = load_causal_lm(ModelConfig(), tok).eval()
        if eos_bias is not None:
            old = model.lm_head
            head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
            with torch.no_grad():
                head.weight.copy_(old.weight)
                head.bias.zero_()
                head.bias[tok.eos_token_id] = eos_bias
            model.lm_head = head
        return model

    return make


@pytest.fixture
def rollout_cfg():
    def make(**kw):
        return RolloutConfig(**kw)

    return make
