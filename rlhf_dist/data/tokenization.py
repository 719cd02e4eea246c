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


def join_response(prompt: Sequence[int], response: Sequence[int], eos_id: int, max_length: int,
                  field: str = "response") -> Tuple[List[int], List[int]]:
    """(input_ids, labels) of ``prompt + response + [eos]`` cut at ``max_length`` (see module)."""
    text = list(response[:-1] if response and response[-1] == eos_id else response)
    if not text:
        raise RowError(field, "the response has no tokens")
    room = max_length - len(prompt)
    if room <= 0:
        raise RowError(field, f"fully truncated: the prompt takes {len(prompt)} tokens of "
                              f"max_length={max_length}, no response token fits")
    kept = (text + [eos_id])[:room]
    return list(prompt) + kept, [IGNORE_INDEX] * len(prompt) + kept


def sft_example(prompt: Sequence[int], response: Sequence[int], eos_id: int, max_length: int,
                field: str = "response", train_on_prompt: bool = False) -> Example:
    """``{input_ids, labels, prompt_len}``; with ``train_on_prompt`` no label is masked."""
    input_ids, labels = join_response(prompt, response, eos_id, max_length, field)
    if train_on_prompt:
        labels = list(input_ids)
    return {"input_ids": input_ids, "labels": labels, "prompt_len": len(prompt)}


def preference_example(prompt: Sequence[int], chosen: Sequence[int], rejected: Sequence[int],
                       eos_id: int, max_length: int,
                       fields: Tuple[str, str] = ("chosen", "rejected")) -> Example:
    """``{chosen_input_ids, chosen_labels, rejected_input_ids, rejected_labels, prompt_len}``."""
    c_ids, c_labels = join_response(prompt, chosen, eos_id, max_length, fields[0])
    r_ids, r_labels = join_response(prompt, rejected, eos_id, max_length, fields[1])
    return {"chosen_input_ids": c_ids, "chosen_labels": c_labels, "rejected_input_ids": r_ids,
            "rejected_labels": r_labels, "prompt_len": len(prompt)}


def lm_example(ids: Sequence[int], eos_id: int, max_length: int, field: str = "text") -> Example:
    """Plain language modelling: ``ids + [eos]`` cut at ``max_length``, every token a label."""
    return sft_example([], ids, eos_id, max_length, field)


class Encoder:
    """Encodes prompt and response texts for one tokenizer and one set of lengths."""

    def __init__(self, tokenizer, max_length: int, max_prompt_length: int,
                 add_bos: bool = True):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token; responses must end with one")
        self.tokenizer, self.eos_id = tokenizer, tokenizer.eos_token_id
        self.max_length, self.max_prompt_length = max_length, max_prompt_length
        self.prefix = bos_prefix(tokenizer) if add_bos else []

    def prompt(self, text: str) -> List[int]:
        body = encode(self.tokenizer, text)
        prefix = self.prefix if body[:len(self.prefix)] != self.prefix else []
        return prompt_ids(body, self.max_prompt_length, prefix)

    def response(self, text: str) -> List[int]:
        return encode(self.tokenizer, text)

    def sft(self, prompt: str, response: str, field: str = "response",
            train_on_prompt: bool = False) -> Example:
        return sft_example(self.prompt(prompt), self.response(response), self.eos_id,
                           self.max_length, field, train_on_prompt)

    def preference(self, prompt: str, chosen: str, rejected: str,
                   fields: Tuple[str, str] = ("chosen", "rejected")) -> Example:
        return preference_example(self.prompt(prompt), self.response(chosen),
                                  self.response(rejected), self.eos_id, self.max_length, fields)

    def lm(self, text: str, field: str = "text") -> Example:
        return lm_example(self.prefix + self.response(text), self.eos_id, self.max_length, field)

