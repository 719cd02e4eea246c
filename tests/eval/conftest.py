"""Fixtures for the eval tests: the toy tokenizer, tiny random models (in memory and saved in
HF format to a session temp dir).  Handed out as fixtures, so no test imports this file."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import ModelConfig, TinyModelConfig


def _tiny_section(**overrides) -> ModelConfig:
    tiny = TinyModelConfig(
        arch="llama",
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return ModelConfig(tiny=tiny, **overrides)


@pytest.fixture(scope="session")
def tok():
    from rlhf_dist.toy import toy_tokenizer

    return toy_tokenizer()


@pytest.fixture(scope="session")
def tiny_section():
    return _tiny_section


@pytest.fixture(scope="session")
def make_policy(tok):
    """``make_policy(seed)``: a tiny random llama + the toy tokenizer, as an eval Policy."""
    from rlhf_dist.eval import Policy
    from rlhf_dist.models import load_causal_lm

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return Policy(load_causal_lm(_tiny_section(), tok).eval(), tok)

    return make


@pytest.fixture(scope="session")
def make_rm(tok):
    """``make_rm(seed)``: a tiny random reward model + the toy tokenizer."""
    from rlhf_dist.eval import RewardModel
    from rlhf_dist.models import load_scalar_model

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return RewardModel(load_scalar_model(_tiny_section(), tok, role="reward").eval(), tok)

    return make


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory, tok, make_policy, make_rm):
    """Paths of two tiny causal LMs (``base``, ``sft``) and a tiny RM saved in HF format."""
    from rlhf_dist.models import save_model

    root = tmp_path_factory.mktemp("eval_models")
    paths = {}
    for name, seed in (("base", 0), ("sft", 1)):
        paths[name] = str(save_model(make_policy(seed).model, tok, root / name))
    paths["rm"] = str(save_model(make_rm(2).model, tok, root / "rm"))
    return paths
