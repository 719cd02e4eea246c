"""Tool-call syntaxes (``env.tool_format``): a parser finds the calls in a model turn.

``parse(text)`` returns one entry per call attempt, in order -- a :class:`ToolCall` or, for
one it cannot read, a :class:`BadCall` with the reason (the tool environment turns it into an
observation for the model, never a crash) -- and ``[]`` when the turn holds no call attempt:
the model answered.  Built-ins (the texts are written by :mod:`rlhf_dist.data.formatting`):

* ``hermes`` -- :class:`HermesParser`: ``<tool_call>{"name": "add", "arguments": {"a": 1,
  "b": 2}}</tool_call>``, one JSON object per pair of tags, any number per turn (the format of
  Qwen's and Hermes' chat templates).  ``arguments`` (a JSON object, or a string holding one)
  become keyword arguments.
* ``plain`` -- :class:`PlainParser`: a line ``CALL add(123, 456)``, for tiny models: the
  arguments are Python literals (numbers, quoted strings, lists), positional or ``key=value``;
  every line that has the keyword ``CALL`` is a call attempt.

A user syntax is a ``package.module:Class`` with ``parse(text) -> list`` (and a ``hint`` used
in error observations), or a class registered in ``TOOL_FORMATS``.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Dict, List, NamedTuple, Tuple, Union

from rlhf_dist.data.formatting import PLAIN_CALL, TOOL_CALL_CLOSE, TOOL_CALL_OPEN


class ToolCall(NamedTuple):
    """A call read from the model's text: ``tool(*args, **kwargs)``."""

    name: str
    args: Tuple[Any, ...] = ()
    kwargs: Dict[str, Any] = {}


class BadCall(NamedTuple):
    """A call attempt that could not be read: its text and why."""

    text: str
    reason: str


Parsed = List[Union[ToolCall, BadCall]]


class HermesParser:
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (see module)."""

    hint = f'{TOOL_CALL_OPEN}{{"name": <tool>, "arguments": {{...}}}}{TOOL_CALL_CLOSE}'
    _CALL = re.compile(
        re.escape(TOOL_CALL_OPEN) + r"(.*?)(" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.DOTALL
    )

    def parse(self, text: str) -> Parsed:
        return [self._one(m.group(1).strip(), bool(m.group(2))) for m in self._CALL.finditer(text)]

    def _one(self, body: str, closed: bool) -> Union[ToolCall, BadCall]:
        if not closed:
            return BadCall(body, f"{TOOL_CALL_OPEN} is not closed by {TOOL_CALL_CLOSE}")
        try:
            call = json.loads(body)
        except json.JSONDecodeError as err:
            return BadCall(body, f"not valid JSON ({err.msg} at character {err.pos})")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return BadCall(body, 'expected a JSON object with a "name" string')
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                pass
        if not isinstance(arguments, dict):
            return BadCall(
                body, f'"arguments" must be a JSON object, got {type(arguments).__name__}'
            )
        return ToolCall(call["name"], (), arguments)


class PlainParser:
    """``CALL name(arg1, arg2)`` on a line of its own (see module)."""

    hint = f"{PLAIN_CALL} <tool>(<arg>, <arg>)"
    _KEYWORD = re.compile(rf"\b{PLAIN_CALL}\b")
    _CALL = re.compile(rf"^\s*{PLAIN_CALL}\s+([A-Za-z_][\w.]*\s*\(.*\))\s*$")

    def parse(self, text: str) -> Parsed:
        return [self._one(line.strip()) for line in text.splitlines() if self._KEYWORD.search(line)]

    def _one(self, line: str) -> Union[ToolCall, BadCall]:
        match = self._CALL.match(line)
        if not match:
            return BadCall(line, f"expected {self.hint} on a line of its own")
        try:
            node = ast.parse(match.group(1), mode="eval").body
            if not isinstance(node, ast.Call) or not isinstance(
                node.func, (ast.Name, ast.Attribute)
            ):
                raise ValueError("not a call")
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            return BadCall(
                line,
                "the arguments are not literals (numbers, quoted strings, "
                f"lists): expected {self.hint}",
            )
        if None in kwargs:  # **spread
            return BadCall(line, f"expected {self.hint}")
        return ToolCall(ast.unparse(node.func), args, kwargs)
