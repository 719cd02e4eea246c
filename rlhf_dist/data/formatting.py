"""The one conversation format of rlhf_dist (toy task, plain-text rendering, toy chat template).

A single-turn prompt is rendered as ``"Human: {request}\\nAssistant:"`` and its response as
``" {answer}"`` (one leading space), so ``prompt + response`` reads
``"Human: how do I bake bread?\\nAssistant: Sure! To bake bread, ..."``.  Multi-turn
conversations put one turn per line, each line ``"<Role>: <content>"`` with the roles
``System`` / ``Human`` / ``Assistant``; a prompt ends with the generation marker
``"\\nAssistant:"``.  The end-of-sequence token is never part of the text: tokenisation
appends it to responses.

:data:`CHAT_TEMPLATE` is the Jinja template of the toy tokenizer; it renders exactly what
:func:`render_messages` renders, so ``apply_chat_template`` and the plain path agree.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

HUMAN = "Human:"
ASSISTANT = "Assistant:"
ROLE_PREFIX: Dict[str, str] = {"system": "System:", "user": HUMAN, "assistant": ASSISTANT}

Message = Dict[str, Any]

# trim_blocks is on in transformers' renderer, so newlines are written as {{ '\n' }}.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ 'Human: ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' }}"
    "{% elif message['role'] == 'system' %}{{ 'System: ' }}"
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
