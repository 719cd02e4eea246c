"""Causal LMs: save → reload bit-identical, position ids under left padding, load kwargs."""

import pytest
import torch

from rlhf_dist.config import ModelConfig
from rlhf_dist.models.causal_lm import checkpointing_enabled
from rlhf_dist.models import (
    ModelError,
    causal_lm_logits,
    hf_load_kwargs,
    load_causal_lm,
    own_aligned_memory,
    position_ids_from_mask,
    save_model,
)


def test_position_ids_by_hand():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 0, 0], [0, 1, 2, 3, 4]])
    assert torch.equal(position_ids_from_mask(mask), expected)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_save_reload_gives_bit_identical_logits(
    arch, tmp_path, tokenizer, tiny_section, ragged_batch
):
    model = load_causal_lm(tiny_section(arch), tokenizer).eval()
    ids, mask = ragged_batch([5, 8, 3], "left", 8)
    save_model(model, tokenizer, tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()
    reloaded = load_causal_lm(ModelConfig(name_or_path=str(tmp_path)), tokenizer)
    assert type(reloaded) is type(model)
    with torch.no_grad():
        before = causal_lm_logits(model, ids, mask)
        assert torch.equal(before, causal_lm_logits(reloaded, ids, mask))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_left_padding_matches_unpadded_sequence(arch, tokenizer, tiny_section, ragged_batch):
    model = load_causal_lm(tiny_section(arch), tokenizer).eval()
    ids, mask = ragged_batch([4, 7, 2], "left", 7)
    with torch.no_grad():
        batched = causal_lm_logits(model, ids, mask)
        for row, n in enumerate([4, 7, 2]):
            alone = ids[row : row + 1, -n:]
            single = model(input_ids=alone).logits  # unpadded: positions 0..n-1 by default
            torch.testing.assert_close(batched[row, -n:], single[0], atol=1e-5, rtol=0)
        if arch == "gpt2":  # absolute positions: without our position ids the answer changes
            naive = model(input_ids=ids, attention_mask=mask).logits
            assert (naive[0, -1] - batched[0, -1]).abs().max() > 1e-3


def test_load_kwargs_from_config_with_remote_code_off(
    tmp_path, tokenizer, tiny_section, monkeypatch
):
    from transformers import AutoModelForCausalLM

    assert hf_load_kwargs(ModelConfig()) == {
        "dtype": torch.float32,
        "attn_implementation": "eager",
        "trust_remote_code": False,
    }
    save_model(load_causal_lm(tiny_section(), tokenizer), tokenizer, tmp_path)
    calls = []
    original = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    cfg = ModelConfig(name_or_path=str(tmp_path), dtype="bfloat16", attn_implementation="sdpa")
    model = load_causal_lm(cfg, tokenizer)
    assert calls == [
        {"dtype": torch.bfloat16, "attn_implementation": "sdpa", "trust_remote_code": False}
    ]
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "sdpa"


def test_gradient_checkpointing_when_configured(tokenizer, tiny_section):
    model = load_causal_lm(tiny_section(gradient_checkpointing=True), tokenizer)
    assert checkpointing_enabled(model) and model.config.use_cache is False
    assert not checkpointing_enabled(load_causal_lm(tiny_section(), tokenizer))


def test_missing_model_path_names_the_field(tokenizer):
    with pytest.raises(ModelError, match=r"^ref_model\.name_or_path: '\./nope' does not exist"):
        load_causal_lm(ModelConfig(name_or_path="./nope"), tokenizer, field_prefix="ref_model")


def test_tokenizer_larger_than_model_vocab_is_an_error(tmp_path, tokenizer, tiny_section):
    from transformers import AutoModelForCausalLM

    from rlhf_dist.models import build_tiny_config

    small = AutoModelForCausalLM.from_config(build_tiny_config(tiny_section().tiny, 50))
    small.save_pretrained(tmp_path)
    expected = r"^model: the tokenizer .* has 100 tokens but the model .* has only 50"
    with pytest.raises(ModelError, match=expected):
        load_causal_lm(ModelConfig(name_or_path=str(tmp_path)), tokenizer)


def test_misaligned_cpu_views_are_copied_into_aligned_memory():
    """safetensors mmap views sit at arbitrary offsets; CPU kernels round differently there."""
    layer = torch.nn.Linear(8, 8)
    backing = torch.zeros(8 * 8 + 1)
    view = backing[1:].view(8, 8)  # 4 bytes past an aligned address
    view.copy_(layer.weight.data)
    layer.weight.data = view
    assert layer.weight.data_ptr() % 64 != 0
    own_aligned_memory(layer)
    assert layer.weight.data_ptr() % 64 == 0 and torch.equal(layer.weight, view)
    assert layer.weight.data_ptr() != view.data_ptr()
