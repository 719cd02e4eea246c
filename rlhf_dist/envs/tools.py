"""Tools: plain Python functions a tool environment calls by name (``env.tools``).

A tool takes the call's arguments (positional from the plain syntax, keyword from hermes'
JSON) and returns its result; the result's ``str`` (JSON for a dict or list) is the
observation.  An exception is the model's problem, not the run's: it becomes an error
observation (:func:`run_tool`).  Built-ins are registered in
:data:`~rlhf_dist.config.registries.TOOLS`; users name ``package.module:function`` (the
model calls it by the function's name) or register one with
``TOOLS.register("name")(function)``.
"""

from __future__ import annotations

import ast
import inspect
import json
import numbers
import operator
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

from rlhf_dist.config.checks import ConfigError
from rlhf_dist.config.registries import TOOLS

from .parsers import ToolCall
from .timeout import CallTimeout, call_with_timeout

Tool = Callable[..., Any]


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return value


def add(a: float, b: float) -> float:
    """Add two numbers: add(a, b) = a + b."""
    return _number(a, "a") + _number(b, "b")


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
MAX_DIGITS = 100  # calculator results longer than this are refused (no 9**9**9)


def _evaluate(node: ast.AST) -> float:
    if (
        isinstance(node, ast.Constant)
        and not isinstance(node.value, bool)
        and isinstance(node.value, (int, float))
    ):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        value = _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        value = _OPERATORS[type(node.op)](_evaluate(node.operand))
    else:
        raise ValueError("only numbers, + - * / // % and parentheses are allowed")
    if isinstance(value, int) and len(str(abs(value))) > MAX_DIGITS:
        raise ValueError(f"the result has more than {MAX_DIGITS} digits")
    return value


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression: calculator("12 * (3 + 4)") = 84."""
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a string, got {expression!r}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"cannot read {expression!r} as arithmetic") from None
    return _evaluate(tree.body)


# --------------------------------------------------------------------------- loading and calling


def tool_name(spec: str) -> str:
    """The name the model calls: the registered name, or a spec's function name."""
    return spec.rpartition(":")[2].rpartition(".")[2] if ":" in spec else spec


def load_tools(specs: Sequence[str], field: str = "env.tools") -> Dict[str, Tool]:
    """``{name the model calls: function}``; an unknown or unimportable tool, or two tools
    of one name, is a :class:`ConfigError` naming ``field``."""
    tools: Dict[str, Tool] = {}
    for spec in specs:
        name = tool_name(spec)
        if name in tools:
            raise ConfigError(f"{field}: two tools are called {name!r}: {list(specs)}")
        tools[name] = TOOLS.get(spec, ConfigError)
    return tools


def _signature(fn: Tool) -> str:
    """``(a: float, b: float) -> float`` (string annotations read back), or ``(...)``."""
    try:
        return str(inspect.signature(fn, eval_str=True))
    except (NameError, TypeError, ValueError, SyntaxError):
        try:
            return str(inspect.signature(fn))
        except (TypeError, ValueError):
            return "(...)"


def describe_tools(tools: Dict[str, Tool]) -> str:
    """One line per tool: ``name(signature): first line of its docstring``."""
    lines = []
    for name, fn in tools.items():
        signature = _signature(fn)
        doc = (inspect.getdoc(fn) or "").split("\n")[0]
        lines.append(f"{name}{signature}: {doc}" if doc else f"{name}{signature}")
    return "\n".join(lines)


class ToolResult(NamedTuple):
    """What a call gave the model: the observation text and whether it is an error."""

    text: str
    error: bool


def format_result(value: Any) -> str:
    """A tool's return value as observation text (JSON for dicts and lists; ``84`` for
    ``84.0``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            pass
    return str(value)


def run_tool(
    call: ToolCall, tools: Dict[str, Tool], timeout_s: Optional[float] = None
) -> ToolResult:
    """Run ``call``; an unknown tool, an exception or a timeout is an error observation
    (``error: ...``) the model reads, never raised."""
    fn = tools.get(call.name)
    if fn is None:
        return ToolResult(
            f"error: unknown tool {call.name!r}; the tools are {', '.join(sorted(tools))}", True
        )
    try:
        value = call_with_timeout(
            lambda: fn(*call.args, **call.kwargs), timeout_s, name=f"rlhf_dist-tool-{call.name}"
        )
    except CallTimeout:
        return ToolResult(f"error: {call.name} timed out after {timeout_s:g} s", True)
    except Exception as err:  # the tool's failure is the model's observation
        return ToolResult(f"error: {call.name} raised {type(err).__name__}: {err}", True)
    return ToolResult(format_result(value), False)
