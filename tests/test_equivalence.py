"""Fine tier reproduces the original graph exactly; standard merges one call per group."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest
from conftest import COMPOUND, DOC, KINDS, build_app
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import START, StateGraph

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel


def _run(app: Any, config: Any = None, *, use_async: bool) -> dict[str, Any]:
    if use_async:
        return asyncio.run(app.ainvoke({"doc": DOC}, config))
    return app.invoke({"doc": DOC}, config)


# async nodes need ainvoke (LangGraph itself cannot invoke them synchronously)
ENTRY = pytest.mark.parametrize(
    ("use_async", "async_nodes"),
    [(False, False), (True, False), (True, True)],
    ids=["invoke-sync-nodes", "ainvoke-sync-nodes", "ainvoke-async-nodes"],
)


@ENTRY
@pytest.mark.parametrize("fan_in", ["plain", "join"])
def test_fine_tier_output_equals_original(use_async: bool, async_nodes: bool, fan_in: str) -> None:
    llm = lc.CapsuleChatModel(ScriptedChatModel())
    builder = build_app(llm, async_nodes=async_nodes, fan_in=fan_in)  # type: ignore[arg-type]
    base = _run(builder.compile(), use_async=use_async)
    capsules = lc.capsulize(builder, mode="fine")
    out = _run(capsules.compile(), use_async=use_async)
    assert out == base  # plain keys and the operator.add reducer key, items and order
    assert base["log"][0] == "scoping" and base["log"][-1] == "briefer"


@ENTRY
def test_standard_tier_one_call_per_group_same_outputs(use_async: bool, async_nodes: bool) -> None:
    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)
    builder = build_app(llm, async_nodes=async_nodes)
    base = _run(builder.compile(), use_async=use_async)
    fine_calls = list(scripted.calls)
    scripted.reset()

    capsules = lc.capsulize(builder, groups={"arm": list(KINDS)}, mode="compound")
    out = _run(capsules.compile(), use_async=use_async)
    calls = scripted.calls
    # scoping + ONE merged call for the three extractors + briefer
    assert len(calls) == 3 and [c.merged for c in calls] == [False, True, False]
    assert calls[1].tasks == 3
    # the scripted model answers a task identically alone or merged: outputs match
    assert out == {**base, "log": out["log"]}
    assert sorted(out["log"]) == sorted(base["log"])
    assert len(out["log"]) == len(base["log"])
    # the shared source was sent once instead of three times
    extractor_in = sum(c.usage["input_tokens"] for c in fine_calls[1:4])
    assert calls[1].usage["input_tokens"] < 0.75 * extractor_in


def test_per_run_mode_override_and_group_override() -> None:
    scripted = ScriptedChatModel()
    builder = build_app(lc.CapsuleChatModel(scripted))
    app = lc.capsulize(builder, groups={"arm": list(KINDS)}).compile()  # mode auto -> fine
    app.invoke({"doc": DOC})
    assert not scripted.merged_calls
    app.invoke({"doc": DOC}, COMPOUND)
    assert len(scripted.merged_calls) == 1
    cfg = {"configurable": {"capsules": {"mode": "compound", "groups": {"arm": "fine"}}}}
    app.invoke({"doc": DOC}, cfg)
    assert len(scripted.merged_calls) == 1


def test_unknown_mode_fails_with_named_error() -> None:
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()))
    with pytest.raises(lc.CapsuleConfigError) as e:
        lc.capsulize(builder, mode="turbo")
    assert e.value.code == "bad_mode" and "turbo" in str(e.value)
    app = lc.capsulize(builder).compile()
    with pytest.raises(lc.CapsuleConfigError) as e2:
        app.invoke({"doc": DOC}, {"configurable": {"capsules": {"mode": "turbo"}}})
    assert e2.value.code == "bad_mode" and "turbo" in str(e2.value)


def test_original_and_capsule_graph_share_one_model_object() -> None:
    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)
    builder = build_app(llm)
    orig = builder.compile()
    app = lc.capsulize(builder, mode="compound").compile()
    a = orig.invoke({"doc": DOC})
    b = app.invoke({"doc": DOC})
    c = orig.invoke({"doc": DOC})
    assert a == c  # the original is unaffected by the capsule graph using the same model
    assert {k: v for k, v in b.items() if k != "log"} == {k: v for k, v in a.items() if k != "log"}
    assert [x.merged for x in scripted.calls].count(True) == 1


class ManyState(TypedDict, total=False):
    doc: str
    out: Annotated[list[str], operator.add]


def test_many_parked_sync_members_under_ainvoke_do_not_exhaust_the_executor() -> None:
    """12 sync members in 4 groups park at once: more than the loop's default executor
    holds on a small machine. Each capsule run must use threads of its own."""
    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)

    def mk(name: str) -> Any:
        def node(state: ManyState) -> dict[str, Any]:
            r = llm.invoke([SystemMessage(f"Agent {name}."), HumanMessage(state["doc"])])
            return {"out": [f"{name}:{r.content}"]}

        return node

    b = StateGraph(ManyState)
    groups: dict[str, list[str]] = {}
    for lens in ("p", "q", "r", "s"):
        for kind in ("x", "y", "z"):
            name = f"{lens}_{kind}"
            b.add_node(name, mk(name))
            b.add_edge(START, name)
            groups.setdefault(lens, []).append(name)
    app = lc.capsulize(b, groups=groups, mode="compound").compile()
    out = asyncio.run(asyncio.wait_for(app.ainvoke({"doc": DOC}), timeout=60))
    assert len(out["out"]) == 12 and len(scripted.merged_calls) == 4
    assert sorted(out["out"]) == sorted(b.compile().invoke({"doc": DOC})["out"])
