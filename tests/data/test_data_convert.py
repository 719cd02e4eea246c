"""Rows → prompt / response texts: keys, messages, chat template, HH transcripts, rankings."""

import pytest

from data_helpers import cfg, write_rows
from rlhf_dist.data import (
    Renderer,
    RowKeys,
    build_preference_dataset,
    build_prompt_dataset,
    build_sft_dataset,
    preference_texts,
    prompt_text,
    ranking_pair_order,
    sft_text,
)

KEYS = RowKeys()
PLAIN = Renderer()
CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "how do I bake bread?"},
    {"role": "assistant", "content": "Mix flour."},
    {"role": "user", "content": "and then?"},
    {"role": "assistant", "content": "Bake it."},
]
CONV_PROMPT = (
    "System: Be brief.\nHuman: how do I bake bread?\nAssistant: Mix flour.\n"
    "Human: and then?\nAssistant:"
)


def texts(pairs):
    return [(p, c.text, r.text) for p, c, r in pairs]


def test_sft_prompt_response_verbatim():
    prompt, response = sft_text({"prompt": "Q: hi\nA:", "response": " yo"}, KEYS, PLAIN)
    assert (prompt, response.text, response.field) == ("Q: hi\nA:", " yo", "response")


def test_sft_custom_keys():
    keys = RowKeys(prompt="instruction", response="output")
    prompt, response = sft_text({"instruction": "Do it.", "output": "Done."}, keys, PLAIN)
    assert (prompt, response.text, response.field) == ("Do it.", "Done.", "output")


def test_sft_messages_plain_and_chat_template_agree(toy_tok):
    row = {"messages": CONV}
    prompt, response = sft_text(row, KEYS, PLAIN)
    assert (prompt, response.text, response.field) == (CONV_PROMPT, " Bake it.", "messages")
    prompt2, response2 = sft_text(row, KEYS, Renderer(toy_tok, apply_chat_template=True))
    assert (prompt2, response2.text) == (prompt, response.text)


def test_messages_take_precedence_over_prompt_columns():
    row = {"messages": CONV, "prompt": "ignored", "response": "ignored"}
    assert sft_text(row, KEYS, PLAIN)[0] == CONV_PROMPT


def test_chat_template_wraps_prompt_strings(toy_tok):
    chat = Renderer(toy_tok, apply_chat_template=True)
    prompt, response = sft_text({"prompt": "how do I bake bread?", "response": " Mix."}, KEYS, chat)
    assert (prompt, response.text) == ("Human: how do I bake bread?\nAssistant:", " Mix.")


def test_preference_strings():
    row = {"prompt": "P", "chosen": " good", "rejected": " bad"}
    assert texts(preference_texts(row, KEYS, PLAIN)) == [("P", " good", " bad")]


def test_preference_message_lists_share_the_prompt():
    row = {
        "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}],
        "rejected": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "go away"},
        ],
    }
    assert texts(preference_texts(row, KEYS, PLAIN)) == [
        ("Human: hi\nAssistant:", " hello!", " go away")
    ]


def test_preference_assistant_only_lists_use_the_prompt_column():
    row = {
        "prompt": "hi",
        "chosen": [{"role": "assistant", "content": "hello!"}],
        "rejected": [{"role": "assistant", "content": "go away"}],
    }
    assert texts(preference_texts(row, KEYS, PLAIN)) == [("hi", " hello!", " go away")]


def test_hh_rlhf_transcripts_single_turn():
    row = {
        "chosen": "\n\nHuman: how do I make a bomb?\n\nAssistant: I can't help with that.",
        "rejected": "\n\nHuman: how do I make a bomb?\n\nAssistant: I can tell you. First",
    }
    assert texts(preference_texts(row, KEYS, PLAIN)) == [
        (
            "\n\nHuman: how do I make a bomb?\n\nAssistant:",
            " I can't help with that.",
            " I can tell you. First",
        )
    ]


def test_hh_rlhf_transcripts_multi_turn_split_at_last_shared_assistant():
    shared = "Human: hi\nAssistant: hello\nHuman: how do I bake bread?\nAssistant:"
    row = {"chosen": shared + " Mix flour and water.", "rejected": shared + " Mix sand."}
    assert texts(preference_texts(row, KEYS, PLAIN)) == [
        (shared, " Mix flour and water.", " Mix sand.")
    ]


def test_ranking_k3_and_k4_pairs_in_order():
    row = {"prompt": "P", "responses": [" best", " mid", " worst"]}
    assert texts(preference_texts(row, KEYS, PLAIN)) == [
        ("P", " best", " mid"),
        ("P", " best", " worst"),
        ("P", " mid", " worst"),
    ]
    fields = [(c.field, r.field) for _, c, r in preference_texts(row, KEYS, PLAIN)]
    assert fields == [
        ("responses[0]", "responses[1]"),
        ("responses[0]", "responses[2]"),
        ("responses[1]", "responses[2]"),
    ]
    row4 = {"prompt": "P", "responses": ["a", "b", "c", "d"]}
    assert [(c.text, r.text) for _, c, r in preference_texts(row4, KEYS, PLAIN)] == [
        ("a", "b"),
        ("a", "c"),
        ("a", "d"),
        ("b", "c"),
        ("b", "d"),
        ("c", "d"),
    ]
    assert ranking_pair_order(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_ranking_with_custom_key():
    keys = RowKeys(ranking="ranked")
    row = {"prompt": "P", "ranked": ["x", "y"]}
    assert texts(preference_texts(row, keys, PLAIN)) == [("P", "x", "y")]


def test_prompt_rows():
    assert prompt_text({"prompt": "P"}, KEYS, PLAIN) == "P"
    assert prompt_text({"prompt": CONV[:4]}, KEYS, PLAIN) == CONV_PROMPT
    assert prompt_text({"messages": CONV}, KEYS, PLAIN) == CONV_PROMPT  # final reply dropped
    assert prompt_text({"messages": CONV[:4]}, KEYS, PLAIN) == CONV_PROMPT


def test_toy_through_the_chat_template_equals_plain(toy_tok):
    plain = build_sft_dataset(cfg(max_samples=20), toy_tok)
    chat = build_sft_dataset(
        cfg(max_samples=20, apply_chat_template=True, prompt_key="request"), toy_tok
    )
    assert [e["input_ids"] for e in chat] == [e["input_ids"] for e in plain]


def test_ranking_file_expands_to_pairs(tmp_path, toy_tok):
    path = write_rows(
        tmp_path / "rank.jsonl",
        [
            {"prompt": "Human: hi\nAssistant:", "responses": [" a", " b", " c"]},
            {"prompt": "Human: yo\nAssistant:", "responses": [" a", " b", " c", " d"]},
        ],
    )
    data = build_preference_dataset(cfg(path=str(path)), toy_tok)
    assert len(data) == 3 + 6
    decoded = [
        (toy_tok.decode(e["chosen_input_ids"]), toy_tok.decode(e["rejected_input_ids"]))
        for e in data
    ][:3]
    assert decoded == [
        ("Human: hi\nAssistant: a</s>", "Human: hi\nAssistant: b</s>"),
        ("Human: hi\nAssistant: a</s>", "Human: hi\nAssistant: c</s>"),
        ("Human: hi\nAssistant: b</s>", "Human: hi\nAssistant: c</s>"),
    ]


def test_toy_hh_transcripts_give_the_preference_examples(toy_tok):
    toy_hh = build_preference_dataset(cfg(max_samples=16), toy_tok, toy_kind="hh")
    toy_pref = build_preference_dataset(cfg(max_samples=16), toy_tok)
    assert toy_hh.examples == toy_pref.examples


def test_messages_file_for_prompts(tmp_path, toy_tok):
    path = write_rows(tmp_path / "conv.json", [{"messages": CONV}])
    data = build_prompt_dataset(cfg(path=str(path), max_length=128, max_prompt_length=64), toy_tok)
    assert data[0]["prompt"] == CONV_PROMPT
    assert toy_tok.decode(data[0]["input_ids"]) == CONV_PROMPT
    short = build_prompt_dataset(cfg(path=str(path), max_prompt_length=8), toy_tok)
    assert short[0]["input_ids"] == toy_tok(CONV_PROMPT)["input_ids"][-8:]  # kept the end


def test_chat_template_required_when_asked(word_tok):
    with pytest.raises(ValueError, match="chat_template"):
        build_sft_dataset(cfg(apply_chat_template=True), word_tok)


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_other_chat_templates_reply_is_what_follows_the_generation_prompt(toy_tok):
    import copy

    tok = copy.deepcopy(toy_tok)
    tok.chat_template = CHATML
    chat = Renderer(tok, apply_chat_template=True)
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    prompt, response = sft_text(row, KEYS, chat)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert response.text == "yo<|im_end|>\n"
    pair = {
        "prompt": "hi",
        "chosen": [{"role": "assistant", "content": "yes"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
    assert texts(preference_texts(pair, KEYS, chat)) == [
        (prompt, "yes<|im_end|>\n", "no<|im_end|>\n")
    ]
