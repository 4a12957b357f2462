"""Field apps (tests/field_apps.py) on the scripted model: fine is the original app,
and compound makes fewer LLM calls wherever sibling nodes call one model (text or
structured), or does what the README documents where it cannot merge."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from field_apps import (
    COMPOUND,
    FIELD_APPS,
    FINE,
    INTERVIEW_TURNS,
    ArmRun,
    FieldApp,
    Grade,
    ReportState,
    arun_arm,
    comparable,
    get_prices,
    run_app_arm,
    run_arm,
    scripted_model,
)
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel, ScriptedError

APPS = {a.name: a for a in FIELD_APPS}
CASES = [
    pytest.param(app, inp, id=f"{app.name}-{i}")
    for app in FIELD_APPS
    for i, inp in enumerate(app.inputs)
]


def _arms(
    app: FieldApp, inputs: Mapping[str, Any], *modes: Any
) -> tuple[ScriptedChatModel, lc.CapsuleGraph, ArmRun, list[ArmRun]]:
    """The original app, then the capsule graph in each mode, on one fresh model (reset
    before every arm, so the simulated prefix cache starts alike)."""
    model = scripted_model()
    builder = app.build(model)
    original = run_app_arm(app, builder.compile(), inputs)
    capsules = lc.capsulize(builder)
    graph = capsules.compile()
    runs = []
    for mode in modes:
        model.reset()
        runs.append(run_app_arm(app, graph, inputs, mode))
    return model, capsules, original, runs


# ------------------------------------------------------------- fine == original
@pytest.mark.parametrize(("app", "inputs"), CASES)
def test_fine_is_the_original_app(app: FieldApp, inputs: Mapping[str, Any]) -> None:
    model, _capsules, original, (fine,) = _arms(app, inputs, FINE)
    if app.messages:  # message ids are random per run; everything else must match
        assert comparable(fine.state) == comparable(original.state)
    else:
        assert fine.state == original.state
    assert (fine.calls, fine.input_tokens) == (original.calls, original.input_tokens)
    assert fine.merged_calls == 0 and not model.merged_calls


# ------------------------------------------------------ compound: fewer calls
def _sections(inputs: Mapping[str, Any]) -> int:
    return len(inputs["outline"])


EXPECTED_COMPOUND_CALLS: dict[str, Callable[[Mapping[str, Any], ArmRun], int]] = {
    # planner + ceil(N / max_batch) merged worker calls
    "orchestrator_worker": lambda i, o: 1 + math.ceil(_sections(i) / 8),
    # one merged call for 2+ chosen analysts, then the trader
    "trading_desk": lambda i, o: 2 if len(i["selected_analysts"]) >= 2 else o.calls,
    # three writers from get_model() -> one merged call
    "report_writers": lambda i, o: 1,
    # per loop iteration: the generator + one merged call for the three graders
    "graded_writer": lambda i, o: 2 * o.state["iteration"],
    # assistant + one merged call for three reviewers + revise
    "reviewed_chat": lambda i, o: 3,
    # the subgraph's two calls + one merged call for the two analysts + the memo
    "diligence": lambda i, o: 4,
    "parallel_creative": lambda i, o: 1,
    # the interviews (a subgraph reached by Send) as they are; three writers -> one call
    "interview_report": lambda i, o: o.calls - 2,
    # the Send map: one merged call for all documents; collapse and reduce as they are
    "map_reduce_summary": lambda i, o: o.calls - len(i["contents"]) + 1,
    # the two tool-free reviewers -> one call; the analysts' tool loops as they are
    "tool_analysts": lambda i, o: o.calls - 1,
}

MERGING = [c for c in CASES if c.values[0].merges]  # type: ignore[union-attr]


@pytest.mark.parametrize(("app", "inputs"), MERGING)
def test_compound_makes_fewer_calls(app: FieldApp, inputs: Mapping[str, Any]) -> None:
    _model, _capsules, original, (compound,) = _arms(app, inputs, COMPOUND)
    assert compound.merged_calls >= 1
    assert compound.calls < original.calls
    assert compound.calls == EXPECTED_COMPOUND_CALLS[app.name](inputs, original)


@pytest.mark.parametrize(("app", "inputs"), [c for c in CASES if not c.values[0].asynchronous])  # type: ignore[union-attr]
async def test_ainvoke_runs_like_invoke(app: FieldApp, inputs: Mapping[str, Any]) -> None:
    """The async path (``ainvoke``) of the capsule graph, fine and compound, makes the
    same calls and returns the same contents as the sync path."""
    model = scripted_model()
    capsules = lc.capsulize(app.build(model))
    graph = capsules.compile()
    for mode in (FINE, COMPOUND):
        model.reset()
        sync = run_arm(graph, inputs, mode)
        model.reset()
        async_ = await arun_arm(graph, inputs, mode)
        assert (async_.calls, async_.merged_calls) == (sync.calls, sync.merged_calls)
        assert comparable(async_.state, content_only=True) == comparable(
            sync.state, content_only=True
        )
    if app.merges:
        assert async_.merged_calls >= 1


@pytest.mark.parametrize(
    ("app", "inputs"),
    # diligence is left out: no merge happens there (test_compound_makes_fewer_calls)
    [c for c in MERGING if c.values[0].name != "diligence"],  # type: ignore[union-attr]
)
def test_compound_answers_each_member_as_its_own_call(
    app: FieldApp, inputs: Mapping[str, Any]
) -> None:
    """The scripted model answers a task inside a merged prompt as it answers it alone,
    so the compound app's output must equal the original's (message contents only:
    served replies carry capsule metadata and zero usage)."""
    _model, _capsules, original, (compound,) = _arms(app, inputs, COMPOUND)
    assert compound.merged_calls >= 1
    assert comparable(compound.state, content_only=True) == comparable(
        original.state, content_only=True
    )


# --------------------------------------------------- per app: what to expect
def test_orchestrator_worker_batches_the_sends_into_one_dynamic_group() -> None:
    app = APPS["orchestrator_worker"]
    inputs = app.inputs[2]  # ten sections: 8 + 2
    model, capsules, original, (compound,) = _arms(app, inputs, COMPOUND)
    (dynamic,) = capsules.plan.dynamic
    assert dynamic.members == ("write_section",)
    assert sorted(c.tasks for c in model.merged_calls) == [5, 5]  # balanced batches
    assert len(compound.state["completed_sections"]) == 10
    assert original.calls == 11 and compound.calls == 3


def test_trading_desk_shares_the_dossier_once_and_saves_input_tokens() -> None:
    app = APPS["trading_desk"]
    model, capsules, original, (compound,) = _arms(app, app.inputs[0], COMPOUND)
    (dynamic,) = capsules.plan.dynamic
    assert set(dynamic.members) == {"market", "sentiment", "news", "fundamentals"}
    (merged,) = model.merged_calls
    assert merged.tasks == 4
    text = "\n".join(str(m.content) for m in merged.messages)
    assert text.count("Posts about NVLX on investor forums") == 1
    assert compound.input_tokens < original.input_tokens
    assert compound.state == original.state


def test_trading_desk_with_one_analyst_passes_through() -> None:
    app = APPS["trading_desk"]
    inputs = {**app.inputs[0], "selected_analysts": ["news"]}
    model, _capsules, original, (compound,) = _arms(app, inputs, COMPOUND)
    assert compound.state == original.state
    assert compound.calls == original.calls == 2 and not model.merged_calls


def test_report_writers_factory_proxies_merge_into_one_call() -> None:
    app = APPS["report_writers"]
    model, capsules, original, (compound,) = _arms(app, app.inputs[0], COMPOUND)
    (group,) = capsules.plan.groups
    assert set(group.members) == {"write_report", "write_introduction", "write_conclusion"}
    assert [c.tasks for c in model.calls] == [3]
    assert compound.state == original.state
    assert not capsules.history(group.name)[-1]["notes"]  # nobody left out of the merge


def test_graded_writer_merges_the_structured_graders_every_iteration() -> None:
    app = APPS["graded_writer"]
    model, capsules, original, (compound,) = _arms(app, app.inputs[0], COMPOUND)
    (group,) = capsules.plan.groups
    assert set(group.members) == {"clarity", "accuracy", "tone"}
    iterations = original.state["iteration"]
    assert iterations >= 2  # the loop ran the group more than once
    assert [c.tasks for c in model.merged_calls] == [3] * iterations
    for g in ("clarity", "accuracy", "tone"):
        assert isinstance(compound.state[g], Grade)
    assert compound.state == original.state


def test_reviewed_chat_appends_the_reviews_in_the_original_order() -> None:
    app = APPS["reviewed_chat"]
    model, _capsules, original, (compound,) = _arms(app, app.inputs[1], COMPOUND)

    def shape(state: dict[str, Any]) -> list[tuple[str, str | None]]:
        return [(m.type, m.name) for m in state["messages"]]

    assert shape(compound.state) == shape(original.state)
    assert {name for _t, name in shape(compound.state)[4:7]} == {
        "fact_checker",
        "safety_reviewer",
        "style_reviewer",
    }
    assert all(isinstance(m, AIMessage) for m in compound.state["messages"][3:])
    assert [c.tasks for c in model.merged_calls] == [3]


def test_diligence_leaves_the_subgraph_alone() -> None:
    app = APPS["diligence"]
    model, capsules, original, (compound,) = _arms(app, app.inputs[0], COMPOUND)
    assert capsules.plan.untouched["research"] == "is a subgraph"
    assert compound.state == original.state
    queries = [
        c
        for c in model.calls
        if any("Write three web search queries" in str(m.content) for m in c.messages)
    ]
    assert queries and not any(c.merged for c in queries)


def test_diligence_siblings_of_the_subgraph_form_a_group() -> None:
    """A compiled subgraph routes in the parent only through Command.PARENT: one whose
    nodes never say so does not block its siblings' group (it did before)."""
    app = APPS["diligence"]
    plan = lc.capsulize(app.build(scripted_model())).plan
    assert [set(g.members) for g in plan.groups] == [{"risk_analyst", "market_analyst"}]


def test_a_subgraph_predecessor_does_not_block_its_childrens_group() -> None:
    builder = APPS["report_writers"].build(scripted_model())
    sub = StateGraph(ReportState)
    sub.add_node("collect", builder.nodes["gather"].runnable)
    sub.add_edge(START, "collect")
    sub.add_edge("collect", END)
    builder.nodes.pop("gather")
    builder.add_node("gather", sub.compile())
    plan = lc.capsulize(builder).plan
    assert plan.untouched["gather"] == "is a subgraph"
    assert [len(g.members) for g in plan.groups] == [3]


@pytest.mark.parametrize("inputs", APPS["interview_report"].inputs)
def test_interview_report_merges_the_writers_after_the_send_fan_in(
    inputs: Mapping[str, Any],
) -> None:
    app = APPS["interview_report"]
    model, capsules, original, (compound,) = _arms(app, inputs, COMPOUND)
    assert capsules.plan.untouched["conduct_interview"] == "is a subgraph"
    (group,) = capsules.plan.groups
    assert set(group.members) == {"write_introduction", "write_body", "write_conclusion"}
    assert [c.tasks for c in model.merged_calls] == [3]
    # every analyst was interviewed (two questions, two answers, a write-up) and its
    # section reached all three writers through the one merged call
    n = len(inputs["perspectives"])
    assert len(compound.state["sections"]) == n
    assert original.calls == 1 + n * (2 * INTERVIEW_TURNS + 1) + 3
    (merged,) = model.merged_calls
    text = "\n".join(str(m.content) for m in merged.messages)
    for section in compound.state["sections"]:
        assert text.count(section) == 1  # the memos are shared context, sent once
    assert compound.state == original.state


@pytest.mark.parametrize("inputs", APPS["map_reduce_summary"].inputs)
def test_map_reduce_summary_merges_the_async_lcel_map_calls(inputs: Mapping[str, Any]) -> None:
    """Async nodes awaiting ``prompt | model | StrOutputParser()``: the Send map's calls
    become one merged call (the shared system prompt sent once); the collapse loop and
    the reduce run as in the original, on the same summaries."""
    app = APPS["map_reduce_summary"]
    model, capsules, original, (compound,) = _arms(app, inputs, COMPOUND)
    assert [d.members for d in capsules.plan.dynamic if "generate_summary" in d.members] == [
        ("generate_summary",)
    ]
    n = len(inputs["contents"])
    assert [c.tasks for c in model.merged_calls] == [n]
    (merged,) = model.merged_calls
    text = "\n".join(str(m.content) for m in merged.messages)
    assert text.count("You summarise documents for a news digest") == 1
    assert all(text.count(doc) == 1 for doc in inputs["contents"])
    assert compound.state == original.state
    reduces = [c for c in model.calls if not c.merged]
    assert len(reduces) == original.calls - n  # collapse rounds and the final reduce


def test_map_reduce_summary_streams_and_falls_back_when_the_merged_call_fails() -> None:
    """``astream`` yields every node's update and ends in the original's state; a merged
    call that raises (a provider fault) sends each document to its own call, and no
    summary is lost."""
    app = APPS["map_reduce_summary"]
    inputs = app.inputs[0]  # six documents: the collapse loop runs twice
    model = scripted_model()
    builder = app.build(model)
    original = run_app_arm(app, builder.compile(), inputs)
    graph = lc.capsulize(builder).compile()

    async def stream() -> tuple[list[str], dict[str, Any]]:
        nodes: list[str] = []
        final: dict[str, Any] = {}
        async for chunk in graph.astream(dict(inputs), COMPOUND, stream_mode=["updates", "values"]):
            kind, data = chunk
            if kind == "updates":
                nodes.extend(data)
            else:
                final = data
        return nodes, final

    model.reset()
    nodes, final = asyncio.run(stream())
    assert final == original.state
    assert {"collect_summaries", "generate_final_summary"} <= set(nodes)
    faulty = scripted_model()
    faulty.fail_merged = True
    fallback = lc.capsulize(app.build(faulty)).compile()
    with lc.track_usage() as usage:
        state = asyncio.run(fallback.ainvoke(dict(inputs), COMPOUND))
    assert state == original.state
    # every original call made again, plus the failed merged attempt (counted, as billed)
    assert usage.totals()["calls"] == original.calls + 1
    assert len(faulty.calls) == original.calls + 1
    assert [(c.tasks, c.text) for c in faulty.merged_calls] == [(len(inputs["contents"]), "")]


def test_an_async_only_app_refuses_invoke_as_the_original_does() -> None:
    """Sync ``invoke`` of an app whose nodes are async only fails with LangGraph's own
    error on the capsule graph as on the original, not with one of ours."""
    app = APPS["map_reduce_summary"]
    builder = app.build(scripted_model())
    errors = []
    for graph in (builder.compile(), lc.capsulize(builder).compile()):
        with pytest.raises(Exception) as caught:
            graph.invoke(dict(app.inputs[0]), COMPOUND)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("inputs", APPS["prompt_chain"].inputs)
def test_prompt_chain_has_nothing_to_merge(inputs: Mapping[str, Any]) -> None:
    app = APPS["prompt_chain"]
    model, capsules, original, (compound,) = _arms(app, inputs, COMPOUND)
    assert capsules.plan.groups == ()
    # the gate's one target forms a dynamic group of one member, which never batches
    assert [d.members for d in capsules.plan.dynamic] == [("improve_joke",)]
    assert compound.state == original.state
    assert (compound.calls, compound.input_tokens) == (original.calls, original.input_tokens)
    assert compound.merged_calls == 0 and not model.merged_calls


# ------------------------------------------- tool-using analysts (ToolNode loops)
AUTO: Any = {"configurable": {"capsules": {"mode": "auto"}}}


async def _run(graph: Any, inputs: Mapping[str, Any], config: Any, use_async: bool) -> ArmRun:
    return await arun_arm(graph, inputs, config) if use_async else run_arm(graph, inputs, config)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_tool_analysts_keep_their_tool_loops_while_the_reviewers_merge(
    use_async: bool,
) -> None:
    """Each analyst's bind_tools -> ToolNode loop runs as in the app (its tool really
    runs, its tool-bound calls are never merged), the two tool-free reviewers share one
    merged call, and every mode returns the app's own state, on a new ticker each run."""
    app = APPS["tool_analysts"]
    model = scripted_model()
    builder = app.build(model)
    capsules = lc.capsulize(builder)
    (group,) = capsules.plan.groups
    assert set(group.members) == {"risk", "compliance"}
    plan = str(capsules.plan)
    for analyst in ("market_analyst", "news_analyst"):
        assert f"{analyst}: has conditional out-edges" in plan
    graph, original_graph = capsules.compile(), builder.compile()
    for i, mode in enumerate([FINE, COMPOUND, *[AUTO] * 6]):
        inputs = {"ticker": f"T{i}X{use_async:d}"}  # production traffic: each input new
        model.reset()
        original = await _run(original_graph, inputs, None, use_async)
        model.reset()
        run = await _run(graph, inputs, mode, use_async)
        assert comparable(run.state) == comparable(original.state), (i, mode)
        tool_reply = run.state["market_messages"][2]
        assert tool_reply.type == "tool" and tool_reply.content == get_prices.invoke(inputs)
        tool_bound = [c for c in model.calls if c.kwargs.get("tools")]
        assert len(tool_bound) == 4 and not any(c.merged for c in tool_bound)
        if mode is COMPOUND:
            assert [c.tasks for c in model.merged_calls] == [2]
            assert run.calls == original.calls - 1 == 6
    assert capsules.history(group.name)[-1]["fallback"] == []


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_tool_analysts_under_provider_faults(use_async: bool) -> None:
    """A merged reviewers' call that fails falls back to each reviewer's own call; an
    analyst's call that fails mid-loop raises the provider's error as the app does, and
    the next run of the same graph is whole (no state left over from the failed one)."""
    app = APPS["tool_analysts"]
    broken = {"analyst": False}

    def tool_calls(messages: list[Any]) -> Any:
        from field_apps import _analyst_tool_calls

        if broken["analyst"] and any(m.type == "tool" for m in messages):
            raise ScriptedError("provider down after the tool ran")
        return _analyst_tool_calls(messages)

    model = ScriptedChatModel(fail_merged=True, tool_calls_for=tool_calls)
    builder = app.build(model)
    capsules = lc.capsulize(builder)
    graph, original_graph = capsules.compile(), builder.compile()

    async def fresh(g: Any, inputs: Mapping[str, Any], config: Any, use_async: bool) -> ArmRun:
        model.reset()  # the simulated prefix cache starts alike for both graphs
        return await _run(g, inputs, config, use_async)

    inputs = {"ticker": "FLT1"}
    original = await fresh(original_graph, inputs, None, use_async)
    run = await fresh(graph, inputs, COMPOUND, use_async)
    assert comparable(run.state) == comparable(original.state)
    record = capsules.history("after_start")[-1]
    assert sorted(record["fallback"]) == ["compliance", "risk"] and record["calls"] == 3
    assert all("merged call failed" in r for r in record["fallback_reasons"].values())

    broken["analyst"] = True
    for g in (original_graph, graph):
        with pytest.raises(ScriptedError, match="provider down"):
            await fresh(g, {"ticker": "FLT2"}, COMPOUND if g is graph else None, use_async)
    broken["analyst"] = False
    model.fail_merged = False
    inputs = {"ticker": "FLT3"}
    original = await fresh(original_graph, inputs, None, use_async)
    run = await fresh(graph, inputs, COMPOUND, use_async)
    assert comparable(run.state) == comparable(original.state)
    record = capsules.history("after_start")[-1]
    assert record["fallback"] == [] and record["error"] is None and record["calls"] == 1


# ------------------------------------- checkpointer, history, stream, drawing
@pytest.mark.parametrize("app", FIELD_APPS, ids=lambda a: a.name)
async def test_checkpointed_thread_stream_and_drawing_work_as_on_the_original(
    app: FieldApp,
) -> None:
    """Every field app, compiled with a checkpointer, runs one thread through each of its
    inputs in turn (state carried over, as a chat thread does) in compound mode: the
    final state, the checkpointed state and its history, the streamed updates of every
    node a capsule does not serve, and the drawing's original nodes are those of the
    original app."""
    model = scripted_model()
    builder = app.build(model)
    capsules = lc.capsulize(builder)
    graphs = {
        "original": builder.compile(checkpointer=InMemorySaver()),
        "capsules": capsules.compile(checkpointer=InMemorySaver()),
    }
    seen: dict[str, Any] = {}
    for name, graph in graphs.items():
        config: Any = {"configurable": {"thread_id": f"{app.name}-1", **COMPOUND["configurable"]}}
        updated: list[str] = []
        for inputs in app.inputs:
            model.reset()
            async for chunk in graph.astream(dict(inputs), config, stream_mode="updates"):
                updated.extend(chunk)
        snapshot = await graph.aget_state(config)
        history = [s async for s in graph.aget_state_history(config)]
        assert snapshot.next == () and len(history) > len(app.inputs)
        originals = Counter(n for n in updated if n in builder.nodes)
        seen[name] = (comparable(snapshot.values, content_only=True), originals)
    assert seen["capsules"][0] == seen["original"][0]
    # members served by a capsule node report no update of their own; the rest do
    served = {m for g in capsules.plan.groups for m in g.members}
    served |= {m for g in capsules.plan.dynamic for m in g.members}
    for node, count in seen["original"][1].items():
        if node not in served:
            assert seen["capsules"][1][node] == count, node
    mermaid = graphs["capsules"].get_graph().draw_mermaid()
    assert all(node in mermaid for node in builder.nodes)
