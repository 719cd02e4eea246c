"""Tool calls: the hermes and plain parsers on well-formed and malformed calls, the built-in
tools, and every way a call fails becoming an observation (never an exception)."""

import threading

import pytest

from rlhf_dist.config import ConfigError
from rlhf_dist.data.formatting import render_hermes_call, render_plain_call
from rlhf_dist.envs import (
    BadCall,
    HermesParser,
    PlainParser,
    ToolCall,
    add,
    calculator,
    describe_tools,
    load_tools,
    run_tool,
)

HERMES, PLAIN = HermesParser(), PlainParser()


# --------------------------------------------------------------------------- hermes


def test_hermes_reads_every_call_of_a_turn():
    text = (
        "I will add.\n"
        + render_hermes_call("add", {"a": 1, "b": 2})
        + "\nand\n"
        + '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"2*3\\"}"}'
        "</tool_call>"
    )
    assert HERMES.parse(text) == [
        ToolCall("add", (), {"a": 1, "b": 2}),
        ToolCall("calculator", (), {"expression": "2*3"}),
    ]
    assert HERMES.parse('<tool_call>{"name": "now"}</tool_call>') == [ToolCall("now")]


def test_hermes_without_a_call_is_an_answer():
    assert HERMES.parse("The answer is 42.") == []


@pytest.mark.parametrize(
    "text, reason",
    [
        ('<tool_call>{"name": "add", "arguments": {"a": 1}</tool_call>', "not valid JSON"),
        (
            '<tool_call>{"name": "add", "arguments": {"a": 1}}',
            "<tool_call> is not closed by </tool_call>",
        ),
        ('<tool_call>["add", 1]</tool_call>', 'expected a JSON object with a "name" string'),
        ('<tool_call>{"arguments": {}}</tool_call>', 'expected a JSON object with a "name" string'),
        (
            '<tool_call>{"name": "add", "arguments": [1, 2]}</tool_call>',
            '"arguments" must be a JSON object, got list',
        ),
        (
            '<tool_call>{"name": "add", "arguments": "a=1"}</tool_call>',
            '"arguments" must be a JSON object, got str',
        ),
    ],
)
def test_hermes_malformed_calls_are_bad_calls(text, reason):
    [bad] = HERMES.parse(text)
    assert isinstance(bad, BadCall) and bad.reason.startswith(reason)


# --------------------------------------------------------------------------- plain


def test_plain_reads_positional_keyword_and_string_arguments():
    text = "CALL add(123, 456)\n  CALL search('red fox', limit=3)\nCALL now()"
    assert PLAIN.parse(text) == [
        ToolCall("add", (123, 456), {}),
        ToolCall("search", ("red fox",), {"limit": 3}),
        ToolCall("now", (), {}),
    ]
    assert PLAIN.parse(render_plain_call("add", [1.5, "x", [1, 2]])) == [
        ToolCall("add", (1.5, "x", [1, 2]), {})
    ]


def test_plain_without_the_keyword_is_an_answer():
    assert PLAIN.parse(" 579") == [] and PLAIN.parse("CALLING all(1)") == []


@pytest.mark.parametrize(
    "text",
    [
        "CALL add(123, 456",
        "CALL add 123 456",
        "CALL add(x, 1)",
        "CALL add(1, 2) CALL add(3, 4)",
        "CALL add(1, 2) done",
        "I CALL add(1, 2)",
        "CALL 9add(1)",
        "CALL add(**k)",
        "CALL add(__import__('os'))",
    ],
)
def test_plain_malformed_calls_are_bad_calls(text):
    [bad] = PLAIN.parse(text)
    assert isinstance(bad, BadCall) and bad.text == text.strip()
    assert "CALL <tool>(<arg>, <arg>)" in bad.reason


# --------------------------------------------------------------------------- tools


def test_builtin_tools():
    assert add(123, 456) == 579 and add(1.5, 2) == 3.5
    assert calculator("12 * (3 + 4) - 10 / 4") == 81.5 and calculator("-7 // 2") == -4
    for bad in ("__import__('os')", "x + 1", "2 ** 3", "1 +"):
        with pytest.raises(ValueError):
            calculator(bad)
    with pytest.raises(TypeError, match="a must be a number, got '1'"):
        add("1", 2)
    with pytest.raises(TypeError):
        add(True, 2)


def test_load_tools_by_name_and_spec():
    tools = load_tools(["add", "user_envs:shout"])
    assert list(tools) == ["add", "shout"] and tools["shout"]("hi") == "HI"
    assert describe_tools(tools) == (
        "add(a: float, b: float) -> float: Add two numbers: "
        "add(a, b) = a + b.\nshout(text: str) -> str: Upper-case "
        "a text."
    )
    with pytest.raises(ConfigError, match=r"env.tools: got 'mul', expected one of \['add', "):
        load_tools(["mul"])
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module'"):
        load_tools(["no_such_module:f"])
    with pytest.raises(ConfigError, match="two tools are called 'add'"):
        load_tools(["add", "rlhf_dist.envs.tools:add"])


def test_every_failed_call_is_an_error_observation():
    release = threading.Event()

    def boom(x):
        raise KeyError(x)

    def slow():
        release.wait(30)

    tools = {"add": add, "boom": boom, "slow": slow}
    try:
        assert run_tool(ToolCall("add", (1, 2)), tools) == ("3", False)
        assert run_tool(ToolCall("mul", (1, 2)), tools) == (
            "error: unknown tool 'mul'; the tools are add, boom, slow",
            True,
        )
        assert run_tool(ToolCall("boom", ("k",)), tools) == (
            "error: boom raised KeyError: 'k'",
            True,
        )
        assert run_tool(ToolCall("add", (1,)), tools).text.startswith(
            "error: add raised TypeError: add() missing 1 required positional argument"
        )
        assert run_tool(ToolCall("slow"), tools, timeout_s=0.1) == (
            "error: slow timed out after 0.1 s",
            True,
        )
    finally:
        release.set()


def test_results_are_text():
    tools = {"f": lambda v: v}
    assert [run_tool(ToolCall("f", (v,)), tools).text for v in (3.0, 2.5, {"a": [1]}, None)] == [
        "3",
        "2.5",
        '{"a": [1]}',
        "None",
    ]
