"""Shared graph factories for the tests: small LangGraph apps written as users write them."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel

DOC = (
    "Nordvik Sensors designs vibration sensors for wind turbines and is based in Oslo, "
    "Norway. It was founded in 2011 by Ingrid Halvorsen and Tomas Berg.\n\n"
    "In 2024 the company reported revenue of NOK 482 million, up 12 percent on the year, "
    "with an operating margin of 9.5 percent. Its largest customer is Vestmark Energy.\n\n"
    "Rivals include Kestrel Monitoring and Aurum Devices, which undercut Nordvik on price "
    "in the German market. Analysts see Nordvik as the quality leader in the Nordics.\n\n"
    "The company plans a second plant in Gdansk in 2026 and is hiring 40 engineers. New EU "
    "machinery rules could raise certification costs for all sensor makers."
)
KINDS = ("entities", "claims", "signals")


class State(TypedDict, total=False):
    doc: str
    scope: str
    entities: str
    claims: str
    signals: str
    brief: str
    log: Annotated[list[str], operator.add]


def extractor_messages(kind: str, state: dict[str, Any]) -> list[Any]:
    return [
        SystemMessage(f"You list every {kind} stated in the source. Number them, one per line."),
        HumanMessage(
            f"Company frame:\n{state['scope']}\n\nSource:\n\n{state['doc']}\n\nList the {kind}."
        ),
    ]


def build_app(
    llm: Any,
    *,
    async_nodes: bool = False,
    fan_in: Literal["plain", "join"] = "plain",
    kinds: tuple[str, ...] = KINDS,
) -> StateGraph[Any, Any, Any, Any]:
    """scoping -> extractors (fan-out) -> briefer, plain nodes calling ``llm``."""

    def scoping(state: State) -> dict[str, Any]:
        r = llm.invoke(
            [SystemMessage("Frame the company in two sentences."), HumanMessage(state["doc"])]
        )
        return {"scope": r.content, "log": ["scoping"]}

    def make(kind: str) -> Any:
        if async_nodes:

            async def anode(state: State) -> dict[str, Any]:
                r = await llm.ainvoke(extractor_messages(kind, state))
                return {kind: r.content, "log": [kind]}

            return anode

        def node(state: State) -> dict[str, Any]:
            r = llm.invoke(extractor_messages(kind, state))
            return {kind: r.content, "log": [kind]}

        return node

    def briefer(state: State) -> dict[str, Any]:
        body = "\n\n".join(f"{k}:\n{state.get(k, '')}" for k in kinds)
        r = llm.invoke([SystemMessage("Write a one-paragraph brief."), HumanMessage(body)])
        return {"brief": r.content, "log": ["briefer"]}

    b = StateGraph(State)
    b.add_node("scoping", scoping)
    for k in kinds:
        b.add_node(k, make(k))
    b.add_node("briefer", briefer)
    b.add_edge(START, "scoping")
    for k in kinds:
        b.add_edge("scoping", k)
    if fan_in == "join":
        b.add_edge(list(kinds), "briefer")
    else:
        for k in kinds:
            b.add_edge(k, "briefer")
    b.add_edge("briefer", END)
    return b


COMPOUND = {"configurable": {"capsules": {"mode": "compound"}}}


def overlap(task: str, reference: str, candidate: str) -> float:
    """A plain-function judge: the share of the reference's words in the candidate."""
    ref = set(reference.split())
    return len(ref & set(candidate.split())) / len(ref) if ref else 0.0


@pytest.fixture
def scripted() -> ScriptedChatModel:
    return ScriptedChatModel()


@pytest.fixture
def llm(scripted: ScriptedChatModel) -> lc.CapsuleChatModel:
    return lc.CapsuleChatModel(scripted)
