"""CapsuleChatModel: exact pass-through outside a session, parked and served inside."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

from conftest import DOC
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, StateGraph
from pydantic import BaseModel

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel


def test_pass_through_invoke_stream_batch_equal_inner() -> None:
    inner = ScriptedChatModel()
    llm = lc.CapsuleChatModel(inner)
    assert llm.invoke("hello").content == inner.invoke("hello").content
    assert asyncio.run(llm.ainvoke("hello")).content == inner.invoke("hello").content
    assert "".join(str(c.content) for c in llm.stream("hello")) == inner.invoke("hello").content

    async def astream() -> str:
        return "".join([str(c.content) async for c in llm.astream("hello")])

    assert asyncio.run(astream()) == inner.invoke("hello").content
    assert [m.content for m in llm.batch(["a b", "c d"])] == [
        m.content for m in inner.batch(["a b", "c d"])
    ]
    msg = llm.invoke("hello")
    assert msg.usage_metadata == inner.invoke("hello").usage_metadata  # usage unchanged
    assert msg.response_metadata["model_name"] == "scripted-1"


def test_positional_and_keyword_construction() -> None:
    inner = ScriptedChatModel()
    assert lc.CapsuleChatModel(inner).inner is inner
    assert lc.CapsuleChatModel(inner=inner).inner is inner
    assert lc.CapsuleChatModel(inner)._llm_type == "capsule[scripted]"


@tool
def lookup(company: str) -> str:
    """Look up a company."""
    return company


class Answer(BaseModel):
    value: str


def test_bind_tools_and_structured_output_keep_the_proxy_in_the_chain() -> None:
    inner = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", base_url="http://127.0.0.1:9/v1")  # type: ignore[arg-type]
    llm = lc.CapsuleChatModel(inner)
    bound = llm.bind_tools([lookup])
    assert bound.bound is llm  # type: ignore[attr-defined]
    assert bound.kwargs["tools"][0]["function"]["name"] == "lookup"  # type: ignore[attr-defined]
    structured = llm.with_structured_output(Answer)
    assert llm in [getattr(s, "bound", None) for s in structured.steps]  # type: ignore[attr-defined]


class S(TypedDict, total=False):
    doc: str
    a: str
    b: str
    kinds: Annotated[list[str], operator.add]


def test_tool_bound_calls_pass_through_unmerged_and_are_recorded() -> None:
    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)

    def plain(state: S) -> dict[str, Any]:
        r = llm.invoke([SystemMessage("Summarise the source."), HumanMessage(state["doc"])])
        return {"a": r.content}

    def tooly(state: S) -> dict[str, Any]:
        r = llm.bind(tools=[{"type": "function", "function": {"name": "x"}}]).invoke(state["doc"])
        return {"b": r.content}

    b = StateGraph(S)
    b.add_node("a", plain)
    b.add_node("b", tooly)
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    with lc.track_usage() as usage:
        out = lc.capsulize(b, mode="compound").compile().invoke({"doc": DOC})
    kinds = sorted(r["kind"] for r in usage.calls)
    assert kinds == ["real", "unmergeable"]  # one parked call alone passes through for real
    assert out["a"] and out["b"]
    assert not scripted.merged_calls


def test_second_call_of_a_member_passes_through() -> None:
    """Sessions are one-shot: a member's later calls are real calls, not replays."""
    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)

    def two_calls(name: str) -> Any:
        def node(state: S) -> dict[str, Any]:
            first = llm.invoke(
                [SystemMessage(f"Agent {name}: summarise."), HumanMessage(state["doc"])]
            )
            second = llm.invoke(f"Agent {name}: shorten this: {first.content}")
            return {name: str(second.content)}

        return node

    b = StateGraph(S)
    b.add_node("a", two_calls("a"))
    b.add_node("b", two_calls("b"))
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    base = b.compile().invoke({"doc": DOC})
    scripted.reset()
    out = lc.capsulize(b, mode="compound").compile().invoke({"doc": DOC})
    assert out == base
    assert [c.merged for c in scripted.calls].count(True) == 1 and len(scripted.calls) == 3


def test_served_message_metadata_and_zero_usage() -> None:
    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)
    seen: list[AIMessage] = []

    def mk(name: str) -> Any:
        def node(state: S) -> dict[str, Any]:
            r = llm.invoke([SystemMessage(f"Agent {name}."), HumanMessage(state["doc"])])
            seen.append(r)
            return {name: r.content}

        return node

    b = StateGraph(S)
    b.add_node("a", mk("a"))
    b.add_node("b", mk("b"))
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    lc.capsulize(b, groups={"pair": ["a", "b"]}, mode="compound").compile().invoke({"doc": DOC})
    assert len(seen) == 2
    for msg in seen:
        assert msg.usage_metadata is not None and msg.usage_metadata["input_tokens"] == 0
        assert msg.response_metadata["capsule_group"] == "pair"
        assert msg.response_metadata["capsule_tier"] == "standard"
        assert "model_name" not in msg.response_metadata
    assert {m.response_metadata["capsule_member"] for m in seen} == {"a", "b"}


def test_merged_call_gets_the_sum_of_member_budgets() -> None:
    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)

    def mk(name: str, budget: int) -> Any:
        def node(state: S) -> dict[str, Any]:
            r = llm.bind(max_tokens=budget).invoke(
                [SystemMessage(f"Agent {name}."), HumanMessage(state["doc"])]
            )
            return {name: r.content}

        return node

    b = StateGraph(S)
    b.add_node("a", mk("a", 100))
    b.add_node("b", mk("b", 150))
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    lc.capsulize(b, mode="compound").compile().invoke({"doc": DOC})
    merged = scripted.merged_calls[0]
    # the same room the separate calls get: the members' budgets plus a marker line each
    assert merged.kwargs["max_tokens"] == 100 + 150 + 2 * 16
    # each task is told its own member's limit, and nothing else sets a length
    system = str(merged.messages[0].content)
    assert "task 1 at most about 60; task 2 at most about 90" in system
    assert "250 words" not in system and "full-depth" not in system


def _writers(llm: Any, budgets: dict[str, int | None]) -> Any:
    def mk(name: str, budget: int | None) -> Any:
        def node(state: S) -> dict[str, Any]:
            bound = llm.bind(max_tokens=budget) if budget else llm
            r = bound.invoke([SystemMessage(f"Write the {name} note."), HumanMessage(state["doc"])])
            return {name: r.content}

        return node

    b = StateGraph(S)
    for name, budget in budgets.items():
        b.add_node(name, mk(name, budget))
        b.add_edge(START, name)
    return b


def test_equal_budgets_are_stated_once_for_every_task() -> None:
    scripted = ScriptedChatModel()
    b = _writers(lc.CapsuleChatModel(scripted), {"a": 200, "b": 200, "c": 200})
    lc.capsulize(b, mode="compound").compile().invoke({"doc": DOC})
    system = str(scripted.merged_calls[0].messages[0].content)
    assert "Length limit in words: at most about 120 per task." in system
    assert "task 1 at most" not in system
    # one member without a budget: the others' limits are stated task by task
    scripted = ScriptedChatModel()
    b = _writers(lc.CapsuleChatModel(scripted), {"a": 200, "b": None, "c": 200})
    lc.capsulize(b, mode="compound").compile().invoke({"doc": DOC})
    system = str(scripted.merged_calls[0].messages[0].content)
    assert "Length limits in words: task 1 at most about 120; task 3 at most about 120." in system


def test_merged_budget_is_unset_when_members_set_none_and_capped_by_the_model() -> None:
    scripted = ScriptedChatModel()
    b = _writers(lc.CapsuleChatModel(scripted), {"a": None, "b": None})
    lc.capsulize(b, mode="compound").compile().invoke({"doc": DOC})
    merged = scripted.merged_calls[0]
    assert "max_tokens" not in merged.kwargs  # no budget anywhere: none invented
    assert "Length limit" not in str(merged.messages[0].content)
    # three writers at the model's default of 16,000 on a model whose output stops at
    # 32,768: the merged call asks for the model's limit, not 48,048
    capped = ScriptedChatModel(profile={"max_output_tokens": 32_768})
    b = _writers(lc.CapsuleChatModel(capped), {"a": 16_000, "b": 16_000, "c": 16_000})
    lc.capsulize(b, mode="compound").compile().invoke({"doc": DOC})
    assert capped.merged_calls[0].kwargs["max_tokens"] == 32_768
