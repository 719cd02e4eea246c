"""Rows (dicts) → the texts a model sees: prompt text plus response text(s).

Column names come from :class:`RowKeys` (``DataConfig.*_key``).  Accepted row shapes:

* **SFT** — ``{prompt, response}`` strings; or ``{messages: [{role, content}, …]}`` whose
  last turn is the assistant's.  Every assistant turn of a conversation is trained
  (:func:`sft_turns`: the prompt is every turn before the first assistant turn; the system,
  user and tool turns between assistant turns are context, masked -- TRL's assistant-only
  loss); :func:`sft_text` gives the prompt before the last assistant turn and its content.
  A ``messages`` value takes precedence over ``prompt``/``response`` when both are present.
* **Preference** — ``{prompt, chosen, rejected}`` strings; or ``chosen``/``rejected`` as
  message lists (prompt = their shared turns before the final assistant turn, or the
  ``prompt`` column when the lists hold only the assistant turn); or HH-RLHF transcripts
  (no ``prompt`` column: prompt = the shared prefix up to and including the last
  ``"Assistant:"`` it contains, responses = the rest); or a ranking ``{prompt, responses:
  [best, …, worst]}``, which yields the C(K, 2) pairs (i, j), i < j, in lexicographic order:
  (0,1), (0,2), …, (0,K-1), (1,2), … — response i is chosen, response j rejected.
* **Unpaired** (KTO) — ``{prompt, completion, label}``: ``completion`` a string (verbatim) or
  messages ending in the assistant's turn (prompt = the turns before it, or the ``prompt``
  column when the list holds only that turn), ``label`` a JSON boolean: true = desirable
  (thumbs up), false = undesirable.
* **Prompt** (PPO) — ``prompt`` (a string or a message list) or ``messages`` (a final
  assistant turn, if any, is dropped).

Rendering (:class:`Renderer`): with ``apply_chat_template`` off, prompt strings are used
verbatim and message lists are rendered in the ``Human:/Assistant:`` format of
:mod:`.formatting` (response = ``" " + content``).  With it on, a prompt string becomes one user
turn, prompts are ``tokenizer.apply_chat_template(msgs, add_generation_prompt=True)``, and a
message response is whatever the template renders after that prompt for the assistant turn.
The turns between two assistant turns (:meth:`Renderer.continuation`, also what a multi-turn
rollout appends as an observation) are what the conversation's rendering adds after the
earlier assistant turn, up to and including the next generation prompt: plain
``"\nTool: 579\nAssistant:"``; a chat template must render the conversation turn by turn
(each rendering a prefix of the next), or the row is a bad row.
Response strings and HH transcripts are always used verbatim.  Bad fields raise
:class:`~.errors.RowError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Mapping, NamedTuple, Tuple

from .errors import RowError
from .formatting import ASSISTANT, ROLE_PREFIX, render_messages, render_response, user_turn

Messages = List[dict]


class Piece(NamedTuple):
    """A response text and the column it came from (named in errors)."""

    field: str
    text: str


class Segment(NamedTuple):
    """A piece of a conversation after its prompt: an assistant turn (``trained``) or the
    turns between two assistant turns, up to the next generation prompt (context)."""

    text: str
    trained: bool


@dataclass(frozen=True)
class RowKeys:
    prompt: str = "prompt"
    response: str = "response"
    chosen: str = "chosen"
    rejected: str = "rejected"
    messages: str = "messages"
    ranking: str = "responses"
    completion: str = "completion"
    desirable: str = "label"

    @classmethod
    def from_config(cls, data_cfg) -> "RowKeys":
        """The ``*_key`` fields of a ``DataConfig``."""
        return cls(
            data_cfg.prompt_key,
            data_cfg.response_key,
            data_cfg.chosen_key,
            data_cfg.rejected_key,
            data_cfg.messages_key,
            data_cfg.ranking_key,
            data_cfg.completion_key,
            data_cfg.desirable_key,
        )


# --------------------------------------------------------------------------- field checks


def check_string(value: Any, field: str) -> str:
    """``value`` if it is a non-blank string, else :class:`RowError`."""
    if value is None:
        raise RowError(field, "missing (no value in this row)")
    if not isinstance(value, str):
        raise RowError(field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(field, "empty string")
    return value


def check_bool(value: Any, field: str) -> bool:
    """``value`` if it is a boolean (JSON true / false), else :class:`RowError`."""
    if value is None:
        raise RowError(field, "missing (no value in this row; expected true or false)")
    if not isinstance(value, bool):
        raise RowError(field, f"expected true or false, got {type(value).__name__} {value!r}")
    return value


def check_messages(value: Any, field: str) -> Messages:
    """A validated list of ``{role, content}`` messages (roles system/user/assistant)."""
    if not isinstance(value, (list, tuple)) or not value:
        kind = "an empty list" if isinstance(value, (list, tuple)) else type(value).__name__
        raise RowError(
            field, f"expected a non-empty list of {{role, content}} messages, got {kind}"
        )
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, Mapping):
            raise RowError(
                field, f"message {i} is a {type(msg).__name__}, not a {{role, content}} dict"
            )
        if msg.get("role") not in ROLE_PREFIX:
            raise RowError(
                field,
                f"message {i} has role {msg.get('role')!r}, expected one of {sorted(ROLE_PREFIX)}",
            )
        if not isinstance(msg.get("content"), str):
            raise RowError(
                field, f"message {i} content is {type(msg.get('content')).__name__}, not a string"
            )
        out.append({"role": msg["role"], "content": msg["content"]})
    return out


def final_reply(messages: Messages, field: str) -> str:
    """Content of the final turn, which must be the assistant's and non-blank."""
    last = messages[-1]
    if last["role"] != "assistant":
        raise RowError(
            field, f"the last message must be the assistant's, got role {last['role']!r}"
        )
    return check_string(last["content"], field)


def split_conversation(messages: Messages, field: str) -> Tuple[Messages, str]:
    """(turns before the final assistant turn, its content)."""
    content = final_reply(messages, field)
    if len(messages) < 2:
        raise RowError(field, "no message before the final assistant turn (nothing to prompt with)")
    return messages[:-1], content


def split_transcripts(chosen: str, rejected: str, field: str) -> Tuple[str, str, str]:
    """HH-RLHF: (shared prompt through its last ``Assistant:``, chosen rest, rejected rest)."""
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(ASSISTANT)
    if cut < 0:
        raise RowError(
            field,
            f"no prompt column, and chosen/rejected share no '{ASSISTANT}' "
            "turn to split an HH-style transcript at",
        )
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]


# --------------------------------------------------------------------------- rendering


class Renderer:
    """Prompt / response text in the plain format or through the tokenizer's chat template."""

    def __init__(self, tokenizer=None, apply_chat_template: bool = False):
        self.tokenizer, self.chat = tokenizer, apply_chat_template

    def _template(self, messages: Messages, add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def prompt(self, value: Any, field: str) -> Tuple[str, Messages]:
        """(prompt text, prompt as messages) from a prompt string or message list."""
        if isinstance(value, (list, tuple)):
            messages = check_messages(value, field)
        else:
            text = check_string(value, field)
            messages = user_turn(text)
            if not self.chat:
                return text, messages  # plain prompt strings are used verbatim
        if self.chat:
            return self._template(messages, True), messages
        return render_messages(messages, add_generation_prompt=True), messages

    def render(self, messages: Messages, add_generation_prompt: bool = False) -> str:
        """The conversation's text: the chat template, or the plain format."""
        if self.chat:
            return self._template(messages, add_generation_prompt)
        return render_messages(messages, add_generation_prompt)

    def continuation(self, history: Messages, turns: Messages, field: str = "messages") -> str:
        """The text ``turns`` (tool results, user replies) add after ``history`` (which ends
        in an assistant turn), through the next assistant turn's generation prompt: plain
        ``"\\nTool: 579\\nAssistant:"``.  A template that renders ``history`` differently once
        ``turns`` follow is a :class:`RowError` naming ``field``."""
        before = self.render(history)
        after = self.render(list(history) + list(turns), add_generation_prompt=True)
        if not after.startswith(before):
            raise RowError(
                field,
                f"the chat template renders the {len(history)} turns before "
                "a tool/user turn differently once it follows, so the "
                "conversation cannot be split into turns",
            )
        return after[len(before) :]

    def observation(
        self, history: Messages, turns: Messages, eos_text: str = "", field: str = "observation"
    ) -> str:
        """What a multi-turn rollout appends after a model turn that stopped at its eos
        token (``eos_text``, e.g. ``"<|im_end|>"``): the rest of the template's rendering of
        that turn after the eos (a newline, for Qwen's), then :meth:`continuation` -- the
        same text the SFT rows of :func:`conversation_turns` carry after an eos."""
        text = self.continuation(history, turns, field)
        if not (self.chat and eos_text) or not history:
            return text
        reply = self.reply(list(history[:-1]), history[-1]["content"])
        cut = reply.find(eos_text)
        return (reply[cut + len(eos_text) :] if cut >= 0 else "") + text

    def reply(self, prompt_messages: Messages, content: str) -> str:
        """The response text of an assistant turn that follows ``prompt_messages``."""
        if not self.chat:
            return render_response(content)
        full = self._template(prompt_messages + [{"role": "assistant", "content": content}], False)
        prompt = self._template(prompt_messages, True)
        return full[len(prompt) :] if full.startswith(prompt) else content


# --------------------------------------------------------------------------- row shapes


ABSENT = object()  # field_value's default for "no such field" where None is a value


def field_value(row: Mapping, key: str, default: Any = None) -> Any:
    """``row[key]``, or for a dotted key that is no column, the nested value it names
    (verl's ``reward_model.ground_truth``: ``row["reward_model"]["ground_truth"]``)."""
    if key in row:
        return row[key]
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


def _present(row: Mapping, key: str) -> bool:
    return row.get(key) is not None


def prompt_text(row: Mapping, keys: RowKeys, renderer: Renderer) -> str:
    """Prompt-only rows (PPO): ``prompt`` (string or messages), else ``messages``."""
    if _present(row, keys.prompt) or not _present(row, keys.messages):
        return renderer.prompt(row.get(keys.prompt), keys.prompt)[0]
    messages = check_messages(row[keys.messages], keys.messages)
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages:
        raise RowError(keys.messages, "no message before the final assistant turn")
    return renderer.prompt(messages, keys.messages)[0]


def sft_text(row: Mapping, keys: RowKeys, renderer: Renderer) -> Tuple[str, Piece]:
    """(prompt text, response piece) of an SFT row."""
    if _present(row, keys.messages):
        messages = check_messages(row[keys.messages], keys.messages)
        before, content = split_conversation(messages, keys.messages)
        text, prompt_msgs = renderer.prompt(before, keys.messages)
        return text, Piece(keys.messages, renderer.reply(prompt_msgs, content))
    text, _ = renderer.prompt(row.get(keys.prompt), keys.prompt)
    return text, Piece(keys.response, check_string(row.get(keys.response), keys.response))


def conversation_turns(
    messages: Messages, field: str, renderer: Renderer
) -> Tuple[str, List[Segment]]:
    """(prompt text, segments) of a conversation ending in an assistant turn: the prompt is
    every turn before the first assistant turn; then each assistant turn (trained) and each
    run of other turns between two of them (context, ending in the generation prompt), so
    that ``prompt + "".join(texts)`` is the whole conversation's rendering."""
    final_reply(messages, field)
    first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if first == 0:
        raise RowError(field, "no message before the first assistant turn (nothing to prompt with)")
    prompt, _ = renderer.prompt(messages[:first], field)
    segments: List[Segment] = []
    start = first
    for i in range(first, len(messages)):
        if messages[i]["role"] != "assistant":
            continue
        if i > start:
            segments.append(
                Segment(renderer.continuation(messages[:start], messages[start:i], field), False)
            )
        content = messages[i]["content"]
        if not content.strip():
            raise RowError(field, f"message {i} (assistant) is empty")
        segments.append(Segment(renderer.reply(messages[:i], content), True))
        start = i + 1
    return prompt, segments


def sft_turns(row: Mapping, keys: RowKeys, renderer: Renderer) -> Tuple[str, List[Segment]]:
    """(prompt text, segments) of a ``messages`` SFT row: every assistant turn trained
    (:func:`conversation_turns`)."""
    messages = check_messages(row.get(keys.messages), keys.messages)
    return conversation_turns(messages, keys.messages, renderer)


Pair = Tuple[str, Piece, Piece]


def _message_pair(row: Mapping, keys: RowKeys, renderer: Renderer) -> Pair:
    chosen = check_messages(row[keys.chosen], keys.chosen)
    rejected = check_messages(row.get(keys.rejected), keys.rejected)
    good, bad = final_reply(chosen, keys.chosen), final_reply(rejected, keys.rejected)
    if chosen[:-1] != rejected[:-1]:
        raise RowError(
            keys.rejected,
            f"the turns before the final assistant turn differ from those of '{keys.chosen}'",
        )
    if chosen[:-1]:
        text, prompt_msgs = renderer.prompt(chosen[:-1], keys.chosen)
    else:  # assistant-only lists: the prompt is in its own column
        text, prompt_msgs = renderer.prompt(row.get(keys.prompt), keys.prompt)
    return (
        text,
        Piece(keys.chosen, renderer.reply(prompt_msgs, good)),
        Piece(keys.rejected, renderer.reply(prompt_msgs, bad)),
    )


def _ranking_pairs(row: Mapping, keys: RowKeys, renderer: Renderer) -> List[Pair]:
    text, _ = renderer.prompt(row.get(keys.prompt), keys.prompt)
    ranked = row[keys.ranking]
    if not isinstance(ranked, (list, tuple)) or len(ranked) < 2:
        raise RowError(keys.ranking, "expected a list of at least 2 responses ranked best to worst")
    pieces = [
        Piece(f"{keys.ranking}[{i}]", check_string(r, f"{keys.ranking}[{i}]"))
        for i, r in enumerate(ranked)
    ]
    return [(text, pieces[i], pieces[j]) for i, j in ranking_pair_order(len(pieces))]


def _string_pair(row: Mapping, keys: RowKeys, renderer: Renderer) -> Pair:
    chosen = check_string(row.get(keys.chosen), keys.chosen)
    rejected = row.get(keys.rejected)
    if isinstance(rejected, (list, tuple)):
        raise RowError(keys.rejected, f"is a message list but '{keys.chosen}' is a string")
    rejected = check_string(rejected, keys.rejected)
    if keys.prompt in row:
        text, _ = renderer.prompt(row[keys.prompt], keys.prompt)
        return text, Piece(keys.chosen, chosen), Piece(keys.rejected, rejected)
    text, good, bad = split_transcripts(chosen, rejected, keys.chosen)
    return (
        text,
        Piece(keys.chosen, check_string(good, keys.chosen)),
        Piece(keys.rejected, check_string(bad, keys.rejected)),
    )


def preference_texts(row: Mapping, keys: RowKeys, renderer: Renderer) -> List[Pair]:
    """(prompt, chosen piece, rejected piece) pairs of a preference or ranking row."""
    if _present(row, keys.ranking):
        return _ranking_pairs(row, keys, renderer)
    if isinstance(row.get(keys.chosen), (list, tuple)):
        return [_message_pair(row, keys, renderer)]
    return [_string_pair(row, keys, renderer)]


def unpaired_text(row: Mapping, keys: RowKeys, renderer: Renderer) -> Tuple[str, Piece, bool]:
    """(prompt text, completion piece, desirable) of an unpaired (KTO) row."""
    desirable = check_bool(row.get(keys.desirable), keys.desirable)
    completion = row.get(keys.completion)
    if isinstance(completion, (list, tuple)):
        messages = check_messages(completion, keys.completion)
        content = final_reply(messages, keys.completion)
        if messages[:-1]:
            text, prompt_msgs = renderer.prompt(messages[:-1], keys.completion)
        else:  # an assistant-only list: the prompt is in its own column
            text, prompt_msgs = renderer.prompt(row.get(keys.prompt), keys.prompt)
        return text, Piece(keys.completion, renderer.reply(prompt_msgs, content)), desirable
    text, _ = renderer.prompt(row.get(keys.prompt), keys.prompt)
    return text, Piece(keys.completion, check_string(completion, keys.completion)), desirable


def ranking_pair_order(k: int) -> List[Tuple[int, int]]:
    """The (chosen, rejected) index pairs a K-response ranking expands to, in order."""
    return [(i, j) for i in range(k) for j in range(i + 1, k)]
