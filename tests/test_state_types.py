"""State types other than TypedDict, and members with their own input schema."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from conftest import DOC
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel


class PState(BaseModel):
    doc: str = ""
    a: str = ""
    b: str = ""
    notes: Annotated[list[str], operator.add] = Field(default_factory=list)


def test_pydantic_state_fine_and_compound_match_the_original() -> None:
    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)

    def mk(name: str) -> Any:
        def node(state: PState) -> dict[str, Any]:
            assert isinstance(state, PState)  # members still receive their state type
            r = llm.invoke([SystemMessage(f"Agent {name}: summarise."), HumanMessage(state.doc)])
            return {name: r.content, "notes": [name]}

        return node

    b = StateGraph(PState)
    b.add_node("a", mk("a"))
    b.add_node("b", mk("b"))
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    b.add_edge("a", END)
    b.add_edge("b", END)
    base = b.compile().invoke({"doc": DOC})
    app = lc.capsulize(b).compile()
    assert app.invoke({"doc": DOC}) == base
    scripted.reset()
    out = app.invoke({"doc": DOC}, {"configurable": {"capsules": {"mode": "compound"}}})
    assert len(scripted.merged_calls) == 1
    assert out["a"] == base["a"] and out["b"] == base["b"]
    assert sorted(out["notes"]) == sorted(base["notes"])


class Full(TypedDict, total=False):
    doc: str
    secret: str
    a: str
    b: str


class OnlyDoc(TypedDict):
    doc: str


def test_member_with_its_own_input_schema_receives_exactly_its_keys() -> None:
    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)
    seen: list[set[str]] = []

    def mk(name: str) -> Any:
        def node(state: OnlyDoc) -> dict[str, Any]:
            seen.append(set(state))
            r = llm.invoke([SystemMessage(f"Agent {name}."), HumanMessage(state["doc"])])
            return {name: r.content}

        return node

    b = StateGraph(Full)
    b.add_node("a", mk("a"), input_schema=OnlyDoc)
    b.add_node("b", mk("b"), input_schema=OnlyDoc)
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    base = b.compile().invoke({"doc": DOC, "secret": "s"})
    out = lc.capsulize(b, mode="compound").compile().invoke({"doc": DOC, "secret": "s"})
    assert out == base and len(scripted.merged_calls) == 1
    assert seen and all(keys == {"doc"} for keys in seen)
