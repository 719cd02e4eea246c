"""Tiny models from ``model.tiny``: sizes as configured, vocabulary = tokenizer, seeded init."""

import pytest
import torch

from rlhf_dist.config import TinyModelConfig
from rlhf_dist.models import ModelError, build_tiny_config, load_causal_lm

LAYERS = {  # arch -> how to reach the decoder blocks of its causal LM
    "llama": lambda m: m.model.layers,
    "qwen2": lambda m: m.model.layers,
    "gpt2": lambda m: m.transformer.h,
}


@pytest.mark.parametrize("arch", sorted(LAYERS))
def test_tiny_model_has_configured_sizes(arch, tokenizer, tiny_section):
    cfg = tiny_section(arch)
    cfg.tiny.num_layers = 3
    model = load_causal_lm(cfg, tokenizer)
    assert len(LAYERS[arch](model)) == 3
    assert tuple(model.get_input_embeddings().weight.shape) == (len(tokenizer), 32)
    mlp_in = [
        p for n, p in model.named_parameters() if n.endswith(("up_proj.weight", "c_fc.weight"))
    ]
    assert len(mlp_in) == 3 and 64 in mlp_in[0].shape  # intermediate_size
    ids = torch.randint(0, len(tokenizer), (2, 5))
    assert model(input_ids=ids).logits.shape == (2, 5, len(tokenizer))
    assert model.config.pad_token_id == 0 and model.config.eos_token_id == 3
    assert model.config.bos_token_id == 2 and model.dtype == torch.float32


def test_gpt2_tiny_has_no_dropout():
    config = build_tiny_config(TinyModelConfig(arch="gpt2", hidden_size=32), vocab_size=50)
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)
    assert (config.n_embd, config.n_layer, config.n_head, config.n_inner) == (32, 2, 4, 128)


def test_same_seed_same_tiny_model(tokenizer, tiny_section):
    torch.manual_seed(7)
    first = load_causal_lm(tiny_section(), tokenizer)
    torch.manual_seed(7)
    second = load_causal_lm(tiny_section(), tokenizer)
    for (name, a), b in zip(first.named_parameters(), second.parameters()):
        assert torch.equal(a, b), name


def test_unknown_arch_and_bad_ids_name_the_field():
    with pytest.raises(ModelError, match=r"^critic_model\.tiny\.arch: got 'mamba'"):
        build_tiny_config(TinyModelConfig(arch="mamba"), 100, field_prefix="critic_model")
    with pytest.raises(ModelError, match=r"^model\.tiny: eos_token_id=120 is outside"):
        build_tiny_config(TinyModelConfig(), 100, eos_token_id=120)
    with pytest.raises(ModelError, match=r"vocab_size must be a positive int"):
        build_tiny_config(TinyModelConfig(), 0)
