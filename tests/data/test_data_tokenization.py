"""Truncation and label masking, with ids computed by hand (word tokenizer: see data_helpers)."""

import pytest

from data_helpers import ids, make_word_tokenizer
from rlhf_dist.data import Encoder, RowError, join_response, truncate_left
from rlhf_dist.data.tokenization import bos_prefix, lm_example, preference_example, prompt_ids

EOS, X = 2, -100


def test_truncate_left_keeps_the_end():
    assert truncate_left([1, 2, 3, 4, 5], 3) == [3, 4, 5]
    assert truncate_left([1, 2], 3) == [1, 2]
    assert truncate_left([1, 2], 0) == []
    assert prompt_ids([7, 8, 9], 3, prefix=[1]) == [1, 8, 9]


def test_response_fits_eos_appended_prompt_masked():
    input_ids, labels = join_response([10, 11, 12], [20, 21], EOS, max_length=8)
    assert input_ids == [10, 11, 12, 20, 21, EOS]
    assert labels == [X, X, X, 20, 21, EOS]


def test_exact_fit_keeps_eos():
    assert join_response([10, 11], [20, 21], EOS, max_length=5) == (
        [10, 11, 20, 21, EOS],
        [X, X, 20, 21, EOS],
    )


def test_truncated_response_drops_eos():
    assert join_response([10, 11], [20, 21, 22], EOS, max_length=4) == (
        [10, 11, 20, 21],
        [X, X, 20, 21],
    )


def test_response_already_ending_in_eos_gets_one_eos():
    assert join_response([10], [20, EOS], EOS, max_length=8)[0] == [10, 20, EOS]


def test_no_room_or_no_tokens_is_a_row_error():
    with pytest.raises(RowError, match="fully truncated") as info:
        join_response([10, 11, 12], [20], EOS, max_length=3, field="chosen")
    assert info.value.field == "chosen"
    with pytest.raises(RowError, match="no tokens"):
        join_response([10], [], EOS, max_length=8)
    with pytest.raises(RowError, match="no tokens"):
        join_response([10], [EOS], EOS, max_length=8)  # eos alone is not a response


def test_preference_example_masks_the_prompt_in_both():
    ex = preference_example([10, 11], [20], [30, 31], EOS, max_length=4)
    assert ex == {
        "chosen_input_ids": [10, 11, 20, EOS],
        "chosen_labels": [X, X, 20, EOS],
        "rejected_input_ids": [10, 11, 30, 31],
        "rejected_labels": [X, X, 30, 31],
        "prompt_len": 2,
    }


def test_lm_example_every_token_is_a_label():
    assert lm_example([5, 6, 7], EOS, max_length=3) == {
        "input_ids": [5, 6, 7],
        "labels": [5, 6, 7],
        "prompt_len": 0,
    }
    assert lm_example([5], EOS, max_length=3)["input_ids"] == [5, EOS]


def test_encoder_left_truncates_the_prompt_by_hand(word_tok):
    enc = Encoder(word_tok, max_length=7, max_prompt_length=4)
    ex = enc.sft("Q p1 p2 p3 p4 p5 A:", " r1 r2 r3 r4")
    # prompt ids Q=4 p1..p5=6..10 A:=5 → last 4: p3 p4 p5 A: = 8 9 10 5; 3 response slots.
    assert ex["input_ids"] == [8, 9, 10, 5, 15, 16, 17]
    assert ex["labels"] == [X, X, X, X, 15, 16, 17]
    assert ex["prompt_len"] == 4
    short = enc.sft("Q p1 A:", " r1")
    assert short == {
        "input_ids": ids("Q p1 A: r1 </s>"),
        "labels": [X, X, X] + ids("r1 </s>"),
        "prompt_len": 3,
    }


def test_bos_prefix_for_tokenizers_that_add_bos():
    bos_tok = make_word_tokenizer(add_bos=True)
    assert bos_prefix(bos_tok) == [1]
    enc = Encoder(bos_tok, max_length=8, max_prompt_length=3)
    assert enc.prompt("Q p1 p2 A:") == [1, 7, 5]  # bos kept, then the last 2 prompt tokens
    assert enc.prompt("<s> p2 A:") == [1, 7, 5]  # no second bos
    assert Encoder(bos_tok, 8, 3, add_bos=False).prompt("Q p1 p2 A:") == [6, 7, 5]


def test_no_bos_prefix_for_the_toy_tokenizer(toy_tok, word_tok):
    assert bos_prefix(toy_tok) == [] and bos_prefix(word_tok) == []


def test_tokenizer_without_eos_is_refused(word_tok):
    class NoEos:
        eos_token_id = None

    with pytest.raises(ValueError, match="eos"):
        Encoder(NoEos(), 8, 4)


def test_toy_sft_example_labels_by_hand(toy_tok):
    enc = Encoder(toy_tok, max_length=256, max_prompt_length=128)
    prompt, response = "Human: how do I bake bread?\nAssistant:", " Sure! To bake bread."
    p_ids = toy_tok(prompt)["input_ids"]
    r_ids = toy_tok(response)["input_ids"]
    ex = enc.sft(prompt, response)
    assert ex["input_ids"] == p_ids + r_ids + [2]
    assert ex["labels"] == [X] * len(p_ids) + r_ids + [2]
    assert toy_tok.decode(ex["input_ids"]) == prompt + response + "</s>"
