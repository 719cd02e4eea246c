"""Tiny fixtures: a word-level tokenizer (vocab 100), tiny model sections, ragged batches.

Helpers are handed out as fixtures (factories), so no test imports this file.
"""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import ModelConfig, TinyModelConfig

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
VOCAB = 100


def _make_tokenizer(pad: bool = True, eos: bool = True):
    """A ``PreTrainedTokenizerFast`` over ``w0 … w95`` plus the specials (ids 0–3)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + [f"w{i}" for i in range(VOCAB - len(SPECIALS))]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = {"unk_token": "<unk>", "bos_token": "<s>"}
    if pad:
        specials["pad_token"] = "<pad>"
    if eos:
        specials["eos_token"] = "</s>"
    return PreTrainedTokenizerFast(tokenizer_object=raw, **specials)


def _tiny_section(arch: str = "llama", **overrides) -> ModelConfig:
    tiny = TinyModelConfig(
        arch=arch,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return ModelConfig(tiny=tiny, **overrides)


@pytest.fixture
def make_tokenizer():
    return _make_tokenizer


@pytest.fixture
def tiny_section():
    return _tiny_section


@pytest.fixture
def ragged_batch():
    return _ragged_batch


@pytest.fixture
def tokenizer():
    return _make_tokenizer()


@pytest.fixture
def tokenizer_dir(tmp_path, tokenizer):
    path = tmp_path / "tokenizer"
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _ragged_batch(lengths, side: str, width: int, pad_id: int = 0, seed: int = 1):
    """``(ids, mask)`` with rows of ``lengths`` real tokens padded on ``side`` to ``width``."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        ids[row, cols] = torch.randint(4, VOCAB, (n,), generator=gen)
        mask[row, cols] = 1
    return ids, mask
