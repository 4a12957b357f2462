"""Ordinary-graph behaviour: private channels hidden, checkpointers, resume, plan stamps."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import COMPOUND, DOC, KINDS, build_app
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel

PRIVATE = "capsule__arm__private"


def _capsules(scripted: ScriptedChatModel | None = None) -> lc.CapsuleGraph:
    builder = build_app(lc.CapsuleChatModel(scripted or ScriptedChatModel()))
    return lc.capsulize(builder, groups={"arm": list(KINDS)})


@pytest.mark.parametrize("mode", ["fine", "compound"])
def test_private_channels_never_visible(mode: str) -> None:
    app = _capsules().compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t", "capsules": {"mode": mode}}}
    out = app.invoke({"doc": DOC}, cfg)
    assert PRIVATE not in out
    assert all(
        PRIVATE not in chunk
        for chunk in app.stream(
            {"doc": DOC},
            {**cfg, "configurable": {**cfg["configurable"], "thread_id": "v"}},
            stream_mode="values",
        )
    )
    cfg_u = {"configurable": {**cfg["configurable"], "thread_id": "u"}}
    for chunk in app.stream({"doc": DOC}, cfg_u, stream_mode="updates"):
        for update in chunk.values():
            for item in update if isinstance(update, list) else [update]:
                assert PRIVATE not in (item or {})
    assert PRIVATE not in app.get_state(cfg).values
    assert set(app.get_state(cfg).values) == set(out)


def _resume_after_failure(saver: Any, use_async: bool) -> None:
    """The briefer's call fails on the first attempt; the thread resumes and completes."""
    scripted = ScriptedChatModel(fail_calls={2})  # scoping=0, merged=1, briefer=2
    capsules = _capsules(scripted)
    app = capsules.compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "r", "capsules": {"mode": "compound"}}}
    run = (
        (lambda x: asyncio.run(app.ainvoke(x, cfg)))
        if use_async
        else (lambda x: app.invoke(x, cfg))
    )
    with pytest.raises(Exception, match="scripted failure"):
        run({"doc": DOC})
    state = app.get_state(cfg)
    assert state.next == ("briefer",)
    assert all(state.values.get(k) for k in KINDS)  # the group's outputs were committed
    out = run(None)
    assert out["brief"] and sorted(out["log"]) == sorted(["scoping", *KINDS, "briefer"])
    assert len(scripted.merged_calls) == 1  # the merged call was not redone on resume


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
def test_resume_after_failure_in_memory(use_async: bool) -> None:
    _resume_after_failure(InMemorySaver(), use_async)


def test_resume_after_failure_sqlite(tmp_path: Path) -> None:
    with SqliteSaver.from_conn_string(str(tmp_path / "cp.db")) as saver:
        _resume_after_failure(saver, use_async=False)


def test_failure_inside_group_member_resumes(tmp_path: Path) -> None:
    """A member fails in its fallback re-run (merged call failed too); resume completes."""
    scripted = ScriptedChatModel(fail_merged=True, fail_calls={2})  # 1 merged, 2 first re-run
    with SqliteSaver.from_conn_string(str(tmp_path / "cp.db")) as saver:
        app = _capsules(scripted).compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "m", "capsules": {"mode": "compound"}}}
        with pytest.raises(Exception, match="scripted failure"):
            app.invoke({"doc": DOC}, cfg)
        # a restarted process: a freshly rebuilt capsule graph resumes the same thread
        app2 = _capsules(scripted).compile(checkpointer=saver)
        out = app2.invoke(None, cfg)
    base = build_app(lc.CapsuleChatModel(ScriptedChatModel())).compile().invoke({"doc": DOC})
    assert {k: out[k] for k in KINDS} == {k: base[k] for k in KINDS}
    assert sorted(out["log"]) == sorted(base["log"])


def test_thread_of_the_original_graph_or_another_plan_continues_when_safe() -> None:
    """Paused before an original node (briefer): the original graph's thread and another
    plan's thread both continue, with the original's answer."""
    saver = InMemorySaver()
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()))
    base = builder.compile().invoke({"doc": DOC})
    original = builder.compile(checkpointer=saver, interrupt_before=["briefer"])
    cfg = {"configurable": {"thread_id": "orig"}}
    original.invoke({"doc": DOC}, cfg)
    app = lc.capsulize(builder, groups={"arm": list(KINDS)}).compile(checkpointer=saver)
    assert app.invoke(None, cfg)["brief"] == base["brief"]

    cfg2 = {"configurable": {"thread_id": "caps"}}
    app_i = lc.capsulize(builder, groups={"arm": list(KINDS)}).compile(
        checkpointer=saver, interrupt_before=["briefer"]
    )
    app_i.invoke({"doc": DOC}, cfg2)
    other = lc.capsulize(builder, groups={"two": ["entities", "claims"]}).compile(
        checkpointer=saver
    )
    assert other.invoke(None, cfg2)["brief"] == base["brief"]
    stamps = [c.metadata.get("capsule_plan") for c in saver.list(cfg2)]
    assert stamps[0] == other.config["metadata"]["capsule_plan"]  # newest first
    assert app_i.config["metadata"]["capsule_plan"] in stamps


def test_thread_paused_inside_another_plans_capsule_run_is_refused() -> None:
    saver = InMemorySaver()
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()))
    cfg = {"configurable": {"thread_id": "caps", "capsules": {"mode": "compound"}}}
    app_i = lc.capsulize(builder, groups={"arm": list(KINDS)}).compile(
        checkpointer=saver, interrupt_before=["claims"]
    )
    app_i.invoke({"doc": DOC}, cfg)
    assert app_i.get_state(cfg).next == ("capsule__arm",)
    other = lc.capsulize(builder, groups={"two": ["entities", "claims"]}).compile(
        checkpointer=saver
    )
    with pytest.raises(lc.CapsuleResumeError, match="capsule plan") as e:
        other.invoke(None, cfg)
    assert e.value.code == "plan_mismatch" and e.value.node == "capsule__arm"
    assert e.value.group == "arm" and "new thread_id" in str(e.value)
    with pytest.raises(lc.CapsuleResumeError):
        asyncio.run(other.ainvoke(None, cfg))
    # the same plan (even rebuilt) resumes its own thread
    same = lc.capsulize(builder, groups={"arm": list(KINDS)}).compile(checkpointer=saver)
    assert same.invoke(None, cfg)["brief"]
    stamps = {c.metadata.get("capsule_plan") for c in saver.list(cfg)}
    assert stamps == {same.config["metadata"]["capsule_plan"]}


def test_original_thread_due_on_a_join_the_pass_rewires_is_refused() -> None:
    """briefer waits on the original's fan-in join, which the capsule graph replaces by
    a join over the gate: the capsule graph would never run briefer, so it refuses."""
    saver = InMemorySaver()
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()), fan_in="join")
    original = builder.compile(checkpointer=saver, interrupt_before=["briefer"])
    cfg = {"configurable": {"thread_id": "j"}}
    original.invoke({"doc": DOC}, cfg)
    app = lc.capsulize(builder, groups={"arm": list(KINDS)}).compile(checkpointer=saver)
    with pytest.raises(lc.CapsuleResumeError, match="original") as e:
        app.invoke(None, cfg)
    assert e.value.node == "briefer" and "join:" in str(e.value)
    assert original.invoke(None, cfg)["brief"]  # the fix: finish it on the original graph
    out = app.invoke({"doc": DOC}, cfg)  # finished: the next input runs on the capsule graph
    assert out["brief"]


def test_interrupt_before_member_also_stops_the_merged_path() -> None:
    scripted = ScriptedChatModel()
    app = _capsules(scripted).compile(checkpointer=InMemorySaver(), interrupt_before=["claims"])
    cfg = {"configurable": {"thread_id": "i", "capsules": {"mode": "compound"}}}
    app.invoke({"doc": DOC}, cfg)
    assert app.get_state(cfg).next == ("capsule__arm",)
    assert not scripted.merged_calls
    out = app.invoke(None, cfg)
    assert out["claims"] and len(scripted.merged_calls) == 1


@pytest.mark.parametrize("mode", ["compound", "fine"])
@pytest.mark.parametrize("run_async", [False, True])
def test_run_time_interrupts_on_a_member_stop_every_path(mode: str, run_async: bool) -> None:
    """``interrupt_before`` / ``interrupt_after`` passed to a run (as ``langgraph dev``
    and the SDK pass them) behave as compile-time ones: before a member also stops
    before the capsule node, after a member also after the gate; resuming finishes the
    run with the original graph's output."""
    scripted = ScriptedChatModel()
    base = build_app(lc.CapsuleChatModel(scripted)).compile().invoke({"doc": DOC})
    app = _capsules(scripted).compile(checkpointer=InMemorySaver())
    caps = {"capsules": {"mode": mode}}
    stops: list[tuple[str, ...]] = []
    for n, kw in enumerate(({"interrupt_before": ["claims"]}, {"interrupt_after": ["claims"]})):
        cfg: Any = {"configurable": {"thread_id": f"rt-{mode}-{run_async}-{n}", **caps}}
        if run_async:
            asyncio.run(app.ainvoke({"doc": DOC}, cfg, **kw))
            stops.append(app.get_state(cfg).next)
            out = asyncio.run(app.ainvoke(None, cfg))
        else:
            app.invoke({"doc": DOC}, cfg, **kw)
            stops.append(app.get_state(cfg).next)
            out = app.invoke(None, cfg)
        assert out == base
    before, after = stops
    if mode == "compound":
        assert before == ("capsule__arm",) and after == ("briefer",)
    else:
        assert "claims" in before and after == ("gate__arm",)  # right after the member


def test_copies_keep_the_plan_settings() -> None:
    """``with_config`` and ``copy`` (the LangGraph server copies every graph it serves)
    keep group overrides, interrupt remapping and the thread check."""
    scripted = ScriptedChatModel()
    app = _capsules(scripted).compile(checkpointer=InMemorySaver())
    served = app.copy(update={"checkpointer": InMemorySaver()}).with_config(tags=["served"])
    assert type(served) is type(app)
    for name in app._CAPSULE_ATTRS:
        assert getattr(served, name) == getattr(app, name), name
    out = served.invoke(
        {"doc": DOC},
        {"configurable": {"thread_id": "c", "capsules": {"groups": {"arm": "compound"}}}},
    )
    assert out["brief"] and len(scripted.merged_calls) == 1
    cfg = {"configurable": {"thread_id": "c2", "capsules": {"mode": "compound"}}}
    served.invoke({"doc": DOC}, cfg, interrupt_before=["claims"])
    assert served.get_state(cfg).next == ("capsule__arm",)


def test_store_and_stream_modes_work() -> None:
    from langgraph.store.memory import InMemoryStore

    app = _capsules().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    cfg = {"configurable": {"thread_id": "s", "capsules": {"mode": "compound"}}}
    nodes = [next(iter(c)) for c in app.stream({"doc": DOC}, cfg, stream_mode="updates")]
    assert nodes[0] == "scoping" and "capsule__arm" in nodes and nodes[-1] == "briefer"
    msgs = list(
        app.stream(
            {"doc": DOC},
            {**cfg, "configurable": {**cfg["configurable"], "thread_id": "s2"}},
            stream_mode="messages",
        )
    )
    served = [m for m, md in msgs if m.response_metadata.get("capsule_served")]
    assert {m.response_metadata["capsule_member"] for m in served} == set(KINDS)
    assert not any(md.get("capsule_merged") for _m, md in msgs)  # raw merged reply hidden
    assert COMPOUND["configurable"]["capsules"]["mode"] == "compound"
