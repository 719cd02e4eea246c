"""Preference-pair layouts: the shared-prompt row (prompt + chosen + rejected, 4D mask) and the
packed row (2B sequences, no padding) give the padded layout's log-probs, NLL, DPO loss and
gradient; the shared-prompt collator's row and mask checked by hand."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import DPOConfig, ModelConfig, TinyModelConfig
from rlhf_dist.data import PAIR_COLLATORS, SharedPromptCollator, shared_prompt_attention_mask
from rlhf_dist.objectives import PAIR_LAYOUTS, dpo_batch_loss, reference_rows

X = -100


def _pair(prompt, chosen, rejected):
    n = len(prompt)
    return {
        "chosen_input_ids": prompt + chosen,
        "chosen_labels": [X] * n + chosen,
        "rejected_input_ids": prompt + rejected,
        "rejected_labels": [X] * n + rejected,
        "prompt_len": n,
    }


def test_shared_prompt_row_by_hand():
    batch = SharedPromptCollator(pad_token_id=0)(
        [_pair([5, 6], [7, 8], [9]), _pair([4], [3], [2, 1])]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [4, 3, 2, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # rejected positions restart where the prompt ends
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2], [0, 1, 1, 2, 0]]
    assert batch["segment_ids"].tolist() == [[1, 1, 2, 2, 3], [1, 2, 3, 3, 0]]
    # position t holds the token it predicts; the prompt's last position predicts both firsts
    assert batch["chosen_targets"].tolist() == [[X, 7, 8, X, X], [3, X, X, X, X]]
    assert batch["rejected_targets"].tolist() == [[X, 9, X, X, X], [2, X, 1, X, X]]


def test_shared_prompt_mask_by_hand():
    segments = torch.tensor([[1, 1, 2, 2, 3, 0]])
    allowed = shared_prompt_attention_mask(segments, torch.float32)[0, 0] == 0
    assert allowed.int().tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],  # rejected: the prompt and itself, never the chosen tokens
        [1, 1, 1, 1, 1, 1],  # padding sees itself (and is never scored)
    ]
    mask = shared_prompt_attention_mask(segments, torch.bfloat16)
    assert mask.dtype == torch.bfloat16 and mask.shape == (1, 1, 6, 6)
    assert mask[0, 0, 4, 2] == torch.finfo(torch.bfloat16).min


@pytest.fixture(scope="module")
def tokenizer():
    from rlhf_dist.toy import toy_tokenizer

    return toy_tokenizer()


def _model(tokenizer, attn):
    from rlhf_dist.models import load_causal_lm

    torch.manual_seed(0)
    cfg = ModelConfig(
        attn_implementation=attn,
        tiny=TinyModelConfig(
            arch="llama", hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128
        ),
    )
    return load_causal_lm(cfg, tokenizer)


def _pairs(tokenizer, count=6):
    from rlhf_dist.config import DataConfig
    from rlhf_dist.data import build_preference_dataset

    data = build_preference_dataset(
        DataConfig(max_length=64, max_prompt_length=32), tokenizer, split="train"
    )
    return [data[i] for i in range(count)]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_layouts_equal_padded(tokenizer, attn, loss_type):
    model = _model(tokenizer, attn)
    pairs = _pairs(tokenizer)
    # different lengths inside the batch, so padding and masks matter
    assert len({len(p["chosen_input_ids"]) + len(p["rejected_input_ids"]) for p in pairs}) > 1
    results = {}
    for name, layout in PAIR_LAYOUTS.items():
        dpo = DPOConfig(loss_type=loss_type, nll_coef=0.5, layout=name)
        batch = PAIR_COLLATORS[name](tokenizer.pad_token_id)(pairs)
        logps = layout.logps(model, batch)
        with torch.no_grad():
            reference = reference_rows(model, batch, dpo)
        ref = [r - 0.25 for r in layout.split_rows(reference)]  # a reference apart from the policy
        model.zero_grad()
        loss, metrics = dpo_batch_loss(model, batch, layout.rows(*ref), dpo)
        loss.backward()
        results[name] = (
            logps.sequences(),
            logps.chosen_nll(),
            metrics,
            model.model.embed_tokens.weight.grad.clone(),
            layout.num_tokens(batch),
        )
    padded = results.pop("padded")
    assert set(results) == {"shared_prompt", "packed"}
    for other in results.values():
        for a, b in zip(padded[0], other[0]):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(padded[1], other[1], atol=1e-5, rtol=1e-5)
        for key in ("loss", "dpo_loss", "nll", "reward_margin", "chosen_logp"):
            assert padded[2][key] == pytest.approx(other[2][key], abs=1e-4)
        torch.testing.assert_close(padded[3], other[3], atol=1e-5, rtol=1e-4)
        assert padded[4] == other[4]  # the same tokens counted for throughput


def test_lm_head_runs_on_the_scored_positions_only(tokenizer):
    """Every layout sends only the positions that score a response token through the LM head
    (counted by hand from the pairs' lengths), with the log-probs of the full logits."""
    from rlhf_dist.algo import sequence_logps
    from rlhf_dist.models import causal_lm_logits

    model = _model(tokenizer, "eager")
    pairs = _pairs(tokenizer)
    lengths = [
        (
            p["prompt_len"],
            len(p["chosen_input_ids"]) - p["prompt_len"],
            len(p["rejected_input_ids"]) - p["prompt_len"],
        )
        for p in pairs
    ]
    padded = PAIR_COLLATORS["padded"](tokenizer.pad_token_id)(pairs)
    with torch.no_grad():
        full = sequence_logps(
            causal_lm_logits(model, padded["input_ids"], padded["attention_mask"]), padded["labels"]
        )
    # positions predicting a response token: a row's P-1 .. P+n-2 for a response of n tokens
    # after a prompt of P; in the shared row the rejected ones start again at P-1 after the
    # chosen, so the chosen's last position (P+C-1) predicts nothing
    padded_cols = {t for p, c, r in lengths for n in (c, r) for t in range(p - 1, p + n - 1)}
    shared_cols = {
        t for p, c, r in lengths for t in [*range(p - 1, p + c - 1), *range(p + c, p + c + r - 1)]
    }
    expected = {
        "padded": len(padded_cols),
        "shared_prompt": len(shared_cols),
        "packed": sum(c + r for _, c, r in lengths),
    }
    assert expected["padded"] < padded["input_ids"].shape[1] - 1
    rows = []
    hook = model.lm_head.register_forward_hook(lambda m, args, out: rows.append(out.shape[1]))
    for name, layout in PAIR_LAYOUTS.items():
        batch = PAIR_COLLATORS[name](tokenizer.pad_token_id)(pairs)
        with torch.no_grad():
            sums = torch.cat(layout.logps(model, batch).sequences())
        torch.testing.assert_close(sums, full, atol=1e-4, rtol=1e-5)
        assert rows.pop() == expected[name], name
    hook.remove()


def test_layout_auto_takes_padded_rows_under_flash_attention():
    from rlhf_dist.config import ConfigError, load_config

    assert load_config(None, []).dpo.layout == "shared_prompt"
    # any job (an SFT config too) may use flash-attention-2: DPO would then pad its rows
    cfg = load_config(None, ["model.attn_implementation=flash_attention_2"])
    assert cfg.dpo.layout == "padded"
    with pytest.raises(
        ConfigError,
        match="dpo.layout: shared_prompt needs a 4D attention mask, "
        "which ref_model.attn_implementation",
    ):
        load_config(
            None, ["ref_model.attn_implementation=flash_attention_2", "dpo.layout=shared_prompt"]
        )


def test_shared_prompt_refuses_rows_longer_than_a_sliding_window(tokenizer):
    model = _model(tokenizer, "eager")
    batch = PAIR_COLLATORS["shared_prompt"](tokenizer.pad_token_id)(_pairs(tokenizer, 2))
    model.config.sliding_window = 8  # as Mistral-style configs carry one
    with pytest.raises(
        ValueError,
        match=r"exceeds the model's sliding window \(8\).*"
        r"dpo.layout=padded",
    ):
        PAIR_LAYOUTS["shared_prompt"].logps(model, batch)
    model.config.sliding_window = None
    PAIR_LAYOUTS["shared_prompt"].logps(model, batch)
