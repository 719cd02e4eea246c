"""The toy tokenizer: exact round trip, special tokens, HF format, cache, determinism."""

import os

import pytest

import rlhf_dist.toy.tokenizer as tokenizer_module
from rlhf_dist.data import CHAT_TEMPLATE, render_messages
from rlhf_dist.toy import (
    ToyTask,
    toy_corpus,
    toy_tokenizer,
    toy_tokenizer_path,
    train_toy_tokenizer,
)

ODD_TEXT = "Ünïcode ✓ and numbers 12345,\ttabs  and\n\nnew lines"


def test_round_trip_exact(toy_tok):
    for text in toy_corpus()[::7] + [ODD_TEXT, " leading space", "trailing "]:
        assert toy_tok.decode(toy_tok(text)["input_ids"]) == text


def test_special_tokens_and_no_automatic_bos_eos(toy_tok):
    assert (toy_tok.pad_token, toy_tok.bos_token, toy_tok.eos_token, toy_tok.unk_token) == (
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
    )
    assert (
        toy_tok.pad_token_id,
        toy_tok.bos_token_id,
        toy_tok.eos_token_id,
        toy_tok.unk_token_id,
    ) == (0, 1, 2, 3)
    ids = toy_tok("Human: how do I bake bread?")["input_ids"]
    assert ids == toy_tok("Human: how do I bake bread?", add_special_tokens=False)["input_ids"]
    assert not {0, 1, 2, 3} & set(ids)
    assert toy_tok("a </s>", add_special_tokens=False)["input_ids"][-1] == 2


def test_small_vocab_covers_every_toy_word(toy_tok):
    assert 300 < len(toy_tok) <= 1024
    for text in toy_corpus()[::5]:
        assert toy_tok.unk_token_id not in toy_tok(text)["input_ids"]
    # Most toy words are one token: a whole prompt + answer stays short.
    assert max(len(toy_tok(t)["input_ids"]) for t in toy_corpus()) < 100


def test_chat_template_matches_plain_format(toy_tok):
    conv = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "how do I bake bread?"},
        {"role": "assistant", "content": "Mix flour."},
        {"role": "user", "content": "and then?"},
    ]
    assert toy_tok.chat_template == CHAT_TEMPLATE
    rendered = toy_tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "System: be nice\nHuman: how do I bake bread?\nAssistant: Mix flour.\n"
        "Human: and then?\nAssistant:"
    )
    assert rendered == render_messages(conv, add_generation_prompt=True)
    assert toy_tok.apply_chat_template(conv[:3], tokenize=False) == render_messages(conv[:3])
    single = ToyTask().sft_rows()[0]
    assert (
        toy_tok.apply_chat_template(
            [{"role": "user", "content": single["request"]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        == single["prompt"]
    )


def test_saved_in_hf_format_and_reloadable(toy_tok, toy_cache):
    from transformers import AutoTokenizer

    path = toy_tokenizer_path(str(toy_cache))
    assert path.parent == toy_cache and path.name.startswith("toy_tokenizer-")
    assert (path / "tokenizer.json").is_file() and (path / "tokenizer_config.json").is_file()
    again = AutoTokenizer.from_pretrained(str(path))
    for text in toy_corpus()[::11] + [ODD_TEXT]:
        assert again(text)["input_ids"] == toy_tok(text)["input_ids"]
    assert again.eos_token_id == 2 and again.pad_token_id == 0
    assert again.chat_template == CHAT_TEMPLATE


def test_second_call_is_a_cache_hit(tmp_path, monkeypatch):
    first = toy_tokenizer(cache_dir=str(tmp_path))

    def fail():
        raise AssertionError("retrained although the tokenizer is cached")

    monkeypatch.setattr(tokenizer_module, "train_toy_tokenizer", fail)
    second = toy_tokenizer(cache_dir=str(tmp_path))
    assert second.get_vocab() == first.get_vocab()
    assert [p.name for p in tmp_path.iterdir()] == [toy_tokenizer_path(str(tmp_path)).name]


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_DIST_CACHE", str(tmp_path))
    toy_tokenizer()
    assert toy_tokenizer_path().parent == tmp_path


def test_lost_race_keeps_the_winner(tmp_path, toy_tok):
    final = tmp_path / "toy_tokenizer-x"
    tokenizer_module._publish(toy_tok, final)
    winner = os.stat(final / "tokenizer.json").st_mtime_ns
    tokenizer_module._publish(toy_tok, final)  # a second writer loses the rename
    assert os.stat(final / "tokenizer.json").st_mtime_ns == winner
    assert [p.name for p in tmp_path.iterdir()] == ["toy_tokenizer-x"]  # temp dir cleaned


def test_training_is_deterministic(toy_tok):
    assert train_toy_tokenizer().get_vocab() == toy_tok.get_vocab()


@pytest.mark.parametrize("text", ["how do I make a bomb?", "Sure! To bake bread"])
def test_encodes_toy_words_compactly(toy_tok, text):
    assert len(toy_tok(text)["input_ids"]) <= len(text.split()) + 3
