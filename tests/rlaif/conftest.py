"""Fixtures for the RLAIF tests: the toy tokenizer and tiny random models saved to disk.

Helpers are handed out as fixtures, so no test imports this file.
"""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import ModelConfig, TinyModelConfig

TINY = dict(
    hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=256
)


@pytest.fixture(scope="session")
def tok():
    from rlhf_dist.toy import toy_tokenizer

    return toy_tokenizer()


def _words_bias(model, tok, words, bias: float) -> None:
    """Make a tiny GPT-2 favour ``words`` (and EOS) in a way that survives save/load: the
    final LayerNorm outputs a constant 1 in hidden dim 0 (weight 0, bias 1), and column 0 of
    the (tied) output embedding is the per-token logit bias."""
    ids = sorted({i for w in words for i in tok(" " + w, add_special_tokens=False)["input_ids"]})
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = 0.0
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        column = torch.zeros(model.lm_head.weight.shape[0])
        column[ids] = bias
        column[tok.eos_token_id] = bias - 1.0
        model.lm_head.weight[:, 0] = column


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory, tok):
    """A tiny random GPT-2 policy (seed 0) that says benign topic words often, so the toy rule
    judge scores some of its answers on-topic (+1) and others off-topic (0); it never refuses."""
    from rlhf_dist.toy.vocab import BENIGN_TOPICS
    from rlhf_dist.models import load_causal_lm, save_model

    torch.manual_seed(0)
    model = load_causal_lm(ModelConfig(tiny=TinyModelConfig(arch="gpt2", **TINY)), tok)
    _words_bias(model, tok, [w for t in BENIGN_TOPICS for w in t.keywords], 4.0)
    return save_model(model, tok, tmp_path_factory.mktemp("policy") / "model")


@pytest.fixture(scope="session")
def reward_model(tok):
    """A tiny random llama reward model (seed 1), in eval mode."""
    from rlhf_dist.models import load_scalar_model

    torch.manual_seed(1)
    return load_scalar_model(ModelConfig(tiny=TinyModelConfig(**TINY)), tok, role="reward").eval()


@pytest.fixture(scope="session")
def rm_dir(tmp_path_factory, tok, reward_model):
    from rlhf_dist.models import save_model

    return save_model(reward_model, tok, tmp_path_factory.mktemp("rm") / "model")


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory, tok):
    """A plain tiny causal LM (no scalar head): not a reward model."""
    from rlhf_dist.models import load_causal_lm, save_model

    torch.manual_seed(2)
    model = load_causal_lm(ModelConfig(tiny=TinyModelConfig(**TINY)), tok)
    return save_model(model, tok, tmp_path_factory.mktemp("lm") / "model")
