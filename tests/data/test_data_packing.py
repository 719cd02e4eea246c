"""Padding-free batches (``train.padding_free``): the packed row checked by hand, and the same
SFT loss and gradient, reward-model scores and token counts as the padded batches under eager
and sdpa attention (the DPO layout is compared in tests/objectives/test_objectives_pairs.py)."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.algo import sequence_end_index, sft_loss
from rlhf_dist.config import ConfigError, DataConfig, ModelConfig, TinyModelConfig, load_config
from rlhf_dist.data import (
    PAIR_COLLATORS,
    PackedLMCollator,
    PackedPairCollator,
    SFTCollator,
    build_sft_dataset,
    is_packed,
    lm_collator,
    pack,
)

X = -100
TINY = TinyModelConfig(
    arch="llama", hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128
)


def test_pack_by_hand():
    row = pack([[5, 6, 7], [8, 9]], [[X, 6, 7], [8, 9]])
    assert row["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert row["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # each sequence's first label is dropped: it would be predicted from the previous sequence
    assert row["labels"].tolist() == [[X, 6, 7, X, 9]]
    assert row["sequence_ids"].tolist() == [[0, 0, 0, 1, 1]]
    assert sequence_end_index(row["sequence_ids"]).tolist() == [2, 4]
    assert is_packed(row) and "attention_mask" not in row
    assert all(row[k].dtype == torch.long for k in row)


def test_pair_collator_puts_the_chosen_sequences_first():
    pairs = [
        {
            "chosen_input_ids": [1, 2],
            "chosen_labels": [X, 2],
            "rejected_input_ids": [1, 3, 4],
            "rejected_labels": [X, 3, 4],
        },
        {
            "chosen_input_ids": [5],
            "chosen_labels": [5],
            "rejected_input_ids": [6, 7],
            "rejected_labels": [X, 7],
        },
    ]
    row = PackedPairCollator()(pairs)
    assert row["input_ids"].tolist() == [[1, 2, 5, 1, 3, 4, 6, 7]]
    assert row["sequence_ids"].tolist() == [[0, 0, 1, 2, 2, 2, 3, 3]]
    assert row["labels"].tolist() == [[X, 2, X, X, 3, 4, X, 7]]
    assert PAIR_COLLATORS["packed"] is PackedPairCollator


def test_pack_names_the_bad_sequence():
    with pytest.raises(ValueError, match="sequence 1 has 2 tokens but 1 labels"):
        pack([[1], [2, 3]], [[1], [3]])
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        pack([[1], []], [[1], []])


def test_lm_collator_follows_padding_free():
    assert isinstance(lm_collator(0, padding_free=True), PackedLMCollator)
    assert isinstance(lm_collator(0), SFTCollator)


@pytest.fixture(scope="module")
def tokenizer():
    from rlhf_dist.toy import toy_tokenizer

    return toy_tokenizer()


@pytest.fixture(scope="module")
def examples(tokenizer):
    data = build_sft_dataset(DataConfig(max_length=64, max_prompt_length=32), tokenizer)
    rows = [data[i] for i in range(6)]
    assert len({len(r["input_ids"]) for r in rows}) > 1  # padding matters
    return rows


def _model(tokenizer, attn, scalar=False):
    from rlhf_dist.models import load_causal_lm, load_scalar_model

    torch.manual_seed(0)
    cfg = ModelConfig(attn_implementation=attn, tiny=TINY)
    return (
        load_scalar_model(cfg, tokenizer, role="reward")
        if scalar
        else load_causal_lm(cfg, tokenizer)
    )


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_sft_loss_and_gradient_equal_the_padded(tokenizer, examples, attn):
    from rlhf_dist.models import causal_lm_logits

    model = _model(tokenizer, attn)
    results = []
    for collate in (SFTCollator(tokenizer.pad_token_id), PackedLMCollator()):
        batch = collate(examples)
        model.zero_grad()
        loss = sft_loss(
            causal_lm_logits(
                model, batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids")
            ),
            batch["labels"],
        )
        loss.backward()
        scored = int((batch["labels"][:, 1:] != X).sum())
        results.append((loss.detach(), model.model.embed_tokens.weight.grad.clone(), scored))
    (padded, padded_grad, padded_n), (packed, packed_grad, packed_n) = results
    assert padded_n == packed_n  # the same tokens scored, none across a boundary
    assert float(padded) > 1.0  # an untrained model: a real loss, not a degenerate 0
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed_grad, padded_grad, atol=1e-6, rtol=1e-4)
    # the control: positions that do not restart let every token see the sequences before it
    row = PackedLMCollator()(examples)
    with torch.no_grad():
        leaky = sft_loss(
            causal_lm_logits(
                model, row["input_ids"], None, torch.arange(row["input_ids"].shape[1])[None]
            ),
            row["labels"],
        )
    assert abs(float(leaky) - float(padded)) > 1e-3


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_reward_scores_equal_the_padded(tokenizer, attn):
    from rlhf_dist.algo import last_token_index
    from rlhf_dist.config import DataConfig as D
    from rlhf_dist.data import build_preference_dataset

    data = build_preference_dataset(D(max_length=64, max_prompt_length=32), tokenizer)
    pairs = [data[i] for i in range(5)]
    model = _model(tokenizer, attn, scalar=True).eval()
    padded = PAIR_COLLATORS["padded"](tokenizer.pad_token_id)(pairs)
    packed = PackedPairCollator()(pairs)
    with torch.no_grad():
        want = model(padded["input_ids"], padded["attention_mask"]).gather(
            -1, last_token_index(padded["attention_mask"])[:, None]
        )[:, 0]
        got = model(packed["input_ids"], None, packed["position_ids"])[
            0, sequence_end_index(packed["sequence_ids"])
        ]
    assert want.shape == got.shape == (10,) and want.std() > 0
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_padding_free_resolves_the_dpo_layout():
    assert load_config(None, ["train.padding_free=true"]).dpo.layout == "packed"
    # flash-attention-2 takes packed rows as varlen sequences
    cfg = load_config(
        None, ["train.padding_free=true", "model.attn_implementation=flash_attention_2"]
    )
    assert cfg.dpo.layout == "packed"
    with pytest.raises(ConfigError, match="dpo.layout: shared_prompt with train.padding_free=True"):
        load_config(None, ["train.padding_free=true", "dpo.layout=shared_prompt"])
    with pytest.raises(ConfigError, match="dpo.layout: packed with train.padding_free=False"):
        load_config(None, ["dpo.layout=packed"])


def test_forward_needs_a_mask_or_positions(tokenizer):
    from rlhf_dist.models import causal_lm_logits

    with pytest.raises(ValueError, match="needs an attention_mask or.*position_ids"):
        causal_lm_logits(_model(tokenizer, "eager"), torch.tensor([[1, 2]]), None)
