"""The sequential tier: one call per member in a shared, cache-aligned conversation."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from conftest import DOC, KINDS, build_app
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

import langgraph_capsules as lc
from langgraph_capsules.strategies.guidance import HINTS, guidance_hint
from langgraph_capsules.strategies.sequential import build_sequential, parse_sequential_turn
from langgraph_capsules.testing import ScriptedChatModel

SEQUENTIAL = {"configurable": {"capsules": {"mode": "sequential"}}}


def _run(scripted: ScriptedChatModel, config: Any = SEQUENTIAL, **kw: Any) -> Any:
    capsules = lc.capsulize(
        build_app(lc.CapsuleChatModel(scripted)), groups={"arm": list(KINDS)}, **kw
    )
    return capsules, capsules.compile().invoke({"doc": DOC}, config)


def _group_calls(scripted: ScriptedChatModel) -> list[Any]:
    return [c for c in scripted.calls if parse_sequential_turn(c.messages) is not None]


def test_sequential_gives_each_member_its_own_call_and_the_fine_answer() -> None:
    fine = build_app(ScriptedChatModel()).compile().invoke({"doc": DOC})
    scripted = ScriptedChatModel()
    capsules, out = _run(scripted)
    assert {k: out[k] for k in KINDS} == {k: fine[k] for k in KINDS}
    assert sorted(out["log"]) == sorted(fine["log"])
    calls = _group_calls(scripted)
    assert len(calls) == 3 and scripted.merged_calls == []
    # cache alignment: the system message (preamble + shared context) is byte-identical
    systems = {c.messages[0].content for c in calls}
    assert len(systems) == 1 and DOC.split("\n\n")[0] in next(iter(systems))
    # predecessor_only: the prefix, the previous member's task and answer, its own task
    assert [len(c.messages) for c in calls] == [2, 4, 4]
    assert calls[2].messages[1:3] == [*calls[1].messages[-1:], AIMessage(calls[1].text)]
    # the shared prefix is served from the (simulated) prefix cache after the first call
    assert calls[0].usage["input_token_details"]["cache_read"] == 0
    assert all(c.usage["input_token_details"]["cache_read"] > 30 for c in calls[1:])
    record = capsules.history("arm")[-1]
    assert record["tier"] == "sequential" and record["calls"] == 3 and record["fallback"] == []
    assert record["cached_tokens"] > 0


def test_full_context_chains_the_conversation() -> None:
    scripted = ScriptedChatModel()
    policy = lc.ControllerPolicy.balanced(sequential_context_strategy="full")
    _run(scripted, policy=policy)
    calls = _group_calls(scripted)
    assert [len(c.messages) for c in calls] == [2, 4, 6]
    # member k's call is member k-1's call plus its answer, then its own task
    for prev, cur in itertools.pairwise(calls):
        assert cur.messages[: len(prev.messages)] == prev.messages
        assert isinstance(cur.messages[len(prev.messages)], AIMessage)
        assert cur.messages[len(prev.messages)].content == prev.text


def test_forced_guidance_hint_goes_on_every_sequential_call() -> None:
    scripted = ScriptedChatModel()
    _run(scripted, policy=lc.ControllerPolicy.balanced(output_guidance="concise"))
    calls = _group_calls(scripted)
    assert all(str(c.messages[-1].content).endswith(HINTS["concise"]) for c in calls)
    plain = ScriptedChatModel()
    _run(plain)  # auto guidance and no verbose history: silent
    assert not any(HINTS["concise"] in str(c.messages[-1].content) for c in _group_calls(plain))


def test_auto_guidance_needs_three_verbose_fine_runs() -> None:
    policy = lc.ControllerPolicy.balanced()
    assert guidance_hint(policy, 1600.0, 2) is None
    assert guidance_hint(policy, 1400.0, 5) is None
    assert guidance_hint(policy, 1600.0, 3) == HINTS["concise"]
    assert guidance_hint(policy.replace(output_guidance="none"), 5000.0, 9) is None


def test_a_failed_sequential_call_falls_back_to_the_members_own_node() -> None:
    scripted = ScriptedChatModel(fail_calls=frozenset({2}))  # call 0 is scoping
    fine = build_app(ScriptedChatModel()).compile().invoke({"doc": DOC})
    capsules, out = _run(scripted)
    assert {k: out[k] for k in KINDS} == {k: fine[k] for k in KINDS}
    record = capsules.history("arm")[-1]
    assert len(record["fallback"]) == 1
    reason = record["fallback_reasons"][record["fallback"][0]]
    assert reason.startswith("sequential call failed: ScriptedError")


def test_sequential_under_ainvoke_and_two_phase_runs_as_sequential() -> None:
    scripted = ScriptedChatModel()
    capsules = lc.capsulize(build_app(lc.CapsuleChatModel(scripted)), groups={"arm": list(KINDS)})
    app = capsules.compile()
    two_phase = {"configurable": {"capsules": {"mode": "two_phase"}}}
    out = asyncio.run(app.ainvoke({"doc": DOC}, two_phase))
    assert all(out[k] for k in KINDS)
    assert capsules.history("arm")[-1]["tier"] == "sequential"
    assert len(_group_calls(scripted)) == 3


def test_build_sequential_splits_shared_content_once() -> None:
    shared = "The shared source document has many words in this paragraph."
    calls = [
        [SystemMessage("Task one."), HumanMessage(shared)],
        [SystemMessage("Task two."), HumanMessage(shared)],
    ]
    plan = build_sequential(["a", "b"], calls, context="full", hint=None)
    assert plan is not None
    assert str(plan.system.content).count(shared) == 1
    assert [str(t.content) for t in plan.tasks] == ["TASK 1\nTask one.", "TASK 2\nTask two."]
    msgs = plan.messages(1, [None])  # member a's call failed: its turn is left out
    assert msgs == [plan.system, plan.tasks[1]]
    pred = build_sequential(["a", "b"], calls)  # default: predecessor_only
    assert pred is not None
    assert pred.messages(1, ["answer a"]) == [
        pred.system,
        pred.tasks[0],
        AIMessage("answer a"),
        pred.tasks[1],
    ]
    turn = parse_sequential_turn(plan.messages(1, ["answer a"]))
    assert turn is not None and turn.task == "Task two." and turn.shared == shared


@pytest.mark.parametrize("mode", ["sequential", "two_phase"])
def test_locked_sequential_decision(mode: str) -> None:
    d = lc.decide(
        [],
        lc.ControllerPolicy(),
        mode=mode,
        n_agents=3,
        built_tiers=frozenset({"fine", "standard", "sequential"}),
    )
    assert d.tier == "sequential"
