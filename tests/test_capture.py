"""Capture keyed on the model configuration, not on one proxy object: a ``get_model()``
factory merges; calls to different configurations are answered per configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypedDict

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from pydantic import SecretStr

import langgraph_capsules as lc
from langgraph_capsules.model import config_key
from langgraph_capsules.testing import ScriptedChatModel

DOC = (
    "Solstrand Ferries runs electric ferries on four routes along the west coast.\n\n"
    "Ticket revenue grew 9 percent in 2025, and the operator ordered two new hulls from "
    "a yard in Gdansk; delivery slipped by one quarter."
)
MEMBERS = ("entities", "claims", "signals", "risks")


class State(TypedDict, total=False):
    doc: str
    entities: str
    claims: str
    signals: str
    risks: str
    brief: str


def _app(
    model_for: Callable[[str], Any], *, use_async: bool = False
) -> StateGraph[Any, Any, Any, Any]:
    """Extractors that each call ``model_for(name)`` inside the node, as an app with a
    ``get_model()`` factory does, then a briefer."""

    def messages(name: str, state: State) -> list[Any]:
        return [
            SystemMessage(f"List the {name} stated in the source, one per line."),
            HumanMessage(state["doc"]),
        ]

    def extractor(name: str) -> Any:
        if use_async:

            async def anode(state: State) -> dict[str, Any]:
                reply = await model_for(name).ainvoke(messages(name, state))
                return {name: reply.content}

            return anode

        def node(state: State) -> dict[str, Any]:
            return {name: model_for(name).invoke(messages(name, state)).content}

        return node

    def briefer(state: State) -> dict[str, Any]:
        return {"brief": " / ".join(str(state.get(m, ""))[:30] for m in MEMBERS)}

    b = StateGraph(State)
    for m in MEMBERS:
        b.add_node(m, extractor(m))
        b.add_edge(START, m)
        b.add_edge(m, "briefer")
    b.add_node("briefer", briefer)
    b.add_edge("briefer", END)
    return b


COMPOUND: Any = {"configurable": {"capsules": {"mode": "compound"}}}


def _real_calls(usage: Any) -> int:
    return int(usage.totals()["calls"])


def test_a_get_model_factory_merges_like_one_shared_proxy() -> None:
    scripted = ScriptedChatModel()

    def get_model(_name: str) -> Any:
        return lc.CapsuleChatModel(scripted)  # a new proxy on every call

    b = _app(get_model)
    base = b.compile().invoke({"doc": DOC})
    scripted.reset()
    out = lc.capsulize(b, groups={"x": list(MEMBERS)}).compile().invoke({"doc": DOC}, COMPOUND)
    assert out == base
    assert len(scripted.calls) == 1 and len(scripted.merged_calls) == 1  # 4 calls -> 1


def test_a_factory_that_builds_a_new_inner_model_per_call_merges() -> None:
    def get_model(_name: str) -> Any:
        return lc.CapsuleChatModel(ScriptedChatModel(model_name="scripted-7b"))

    b = _app(get_model)
    with lc.track_usage() as usage:
        base = b.compile().invoke({"doc": DOC})
    assert _real_calls(usage) == 4
    capsules = lc.capsulize(b, groups={"x": list(MEMBERS)})
    with lc.track_usage() as usage:
        out = capsules.compile().invoke({"doc": DOC}, COMPOUND)
    assert out == base
    assert _real_calls(usage) == 1 and usage.totals()["merged_calls"] == 1
    assert (
        "notes" not in (capsules.history("x")[-1] or {}) or not capsules.history("x")[-1]["notes"]
    )


def test_two_configurations_get_one_merged_call_each() -> None:
    fast = ScriptedChatModel(model_name="fast")
    deep = ScriptedChatModel(model_name="deep", answer_words=40)
    route = {"entities": fast, "claims": fast, "signals": deep, "risks": deep}

    def get_model(name: str) -> Any:
        return lc.CapsuleChatModel(route[name])

    b = _app(get_model)
    base = b.compile().invoke({"doc": DOC})
    fast.reset()
    deep.reset()
    capsules = lc.capsulize(b, groups={"x": list(MEMBERS)})
    out = capsules.compile().invoke({"doc": DOC}, COMPOUND)
    assert out == base
    assert len(fast.calls) == 1 and len(fast.merged_calls) == 1
    assert len(deep.calls) == 1 and len(deep.merged_calls) == 1
    assert fast.merged_calls[0].tasks == 2 and deep.merged_calls[0].tasks == 2
    assert not capsules.history("x")[-1]["notes"]


def test_a_lone_call_to_another_configuration_passes_through_with_the_reason() -> None:
    main = ScriptedChatModel(model_name="main")
    other = ScriptedChatModel(model_name="other")

    def get_model(name: str) -> Any:
        return lc.CapsuleChatModel(other if name == "risks" else main)

    b = _app(get_model)
    base = b.compile().invoke({"doc": DOC})
    main.reset()
    other.reset()
    capsules = lc.capsulize(b, groups={"x": list(MEMBERS)})
    rt = capsules.runtimes["x"]
    staging = rt.capsule_sync({"doc": DOC}, COMPOUND)[rt.plan.channel]["staging"]
    assert staging["merge"]["unmerged"] == {
        "risks": "a different model configuration than the group's other calls"
    }
    main.reset()
    other.reset()
    out = capsules.compile().invoke({"doc": DOC}, COMPOUND)
    assert out == base
    assert len(main.merged_calls) == 1 and main.merged_calls[0].tasks == 3
    assert len(other.calls) == 1 and not other.merged_calls  # a real call of its own
    notes = capsules.history("x")[-1]["notes"]
    assert notes == [
        "risks: not merged: a different model configuration than the group's other calls"
    ]
    assert "a different model configuration" in capsules.report(print_=False).text


def test_async_factory_merges() -> None:
    scripted = ScriptedChatModel()
    b = _app(lambda _n: lc.CapsuleChatModel(scripted), use_async=True)
    base = asyncio.run(b.compile().ainvoke({"doc": DOC}))
    scripted.reset()
    app = lc.capsulize(b, groups={"x": list(MEMBERS)}).compile()
    out = asyncio.run(app.ainvoke({"doc": DOC}, COMPOUND))
    assert out == base and len(scripted.calls) == 1 and len(scripted.merged_calls) == 1


# ------------------------------------------------------------- the key itself
def _openai(**kw: Any) -> ChatOpenAI:
    args: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "api_key": SecretStr("sk-test-a"),
        "base_url": "http://127.0.0.1:9/v1",
        "temperature": 0,
    }
    args.update(kw)
    return ChatOpenAI(**args)


def test_config_key_is_the_model_configuration() -> None:
    key = config_key(lc.CapsuleChatModel(_openai()))
    assert key == config_key(lc.CapsuleChatModel(_openai()))  # a second factory product
    assert key == config_key(_openai())  # wrapped or not
    assert key == config_key(lc.CapsuleChatModel(_openai(max_tokens=512)))  # budgets sum
    for other in (
        _openai(model="gpt-4o"),
        _openai(temperature=0.7),
        _openai(base_url="http://127.0.0.1:10/v1"),
        _openai(api_key=SecretStr("sk-test-b")),
        _openai(top_p=0.5),
    ):
        assert config_key(lc.CapsuleChatModel(other)) != key
    assert "sk-test-a" not in key  # secrets only by digest


def test_config_key_reads_per_call_options_but_not_budgets_or_shape() -> None:
    model = lc.CapsuleChatModel(_openai())
    base = config_key(model, {"stop": None})
    assert config_key(model, {"max_tokens": 10}) == config_key(model, {"max_tokens": 900})
    assert config_key(model, {"response_format": {"type": "json_object"}}) == base
    assert config_key(model, {"temperature": 0.2}) != config_key(model, {"temperature": 0.9})
    assert config_key(model, {"stop": ["\n\n"]}) != base
    assert config_key(ScriptedChatModel()) != config_key(ScriptedChatModel(answer_words=3))


def test_a_static_group_is_split_to_fit_the_models_input_limit() -> None:
    """Four extractors with prompts of ``size`` tokens: an input limit a little over
    twice that fits two per merge, so the group makes two merged calls, not one."""
    from langgraph_capsules.prompts import estimate_tokens

    size = estimate_tokens(DOC) + estimate_tokens(
        "List the entities stated in the source, one per line."
    )
    scripted = ScriptedChatModel(profile={"max_input_tokens": 2 * size + 10})
    llm = lc.CapsuleChatModel(scripted)
    b = _app(lambda _name: llm)
    base = b.compile().invoke({"doc": DOC})
    scripted.reset()
    capsules = lc.capsulize(b, groups={"x": list(MEMBERS)})
    for run in (
        lambda app: app.invoke({"doc": DOC}, COMPOUND),
        lambda app: asyncio.run(app.ainvoke({"doc": DOC}, COMPOUND)),
    ):
        scripted.reset()
        assert run(capsules.compile()) == base
        assert sorted(c.tasks for c in scripted.merged_calls) == [2, 2]
        assert len(scripted.calls) == 2 and not capsules.history("x")[-1]["notes"]
