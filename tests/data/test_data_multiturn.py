"""Multi-turn SFT (issue 29 item 5): every assistant turn of a ``messages`` row is trained,
the system / user / tool turns between them are masked, in the plain format and through a chat
template -- checked position by position with a word tokenizer whose ids are known by hand."""

import re

import pytest

from data_helpers import cfg, write_rows
from rlhf_dist.data import Renderer, RowError, RowKeys, build_sft_dataset
from rlhf_dist.data.convert import Segment, sft_text, sft_turns
from rlhf_dist.data.tokenization import encode, turns_example

X = -100
# <pad>=0 <s>=1 </s>=2 <unk>=3, then the words below from 4
WORDS = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "Human:",
    "Assistant:",
    "Tool:",
    "System:",
    "<user>",
    "<assistant>",
    "<tool>",
    "<system>",
    "<sep>",
    "sys",
    "q1",
    "q2",
    "a1",
    "a2",
    "a3",
    "t1",
    "t2",
    "CALL",
]
ID = {w: i for i, w in enumerate(WORDS)}
EOS = ID["</s>"]
# a chat template whose assistant turns end in the eos token and one more token (<sep>), as
# real templates end a turn with their end-of-turn token and a newline
TEMPLATE = (
    "{% for m in messages %}{{ '<' + m['role'] + '> ' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ ' </s> <sep>' }}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}"
)

AGENT = [
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "CALL a1"},
    {"role": "tool", "content": "t1"},
    {"role": "assistant", "content": "a2"},
]
LONG = [
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "q2"},
    {"role": "assistant", "content": "CALL a2"},
    {"role": "tool", "content": "t1"},
    {"role": "tool", "content": "t2"},
    {"role": "assistant", "content": "a3"},
]


def ids(text):
    return [ID[w] for w in text.split()]


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(ID, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    out.chat_template = TEMPLATE
    return out


def dataset(tmp_path, tok, rows, **kw):
    path = write_rows(tmp_path / "sft.jsonl", rows)
    return build_sft_dataset(cfg(path=str(path), **kw), tok)


def test_plain_every_assistant_turn_is_trained(tmp_path, tok):
    """Human: q1 / Assistant: CALL a1 </s> / Tool: t1 / Assistant: a2 </s>."""
    [ex] = dataset(tmp_path, tok, [{"messages": AGENT}])
    assert ex["input_ids"] == ids("Human: q1 Assistant: CALL a1 </s> Tool: t1 Assistant: a2 </s>")
    assert ex["labels"] == [X, X, X] + ids("CALL a1 </s>") + [X, X, X] + ids("a2 </s>")
    assert ex["prompt_len"] == 3


def test_plain_long_conversation_masks_system_user_and_tool_turns(tmp_path, tok):
    [ex] = dataset(tmp_path, tok, [{"messages": LONG}])
    text = (
        "System: sys Human: q1 Assistant: a1 </s> Human: q2 Assistant: CALL a2 </s> "
        "Tool: t1 Tool: t2 Assistant: a3 </s>"
    )
    assert ex["input_ids"] == ids(text)
    trained = [i for i, label in enumerate(ex["labels"]) if label != X]
    assert trained == [5, 6, 10, 11, 12, 18, 19]
    assert [ex["input_ids"][i] for i in trained] == ids("a1 </s> CALL a2 </s> a3 </s>")


def test_chat_template_turns_end_at_the_eos_and_the_rest_is_context(tmp_path, tok):
    """The template ends each assistant turn with ``</s> <sep>``: the turn is trained through
    its eos (no second eos appended) and ``<sep>`` opens the next, masked, segment; after the
    last turn it is dropped (the sequence ends at eos, where a rollout stops)."""
    [ex] = dataset(tmp_path, tok, [{"messages": AGENT}], apply_chat_template=True)
    assert ex["input_ids"] == ids(
        "<user> q1 <assistant> CALL a1 </s> <sep> <tool> t1 <assistant> a2 </s>"
    )
    assert ex["labels"] == [X, X, X] + ids("CALL a1 </s>") + [X, X, X, X] + ids("a2 </s>")


def test_segments_concatenate_to_the_whole_rendering(tok):
    for renderer in (Renderer(), Renderer(tok, apply_chat_template=True)):
        prompt, segments = sft_turns({"messages": LONG}, RowKeys(), renderer)
        assert [s.trained for s in segments] == [True, False, True, False, True]
        assert prompt + "".join(s.text for s in segments) == renderer.render(LONG)
    prompt, segments = sft_turns({"messages": AGENT}, RowKeys(), Renderer())
    assert (prompt, segments) == (
        "Human: q1\nAssistant:",
        [Segment(" CALL a1", True), Segment("\nTool: t1\nAssistant:", False), Segment(" a2", True)],
    )


def test_single_turn_rows_are_unchanged(tmp_path, tok):
    """One assistant turn: the same example as the prompt/response path gives."""
    row = {"messages": AGENT[:2]}
    [ex] = dataset(tmp_path, tok, [row])
    prompt, piece = sft_text(row, RowKeys(), Renderer())
    assert ex["input_ids"] == ids(prompt) + ids(piece.text) + [EOS]
    assert ex["labels"] == [X, X, X] + ids("CALL a1 </s>")


def test_truncation_cuts_on_the_right_and_keeps_earlier_turns_trained(tmp_path, tok):
    [ex] = dataset(tmp_path, tok, [{"messages": AGENT}], max_length=8, max_prompt_length=4)
    assert ex["labels"] == [X, X, X] + ids("CALL a1 </s>") + [X, X]
    with pytest.raises(RowError, match="fully truncated"):
        turns_example([5, 6, 7], [([8], False), ([9], True)], EOS, max_length=4)


def test_train_on_prompt_labels_everything(tmp_path, tok):
    path = write_rows(tmp_path / "sft.jsonl", [{"messages": AGENT}])
    [ex] = build_sft_dataset(cfg(path=str(path)), tok, train_on_prompt=True)
    assert ex["labels"] == ex["input_ids"]


@pytest.mark.parametrize(
    "messages, reason",
    [
        ([{"role": "assistant", "content": "a1"}], "no message before the first assistant turn"),
        (AGENT[:3], "the last message must be the assistant's"),
        (
            [AGENT[0], {"role": "assistant", "content": " "}] + AGENT[2:],
            "message 1 (assistant) is empty",
        ),
        ([AGENT[0], {"role": "robot", "content": "x"}], "role 'robot'"),
    ],
)
def test_bad_conversations_are_named(tmp_path, tok, messages, reason):
    from rlhf_dist.data import DataError

    with pytest.raises(DataError, match=re.escape(reason)) as err:
        dataset(tmp_path, tok, [{"messages": messages}])
    assert "'messages'" in str(err.value) and "row 0" in str(err.value)


def test_a_template_that_rewrites_earlier_turns_is_a_bad_row(tok):
    """A template that renders an assistant turn differently once a later turn follows (as
    templates that drop earlier reasoning do) cannot be split into turns: named, not guessed."""
    from transformers import PreTrainedTokenizerFast

    odd = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="</s>")
    odd.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% if loop.last %}"
        "{{ ' <sep>' }}{% endif %}{{ ' ' }}{% endfor %}"
    )
    with pytest.raises(RowError, match="cannot be split into turns"):
        sft_turns({"messages": AGENT}, RowKeys(), Renderer(odd, apply_chat_template=True))


def test_toy_tokenizer_renders_tool_turns_like_the_plain_format(toy_tok):
    chat = Renderer(toy_tok, apply_chat_template=True)
    assert chat.render(LONG) == Renderer().render(LONG)
    assert chat.continuation(LONG[:3], LONG[3:4]) == "\nHuman: q2\nAssistant:"


def test_rollout_observations_give_the_sft_example_token_for_token(tmp_path, tok):
    """A rollout that keeps the sampled ids (ending at eos) and appends the tokenised
    Renderer.observation builds exactly the SFT example's ids, template or not."""
    first = 2  # LONG's first assistant turn
    for chat in (False, True):
        renderer = Renderer(tok, apply_chat_template=chat)
        [ex] = dataset(tmp_path, tok, [{"messages": LONG}], apply_chat_template=chat)
        trajectory = encode(tok, renderer.prompt(LONG[:first], "messages")[0])
        turns = [i for i, m in enumerate(LONG) if m["role"] == "assistant"]
        for turn, following in zip(turns, turns[1:] + [None]):
            trajectory += encode(tok, " " + LONG[turn]["content"]) + [EOS]  # sampled to eos
            if following is not None:
                observation = LONG[turn + 1 : following]
                trajectory += encode(
                    tok, renderer.observation(LONG[: turn + 1], observation, "</s>")
                )
        assert trajectory == ex["input_ids"], chat
