"""Tool calls written as text: the parser, the client that applies it, and a live loop.

``tests/data/tool_replies.json`` holds real replies of both embedded models to prompts
with bound tools (``benchmarks/record_tool_replies.py``). The client is exercised
offline against a fake OpenAI-compatible endpoint (an ``httpx.MockTransport``), and
once live on the embedded 0.5B model in a LangGraph tool loop (``local_model``).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict, cast

import httpx
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import BaseModel

from langgraph_capsules import local
from langgraph_capsules.tool_text import (
    MAX_CALLS,
    MAX_TEXT_CHARS,
    ToolTextChatOpenAI,
    answered_calls,
    forced_call_schema,
    parse_tool_calls,
    schema_error,
    tool_schemas,
)

DATA = Path(__file__).parent / "data" / "tool_replies.json"
RECORDED = json.loads(DATA.read_text(encoding="utf-8"))
TOOLS: list[dict[str, Any]] = RECORDED["tools"]  # get_revenue(company, year), search_filings
ID = re.compile(r"^call_[0-9a-f]{24}$")

S05, S15 = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"
NORDVIK_2024 = ("get_revenue", {"company": "Nordvik Sensors", "year": 2024})
NORDVIK_2023 = ("get_revenue", {"company": "Nordvik Sensors", "year": 2023})

# What each recorded reply holds, read off the recordings: (calls, remaining text).
EXPECTED: dict[tuple[str, str], tuple[list[tuple[str, dict[str, Any]]], str]] = {
    # ```json fence around one call
    (S05, "one_call"): ([NORDVIK_2024], ""),
    # asked for two tools, the 0.5B wrote only the first call
    (S05, "two_calls"): ([NORDVIK_2024], ""),
    # asked for 2023 vs 2024, the 0.5B wrote only the 2023 call
    (S05, "two_years"): ([NORDVIK_2023], ""),
    (S05, "no_tool"): ([], "Bonjour"),
    # after the tool result the 0.5B repeats its call (bare JSON)
    (S05, "after_tool_result"): ([NORDVIK_2024], ""),
    # tool_choice="required": the call in a fence, then newlines up to max_tokens
    (S05, "required"): ([NORDVIK_2024], ""),
    # doubled braces: {{"name": ..., "arguments": {...}}}
    (S15, "one_call"): ([NORDVIK_2024], ""),
    # like the 0.5B, the 1.5B wrote only the first of the two calls, in a fence
    (S15, "two_calls"): ([NORDVIK_2024], ""),
    (S15, "two_years"): ([NORDVIK_2023], ""),
    (S15, "no_tool"): ([], "Bonjour"),
    # the repeat, with one stray opening brace: {{"name": ..., "arguments": {...}}
    (S15, "after_tool_result"): ([NORDVIK_2024], ""),
    (S15, "required"): ([NORDVIK_2024], ""),
}


def _pairs(calls: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(c["name"], c["args"]) for c in calls]


def _assert_well_formed(calls: list[Any], schemas: dict[str, dict[str, Any]]) -> None:
    ids = [c["id"] for c in calls]
    assert len(set(ids)) == len(ids)
    for c in calls:
        assert set(c) == {"name", "args", "id", "type"} and c["type"] == "tool_call"
        assert ID.match(c["id"]), c["id"]
        assert c["name"] in schemas, c
        assert schema_error(c["args"], schemas[c["name"]]) is None, c


# --------------------------------------------------------------------------- recordings


def test_recordings_cover_both_models_and_every_case() -> None:
    replies = RECORDED["replies"]
    assert {(r["model"], r["case"]) for r in replies} == set(EXPECTED)
    for r in replies:
        assert r["provider_tool_calls"] == [], r  # the server never parsed them itself
        assert isinstance(r["content"], str)


@pytest.mark.parametrize("reply", RECORDED["replies"], ids=lambda r: f"{r['model']}-{r['case']}")
def test_recorded_reply_parses_to_the_expected_calls(reply: dict[str, Any]) -> None:
    calls, text = EXPECTED[(reply["model"], reply["case"])]
    rest, parsed = parse_tool_calls(reply["content"], TOOLS)
    assert _pairs(parsed) == calls
    assert rest == text
    _assert_well_formed(parsed, tool_schemas(TOOLS))


def test_recorded_revenue_answers() -> None:
    by_key = {(r["model"], r["case"]): r["content"] for r in RECORDED["replies"]}
    for model in (S05, S15):
        _, calls = parse_tool_calls(by_key[(model, "one_call")], TOOLS)
        assert len(calls) == 1 and calls[0]["name"] == "get_revenue"
        assert calls[0]["args"] == {"company": "Nordvik Sensors", "year": 2024}


@pytest.mark.parametrize("model", [S05, S15])
def test_recorded_repeat_after_a_tool_result_stays_text(model: str) -> None:
    reply = next(
        r for r in RECORDED["replies"] if r["model"] == model and r["case"] == "after_tool_result"
    )
    answered = [(c["name"], c["args"]) for m in reply["messages"] for c in m.get("tool_calls", [])]
    assert answered == [NORDVIK_2024]
    rest, calls = parse_tool_calls(reply["content"], TOOLS, answered=answered)
    assert calls == [] and rest == reply["content"]


# --------------------------------------------------------------------------- formats

REV = '{"name": "get_revenue", "arguments": {"company": "Acme", "year": 2023}}'
SEARCH = '{"name": "search_filings", "arguments": {"query": "Gdansk plant"}}'
ACME = ("get_revenue", {"company": "Acme", "year": 2023})
GDANSK = ("search_filings", {"query": "Gdansk plant"})


@pytest.mark.parametrize(
    ("text", "calls", "rest"),
    [
        (REV, [ACME], ""),
        (f"```json\n{REV}\n```", [ACME], ""),
        (f"```\n{REV}\n```", [ACME], ""),
        (f"<tool_call>\n{REV}\n</tool_call>", [ACME], ""),
        (
            f"<tool_call>\n{REV}\n</tool_call>\n<tool_call>\n{SEARCH}\n</tool_call>",
            [ACME, GDANSK],
            "",
        ),
        (f"```json\n{REV}\n{SEARCH}\n```", [ACME, GDANSK], ""),
        (f"```json\n{REV}\n```\n\n```json\n{SEARCH}\n```", [ACME, GDANSK], ""),
        (f"```json\n[{REV}, {SEARCH}]\n```", [ACME, GDANSK], ""),
        (f'{{"tool_calls": [{REV}, {SEARCH}]}}', [ACME, GDANSK], ""),
        (f"{{{REV}}}", [ACME], ""),
        (f"{{{REV}", [ACME], ""),
        (
            f"I will look it up.\n```json\n{REV}\n```\nThen I answer.",
            [ACME],
            "I will look it up.\n\nThen I answer.",
        ),
        (f"Checking {REV} now", [ACME], "Checking now"),
        (f"<tool_call>\n{REV}", [ACME], ""),  # truncated before the closing tag
        ('{"name": "search_filings", "parameters": {"query": "Gdansk plant"}}', [GDANSK], ""),
        ('{"name": "search_filings", "args": {"query": "Gdansk plant"}}', [GDANSK], ""),
        (
            '{"name": "search_filings", "arguments": "{\\"query\\": \\"Gdansk plant\\"}"}',
            [GDANSK],
            "",
        ),
        ('{"name": "search_filings", "query": "Gdansk plant"}', [GDANSK], ""),
        (
            '{"type": "function", "function": {"name": "search_filings", '
            '"arguments": "{\\"query\\": \\"Gdansk plant\\"}"}}',
            [GDANSK],
            "",
        ),
        (
            '{"name": "get_revenue", "arguments": {"company": "Acme", "year": 2023.0}}',
            [("get_revenue", {"company": "Acme", "year": 2023.0})],
            "",
        ),
        (f"{REV}\n{REV}", [ACME], ""),  # an identical repeat is one call
        (
            "Ünïcödé ✓ " + SEARCH.replace("Gdansk plant", "Gdańsk 工厂"),
            [("search_filings", {"query": "Gdańsk 工厂"})],
            "Ünïcödé ✓",
        ),
    ],
)
def test_written_calls_are_parsed(
    text: str, calls: list[tuple[str, dict[str, Any]]], rest: str
) -> None:
    got_rest, got = parse_tool_calls(text, TOOLS)
    assert _pairs(got) == calls
    assert got_rest == rest
    _assert_well_formed(got, tool_schemas(TOOLS))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Bonjour",
        "The set {a, b} has two elements; {x: 1} is not JSON.",
        '{"name": "delete_everything", "arguments": {}}',  # not a bound tool
        '{"name": "get_revenue", "arguments": {"company": "Acme"}}',  # year missing
        '{"name": "get_revenue", "arguments": {"company": "Acme", "year": "2023"}}',  # str
        '{"name": "get_revenue", "arguments": {"company": "Acme", "year": true}}',  # bool
        '{"name": "get_revenue", "arguments": {"company": 7, "year": 2023}}',
        '{"name": "get_revenue", "arguments": {"company": "Acme", "year": 2023.5}}',
        '{"name": "get_revenue", "arguments": "not json"}',
        '{"name": "get_revenue", "arguments": ["Acme", 2023]}',
        '{"name": "search_filings", "arguments": {"query": "x"',  # truncated
        '```json\n{"name": "search_filings", "arguments": {"query": "x"}\n```',  # unbalanced
        '{"name": ["search_filings"], "arguments": {"query": "x"}}',
        # a tool definition echoed back is not a call
        '{"name": "search_filings", "description": "Search", "parameters": {"query": "x"}}',
        '{"answer": {"name": "search_filings", "arguments": {"query": "x"}}}',  # nested JSON
    ],
)
def test_other_text_stays_text(text: str) -> None:
    assert parse_tool_calls(text, TOOLS) == (text, [])


def test_unknown_keys_rejected_only_when_the_schema_forbids_them() -> None:
    closed = [
        {
            "name": "search_filings",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
                "additionalProperties": False,
            },
        }
    ]
    text = '{"name": "search_filings", "arguments": {"query": "x", "limit": 3}}'
    assert parse_tool_calls(text, closed) == (text, [])
    _, calls = parse_tool_calls(text, TOOLS)  # the recorded schemas leave it open
    assert _pairs(calls) == [("search_filings", {"query": "x", "limit": 3})]


def test_mixed_array_keeps_the_valid_calls_and_leaves_the_rest() -> None:
    bad = '{"name": "nope", "arguments": {}}'
    text = f"[{REV}, {bad}]"
    rest, calls = parse_tool_calls(text, TOOLS)
    assert _pairs(calls) == [ACME]
    assert bad in rest


def test_answered_calls_stay_text_but_new_ones_pass() -> None:
    text = f"{REV}\n{SEARCH}"
    rest, calls = parse_tool_calls(text, TOOLS, answered=[ACME])
    assert _pairs(calls) == [GDANSK]
    assert rest == REV
    # malformed answered entries are ignored, never raised
    _, calls = parse_tool_calls(text, TOOLS, answered=[("x",), 5, ACME])  # type: ignore[list-item]
    assert _pairs(calls) == [GDANSK]


def test_answered_calls_reads_tool_results_by_id() -> None:
    msgs: list[BaseMessage] = [
        HumanMessage("q"),
        AIMessage(
            "",
            tool_calls=[
                {"name": "get_revenue", "args": {"company": "A", "year": 1}, "id": "c1"},
                {"name": "search_filings", "args": {"query": "q"}, "id": "c2"},
            ],
        ),
        ToolMessage("r", tool_call_id="c1"),
    ]
    assert answered_calls(msgs) == [("get_revenue", {"company": "A", "year": 1})]
    assert answered_calls([object()]) == []


def test_limits() -> None:
    many = "\n".join(
        f'{{"name": "search_filings", "arguments": {{"query": "q{i}"}}}}' for i in range(50)
    )
    rest, calls = parse_tool_calls(many, TOOLS)
    assert len(calls) == MAX_CALLS
    assert '"q32"' in rest and '"q31"' not in rest
    padded = REV + " " * MAX_TEXT_CHARS
    assert parse_tool_calls(padded, TOOLS) == (padded, [])
    assert parse_tool_calls(REV, []) == (REV, [])


def test_tool_forms() -> None:
    @tool
    def get_revenue(company: str, year: int) -> str:
        """Revenue of a company in a year."""
        return ""

    class SearchFilings(BaseModel):
        """Search the filings."""

        query: str

    schemas = tool_schemas(
        [
            get_revenue,
            SearchFilings,
            {"name": "ping"},
            {"name": "lookup", "input_schema": {"type": "object", "required": ["k"]}},
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
            42,
            {"no": "name"},
        ]
    )
    assert list(schemas) == ["get_revenue", "SearchFilings", "ping", "lookup", "f"]
    assert schemas["get_revenue"]["required"] == ["company", "year"]
    _, calls = parse_tool_calls(
        '{"name": "SearchFilings", "arguments": {"query": "x"}}', [SearchFilings]
    )
    assert _pairs(calls) == [("SearchFilings", {"query": "x"})]
    _, calls = parse_tool_calls('{"name": "ping"}', [{"name": "ping"}])
    assert _pairs(calls) == [("ping", {})]
    assert tool_schemas(None) == {}  # type: ignore[arg-type]


def test_schema_error() -> None:
    opt = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    schema = {
        "type": "object",
        "properties": {
            "kind": {"enum": ["a", "b"]},
            "n": opt,
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "child": {"$ref": "#/$defs/Child"},
            "ratio": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "flag": {"type": ["boolean", "null"]},
        },
        "required": ["kind"],
        "additionalProperties": {"type": "string"},
        "$defs": {"Child": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
    ok: dict[str, Any] = {
        "kind": "a",
        "n": None,
        "tags": ["x"],
        "child": {"x": 1},
        "ratio": 0.5,
        "flag": True,
        "note": "extra strings are fine",
    }
    assert schema_error(ok, schema) is None
    for bad in (
        {"kind": "c"},
        {"kind": "a", "n": "1"},
        {"kind": "a", "n": True},
        {"kind": "a", "tags": ["x", 1]},
        {"kind": "a", "tags": ["x", "y", "z"]},
        {"kind": "a", "child": {"x": "1"}},
        {"kind": "a", "ratio": 1},
        {"kind": "a", "ratio": float("nan")},
        {"kind": "a", "flag": 0},
        {"kind": "a", "note": 3},
        {"n": 1},
        [],
    ):
        assert schema_error(bad, schema) is not None, bad
    assert schema_error({"x": 1}, {"oneOf": [{"type": "object"}, {"required": ["x"]}]})
    assert schema_error(1, {"allOf": [{"type": "integer"}, {"minimum": 2}]})
    assert schema_error("x", False) and schema_error("x", True) is None
    loop = {"$ref": "#"}  # a reference cycle ends at the depth limit
    assert schema_error(1, loop) is not None


# --------------------------------------------------------------------------- fuzz

SCHEMAS = tool_schemas(TOOLS)
PROSE = [
    "Sure, let me check.",
    "The answer is 42.",
    "Bonjour",
    "Ünïcödé ✓ 工厂 😀",
    "{a, b}",
    "{}",
    "[]",
    "{",
    "}",
    "```",
    "```json",
    "<tool_call>",
    "</tool_call>",
    '"',
    "\\",
    ":",
    ",",
    "\n",
    "  ",
    '{"x": 1}',
    '{"name": null}',
    "null",
    "[{",
    "\x00\ud800",
]


def _random_call(rng: random.Random) -> tuple[str, tuple[str, dict[str, Any]]]:
    if rng.random() < 0.5:
        name, args = (
            "get_revenue",
            {"company": rng.choice(["Acme", "Ü ✓", ""]), "year": rng.randint(1900, 2100)},
        )
    else:
        name, args = "search_filings", {"query": rng.choice(["q", "a {b}", '"quoted"', "工厂"])}
    key = rng.choice(["arguments", "parameters", "args"])
    payload: Any = json.dumps(args) if rng.random() < 0.2 else args
    text = json.dumps({"name": name, key: payload}, ensure_ascii=rng.random() < 0.5)
    wrap = rng.choice(
        ["{}", "```json\n{}\n```", "```\n{}\n```", "<tool_call>\n{}\n</tool_call>", "{{{}}}"]
    )
    return wrap.replace("{}", text, 1) if wrap != "{{{}}}" else "{" + text + "}", (name, args)


def _random_junk(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return "".join(rng.choice(PROSE) for _ in range(rng.randint(1, 8)))
    if kind < 0.5:
        return "".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(1, 40)))
    if kind < 0.7:
        return "".join(rng.choice('{}[]":,\\ \nab01-') for _ in range(rng.randint(1, 60)))
    call, _ = _random_call(rng)
    # a corrupted call: truncated, a wrong name or a wrong type
    corrupt = rng.choice(
        [
            lambda c: c[: rng.randint(0, max(0, len(c) - 2))],
            lambda c: c.replace("get_revenue", "get_revenues").replace("search_filings", "search"),
            lambda c: re.sub(r'"year": \d+', '"year": "x"', c),
            lambda c: c.replace('"query"', '"q"'),
        ]
    )
    return str(corrupt(call))


@pytest.mark.parametrize("seed", range(6))
def test_fuzz_never_raises_and_returns_only_valid_calls(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(600):
        parts = [_random_junk(rng) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.5:
            parts.insert(rng.randint(0, len(parts)), _random_call(rng)[0])
        text = "".join(parts)
        if rng.random() < 0.2:
            text = text[: rng.randint(0, len(text))]  # truncation anywhere
        rest, calls = parse_tool_calls(text, TOOLS)
        assert isinstance(rest, str)
        _assert_well_formed(calls, SCHEMAS)
        if not calls:
            assert rest == text


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_finds_every_call_planted_in_prose(seed: int) -> None:
    rng = random.Random(1000 + seed)
    safe_prose = ["Sure.", "Let me check", "Ünïcödé ✓", "(see below)", "\n", " ", "Done!"]
    for _ in range(300):
        planted: list[tuple[str, dict[str, Any]]] = []
        parts: list[str] = []
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.5:
                call, pair = _random_call(rng)
                parts.append(call)
                if pair not in planted:
                    planted.append(pair)
            else:
                parts.append(rng.choice(safe_prose))
            parts.append(rng.choice(["\n", " ", "\n\n"]))
        text = "".join(parts)
        rest, calls = parse_tool_calls(text, TOOLS)
        assert _pairs(calls) == planted, text
        for marker in ('"name"', "```", "<tool_call>", "</tool_call>"):
            assert marker not in rest, (text, rest)


@pytest.mark.parametrize(
    "make",
    [
        lambda: "{" * 99_000,
        lambda: "[" * 90_000 + REV,
        lambda: '{"a": ' * 16_000 + REV,
        lambda: '{"a": [' * 14_000,
        lambda: ('{"a": [1, 2, 3, "' + "x" * 40 + '", ') * 1_500,
        lambda: '{"a": [{"b": 1}, ' * 6_000,
        lambda: '{"' * 49_000,
        lambda: (REV + " ") * 1_300,
        lambda: "\\" * 99_000 + REV,
        lambda: '"' + REV * 1_300,
        lambda: "x" * 5_000_000 + REV,
        lambda: '{"a": ' + "9" * 5000 + "}" + REV,
        lambda: '{"name": "search_filings", "arguments": {"query": "' + "\\u00e9" * 10_000 + '"}}',
    ],
)
def test_hostile_inputs_are_fast_and_safe(make: Callable[[], str]) -> None:
    text = make()
    start = time.perf_counter()
    rest, calls = parse_tool_calls(text, TOOLS)
    assert time.perf_counter() - start < 10
    assert isinstance(rest, str)
    _assert_well_formed(calls, SCHEMAS)


def test_non_text_input_is_returned_as_is() -> None:
    content: Any = [{"type": "text", "text": REV}]
    assert parse_tool_calls(content, TOOLS) == (content, [])


# --------------------------------------------------------------------------- client (offline)


class FakeEndpoint:
    """An OpenAI-compatible chat endpoint that answers from a script of replies.

    A reply is a string (the content) or a dict with ``content`` and ``tool_calls``.
    Streaming requests get the content in small pieces, then a finish and a usage chunk.
    """

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        reply = self.replies.pop(0)
        content = reply if isinstance(reply, str) else reply.get("content")
        tool_calls = None if isinstance(reply, str) else reply.get("tool_calls")
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if body.get("stream"):
            return httpx.Response(
                200,
                content=self._sse(content or "", tool_calls, usage),
                headers={"content-type": "text/event-stream"},
            )
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "fake",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            },
        )

    @staticmethod
    def _sse(content: str, tool_calls: Any, usage: dict[str, int]) -> bytes:
        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            data = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "fake",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": content[i : i + 3]}) for i in range(0, len(content), 3)]
        if tool_calls:
            events += [
                chunk({"tool_calls": [{"index": i, **tc}]}) for i, tc in enumerate(tool_calls)
            ]
        events.append(chunk({}, "tool_calls" if tool_calls else "stop"))
        final = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake",
            "choices": [],
            "usage": usage,
        }
        events.append(f"data: {json.dumps(final)}\n\n")
        events.append("data: [DONE]\n\n")
        return "".join(events).encode()

    def client(self, **kwargs: Any) -> ToolTextChatOpenAI:
        transport = httpx.MockTransport(self.handler)

        async def ahandler(request: httpx.Request) -> httpx.Response:
            await request.aread()
            return self.handler(request)

        with local.serve(
            "http://fake.test/v1",
            max_tokens=64,
            http_client=httpx.Client(transport=transport),
            http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(ahandler)),
            max_retries=0,
            **kwargs,
        ) as llm:
            assert isinstance(llm, ToolTextChatOpenAI)
            return llm


@tool
def get_revenue(company: str, year: int) -> str:
    """Return a company's reported revenue for one fiscal year."""
    return f"{company} reported revenue of NOK 482 million in {year}."


@tool
def search_filings(query: str) -> str:
    """Search the regulatory filings for a query and return the best passage."""
    return f"Top filing passage for {query!r}."


FENCED = f"Let me check.\n```json\n{REV}\n```"


def _aggregate(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return total


def test_local_clients_are_tool_text_clients() -> None:
    with local.serve("http://127.0.0.1:9/v1") as llm:
        assert isinstance(llm, ToolTextChatOpenAI)
    srv = local.LocalServer(
        base_url="http://127.0.0.1:9/v1",
        model_path=Path("m.gguf"),
        model_name="m",
        load_seconds=0.0,
        n_ctx=8192,
        n_parallel=2,
        threads=1,
    )
    llm = srv.chat_model(max_tokens=32)
    assert isinstance(llm, ToolTextChatOpenAI)
    assert llm.profile is not None and llm.profile.get("max_input_tokens") == 4096


def test_invoke_with_tools_reads_the_written_call() -> None:
    fake = FakeEndpoint(FENCED)
    reply = fake.client().bind_tools([get_revenue, search_filings]).invoke("revenue?")
    assert isinstance(reply, AIMessage)
    assert _pairs(reply.tool_calls) == [ACME]
    assert reply.content == "Let me check."
    assert reply.response_metadata["tool_text"]["raw_content"] == FENCED
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 7
    assert [t["function"]["name"] for t in fake.requests[0]["tools"]] == [
        "get_revenue",
        "search_filings",
    ]


def test_without_tools_nothing_changes() -> None:
    fake = FakeEndpoint(FENCED, FENCED)
    llm = fake.client()
    reply = llm.invoke("hi")
    assert reply.content == FENCED and reply.tool_calls == []
    assert "tool_text" not in reply.response_metadata
    chunks = list(llm.stream("hi"))
    assert _aggregate(chunks).content == FENCED
    assert len([c for c in chunks if c.content]) > 3  # streamed piece by piece


def test_tool_choice_none_and_parse_switch_leave_the_text() -> None:
    fake = FakeEndpoint(FENCED, FENCED)
    reply = fake.client().bind_tools([get_revenue], tool_choice="none").invoke("x")
    assert reply.content == FENCED and reply.tool_calls == []
    reply = fake.client(parse_tool_text=False).bind_tools([get_revenue]).invoke("x")
    assert reply.content == FENCED and reply.tool_calls == []


def test_forced_tool_choice_limits_the_parse() -> None:
    text = f"{REV}\n{SEARCH}"
    fake = FakeEndpoint(text)
    reply = (
        fake.client()
        .bind_tools([get_revenue, search_filings], tool_choice="search_filings")
        .invoke("x")
    )
    assert _pairs(reply.tool_calls) == [GDANSK]
    assert reply.content == REV


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
def test_a_forced_choice_goes_out_as_a_json_schema_on_a_constraining_client(how: str) -> None:
    fake = FakeEndpoint(REV, SEARCH, REV, REV)
    llm = fake.client(constrain_forced_calls=True)
    tools = [get_revenue, search_filings]

    def send(choice: Any) -> AIMessage:
        bound = llm.bind_tools(tools, tool_choice=choice)
        if how == "invoke":
            return cast(AIMessage, bound.invoke("x"))
        if how == "ainvoke":
            return cast(AIMessage, asyncio.run(bound.ainvoke("x")))
        return cast(AIMessage, _aggregate(list(bound.stream("x"))))

    assert _pairs(send("required").tool_calls) == [ACME]
    body = fake.requests[-1]
    assert "tool_choice" not in body  # the schema forces the call, not the server's grammar
    names = [alt["properties"]["name"]["const"] for alt in body["json_schema"]["anyOf"]]
    assert body["tools"]  # the tools still reach the chat template
    assert names == ["get_revenue", "search_filings"]
    assert _pairs(send("search_filings").tool_calls) == [GDANSK]
    forced = fake.requests[-1]["json_schema"]
    assert forced["properties"]["name"] == {"const": "search_filings"}
    assert schema_error({"name": "search_filings", "arguments": {"query": "q"}}, forced) is None
    assert schema_error({"name": "get_revenue", "arguments": {"query": "q"}}, forced)
    # nothing forced: no constraint, the server's tool_choice as usual
    send("auto")
    assert "json_schema" not in fake.requests[-1]
    assert fake.requests[-1]["tool_choice"] == "auto"
    # a client that does not constrain (any OpenAI-compatible server) sends tool_choice
    plain = FakeEndpoint(REV)
    plain.client().bind_tools(tools, tool_choice="required").invoke("x")
    assert "json_schema" not in plain.requests[0]
    assert plain.requests[0]["tool_choice"] == "required"


def test_forced_call_schema_moves_argument_defs_to_the_root() -> None:
    query = {
        "name": "query",
        "parameters": {
            "type": "object",
            "properties": {"metric": {"type": "string"}, "period": {"$ref": "#/$defs/Period"}},
            "required": ["metric", "period"],
            "$defs": {
                "Period": {
                    "type": "object",
                    "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}},
                    "required": ["start", "end"],
                }
            },
        },
    }
    schema = forced_call_schema([query], "required")
    assert schema is not None and "Period" in schema["$defs"]
    assert "$defs" not in schema["properties"]["arguments"]
    good = {"name": "query", "arguments": {"metric": "cash", "period": {"start": 1, "end": 2}}}
    assert schema_error(good, schema) is None
    bad = {"name": "query", "arguments": {"metric": "cash", "period": {"start": "x"}}}
    assert schema_error(bad, schema) is not None
    assert forced_call_schema([query], "no_such_tool") is None
    assert forced_call_schema([query], "none") is None
    assert forced_call_schema([query], None) is None
    # two tools whose argument schemas define one name differently: no safe schema
    clash = [
        {"name": "a", "parameters": {"$defs": {"P": {"type": "integer"}}, "type": "object"}},
        {"name": "b", "parameters": {"$defs": {"P": {"type": "string"}}, "type": "object"}},
    ]
    assert forced_call_schema(clash, "required") is None
    assert forced_call_schema(clash, "b") == {
        "type": "object",
        "properties": {"name": {"const": "b"}, "arguments": {"type": "object"}},
        "required": ["name", "arguments"],
        "$defs": {"P": {"type": "string"}},
    }


def test_native_tool_calls_are_left_alone() -> None:
    native = {
        "content": SEARCH,
        "tool_calls": [
            {
                "id": "call_native",
                "type": "function",
                "function": {"name": "get_revenue", "arguments": '{"company": "B", "year": 1}'},
            }
        ],
    }
    fake = FakeEndpoint(native, native)
    llm = fake.client().bind_tools([get_revenue, search_filings])
    reply = llm.invoke("x")
    assert [c["id"] for c in reply.tool_calls] == ["call_native"] and reply.content == SEARCH
    total = _aggregate(list(llm.stream("x")))
    assert [c["id"] for c in total.tool_calls] == ["call_native"] and total.content == SEARCH


def test_a_repeated_call_after_its_result_stays_text() -> None:
    msgs: list[BaseMessage] = [
        HumanMessage("revenue?"),
        AIMessage("", tool_calls=[{"name": ACME[0], "args": ACME[1], "id": "c1"}]),
        ToolMessage("NOK 1", tool_call_id="c1"),
    ]
    fake = FakeEndpoint(REV, REV)
    reply = fake.client().bind_tools([get_revenue]).invoke(msgs)
    assert reply.tool_calls == [] and reply.content == REV
    reply = fake.client(allow_repeated_calls=True).bind_tools([get_revenue]).invoke(msgs)
    assert _pairs(reply.tool_calls) == [ACME]


async def test_ainvoke_reads_the_written_call() -> None:
    fake = FakeEndpoint(FENCED)
    reply = await fake.client().bind_tools([get_revenue]).ainvoke("revenue?")
    assert _pairs(reply.tool_calls) == [ACME] and reply.content == "Let me check."


@pytest.mark.parametrize(
    ("content", "calls", "text"),
    [
        (FENCED, [ACME], "Let me check."),
        (f"{REV}\n{SEARCH}", [ACME, GDANSK], ""),
        ("A plain answer, streamed.", [], "A plain answer, streamed."),
        (
            "  Prices [in NOK] and {braces} but no call.\n",
            [],
            "  Prices [in NOK] and {braces} but no call.\n",
        ),
        ('{"name": "nope", "arguments": {}}', [], '{"name": "nope", "arguments": {}}'),
    ],
)
def test_stream_aggregates_to_the_invoke_result(
    content: str, calls: list[tuple[str, dict[str, Any]]], text: str
) -> None:
    fake = FakeEndpoint(content, content)
    llm = fake.client().bind_tools([get_revenue, search_filings])
    chunks = list(llm.stream("x"))
    total = _aggregate(chunks)
    assert _pairs(total.tool_calls) == calls
    assert total.content == text
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] == 7
    assert total.response_metadata.get("finish_reason") == "stop"
    invoked = llm.invoke("x")
    assert _pairs(invoked.tool_calls) == calls and invoked.content == text


def test_stream_sends_prose_before_the_call_at_once() -> None:
    fake = FakeEndpoint(FENCED)
    chunks = list(fake.client().bind_tools([get_revenue]).stream("x"))
    texts = [c.content for c in chunks if c.content]
    assert texts[0] == "Let"  # the first piece, not held back
    assert "```" not in "".join(str(t) for t in texts)
    assert chunks[-1].chunk_position == "last"


async def test_astream_reads_the_written_call() -> None:
    fake = FakeEndpoint(f"<tool_call>\n{SEARCH}\n</tool_call>")
    chunks = [c async for c in fake.client().bind_tools([search_filings]).astream("x")]
    total = _aggregate(chunks)
    assert _pairs(total.tool_calls) == [GDANSK] and total.content == ""


class LoopState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _tool_loop(llm: Any, tools: list[Any], *, use_async: bool = False) -> Any:
    """agent (the model with the tools bound) -> ToolNode -> agent ... until no call."""
    bound = llm.bind_tools(tools)

    def agent(state: LoopState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    async def aagent(state: LoopState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    b = StateGraph(LoopState)
    b.add_node("agent", aagent if use_async else agent)
    b.add_node("tools", ToolNode(tools))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    b.add_edge("tools", "agent")
    return b.compile()


def _recording_tool(calls: list[dict[str, Any]], *, nudge: str = "") -> Any:
    @tool
    def get_revenue(company: str, year: int) -> str:
        """Return a company's reported revenue for one fiscal year."""
        calls.append({"company": company, "year": year})
        return f"{company} reported revenue of NOK 482 million in {year}.{nudge}"

    return get_revenue


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream-messages"])
def test_offline_tool_loop_runs_the_tool_and_ends(mode: str) -> None:
    ran: list[dict[str, Any]] = []
    fake = FakeEndpoint(f"```json\n{REV}\n```", "Acme made NOK 482 million in 2023.")
    graph = _tool_loop(fake.client(), [_recording_tool(ran)], use_async=mode == "ainvoke")
    inputs = {"messages": [HumanMessage("What was Acme's revenue in 2023?")]}
    if mode == "invoke":
        out = graph.invoke(inputs)
    elif mode == "ainvoke":
        out = asyncio.run(graph.ainvoke(inputs))
    else:  # LangGraph streams the model's tokens: the model call goes through _stream
        streamed = list(graph.stream(inputs, stream_mode=["messages", "values"]))
        out = [v for kind, v in streamed if kind == "values"][-1]
        tokens = "".join(
            str(v[0].content)
            for kind, v in streamed
            if kind == "messages" and v[1]["langgraph_node"] == "agent"
        )
        assert "```" not in tokens
        assert all(r.get("stream") for r in fake.requests)  # the calls went through _stream
    assert ran == [{"company": "Acme", "year": 2023}]
    kinds = [type(m).__name__ for m in out["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert out["messages"][-1].content == "Acme made NOK 482 million in 2023."
    assert fake.requests[1]["messages"][1]["tool_calls"][0]["function"]["name"] == "get_revenue"


class Route(BaseModel):
    """Where the request goes next."""

    step: Literal["poem", "story", "joke"]


class RouteState(TypedDict, total=False):
    request: str
    step: str
    output: str


def _router_app(llm: Any, *, use_async: bool) -> Any:
    """The docs' routing workflow: a router asks for structured output by function
    calling (a forced tool_choice naming the schema), a conditional edge follows it."""
    router = llm.with_structured_output(Route, method="function_calling")

    def route(state: RouteState) -> dict[str, Any]:
        return {"step": router.invoke([HumanMessage(state["request"])]).step}

    async def aroute(state: RouteState) -> dict[str, Any]:
        return {"step": (await router.ainvoke([HumanMessage(state["request"])])).step}

    def writer(kind: str) -> Callable[[RouteState], dict[str, Any]]:
        def node(state: RouteState) -> dict[str, Any]:
            reply = llm.invoke([HumanMessage(f"Write a short {kind}: {state['request']}")])
            return {"output": str(reply.content)}

        return node

    b = StateGraph(RouteState)
    b.add_node("router", aroute if use_async else route)
    for kind in ("poem", "story", "joke"):
        b.add_node(kind, writer(kind))
        b.add_edge(kind, END)
    b.add_edge(START, "router")
    b.add_conditional_edges("router", lambda s: s["step"], ["poem", "story", "joke"])
    return b.compile()


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_structured_output_by_function_calling_routes_a_graph_offline(how: str) -> None:
    fake = FakeEndpoint('{"name": "Route", "arguments": {"step": "joke"}}', "Why did...")
    app = _router_app(fake.client(constrain_forced_calls=True), use_async=how == "ainvoke")
    inputs = {"request": "Tell me something funny about cats."}
    out = app.invoke(inputs) if how == "invoke" else asyncio.run(app.ainvoke(inputs))
    assert out["step"] == "joke" and out["output"] == "Why did..."
    first = fake.requests[0]
    assert "tool_choice" not in first  # forced by the schema instead (llama.cpp ignores it)
    forced = first["json_schema"]
    assert forced["properties"]["name"] == {"const": "Route"}
    assert forced["properties"]["arguments"]["properties"]["step"]["enum"] == [
        "poem",
        "story",
        "joke",
    ]
    assert "json_schema" not in fake.requests[1]  # the writer's plain call


@pytest.mark.parametrize(
    "reply",
    [
        '{"name": "Route", "arguments": {"step": "limerick"}}',  # off the enum
        '{"name": "Other", "arguments": {"step": "joke"}}',  # not the bound tool
        "I would route this to the joke writer.",  # prose
        '{"name": "Route", "arguments": {"step": "joke"',  # cut off
    ],
)
def test_structured_output_by_function_calling_rejects_what_the_schema_does_not_allow(
    reply: str,
) -> None:
    """No invalid object is made up: the parse comes back empty with the raw reply."""
    fake = FakeEndpoint(reply)
    router = fake.client(constrain_forced_calls=True).with_structured_output(
        Route, method="function_calling", include_raw=True
    )
    out = router.invoke("Tell me something funny.")
    assert out["parsed"] is None
    assert out["raw"].tool_calls == [] and out["raw"].content == reply


# --------------------------------------------------------------------------- live


@pytest.fixture
def fast_server() -> Iterator[local.LocalServer]:
    with local.server(local.FAST_MODEL, n_parallel=1, n_ctx=4096) as srv:
        yield srv


@pytest.mark.local_model
def test_live_tool_loop_on_the_embedded_model(fast_server: local.LocalServer) -> None:
    """The 0.5B writes its call as text, the client reads it, ToolNode runs it, the loop ends.

    Without a nudge in the tool result, both embedded models repeat their call after
    the result (see the recordings); the client keeps such a repeat as text, so the
    loop ends either way. With the nudge the 0.5B answers in a sentence.
    """
    ran: list[dict[str, Any]] = []
    get_revenue = _recording_tool(ran, nudge=" Now answer the user in one sentence.")
    graph = _tool_loop(fast_server.chat_model(max_tokens=96), [get_revenue])
    out = graph.invoke(
        {
            "messages": [
                SystemMessage(
                    "You are a financial research assistant. Call get_revenue to look up "
                    "revenue. When the tool result is in the conversation, do not call a "
                    "tool again: answer the question in one sentence."
                ),
                HumanMessage("What was the revenue of Nordvik Sensors in 2024?"),
            ]
        },
        {"recursion_limit": 8},
    )
    msgs = out["messages"]
    for m in msgs:
        print(f"{type(m).__name__}: {m.content!r} {getattr(m, 'tool_calls', '')}")
    assert ran == [{"company": "Nordvik Sensors", "year": 2024}]  # the tool ran, once
    assert [type(m).__name__ for m in msgs[1:]] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    first, final = msgs[2], msgs[-1]
    assert isinstance(first, AIMessage) and first.content == ""
    print("raw first reply:", repr(first.response_metadata["tool_text"]["raw_content"]))
    assert _pairs(first.tool_calls) == [NORDVIK_2024]
    assert isinstance(final, AIMessage) and not final.tool_calls  # the loop ended
    # an answer, or (on another build's numerics) the repeated call kept as text
    text = str(final.content)
    repeat = _pairs(parse_tool_calls(text, [get_revenue])[1]) == [NORDVIK_2024]
    assert "482" in text or repeat, text


@pytest.mark.local_model
def test_live_forced_choice_makes_the_embedded_model_write_a_call(
    fast_server: local.LocalServer,
) -> None:
    """llama.cpp ignores ``tool_choice`` here; the client's JSON-schema constraint does not."""
    llm = fast_server.chat_model(max_tokens=96)
    msgs = [
        SystemMessage("You are a financial research assistant."),
        HumanMessage("Tell me about Nordvik Sensors and its revenue in 2024."),
    ]
    named = llm.bind_tools([get_revenue, search_filings], tool_choice="get_revenue").invoke(msgs)
    assert [c["name"] for c in named.tool_calls] == ["get_revenue"]
    args = named.tool_calls[0]["args"]
    assert isinstance(args["company"], str) and isinstance(args["year"], int)
    assert get_revenue.invoke(args)  # valid arguments: the tool runs on them
    anyone = llm.bind_tools([get_revenue, search_filings], tool_choice="required").invoke(msgs)
    assert len(anyone.tool_calls) == 1
    assert anyone.tool_calls[0]["name"] in {"get_revenue", "search_filings"}


@pytest.mark.local_model
def test_live_structured_output_by_function_calling_routes_a_graph(
    fast_server: local.LocalServer,
) -> None:
    """The routing workflow on the 0.5B model, async: the forced call comes back as a
    valid ``Route`` and the graph follows it."""
    app = _router_app(fast_server.chat_model(max_tokens=64), use_async=True)
    out = asyncio.run(app.ainvoke({"request": "Write me a four-line poem about the sea."}))
    assert out["step"] in ("poem", "story", "joke")
    assert isinstance(out["output"], str) and out["output"].strip()
