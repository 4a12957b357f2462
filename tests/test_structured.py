"""Structured output and JSON mode merge: one merged call, each member served exactly
what its own call returns, and a member whose part is bad re-run alone."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any, Literal, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

import langgraph_capsules as lc
from langgraph_capsules.strategies.structured import MERGED_TOOL
from langgraph_capsules.testing import ScriptedChatModel

SOURCE = (
    "Halvard Robotics builds warehouse picking robots in Trondheim.\n\n"
    "Revenue rose 18 percent to NOK 311 million in 2025; gross margin fell to 41 percent "
    "as component prices climbed.\n\n"
    "A new contract with a Danish grocery chain starts in the second quarter, and two "
    "competitors cut prices in the Nordic market."
)


class Risk(BaseModel):
    name: str
    severity: Literal["low", "medium", "high"]


class Analysis(BaseModel):
    """One analyst's view of the company."""

    summary: str
    score: int
    risks: list[Risk]
    outlook: str | None = None


class Brief(TypedDict):
    headline: str
    confidence: float


BRIEF_SCHEMA: dict[str, Any] = {
    "title": "Signals",
    "description": "Market signals in the source.",
    "type": "object",
    "properties": {
        "signals": {"type": "array", "items": {"type": "string"}},
        "direction": {"type": "string", "enum": ["up", "down", "flat"]},
    },
    "required": ["signals", "direction"],
}

ANALYSTS = ("financial", "market", "operations")


class State(TypedDict, total=False):
    topic: str
    doc: str
    financial: Any
    market: Any
    operations: Any
    report: str


def _research_app(
    get_model: Callable[[], Any],
    *,
    method: str = "json_schema",
    schemas: dict[str, Any] | None = None,
    include_raw: bool = False,
    use_async: bool = False,
) -> StateGraph[Any, Any, Any, Any]:
    """A multi-analyst research app: each analyst node builds its structured model from
    a ``get_model()`` factory and returns what it parsed; a writer joins them."""
    schemas = schemas or {}

    def analyst(name: str) -> Any:
        def prompt(state: State) -> list[Any]:
            return [
                SystemMessage(
                    f"You are the {name} analyst. Assess {state['topic']} from the {name} "
                    "angle and answer in the requested structure."
                ),
                HumanMessage(state["doc"]),
            ]

        def runnable() -> Any:
            schema = schemas.get(name, Analysis)
            return get_model().with_structured_output(
                schema, method=method, include_raw=include_raw
            )

        if use_async:

            async def anode(state: State) -> dict[str, Any]:
                return {name: await runnable().ainvoke(prompt(state))}

            return anode

        def node(state: State) -> dict[str, Any]:
            return {name: runnable().invoke(prompt(state))}

        return node

    def writer(state: State) -> dict[str, Any]:
        parts = [repr(state.get(n)) for n in ANALYSTS]
        return {"report": " | ".join(parts)}

    b = StateGraph(State)
    for n in ANALYSTS:
        b.add_node(n, analyst(n))
        b.add_edge(START, n)
        b.add_edge(n, "writer")
    b.add_node("writer", writer)
    b.add_edge("writer", END)
    return b


INPUT: Any = {"topic": "Halvard Robotics", "doc": SOURCE}
COMPOUND: Any = {"configurable": {"capsules": {"mode": "compound"}}}
FINE: Any = {"configurable": {"capsules": {"mode": "fine"}}}


def _factory(scripted: ScriptedChatModel) -> Callable[[], Any]:
    return lambda: lc.CapsuleChatModel(scripted)  # a new proxy per call, as apps do


def _run(builder: Any, scripted: ScriptedChatModel, config: Any = COMPOUND) -> tuple[Any, Any]:
    base = builder.compile().invoke(INPUT)
    scripted.reset()
    capsules = lc.capsulize(builder, groups={"analysts": list(ANALYSTS)})
    return base, (capsules, capsules.compile().invoke(INPUT, config))


# ------------------------------------------------------------------ merging
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_fine_equals_original(method: str) -> None:
    scripted = ScriptedChatModel()
    builder = _research_app(_factory(scripted), method=method)
    base, (_, out) = _run(builder, scripted, FINE)
    assert out == base
    assert len(scripted.calls) == 3 and not scripted.merged_calls


def test_pydantic_json_schema_members_merge_into_one_strict_call() -> None:
    scripted = ScriptedChatModel()
    builder = _research_app(_factory(scripted))
    base, (capsules, out) = _run(builder, scripted)
    assert out == base
    assert all(type(out[n]) is Analysis for n in ANALYSTS)
    assert len(scripted.calls) == 1 and len(scripted.merged_calls) == 1  # 3 calls -> 1
    rf = scripted.merged_calls[0].kwargs["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    combined = rf["json_schema"]["schema"]
    assert combined["required"] == ["task_1", "task_2", "task_3"]
    assert combined["additionalProperties"] is False
    assert combined["properties"]["task_2"]["properties"]["risks"]["type"] == "array"
    record = capsules.history("analysts")[-1]
    assert record["fallback"] == [] and record["calls"] == 1


def test_function_calling_members_get_their_own_tool_call() -> None:
    scripted = ScriptedChatModel()
    builder = _research_app(_factory(scripted), method="function_calling")
    base, (_, out) = _run(builder, scripted)
    assert out == base and all(type(out[n]) is Analysis for n in ANALYSTS)
    (merged,) = scripted.merged_calls
    assert merged.kwargs["tools"][0]["function"]["name"] == MERGED_TOOL
    assert merged.kwargs["tool_choice"] == MERGED_TOOL
    assert len(scripted.calls) == 1


def test_dict_and_typeddict_schemas_merge_with_a_pydantic_member() -> None:
    scripted = ScriptedChatModel()
    schemas = {"market": BRIEF_SCHEMA, "operations": Brief}
    builder = _research_app(_factory(scripted), schemas=schemas)
    base, (_, out) = _run(builder, scripted)
    assert out == base
    assert type(out["financial"]) is Analysis
    assert isinstance(out["market"], dict) and set(out["market"]) == {"signals", "direction"}
    assert isinstance(out["operations"], dict) and set(out["operations"]) == {
        "headline",
        "confidence",
    }
    assert len(scripted.calls) == 1
    # not every member's call was strict (the TypedDict and dict ones were not)
    assert scripted.merged_calls[0].kwargs["response_format"]["json_schema"]["strict"] is False


def test_json_mode_members_merge() -> None:
    def respond(text: str) -> str:
        angle = next(n for n in ANALYSTS if f"the {n} analyst" in text)
        return json.dumps({"angle": angle, "words": len(text.split())})

    scripted = ScriptedChatModel(respond=respond)
    schemas: dict[str, Any] = {n: None for n in ANALYSTS}
    builder = _research_app(_factory(scripted), method="json_mode", schemas=schemas)
    base, (_, out) = _run(builder, scripted)
    assert out == base
    assert out["market"]["angle"] == "market"
    assert len(scripted.calls) == 1
    assert scripted.merged_calls[0].kwargs["response_format"] == {"type": "json_object"}


def test_include_raw_gets_the_same_parsed_object() -> None:
    scripted = ScriptedChatModel()
    builder = _research_app(_factory(scripted), include_raw=True)
    base, (_, out) = _run(builder, scripted)
    for n in ANALYSTS:
        assert out[n]["parsed"] == base[n]["parsed"] and out[n]["parsing_error"] is None
        assert out[n]["raw"].content == base[n]["raw"].content
        assert out[n]["raw"].response_metadata["capsule_served"] is True
    assert len(scripted.calls) == 1


def test_async_ainvoke_merges_and_matches() -> None:
    scripted = ScriptedChatModel()
    builder = _research_app(_factory(scripted), use_async=True)
    base = asyncio.run(builder.compile().ainvoke(INPUT))
    scripted.reset()
    app = lc.capsulize(builder, groups={"analysts": list(ANALYSTS)}).compile()
    out = asyncio.run(app.ainvoke(INPUT, COMPOUND))
    assert out == base and len(scripted.calls) == 1 and len(scripted.merged_calls) == 1


def test_plain_text_and_structured_members_merge_in_separate_calls() -> None:
    scripted = ScriptedChatModel()
    get_model = _factory(scripted)

    class S(TypedDict, total=False):
        doc: str
        a: Any
        b: Any
        c: Any
        d: Any

    def text_node(name: str) -> Any:
        def node(state: S) -> dict[str, Any]:
            r = get_model().invoke(
                [SystemMessage(f"Agent {name}: summarise."), HumanMessage(state["doc"])]
            )
            return {name: r.content}

        return node

    def structured_node(name: str) -> Any:
        def node(state: S) -> dict[str, Any]:
            llm = get_model().with_structured_output(Analysis, method="json_schema")
            return {
                name: llm.invoke(
                    [SystemMessage(f"Agent {name}: assess."), HumanMessage(state["doc"])]
                )
            }

        return node

    b = StateGraph(S)
    for name, fn in (
        ("a", text_node),
        ("b", text_node),
        ("c", structured_node),
        ("d", structured_node),
    ):
        b.add_node(name, fn(name))
        b.add_edge(START, name)
    base = b.compile().invoke({"doc": SOURCE})
    scripted.reset()
    out = lc.capsulize(b, mode="compound").compile().invoke({"doc": SOURCE})
    assert out == base
    assert len(scripted.calls) == 2 and len(scripted.merged_calls) == 2  # 4 calls -> 2
    kinds = sorted("response_format" in c.kwargs for c in scripted.merged_calls)
    assert kinds == [False, True]


def test_a_lone_structured_call_passes_through_and_the_reason_is_recorded() -> None:
    scripted = ScriptedChatModel()
    builder = _research_app(_factory(scripted))
    # operations asks for plain text: the structured pair merges, operations runs alone

    def operations(state: State) -> dict[str, Any]:
        r = lc.CapsuleChatModel(scripted).invoke(
            f"Operations view of {state['topic']}:\n{state['doc']}"
        )
        return {"operations": r.content}

    b = StateGraph(State)
    for n in ("financial", "market"):
        b.add_node(n, builder.nodes[n].runnable)
        b.add_edge(START, n)
    b.add_node("operations", operations)
    b.add_edge(START, "operations")
    base = b.compile().invoke(INPUT)
    scripted.reset()
    capsules = lc.capsulize(b, mode="compound")
    out = capsules.compile().invoke(INPUT)
    assert out == base
    assert len(scripted.merged_calls) == 1 and len(scripted.calls) == 2
    notes = capsules.history()[-1]["notes"]
    assert any(n.startswith("operations: not merged: the only plain-text call") for n in notes)


@tool
def lookup_price(company: str) -> str:
    """Look up a company's share price."""
    return "NOK 42"


def test_tool_calling_agents_pass_through_with_the_reason() -> None:
    scripted = ScriptedChatModel()

    def tool_agent(state: State) -> dict[str, Any]:
        r = lc.CapsuleChatModel(scripted).bind_tools([lookup_price]).invoke(state["doc"])
        return {"operations": r.content}

    builder = _research_app(_factory(scripted))
    b = StateGraph(State)
    for n in ("financial", "market"):
        b.add_node(n, builder.nodes[n].runnable)
        b.add_edge(START, n)
    b.add_node("operations", tool_agent)
    b.add_edge(START, "operations")
    base = b.compile().invoke(INPUT)
    scripted.reset()
    capsules = lc.capsulize(b, mode="compound")
    with lc.track_usage() as usage:
        out = capsules.compile().invoke(INPUT)
    assert out == base
    assert len(scripted.merged_calls) == 1 and len(scripted.calls) == 2
    assert sorted(r["kind"] for r in usage.calls if r["kind"] != "served") == [
        "merged",
        "unmergeable",
    ]
    notes = capsules.history()[-1]["notes"]
    assert any("operations: not merged: its call binds tools for tool use" in n for n in notes)


def test_sequential_tier_passes_structured_calls_through() -> None:
    scripted = ScriptedChatModel()
    builder = _research_app(_factory(scripted))
    base, (capsules, out) = _run(
        builder, scripted, {"configurable": {"capsules": {"mode": "sequential"}}}
    )
    assert out == base and len(scripted.calls) == 3
    assert any("standard tier only" in n for n in capsules.history()[-1]["notes"])


# --------------------------------------------------------- fuzzed replies
def _mutate(kind: str, rng: random.Random) -> Callable[[AIMessage], AIMessage]:
    def rewrite(msg: AIMessage) -> AIMessage:
        text = str(msg.content)
        obj = json.loads(text)
        meta = dict(msg.response_metadata)
        content: Any = text
        if kind == "invalid_json":
            content = text.replace('"task_2"', "task_2", 1)
        elif kind == "missing":
            obj.pop("task_2")
            content = json.dumps(obj)
        elif kind == "schema":
            obj["task_2"]["risks"] = "none"
            obj["task_3"].pop("summary")
            content = json.dumps(obj)
        elif kind == "bad_enum":
            obj["task_1"]["risks"][0]["severity"] = "catastrophic"
            content = json.dumps(obj)
        elif kind == "extra":
            obj["notes"] = "extra commentary"
            content = json.dumps(obj)
        elif kind == "misnumbered":
            obj["task_4"] = obj["task_3"]
            content = json.dumps(obj)
        elif kind == "copied":
            obj["task_2"] = obj["task_1"]
            content = json.dumps(obj)
        elif kind == "truncated":
            cut = text.index('"task_3"') + rng.randint(4, 40)
            content = text[:cut]
            meta["finish_reason"] = "length"
        elif kind == "truncated_mid_2":
            content = text[: text.index('"task_2"') + 30]
            meta["finish_reason"] = "length"
        elif kind == "blocks":
            content = [{"type": "text", "text": text[:20]}, {"type": "text", "text": text[20:]}]
        elif kind == "fenced":
            content = f"```json\n{text}\n```"
        elif kind == "duplicate_key":
            content = text[:-1] + ', "task_1": ' + json.dumps(obj["task_1"]) + "}"
        elif kind == "empty":
            obj["task_3"]["summary"] = ""
            obj["task_3"]["outlook"] = "N/A"
            obj["task_3"]["risks"] = []
            content = json.dumps(obj)
        elif kind == "trailing":
            content = text + "\nHope this helps!"
        return AIMessage(content=content, usage_metadata=msg.usage_metadata, response_metadata=meta)

    return rewrite


# kind -> members re-run as their node (the rest are served from the merged reply)
FAULTS: dict[str, set[str]] = {
    "invalid_json": set(ANALYSTS),
    "missing": {"market"},
    "schema": {"market", "operations"},
    "bad_enum": {"financial"},
    "extra": set(),
    "misnumbered": set(ANALYSTS),
    "copied": {"financial", "market"},
    "truncated": {"operations"},
    "truncated_mid_2": {"market", "operations"},
    "blocks": set(),
    "fenced": set(),
    "duplicate_key": {"financial"},
    "empty": {"operations"},
    "trailing": set(ANALYSTS),
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fuzzed_merged_reply_never_loses_or_alters_an_output(kind: str) -> None:
    scripted = ScriptedChatModel(rewrite_merged=_mutate(kind, random.Random(7)))
    builder = _research_app(_factory(scripted))
    base, (capsules, out) = _run(builder, scripted)
    assert out == base  # every member ends with exactly what its own call gives
    record = capsules.history("analysts")[-1]
    assert set(record["fallback"]) == FAULTS[kind]
    assert len(scripted.calls) == 1 + len(FAULTS[kind])


def test_random_fuzz_sync_and_async() -> None:
    """Random faults, many inputs: zero lost or wrong outputs."""
    rng = random.Random(11)
    kinds = sorted(FAULTS)
    for i in range(30):
        kind = kinds[i % len(kinds)]
        scripted = ScriptedChatModel(rewrite_merged=_mutate(kind, rng))
        use_async = i % 2 == 1
        builder = _research_app(_factory(scripted), use_async=use_async)
        doc = SOURCE + f"\n\nFiling {rng.randint(1, 10_000)}: quarterly figures restated."
        inputs = {"topic": f"Halvard Robotics {i}", "doc": doc}
        app = lc.capsulize(builder, groups={"analysts": list(ANALYSTS)}).compile()
        if use_async:
            base = asyncio.run(builder.compile().ainvoke(inputs))
            out = asyncio.run(app.ainvoke(inputs, COMPOUND))
        else:
            base = builder.compile().invoke(inputs)
            out = app.invoke(inputs, COMPOUND)
        assert out == base, kind


def test_splitter_rejects_a_reply_for_the_wrong_tool() -> None:
    """With tool transport, only the merged tool's own call counts."""
    scripted = ScriptedChatModel()
    builder = _research_app(_factory(scripted), method="function_calling")
    base, (_, _out) = _run(builder, scripted)

    def other_tool(msg: AIMessage) -> AIMessage:
        calls = [{**c, "name": "something_else"} for c in msg.tool_calls]
        return AIMessage(content="", tool_calls=calls, response_metadata=msg.response_metadata)

    scripted2 = ScriptedChatModel(rewrite_merged=other_tool)
    builder2 = _research_app(_factory(scripted2), method="function_calling")
    capsules = lc.capsulize(builder2, groups={"analysts": list(ANALYSTS)})
    out = capsules.compile().invoke(INPUT, COMPOUND)
    assert out == base
    assert set(capsules.history("analysts")[-1]["fallback"]) == set(ANALYSTS)
