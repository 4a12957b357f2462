"""Dynamic fan-out groups: Send map-reduce and a conditional edge to several nodes."""

from __future__ import annotations

import asyncio
import math
import operator
import re
from typing import Annotated, Any, Literal, TypedDict

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

import langgraph_capsules as lc
from langgraph_capsules.compiler.dynamic import DynamicRuntime
from langgraph_capsules.testing import ScriptedChatModel

COMPOUND = {"configurable": {"capsules": {"mode": "compound"}}}
FINE = {"configurable": {"capsules": {"mode": "fine"}}}


def _respond(text: str) -> str:
    """Answer from the task's own input line, so a task answers alike merged or alone."""
    subject = re.search(r"Subject: (.+)", text)
    if subject:
        return f"Why did the {subject.group(1).strip()} cross the road? To get merged."
    lens = re.search(r"You are the (\w+) analyst", text)
    return f"{lens.group(1) if lens else 'plain'} view: {len(text.split())} words read"


def _model(**knobs: Any) -> tuple[ScriptedChatModel, lc.CapsuleChatModel]:
    inner = ScriptedChatModel(respond=_respond, **knobs)
    return inner, lc.CapsuleChatModel(inner)


# ------------------------------------------------------------- map-reduce app
class JokeState(TypedDict, total=False):
    topic: str
    n: int
    subjects: list[str]
    jokes: Annotated[list[str], operator.add]
    best_selected: str


class JokeInput(TypedDict):
    subject: str


def joke_app(llm: Any) -> StateGraph[Any, Any, Any, Any]:
    """The map-reduce shape of the LangGraph how-to: topics -> N Sends -> reduce."""

    def generate_topics(state: JokeState) -> dict[str, Any]:
        return {"subjects": [f"{state['topic']} number {k}" for k in range(state["n"])]}

    def generate_joke(state: JokeInput) -> dict[str, Any]:
        reply = llm.invoke(
            [
                SystemMessage(
                    "You are a stand-up comedian. Write one short, clean joke about the "
                    "subject below, on one line, with no preamble."
                ),
                HumanMessage(f"Subject: {state['subject']}"),
            ]
        )
        return {"jokes": [reply.content]}

    def continue_to_jokes(state: JokeState) -> list[Send]:
        return [Send("generate_joke", {"subject": s}) for s in state["subjects"]]

    def best_joke(state: JokeState) -> dict[str, Any]:
        return {"best_selected": max(state.get("jokes", []), key=len, default="")}

    b = StateGraph(JokeState)
    b.add_node("generate_topics", generate_topics)
    b.add_node("generate_joke", generate_joke)
    b.add_node("best_joke", best_joke)
    b.add_edge(START, "generate_topics")
    b.add_conditional_edges("generate_topics", continue_to_jokes, ["generate_joke"])
    b.add_edge("generate_joke", "best_joke")
    b.add_edge("best_joke", END)
    return b


# -------------------------------------------------- conditional edge to analysts
class DealState(TypedDict, total=False):
    memo: str
    lenses: list[str]
    notes: Annotated[list[str], operator.add]
    verdict: str


def analyst_app(llm: Any) -> StateGraph[Any, Any, Any, Any]:
    """A router picking several analyst nodes by name; a synthesis node reduces."""

    def intake(state: DealState) -> dict[str, Any]:
        return {"memo": state["memo"].strip()}

    def analyst(lens: str) -> Any:
        def node(state: DealState) -> dict[str, Any]:
            reply = llm.invoke(
                f"You are the {lens} analyst. Read the memo and give three findings.\n\n"
                f"Memo:\n{state['memo']}"
            )
            return {"notes": [f"{lens}: {reply.content}"]}

        return node

    def pick_analysts(state: DealState) -> list[Literal["market", "risk", "tech"]]:
        return [x for x in ("market", "risk", "tech") if x in state["lenses"]]  # type: ignore[misc]

    def synthesis(state: DealState) -> dict[str, Any]:
        return {"verdict": " | ".join(sorted(state.get("notes", [])))}

    b = StateGraph(DealState)
    b.add_node("intake", intake)
    for lens in ("market", "risk", "tech"):
        b.add_node(lens, analyst(lens))
        b.add_edge(lens, "synthesis")
    b.add_node("synthesis", synthesis)
    b.add_edge(START, "intake")
    b.add_conditional_edges("intake", pick_analysts, ["market", "risk", "tech"])
    b.add_edge("synthesis", END)
    return b


MEMO = (
    "Acme sells industrial sensors in Europe and Asia. Revenue grew 12% last year. "
    "A new competitor entered the German market. The firmware stack is ten years old."
)


def _runtime(capsules: lc.CapsuleGraph, group: str) -> DynamicRuntime:
    node = capsules.builder.nodes[capsules.plan.dynamic[0].capsule_node]
    rt = node.runnable.func.__self__  # type: ignore[union-attr]
    assert isinstance(rt, DynamicRuntime) and rt.plan.name == group
    return rt


# ------------------------------------------------------------------ the plan
def test_plan_shows_the_dynamic_group_and_its_router() -> None:
    _inner, llm = _model()
    plan = lc.capsulize(joke_app(llm)).plan
    assert plan.groups == ()
    (d,) = plan.dynamic
    assert d.members == ("generate_joke",)
    assert d.routers == (("generate_topics", "continue_to_jokes"),)
    assert d.capsule_node == "capsule__fanout_generate_topics"
    text = str(plan)
    assert "dynamic group 'fanout_generate_topics' (inferred): generate_joke" in text
    assert "router: generate_topics -> continue_to_jokes" in text
    data = plan.to_dict()["dynamic"][0]
    assert data["routers"] == [{"source": "generate_topics", "path": "continue_to_jokes"}]
    assert "batched by dynamic group" in plan.untouched["generate_joke"]
    assert plan.group_names == ("fanout_generate_topics",)


def test_groups_may_declare_a_send_target_and_no_groups_means_none() -> None:
    _inner, llm = _model()
    plan = lc.capsulize(joke_app(llm), groups={"jokes": ["generate_joke"]}).plan
    (d,) = plan.dynamic
    assert (d.name, d.inferred, d.capsule_node) == ("jokes", False, "capsule__jokes")
    assert lc.capsulize(joke_app(llm), groups={}).plan.dynamic == ()
    plan = lc.capsulize(analyst_app(llm), groups={"desk": ["market", "tech"]}).plan
    assert plan.dynamic[0].members == ("market", "tech")
    assert plan.dynamic[0].routers == (("intake", "pick_analysts"),)


def test_a_group_mixing_a_router_target_and_a_plain_sibling_names_the_fix() -> None:
    _inner, llm = _model()
    b = analyst_app(llm)
    b.add_node("plain", lambda s: {"notes": ["p"]})
    b.add_edge("intake", "plain")
    with pytest.raises(lc.CapsuleConfigError) as e:
        lc.capsulize(b, groups={"g": ["plain", "market"]})
    msg = str(e.value)
    assert e.value.code == "ineligible_node" and e.value.node == "market"
    assert "it targeted by" not in msg  # the old, broken sentence
    assert "targeted by a conditional edge from 'intake'" in msg
    assert "Remove it from the group" in msg
    assert "{'g_fanout': ['market', 'risk', 'tech']}" in msg


def test_max_batch_is_validated() -> None:
    assert lc.ControllerPolicy().max_batch == 8
    assert lc.ControllerPolicy(max_batch=3).max_batch == 3
    for bad in (0, -1, 2.5, True):
        with pytest.raises(lc.CapsuleConfigError) as e:
            lc.ControllerPolicy(max_batch=bad)
        assert "max_batch" in str(e.value)


# --------------------------------------------------------------- fine mode
@pytest.mark.parametrize("n", [0, 1, 3, 9])
def test_fine_is_the_original_graph(n: int) -> None:
    inner, llm = _model()
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "cats", "n": n})
    calls = len(inner.calls)
    app = lc.capsulize(b).compile()
    for cfg in (FINE, None):  # default mode auto runs a dynamic group fine for now
        inner.reset()
        assert app.invoke({"topic": "cats", "n": n}, cfg) == original
        assert len(inner.calls) == calls == n and not inner.merged_calls


def test_fine_router_output_is_passed_through_untouched() -> None:
    _inner, llm = _model()
    capsules = lc.capsulize(joke_app(llm))
    rt = _runtime(capsules, "fanout_generate_topics")
    sends = [Send("generate_joke", {"subject": "a"}), Send("generate_joke", {"subject": "b"})]
    assert rt.regroup(sends, {"generate_joke": "generate_joke"}, FINE) is sends
    batched = rt.regroup(sends, {"generate_joke": "generate_joke"}, COMPOUND)
    assert [s.node for s in batched] == ["capsule__fanout_generate_topics"]


# ----------------------------------------------------------- compound mode
@pytest.mark.parametrize("n", [2, 5, 8, 9, 20])
def test_compound_n_sends_make_ceil_n_over_max_batch_merged_calls(n: int) -> None:
    inner, llm = _model()
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "owls", "n": n})
    inner.reset()
    capsules = lc.capsulize(b)
    out = capsules.compile().invoke({"topic": "owls", "n": n}, COMPOUND)
    assert out == original  # same items, each once, in Send order; reduce ran once
    assert len(out["jokes"]) == n and len(set(out["jokes"])) == n
    assert len(inner.merged_calls) == math.ceil(n / 8) == len(inner.calls)
    assert sum(c.tasks for c in inner.merged_calls) == n
    runs = capsules.history("fanout_generate_topics")
    assert len(runs) == math.ceil(n / 8) and all(r["fallback"] == [] for r in runs)


def test_compound_honours_a_smaller_max_batch() -> None:
    inner, llm = _model()
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "owls", "n": 7})
    inner.reset()
    capsules = lc.capsulize(b)
    _runtime(capsules, "fanout_generate_topics").policy = lc.ControllerPolicy(max_batch=3)
    out = capsules.compile().invoke({"topic": "owls", "n": 7}, COMPOUND)
    assert out == original
    assert sorted(c.tasks for c in inner.merged_calls) == [2, 2, 3]


@pytest.mark.parametrize("run_async", [False, True])
def test_compound_batches_fit_the_models_input_limit(run_async: bool) -> None:
    """With the model's profile giving ``max_input_tokens``, a batch holds only as many
    instances as fit: each joke prompt is about 31 tokens, so 100 tokens fit three."""
    inner, llm = _model(profile={"max_input_tokens": 100})
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "owls", "n": 8})
    inner.reset()
    app = lc.capsulize(b).compile()
    if run_async:
        out = asyncio.run(app.ainvoke({"topic": "owls", "n": 8}, COMPOUND))
    else:
        out = app.invoke({"topic": "owls", "n": 8}, COMPOUND)
    assert out == original
    assert sorted(c.tasks for c in inner.merged_calls) == [2, 3, 3]
    assert len(inner.calls) == 3


def test_an_instance_too_long_to_merge_passes_through_and_says_why() -> None:
    inner, llm = _model(profile={"max_input_tokens": 40})
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "owls", "n": 4})
    inner.reset()
    capsules = lc.capsulize(b)
    out = capsules.compile().invoke({"topic": "owls", "n": 4}, COMPOUND)
    assert out == original and not inner.merged_calls and len(inner.calls) == 4
    (run,) = capsules.history()
    notes = " ".join(run["notes"])
    assert "input limit (40 tokens" in notes and notes.count("not merged") == 4


def test_compound_shares_the_instructions_once() -> None:
    inner, llm = _model()
    lc.capsulize(joke_app(llm)).compile().invoke({"topic": "owls", "n": 4}, COMPOUND)
    (merged,) = inner.merged_calls
    text = "\n".join(str(m.content) for m in merged.messages)
    assert text.count("stand-up comedian") == 1
    assert all(f"Subject: owls number {k}" in text for k in range(4))


def test_compound_async() -> None:
    inner, llm = _model()
    b = joke_app(llm)
    original = asyncio.run(b.compile().ainvoke({"topic": "dogs", "n": 6}))
    inner.reset()
    out = asyncio.run(lc.capsulize(b).compile().ainvoke({"topic": "dogs", "n": 6}, COMPOUND))
    assert out == original
    assert len(inner.calls) == len(inner.merged_calls) == 1


def test_compound_streams_values_updates_and_messages() -> None:
    inner, llm = _model()
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "fish", "n": 3})
    app = lc.capsulize(b).compile()
    values = list(app.stream({"topic": "fish", "n": 3}, COMPOUND, stream_mode="values"))
    assert values[-1] == original
    updates = list(app.stream({"topic": "fish", "n": 3}, COMPOUND, stream_mode="updates"))
    assert any("capsule__fanout_generate_topics" in u for u in updates)
    assert updates[-1] == {"best_joke": {"best_selected": original["best_selected"]}}

    def messages(graph: Any, cfg: Any) -> list[tuple[str, str]]:
        stream = graph.stream({"topic": "fish", "n": 3}, cfg, stream_mode="messages")
        return sorted((c.content, md["langgraph_node"]) for c, md in stream if c.content)

    expected = messages(b.compile(), None)
    assert [c for c, _node in expected] == sorted(original["jokes"])
    inner.reset()
    assert messages(app, COMPOUND) == expected  # served answers stream as the node's
    assert len(inner.merged_calls) == 1


def test_compound_with_a_checkpointer() -> None:
    inner, llm = _model()
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "bees", "n": 4})
    app = lc.capsulize(b).compile(checkpointer=InMemorySaver())
    cfg = {**COMPOUND, "configurable": {**COMPOUND["configurable"], "thread_id": "t1"}}
    inner.reset()
    assert app.invoke({"topic": "bees", "n": 4}, cfg) == original
    assert app.get_state(cfg).values == original
    assert len(inner.merged_calls) == 1


@pytest.mark.parametrize("n", [0, 1])
def test_nothing_to_merge_passes_through(n: int) -> None:
    inner, llm = _model()
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "ants", "n": n})
    inner.reset()
    app = lc.capsulize(b).compile()
    updates = list(app.stream({"topic": "ants", "n": n}, COMPOUND, stream_mode="updates"))
    assert not any("capsule__fanout_generate_topics" in u for u in updates)
    assert app.invoke({"topic": "ants", "n": n}, COMPOUND) == original
    assert not inner.merged_calls and len(inner.calls) == 2 * n


# ---------------------------------------------------------------- fallbacks
def test_a_dropped_section_reruns_that_instance_alone() -> None:
    inner, llm = _model(drop_sections={2})
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "owls", "n": 5})
    inner.reset()
    capsules = lc.capsulize(b)
    out = capsules.compile().invoke({"topic": "owls", "n": 5}, COMPOUND)
    assert out == original
    (run,) = capsules.history()
    # section 2 missing: task 2 has no answer and section 1 is not closed by marker 2
    assert run["fallback"] == ["generate_joke#0", "generate_joke#1"]
    assert "section" in run["fallback_reasons"]["generate_joke#1"]
    assert len(inner.merged_calls) == 1 and len(inner.calls) == 1 + 2


def test_a_failed_merged_call_reruns_every_instance_async() -> None:
    inner, llm = _model(fail_merged=True)
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "owls", "n": 4})
    inner.reset()
    out = asyncio.run(lc.capsulize(b).compile().ainvoke({"topic": "owls", "n": 4}, COMPOUND))
    assert out == original
    assert len(inner.calls) == 1 + 4  # the failed merged call, then one call each


# ------------------------------------------- conditional edge to several nodes
@pytest.mark.parametrize("lenses", [["market", "risk", "tech"], ["risk", "tech"], ["tech"], []])
def test_router_to_several_nodes_fine_and_compound(lenses: list[str]) -> None:
    inner, llm = _model()
    b = analyst_app(llm)
    original = b.compile().invoke({"memo": MEMO, "lenses": lenses})
    calls = len(inner.calls)
    app = lc.capsulize(b).compile()
    inner.reset()
    assert app.invoke({"memo": MEMO, "lenses": lenses}, FINE) == original
    assert len(inner.calls) == calls and not inner.merged_calls
    inner.reset()
    assert app.invoke({"memo": MEMO, "lenses": lenses}, COMPOUND) == original
    merged = 1 if len(lenses) >= 2 else 0
    assert len(inner.merged_calls) == merged
    assert len(inner.calls) == (1 if merged else len(lenses))


def test_router_to_several_nodes_async_with_a_fallback() -> None:
    inner, llm = _model(drop_sections={1})
    b = analyst_app(llm)
    lenses = ["market", "risk", "tech"]
    original = asyncio.run(b.compile().ainvoke({"memo": MEMO, "lenses": lenses}))
    inner.reset()
    out = asyncio.run(lc.capsulize(b).compile().ainvoke({"memo": MEMO, "lenses": lenses}, COMPOUND))
    assert out == original
    assert len(inner.merged_calls) == 1 and len(inner.calls) == 2


def test_capsulize_policy_and_run_config_reach_dynamic_groups() -> None:
    """``capsulize(policy=...)`` sets max_batch, a run config may name the dynamic group,
    and report() lists it with its router and runs."""
    inner, llm = _model()
    b = joke_app(llm)
    original = b.compile().invoke({"topic": "owls", "n": 7})
    inner.reset()
    capsules = lc.capsulize(b, policy=lc.ControllerPolicy(max_batch=3))
    app = capsules.compile()
    per_group = {"configurable": {"capsules": {"groups": {"fanout_generate_topics": "compound"}}}}
    assert app.invoke({"topic": "owls", "n": 7}, per_group) == original
    assert sorted(c.tasks for c in inner.merged_calls) == [2, 2, 3]
    report = capsules.report(print_=False)
    assert "dynamic group fanout_generate_topics: generate_joke" in report.text
    assert len(report.data["groups"]["fanout_generate_topics"]["runs"]) == 3
