"""Reward / critic models in the ecosystem's format, both ways: transformers'
``*ForSequenceClassification`` checkpoints (the Hub, TRL, OpenRLHF) score here as transformers
scores them, and ``AutoModelForSequenceClassification`` reads our exports with our scores."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from rlhf_dist.config import ModelConfig
from rlhf_dist.models import ModelError, load_causal_lm, load_scalar_model, save_model

PAD, EOS = 0, 3  # the conftest tokenizer's <pad> and </s>


def _hf_classifier(arch: str, pad_token_id: int, num_labels: int = 1):
    """A transformers sequence classifier built from its own config classes (no rlhf_dist)."""
    from transformers import (
        AutoModelForSequenceClassification,
        GPT2Config,
        LlamaConfig,
        Qwen2Config,
    )

    common = dict(vocab_size=100, num_labels=num_labels, pad_token_id=pad_token_id)
    config = {
        "llama": lambda: LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            **common,
        ),
        "qwen2": lambda: Qwen2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            intermediate_size=64,
            **common,
        ),
        "gpt2": lambda: GPT2Config(n_embd=32, n_layer=2, n_head=4, **common),
    }[arch]()
    torch.manual_seed(7)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():  # a trained-looking head, far from any fresh initialisation
        model.score.weight.normal_(0.0, 3.0)
    return model


def _batch_ending_in_eos(ragged_batch, pad_token_id):
    """Rows whose last real token is EOS, right-padded with ``pad_token_id`` (transformers'
    default side, where its positions are ours) — where pad = EOS, transformers reads the token
    before the EOS."""
    lengths = [3, 6, 2, 5]
    ids, mask = ragged_batch(lengths, "right", 6, pad_id=pad_token_id)
    ids[range(len(lengths)), [n - 1 for n in lengths]] = EOS
    return ids, mask


def _hf_scores(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits[:, 0]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("pad_token_id", [PAD, EOS], ids=["pad", "pad_is_eos"])
def test_hf_classifier_scores_as_transformers_does(
    arch, pad_token_id, tmp_path, tokenizer, ragged_batch
):
    hf = _hf_classifier(arch, pad_token_id)
    hf.save_pretrained(tmp_path)
    ids, mask = _batch_ending_in_eos(ragged_batch, pad_token_id)
    expected = _hf_scores(hf, ids, mask)
    rm = load_scalar_model(
        ModelConfig(name_or_path=str(tmp_path)), tokenizer, "reward", field_prefix="reward_model"
    ).eval()
    assert torch.equal(rm.score.weight, hf.score.weight)  # its trained head, not a fresh one
    with torch.no_grad():
        torch.testing.assert_close(rm.sequence_scores(ids, mask), expected, atol=1e-5, rtol=0)
    # the same model again: the same scores (a fresh random head would differ per load)
    again = load_scalar_model(ModelConfig(name_or_path=str(tmp_path)), tokenizer, "reward")
    with torch.no_grad():
        assert torch.equal(again.eval().sequence_scores(ids, mask), rm.sequence_scores(ids, mask))


def test_hf_classifier_initialises_a_critic_with_its_head(tmp_path, tokenizer):
    hf = _hf_classifier("llama", PAD)
    hf.save_pretrained(tmp_path)
    critic = load_scalar_model(ModelConfig(name_or_path=str(tmp_path)), tokenizer, "critic")
    assert critic.role == "critic" and torch.equal(critic.score.weight, hf.score.weight)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_our_export_scores_the_same_in_transformers(
    arch, tmp_path, tokenizer, tiny_section, ragged_batch
):
    from transformers import AutoModelForSequenceClassification

    ours = load_scalar_model(tiny_section(arch), tokenizer, "reward").eval()
    ours.set_score_stats(0.5, 2.0)
    save_model(ours, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [type(ours).__name__]
    assert type(ours).__name__.endswith("ForSequenceClassification")
    assert config["rlhf_dist"] == {"head": "reward", "score_mean": 0.5, "score_std": 2.0}
    theirs, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert type(theirs).__module__.startswith("transformers.")
    ids, mask = ragged_batch([4, 6, 1], "right", 6)
    with torch.no_grad():
        torch.testing.assert_close(
            _hf_scores(theirs.eval(), ids, mask), ours.sequence_scores(ids, mask), atol=1e-5, rtol=0
        )


def test_frozen_reward_model_without_a_head_is_an_error(tmp_path, tokenizer, tiny_section):
    save_model(load_causal_lm(tiny_section(), tokenizer), tokenizer, tmp_path)
    section = ModelConfig(name_or_path=str(tmp_path))
    with pytest.raises(
        ModelError,
        match=r"^reward_model\.name_or_path: '.*' has no reward head "
        r"\(found LlamaForCausalLM\)",
    ):
        load_scalar_model(section, tokenizer, "reward", field_prefix="reward_model")
    # where the head is trained next (rlhf-dist rm, the critic) a fresh head is the point
    assert load_scalar_model(section, tokenizer, "reward", train_head=True).score.bias is None
    assert load_scalar_model(section, tokenizer, "critic").role == "critic"


def test_classifier_with_two_labels_is_refused(tmp_path, tokenizer):
    _hf_classifier("llama", PAD, num_labels=2).save_pretrained(tmp_path)
    with pytest.raises(
        ModelError,
        match=r"^reward_model\.name_or_path: .*LlamaForSequence"
        r"Classification with num_labels=2",
    ):
        load_scalar_model(
            ModelConfig(name_or_path=str(tmp_path)),
            tokenizer,
            "reward",
            field_prefix="reward_model",
        )


def _as_old_export(path, bias: float) -> None:
    """Rewrite one of our exports as the format before the head was ``score``: the weights as
    ``value_head.weight`` / ``value_head.bias``, the architecture ``LlamaScalarHeadModel``."""
    weights = load_file(str(path / "model.safetensors"))
    weights["value_head.weight"] = weights.pop("score.weight")
    weights["value_head.bias"] = torch.tensor([bias])
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["LlamaScalarHeadModel"]
    del config["id2label"], config["label2id"]
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("bias", [0.0, 0.75])
def test_old_exports_still_load(bias, tmp_path, tokenizer, tiny_section, ragged_batch, caplog):
    ours = load_scalar_model(tiny_section(), tokenizer, "reward").eval()
    ours.set_score_stats(0.5, 2.0)
    save_model(ours, tokenizer, tmp_path)
    _as_old_export(tmp_path, bias)
    ids, mask = ragged_batch([4, 6, 1], "left", 6)
    with torch.no_grad():
        new_head = ours.sequence_scores(ids, mask)
        old_raw = new_head + bias  # what the old model, with its bias, scored
    with caplog.at_level(logging.WARNING, logger="rlhf_dist.models.scalar_loader"):
        loaded = load_scalar_model(ModelConfig(name_or_path=str(tmp_path)), tokenizer, "reward")
    assert torch.equal(loaded.score.weight, ours.score.weight)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.eval().sequence_scores(ids, mask, normalize=True),
            (old_raw - 0.5) / 2.0,
            atol=1e-6,
            rtol=0,
        )
    if bias:
        assert loaded.score_stats == (pytest.approx(0.5 - bias), 2.0)
        assert "value_head.bias = 0.75 dropped" in caplog.text
    else:
        assert loaded.score_stats == (0.5, 2.0) and not caplog.text


def test_a_sequence_classifier_is_not_a_policy(tmp_path, tokenizer):
    """Given as a causal LM (model.name_or_path) a classifier would get a random lm_head."""
    _hf_classifier("llama", PAD).save_pretrained(tmp_path)
    with pytest.raises(
        ModelError,
        match=r"^model\.name_or_path: .* is a "
        r"LlamaForSequenceClassification \(a score head",
    ):
        load_causal_lm(ModelConfig(name_or_path=str(tmp_path)), tokenizer)
