"""Text → token ids, with truncation and label masking (HF conventions).

(Named ``tokenization`` rather than ``tokenize`` so that running a file from this directory
never shadows the standard library's ``tokenize`` module.)

Rules, for every example kind:

* Text is encoded with ``add_special_tokens=False``.  In plain mode (no chat template) a
  tokenizer whose own special-token handling starts sequences with bos (Llama-style) gets that
  bos prepended to the prompt (:func:`bos_prefix`); the toy tokenizer adds nothing.
* The prompt is truncated from the **left** to ``max_prompt_length`` tokens, keeping its end
  (the question and the ``Assistant:`` marker); a bos prefix is kept in front.
* eos is appended to every response (once: a response text already ending in eos keeps one),
  and counts towards ``max_length``.  The response is truncated on the **right** so that
  ``len(prompt) + len(response) <= max_length``; eos survives only if it fits, so a truncated
  response does not end in eos (the model is not taught to stop mid-answer).
* A response left with no token of its text (empty, or no room after the prompt) is a bad row
  (:class:`~.errors.RowError`) — never silently dropped.
* ``labels`` are aligned with ``input_ids`` (the loss shifts): ``-100`` on prompt positions,
  the token id on response positions (eos included).
* A multi-turn conversation (:func:`turns_example`) is the prompt, then its segments in order:
  each assistant turn is a response (labelled, ending in eos) and the turns between two
  assistant turns are context (``-100``), so every assistant turn is trained.  An assistant
  turn whose text already holds eos (a chat template's end-of-turn token that is the
  tokenizer's eos) ends at that eos: the rest of its text opens the next context segment, as a
  rollout that stops at eos continues.  The whole is cut on the right at ``max_length``.
  Segments are tokenised one by one, as a multi-turn rollout tokenises its observations.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from .errors import RowError

IGNORE_INDEX = -100
Example = Dict[str, object]


def encode(tokenizer, text: str) -> List[int]:
    """Token ids of ``text`` without any special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def bos_prefix(tokenizer) -> List[int]:
    """``[bos]`` when the tokenizer itself starts encoded text with bos, else ``[]``."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return [bos] if with_special[:1] == [bos] and plain[:1] != [bos] else []


def truncate_left(ids: Sequence[int], keep: int) -> List[int]:
    """The last ``keep`` ids (all of them when there are fewer)."""
    if keep <= 0:
        return []
    return list(ids[-keep:]) if len(ids) > keep else list(ids)


def prompt_ids(
    body: Sequence[int], max_prompt_length: int, prefix: Sequence[int] = ()
) -> List[int]:
    """``prefix + body``, ``body`` left-truncated so the whole fits ``max_prompt_length``."""
    return list(prefix) + truncate_left(body, max_prompt_length - len(prefix))


def join_response(
    prompt: Sequence[int],
    response: Sequence[int],
    eos_id: int,
    max_length: int,
    field: str = "response",
) -> Tuple[List[int], List[int]]:
    """(input_ids, labels) of ``prompt + response + [eos]`` cut at ``max_length`` (see module)."""
    text = list(response[:-1] if response and response[-1] == eos_id else response)
    if not text:
        raise RowError(field, "the response has no tokens")
    room = max_length - len(prompt)
    if room <= 0:
        raise RowError(
            field,
            f"fully truncated: the prompt takes {len(prompt)} tokens of "
            f"max_length={max_length}, no response token fits",
        )
    kept = (text + [eos_id])[:room]
    return list(prompt) + kept, [IGNORE_INDEX] * len(prompt) + kept


def sft_example(
    prompt: Sequence[int],
    response: Sequence[int],
    eos_id: int,
    max_length: int,
    field: str = "response",
    train_on_prompt: bool = False,
) -> Example:
    """``{input_ids, labels, prompt_len}``; with ``train_on_prompt`` no label is masked."""
    input_ids, labels = join_response(prompt, response, eos_id, max_length, field)
    if train_on_prompt:
        labels = list(input_ids)
    return {"input_ids": input_ids, "labels": labels, "prompt_len": len(prompt)}


def preference_example(
    prompt: Sequence[int],
    chosen: Sequence[int],
    rejected: Sequence[int],
    eos_id: int,
    max_length: int,
    fields: Tuple[str, str] = ("chosen", "rejected"),
) -> Example:
    """``{chosen_input_ids, chosen_labels, rejected_input_ids, rejected_labels, prompt_len}``."""
    c_ids, c_labels = join_response(prompt, chosen, eos_id, max_length, fields[0])
    r_ids, r_labels = join_response(prompt, rejected, eos_id, max_length, fields[1])
    return {
        "chosen_input_ids": c_ids,
        "chosen_labels": c_labels,
        "rejected_input_ids": r_ids,
        "rejected_labels": r_labels,
        "prompt_len": len(prompt),
    }


def unpaired_example(
    prompt: Sequence[int],
    completion: Sequence[int],
    desirable: bool,
    eos_id: int,
    max_length: int,
    field: str = "completion",
) -> Example:
    """``{input_ids, labels, prompt_len, completion_ids, desirable}``: the row joined as an SFT
    example, plus the completion's own ids (another row's prompt is joined with them into
    KTO's mismatched pairs: :func:`join_response` again)."""
    input_ids, labels = join_response(prompt, completion, eos_id, max_length, field)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "prompt_len": len(prompt),
        "completion_ids": list(completion),
        "desirable": bool(desirable),
    }


def _through_eos(ids: List[int], eos_id: int) -> Tuple[List[int], List[int]]:
    """(an assistant turn's ids through its first eos, or with eos appended; the rest)."""
    if eos_id in ids:
        cut = ids.index(eos_id) + 1
        return ids[:cut], ids[cut:]
    return ids + [eos_id], []


def turns_example(
    prompt: Sequence[int],
    segments: Sequence[Tuple[Sequence[int], bool]],
    eos_id: int,
    max_length: int,
    field: str = "messages",
    train_on_prompt: bool = False,
) -> Example:
    """``{input_ids, labels, prompt_len}`` of ``prompt`` followed by ``(ids, trained)``
    segments: trained ones (assistant turns) labelled and ending in eos, the others
    ``-100``; cut at ``max_length`` (see module)."""
    input_ids, labels, carry = list(prompt), [IGNORE_INDEX] * len(prompt), []
    for ids, trained in segments:
        ids = carry + list(ids)
        carry = []
        if trained:
            ids, carry = _through_eos(ids, eos_id)
            if ids == [eos_id]:
                raise RowError(field, "an assistant turn has no tokens")
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        raise RowError(
            field,
            f"fully truncated: the prompt and context take {len(prompt)}+ "
            f"tokens of max_length={max_length}, no assistant token fits",
        )
    if train_on_prompt:
        labels = list(input_ids)
    return {"input_ids": input_ids, "labels": labels, "prompt_len": len(prompt)}


def lm_example(ids: Sequence[int], eos_id: int, max_length: int, field: str = "text") -> Example:
    """Plain language modelling: ``ids + [eos]`` cut at ``max_length``, every token a label."""
    return sft_example([], ids, eos_id, max_length, field)


class Encoder:
    """Encodes prompt and response texts for one tokenizer and one set of lengths."""

    def __init__(self, tokenizer, max_length: int, max_prompt_length: int, add_bos: bool = True):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token; responses must end with one")
        self.tokenizer, self.eos_id = tokenizer, tokenizer.eos_token_id
        self.max_length, self.max_prompt_length = max_length, max_prompt_length
        self.prefix = bos_prefix(tokenizer) if add_bos else []

    def prompt(self, text: str) -> List[int]:
        body = encode(self.tokenizer, text)
        prefix = self.prefix if body[: len(self.prefix)] != self.prefix else []
        return prompt_ids(body, self.max_prompt_length, prefix)

    def response(self, text: str) -> List[int]:
        return encode(self.tokenizer, text)

    def sft(
        self, prompt: str, response: str, field: str = "response", train_on_prompt: bool = False
    ) -> Example:
        return sft_example(
            self.prompt(prompt),
            self.response(response),
            self.eos_id,
            self.max_length,
            field,
            train_on_prompt,
        )

    def turns(
        self,
        prompt: str,
        segments: Sequence[Tuple[str, bool]],
        field: str = "messages",
        train_on_prompt: bool = False,
    ) -> Example:
        """A conversation's ``(text, trained)`` segments after ``prompt``
        (:func:`turns_example`)."""
        return turns_example(
            self.prompt(prompt),
            [(self.response(text), trained) for text, trained in segments],
            self.eos_id,
            self.max_length,
            field,
            train_on_prompt,
        )

    def preference(
        self,
        prompt: str,
        chosen: str,
        rejected: str,
        fields: Tuple[str, str] = ("chosen", "rejected"),
    ) -> Example:
        return preference_example(
            self.prompt(prompt),
            self.response(chosen),
            self.response(rejected),
            self.eos_id,
            self.max_length,
            fields,
        )

    def unpaired(
        self, prompt: str, completion: str, desirable: bool, field: str = "completion"
    ) -> Example:
        return unpaired_example(
            self.prompt(prompt),
            self.response(completion),
            desirable,
            self.eos_id,
            self.max_length,
            field,
        )

    def lm(self, text: str, field: str = "text") -> Example:
        return lm_example(self.prefix + self.response(text), self.eos_id, self.max_length, field)
