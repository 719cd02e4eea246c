"""The one conversation format of rlhf_dist (toy task, plain-text rendering, toy chat template).

A single-turn prompt is rendered as ``"Human: {request}\\nAssistant:"`` and its response as
``" {answer}"`` (one leading space), so ``prompt + response`` reads
``"Human: how do I bake bread?\\nAssistant: Sure! To bake bread, ..."``.  Multi-turn
conversations put one turn per line, each line ``"<Role>: <content>"`` with the roles
``System`` / ``Human`` / ``Assistant``; a prompt ends with the generation marker
``"\\nAssistant:"``.  The end-of-sequence token is never part of the text: tokenisation
appends it to responses (to every assistant turn of a multi-turn conversation).

Agent conversations add the role ``tool`` (a tool's result), rendered ``"Tool: <content>"``,
and a tool call is written in the assistant's content in one of two syntaxes
(:mod:`rlhf_dist.envs.parsers` reads them back):

* ``plain`` (for tiny models): ``CALL name(arg1, arg2)``, the arguments Python literals
  (numbers, quoted strings) -- :func:`render_plain_call`.  A toy agent conversation reads::

      Human: what is 123 + 456?
      Assistant: CALL add(123, 456)
      Tool: 579
      Assistant: 579

* ``hermes`` (the JSON-in-tags calls of Qwen's and Hermes' chat templates):
  ``<tool_call>\\n{"name": "add", "arguments": {"a": 123, "b": 456}}\\n</tool_call>`` --
  :func:`render_hermes_call`.

:data:`CHAT_TEMPLATE` is the Jinja template of the toy tokenizer; it renders exactly what
:func:`render_messages` renders, so ``apply_chat_template`` and the plain path agree.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Sequence

HUMAN = "Human:"
ASSISTANT = "Assistant:"
TOOL = "Tool:"
ROLE_PREFIX: Dict[str, str] = {
    "system": "System:",
    "user": HUMAN,
    "assistant": ASSISTANT,
    "tool": TOOL,
}

Message = Dict[str, Any]

# trim_blocks is on in transformers' renderer, so newlines are written as {{ '\n' }}.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ 'Human: ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' }}"
    "{% elif message['role'] == 'system' %}{{ 'System: ' }}"
    "{% elif message['role'] == 'tool' %}{{ 'Tool: ' }}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}{% endif %}"
    "{{ message['content'] }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\nAssistant:' }}{% endif %}"
)


def render_prompt(request: str) -> str:
    """``"Human: {request}\\nAssistant:"`` — a single-turn prompt ready for generation."""
    return f"{HUMAN} {request}\n{ASSISTANT}"


def render_response(answer: str) -> str:
    """``" {answer}"`` — what follows the prompt's ``Assistant:`` marker."""
    return f" {answer}"


def render_messages(messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    """Plain-text rendering of ``[{role, content}, ...]``; same output as :data:`CHAT_TEMPLATE`."""
    lines = [f"{ROLE_PREFIX[m['role']]} {m['content']}" for m in messages]
    text = "\n".join(lines)
    return text + f"\n{ASSISTANT}" if add_generation_prompt else text


def user_turn(content: str) -> List[Message]:
    """A one-message conversation: ``[{"role": "user", "content": content}]``."""
    return [{"role": "user", "content": content}]


# --------------------------------------------------------------------------- tool calls

PLAIN_CALL = "CALL"  # the plain syntax's keyword: CALL name(arg1, arg2)
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"  # the hermes syntax's tags


def render_plain_call(name: str, args: Sequence[Any] = ()) -> str:
    """``"CALL name(arg1, arg2)"``: each argument as its Python literal (``repr``)."""
    return f"{PLAIN_CALL} {name}({', '.join(repr(a) for a in args)})"


def render_hermes_call(name: str, arguments: Mapping[str, Any]) -> str:
    """``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` (Qwen / Hermes)."""
    call = json.dumps({"name": name, "arguments": dict(arguments)})
    return f"{TOOL_CALL_OPEN}\n{call}\n{TOOL_CALL_CLOSE}"
