"""The abort reaches every parked call, on every langchain-core entry point, sync and
async, whatever the member catches: a member whose section is missing (or whose merged
call failed) is re-run through its original node, and its caught-error default value
is never committed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langgraph.graph import END, START, StateGraph

import langgraph_capsules as lc
from langgraph_capsules.strategies import parse_merged_prompt
from langgraph_capsules.testing import ScriptedChatModel

DEFAULT = "DEFAULT (the call failed)"
MEMBERS = ("alpha", "beta", "gamma")
COMPOUND = {"configurable": {"capsules": {"mode": "compound"}}}
SOURCE = (
    "Harrow Foods runs 14 bakeries in Leeds and York and sells bread to 40 cafés.\n\n"
    "It plans to open a plant in Hull in 2027 and expects sales of GBP 30 million."
)


class State(TypedDict, total=False):
    doc: str
    alpha: str
    beta: str
    gamma: str


def _messages(member: str, doc: str) -> list[Any]:
    return [
        SystemMessage(f"You are the {member} analyst. Answer in three short lines."),
        HumanMessage(f"Source:\n\n{doc}\n\nWhat does the {member} view say?"),
    ]


def _text(msg: Any) -> str:
    return msg.content if isinstance(msg.content, str) else str(msg.content)


# Each entry point: how a member calls the model (sync or async), as apps write it.
SyncCall = Callable[[Any, list[Any]], str]
AsyncCall = Callable[[Any, list[Any]], Awaitable[str]]


def _invoke(llm: Any, msgs: list[Any]) -> str:
    return _text(llm.invoke(msgs))


def _stream(llm: Any, msgs: list[Any]) -> str:
    return "".join(_text(c) for c in llm.stream(msgs))


def _batch(llm: Any, msgs: list[Any]) -> str:
    return _text(llm.batch([msgs])[0])


def _generate(llm: Any, msgs: list[Any]) -> str:
    return llm.generate([msgs]).generations[0][0].text  # type: ignore[no-any-return]


def _chain(llm: Any, msgs: list[Any]) -> str:
    prompt = ChatPromptTemplate.from_messages([(m.type, m.content) for m in msgs])
    return (prompt | llm | StrOutputParser()).invoke({})  # type: ignore[no-any-return]


async def _ainvoke(llm: Any, msgs: list[Any]) -> str:
    return _text(await llm.ainvoke(msgs))


async def _astream(llm: Any, msgs: list[Any]) -> str:
    return "".join([_text(c) async for c in llm.astream(msgs)])


async def _abatch(llm: Any, msgs: list[Any]) -> str:
    return _text((await llm.abatch([msgs]))[0])


async def _agenerate(llm: Any, msgs: list[Any]) -> str:
    return (await llm.agenerate([msgs])).generations[0][0].text  # type: ignore[no-any-return]


async def _achain(llm: Any, msgs: list[Any]) -> str:
    prompt = ChatPromptTemplate.from_messages([(m.type, m.content) for m in msgs])
    return await (prompt | llm | StrOutputParser()).ainvoke({})  # type: ignore[no-any-return]


SYNC: dict[str, SyncCall] = {
    "invoke": _invoke,
    "stream": _stream,
    "batch": _batch,
    "generate": _generate,
    "chain": _chain,
}
ASYNC: dict[str, AsyncCall] = {
    "ainvoke": _ainvoke,
    "astream": _astream,
    "abatch": _abatch,
    "agenerate": _agenerate,
    "achain": _achain,
}


def build(llm: Any, entry: str, catch: type[BaseException] = Exception) -> StateGraph[Any]:
    """Three sibling members that swallow any error of their call into a default."""
    b: StateGraph[Any] = StateGraph(State)

    def make(member: str) -> Any:
        if entry in SYNC:
            call = SYNC[entry]

            def node(state: State) -> dict[str, str]:
                try:
                    out = call(llm, _messages(member, state["doc"]))
                except catch:
                    out = DEFAULT
                return {member: out}

            return node
        acall = ASYNC[entry]

        async def anode(state: State) -> dict[str, str]:
            try:
                out = await acall(llm, _messages(member, state["doc"]))
            except catch:
                out = DEFAULT
            return {member: out}

        return anode

    for m in MEMBERS:
        b.add_node(m, make(m))
        b.add_edge(START, m)
        b.add_edge(m, END)
    return b


def _expected() -> dict[str, str]:
    llm = ScriptedChatModel()
    return {m: _text(llm.invoke(_messages(m, SOURCE))) for m in MEMBERS}


FAULTS = {
    # section 2 left out: alpha's section is then not closed by marker 2, so it re-runs too
    "missing-section": {"drop_sections": {2}},
    "merged-call-fails": {"fail_merged": True},
}


async def _run(entry: str, knobs: dict[str, Any], catch: type[BaseException]) -> Any:
    scripted = ScriptedChatModel(**knobs)
    capsules = lc.capsulize(build(lc.CapsuleChatModel(scripted), entry, catch))
    app = capsules.compile()
    if entry in SYNC:
        out = app.invoke({"doc": SOURCE}, COMPOUND)
    else:
        out = await app.ainvoke({"doc": SOURCE}, COMPOUND)
    return out, capsules, scripted


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("entry", [*SYNC, *ASYNC])
async def test_caught_abort_never_commits_a_default(entry: str, fault: str) -> None:
    out, capsules, scripted = await _run(entry, FAULTS[fault], Exception)
    expected = _expected()
    assert {m: out[m] for m in MEMBERS} == expected, "a member kept its caught-error default"
    rec = capsules.history()[-1]
    bad = ["alpha", "beta"] if fault == "missing-section" else list(MEMBERS)
    assert rec["tier"] == "standard" and sorted(rec["fallback"]) == bad
    assert sum(parse_merged_prompt(c.messages) is not None for c in scripted.calls) == 1


@pytest.mark.parametrize("entry", ["invoke", "ainvoke", "agenerate", "abatch", "astream"])
async def test_member_that_catches_base_exception_is_still_rerun(entry: str) -> None:
    """Even ``except BaseException`` cannot commit a default: the capsule node knows
    which parked calls it aborted and re-runs those members whatever they returned."""
    out, capsules, _ = await _run(entry, {"empty_sections": {1, 3}}, BaseException)
    assert {m: out[m] for m in MEMBERS} == _expected()
    assert sorted(capsules.history()[-1]["fallback"]) == ["alpha", "gamma"]


async def test_async_abort_is_raised_as_merge_abort_not_attribute_error() -> None:
    """The member sees the abort itself, not langchain-core's AttributeError."""
    seen: list[str] = []
    scripted = ScriptedChatModel(empty_sections={1})
    llm = lc.CapsuleChatModel(scripted)
    b: StateGraph[Any] = StateGraph(State)

    def make(member: str) -> Any:
        async def anode(state: State) -> dict[str, str]:
            try:
                r = await llm.ainvoke(_messages(member, state["doc"]))
            except BaseException as e:  # record what the member would see
                seen.append(type(e).__name__)
                raise
            return {member: _text(r)}

        return anode

    for m in MEMBERS:
        b.add_node(m, make(m))
        b.add_edge(START, m)
        b.add_edge(m, END)
    out = await lc.capsulize(b).compile().ainvoke({"doc": SOURCE}, COMPOUND)
    assert seen == ["MergeAbort"]
    assert out["alpha"] == _expected()["alpha"]


async def test_concurrent_calls_inside_one_member_get_their_own_answers() -> None:
    """A member that fires two calls at once: the first parks, the second passes through;
    neither receives the other's answer."""
    import asyncio

    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)
    b: StateGraph[Any] = StateGraph(State)

    def make(member: str) -> Any:
        async def anode(state: State) -> dict[str, str]:
            first, second = await asyncio.gather(
                llm.ainvoke(_messages(member, state["doc"])),
                llm.ainvoke([HumanMessage(f"Name one risk for {member}. Be brief.")]),
            )
            return {member: f"{_text(first)} | {_text(second)}"}

        return anode

    for m in MEMBERS:
        b.add_node(m, make(m))
        b.add_edge(START, m)
        b.add_edge(m, END)
    out = await lc.capsulize(b).compile().ainvoke({"doc": SOURCE}, COMPOUND)
    base = await b.compile().ainvoke({"doc": SOURCE})
    assert {m: out[m] for m in MEMBERS} == {m: base[m] for m in MEMBERS}


def test_served_answer_is_an_ai_message() -> None:
    scripted = ScriptedChatModel()
    llm = lc.CapsuleChatModel(scripted)
    got: list[Any] = []
    b: StateGraph[Any] = StateGraph(State)

    def make(member: str) -> Any:
        def node(state: State) -> dict[str, str]:
            r = llm.invoke(_messages(member, state["doc"]))
            got.append(r)
            return {member: _text(r)}

        return node

    for m in MEMBERS:
        b.add_node(m, make(m))
        b.add_edge(START, m)
        b.add_edge(m, END)
    lc.capsulize(b).compile().invoke({"doc": SOURCE}, COMPOUND)
    assert len(got) == 3 and all(isinstance(r, AIMessage) for r in got)
    assert all(r.response_metadata.get("capsule_served") for r in got)
