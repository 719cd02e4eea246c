"""End to end: toy rows → tokenised datasets → DataLoader batches; cheap package import."""

import subprocess
import sys

import pytest
import torch

from data_helpers import cfg
from rlhf_dist.config import ConfigError
from rlhf_dist.data import (
    PreferenceCollator,
    PromptCollator,
    SFTCollator,
    build_lm_dataset,
    build_preference_dataset,
    build_prompt_dataset,
    build_sft_dataset,
)
from rlhf_dist.toy import is_refusal

X = -100


def test_toy_sizes_per_split(toy_tok):
    c = cfg(max_length=128, max_prompt_length=64)
    sizes = {
        b.__name__: (len(b(c, toy_tok, "train")), len(b(c, toy_tok, "eval")))
        for b in (
            build_sft_dataset,
            build_preference_dataset,
            build_prompt_dataset,
            build_lm_dataset,
        )
    }
    assert sizes == {
        "build_sft_dataset": (224, 32),
        "build_preference_dataset": (224, 32),
        "build_prompt_dataset": (224, 32),
        "build_lm_dataset": (448, 64),
    }
    assert len(build_preference_dataset(c, toy_tok, toy_kind="ranking")) == 224 * 3


def test_toy_sft_examples_mask_exactly_the_prompt(toy_tok):
    data = build_sft_dataset(cfg(max_length=128, max_prompt_length=64), toy_tok)
    assert data.num_skipped == 0 and data.source == "toy:sft/train"
    for ex in data:
        n = ex["prompt_len"]
        assert ex["labels"][:n] == [X] * n
        assert ex["labels"][n:] == ex["input_ids"][n:] and ex["input_ids"][-1] == 2
        prompt = toy_tok.decode(ex["input_ids"][:n])
        assert prompt.startswith("Human: ") and prompt.endswith("\nAssistant:")


def test_train_on_prompt_unmasks_the_prompt(toy_tok):
    masked = build_sft_dataset(cfg(max_samples=4), toy_tok)
    unmasked = build_sft_dataset(cfg(max_samples=4), toy_tok, train_on_prompt=True)
    for a, b in zip(masked, unmasked):
        assert b["input_ids"] == a["input_ids"] and b["labels"] == b["input_ids"]
        assert b["prompt_len"] == a["prompt_len"] and a["labels"][0] == X


def test_toy_prompt_examples_carry_text_and_kind(toy_tok):
    data = build_prompt_dataset(cfg(), toy_tok, "eval")
    assert {e["kind"] for e in data} == {"harmful", "benign"}
    for e in data:
        assert toy_tok.decode(e["input_ids"]) == e["prompt"]


def test_toy_preference_chosen_refuses_harmful(toy_tok):
    data = build_preference_dataset(cfg(max_length=128, max_prompt_length=64), toy_tok, "eval")
    rows = build_prompt_dataset(cfg(max_length=128, max_prompt_length=64), toy_tok, "eval")
    for ex, prompt in zip(data, rows):
        n = ex["prompt_len"]
        chosen = toy_tok.decode(ex["chosen_input_ids"][n:])
        assert is_refusal(chosen) == (prompt["kind"] == "harmful")


def test_dataloader_batches(toy_tok):
    c = cfg(max_length=128, max_prompt_length=64)
    pref = build_preference_dataset(c, toy_tok)
    loader = torch.utils.data.DataLoader(pref, batch_size=4, collate_fn=PreferenceCollator(0))
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 8
    first = pref[0]["chosen_input_ids"]
    assert batch["input_ids"][0, : len(first)].tolist() == first
    sft = torch.utils.data.DataLoader(
        build_sft_dataset(c, toy_tok), batch_size=3, collate_fn=SFTCollator(toy_tok.pad_token_id)
    )
    assert next(iter(sft))["labels"].shape[0] == 3
    prompts = torch.utils.data.DataLoader(
        build_prompt_dataset(c, toy_tok),
        batch_size=5,
        collate_fn=PromptCollator(toy_tok.pad_token_id),
    )
    batch = next(iter(prompts))
    assert (batch["input_ids"][:, -1] != 0).all() and len(batch["prompts"]) == 5


def test_max_samples_on_toy(toy_tok):
    assert len(build_sft_dataset(cfg(max_samples=10), toy_tok)) == 10


def test_import_is_cheap():
    code = (
        "import sys, rlhf_dist.data; "
        "print(sorted(m for m in ('torch', 'datasets', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_prompt_length_is_checked_only_where_a_response_follows(toy_tok):
    """PPO prompts do not read data.max_length: a max_prompt_length above it is fine there;
    SFT and preference pairs name the field, as the config's other errors do."""
    c = cfg(max_length=8, max_prompt_length=64)
    prompts = build_prompt_dataset(c, toy_tok, "eval")
    assert len(prompts) == 32 and max(len(e["input_ids"]) for e in prompts) == 17
    for build in (build_sft_dataset, build_preference_dataset):
        with pytest.raises(
            ConfigError, match="data.max_prompt_length: 64 must be smaller than data.max_length=8"
        ):
            build(c, toy_tok)
