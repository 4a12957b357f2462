"""The quality gate end to end on the ScriptedChatModel: shadow evaluation on the switch
run, compound runs judged against the fine baseline of the same task, reverts and
backoff, judge failures, and the gate's calls counted apart in telemetry."""

from __future__ import annotations

import asyncio
import json
import operator
from typing import Annotated, Any, TypedDict

import pytest
from conftest import DOC, KINDS, build_app, overlap
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel

FLOOR = 0.75
GATED = lc.ControllerPolicy.aggressive(quality_floor=FLOOR)


def _tiers(capsules: lc.CapsuleGraph, group: str = "arm") -> list[str]:
    out = []
    for o in capsules.observations(group):
        out.append(f"shadow:{o['tier']}" if o["shadow"] else o["tier"])
    return out


def _gated(model: ScriptedChatModel, **kw: Any) -> lc.CapsuleGraph:
    return lc.capsulize(
        build_app(lc.CapsuleChatModel(model)),
        groups={"arm": list(KINDS)},
        policy=kw.pop("policy", GATED),
        judge=kw.pop("judge", overlap),
        **kw,
    )


def test_healthy_group_passes_the_shadow_gate_switches_and_stays() -> None:
    scripted = ScriptedChatModel()
    capsules = _gated(scripted)
    app = capsules.compile()
    plain = build_app(ScriptedChatModel()).compile().invoke({"doc": DOC})
    outs = [app.invoke({"doc": DOC}) for _ in range(8)]
    # two fine runs, the switch run (fine + its shadow), then compound for good
    assert _tiers(capsules) == ["fine", "fine", "fine", "shadow:standard", *["standard"] * 5]
    obs = capsules.observations("arm")
    switch, shadow = obs[2], obs[3]
    assert switch["run_id"] == shadow["run_id"] and switch["quality"] is None
    assert shadow["quality"] == 1.0 and shadow["calls"] == 1
    assert shadow["input_tokens"] < switch["input_tokens"]
    # every compound run is judged against the fine baseline of the same task
    assert [o["quality"] for o in obs[4:]] == [1.0] * 5
    # the user gets the fine output on the switch run, and the same answers after it
    assert all({k: o[k] for k in KINDS} == {k: plain[k] for k in KINDS} for o in outs)
    assert outs[2]["log"] == plain["log"]
    decision = capsules.explain("arm")
    assert decision.tier == "standard" and not decision.shadow
    assert decision.state.rolling_quality["standard"] == 1.0
    # tokens follow the tier: the compound runs send far fewer input tokens
    fine_in = obs[0]["input_tokens"]
    assert all(o["input_tokens"] < 0.75 * fine_in for o in obs[4:])


def test_group_degraded_on_every_tier_is_blocked_at_the_shadow_gate_and_stays_fine() -> None:
    # merged sections and sequential calls both keep a quarter of their words
    scripted = ScriptedChatModel(compress=0.25, compress_turns=0.25)
    capsules = _gated(scripted)
    app = capsules.compile()
    for _ in range(9):
        app.invoke({"doc": DOC})
    # the shadow gate walks the ladder (standard, then sequential), both fail: blocked,
    # then 4 fresh fine runs (2 x (1 + 1 revert)) before it tries again
    walk = ["shadow:standard", "shadow:sequential"]
    assert _tiers(capsules) == ["fine"] * 3 + walk + ["fine"] * 5 + walk + ["fine"]
    shadows = [o for o in capsules.observations("arm") if o["shadow"]]
    assert all(o["quality"] is not None and o["quality"] < FLOOR for o in shadows)
    assert {o["tier"] for o in capsules.observations("arm") if not o["shadow"]} == {"fine"}
    state = capsules.explain("arm").state
    assert state.mode == "fine" and state.revert_count == 2


def test_group_whose_merges_fail_runs_sequential_and_probes_standard_again() -> None:
    scripted = ScriptedChatModel(compress=0.25)  # merges degrade; per-agent calls do not
    capsules = _gated(scripted)
    app = capsules.compile()
    for _ in range(13):
        app.invoke({"doc": DOC})
    tiers = _tiers(capsules)
    # shadow walk: standard fails, sequential passes and becomes the tier override
    walk = ["shadow:standard", "shadow:sequential"]
    assert tiers[:10] == ["fine"] * 3 + walk + ["sequential"] * 5
    # after the decay window (5 passing readings) it drops one rung, fails twice, climbs
    assert tiers[10:] == ["standard", "standard", "sequential", "sequential", "sequential"]
    obs = capsules.observations("arm")
    seq = [o["quality"] for o in obs if o["tier"] == "sequential" and not o["shadow"]]
    assert seq == [1.0] * 8
    assert capsules.explain("arm").state.tier_override == "sequential"
    # sequential keeps one call per agent; standard makes one merged call
    calls = {o["tier"]: o["calls"] for o in obs if not o["shadow"]}
    assert calls == {"fine": 3, "sequential": 3, "standard": 1}


def test_degrading_group_climbs_the_ladder_and_ends_in_fine() -> None:
    scripted = ScriptedChatModel()
    capsules = _gated(scripted)
    app = capsules.compile()
    for _ in range(5):
        app.invoke({"doc": DOC})
    assert capsules.explain("arm").state.tier == "standard"
    scripted.compress = 0.1  # merged answers degrade: escalate to sequential
    for _ in range(5):
        app.invoke({"doc": DOC})
    assert capsules.explain("arm").state.tier == "sequential"
    scripted.compress_turns = 0.1  # now per-agent calls degrade too: the top rung fails
    for _ in range(5):
        app.invoke({"doc": DOC})
    head = ["fine"] * 3 + ["shadow:standard"]
    assert _tiers(capsules) == head + ["standard"] * 5 + ["sequential"] * 5 + ["fine"] * 2
    decision = capsules.explain("arm")
    assert decision.state.mode == "fine" and decision.state.revert_count == 1
    assert decision.state.tier_override is None
    assert decision.state.required_observations == 4  # backoff: 2 x (1 + 1 revert)
    # tokens follow the tier
    by_tier: dict[str, list[int]] = {}
    for o in capsules.observations("arm"):
        if not o["shadow"]:
            by_tier.setdefault(o["tier"], []).append(o["input_tokens"])
    assert max(by_tier["standard"]) < min(by_tier["fine"])


def test_two_groups_in_one_graph_are_gated_apart() -> None:
    class S(TypedDict, total=False):
        doc: str
        log: Annotated[list[str], operator.add]
        a1: str
        a2: str
        b1: str
        b2: str

    good = lc.CapsuleChatModel(ScriptedChatModel())
    bad = lc.CapsuleChatModel(ScriptedChatModel(compress=0.2, compress_turns=0.2))

    def node(name: str, llm: lc.CapsuleChatModel) -> Any:
        def run(state: S) -> dict[str, Any]:
            msgs = [SystemMessage(f"Answer as analyst {name}."), HumanMessage(state["doc"])]
            return {name: llm.invoke(msgs).content, "log": [name]}

        return run

    b = StateGraph(S)
    for name, llm in (("a1", good), ("a2", good), ("b1", bad), ("b2", bad)):
        b.add_node(name, node(name, llm))
        b.add_edge(START, name)
        b.add_edge(name, END)
    # two agents score 0.25 * 2/4 = 0.125 (no overhead, tools or depth): compose from 0.12
    policy = GATED.replace(compose_at=0.12, decompose_at=0.05)
    capsules = lc.capsulize(
        b, groups={"good": ["a1", "a2"], "bad": ["b1", "b2"]}, policy=policy, judge=overlap
    )
    app = capsules.compile()
    for _ in range(6):
        app.invoke({"doc": DOC})
    assert capsules.explain("good").state.mode == "compound"
    assert capsules.explain("bad").state.mode == "fine"
    assert "standard" in _tiers(capsules, "good")
    assert set(_tiers(capsules, "bad")) == {"fine", "shadow:standard", "shadow:sequential"}


def test_compound_run_on_a_new_task_is_unjudged_not_zero() -> None:
    capsules = _gated(ScriptedChatModel())
    app = capsules.compile()
    for _ in range(4):
        app.invoke({"doc": DOC})
    assert capsules.explain("arm").state.mode == "compound"
    app.invoke({"doc": DOC + "\n\nA new paragraph makes this a new task."})
    last = capsules.observations("arm")[-1]
    assert last["tier"] == "standard" and last["quality"] is None
    assert capsules.explain("arm").state.mode == "compound"  # no baseline: not a failure
    assert capsules.history("arm")[-1]["judge_calls"] == 0


@pytest.mark.parametrize("failure", ["raises", "garbage"])
def test_judge_failure_is_no_score_and_blocks_nothing(failure: str) -> None:
    def broken(task: str, reference: str, candidate: str) -> Any:
        if failure == "raises":
            raise RuntimeError("judge backend down")
        return "not a score"

    capsules = _gated(ScriptedChatModel(), judge=broken)
    app = capsules.compile()
    outs = [app.invoke({"doc": DOC}) for _ in range(4)]
    assert all(o["entities"] for o in outs)  # the runs themselves are unharmed
    shadows = [o for o in capsules.observations("arm") if o["shadow"]]
    assert shadows and all(o["quality"] is None for o in shadows)
    state = capsules.explain("arm").state
    # no score is not a failing reading: the switch is neither accepted nor blocked
    assert state.mode == "fine" and state.revert_count == 0 and state.judge_failures >= 1


def test_shadow_and_judge_calls_are_counted_apart() -> None:
    reply = json.dumps({"completeness": 9, "accuracy": 9, "structure": 9, "conciseness": 9})
    judge_model = ScriptedChatModel(respond=lambda prompt: reply)
    capsules = _gated(ScriptedChatModel(), judge=lc.LLMJudge(judge_model))
    app = capsules.compile()
    with lc.track_usage() as usage:
        for _ in range(3):
            app.invoke({"doc": DOC})
    purposes = usage.by_purpose()
    assert purposes["shadow"]["calls"] == 1  # the one merged call of the shadow tier
    assert purposes["judge"]["calls"] == 2  # LLMJudge: both orders
    assert purposes["judge"]["input_tokens"] > 0
    totals = usage.totals()
    assert totals["calls"] == sum(p["calls"] for p in purposes.values())
    assert totals["judge_calls"] == 2 and totals["shadow_calls"] == 1
    switch = capsules.history("arm")[-1]
    assert switch["judge_calls"] == 2 and switch["shadow"][0]["quality"] == 0.9
    assert "of which" in usage.table()


def test_locked_modes_bypass_the_judge() -> None:
    calls: list[str] = []

    def judge(task: str, reference: str, candidate: str) -> float:
        calls.append(candidate)
        return 1.0

    capsules = _gated(ScriptedChatModel(), judge=judge)
    app = capsules.compile()
    for mode in ("fine", "compound", "fine", "compound"):
        app.invoke({"doc": DOC}, {"configurable": {"capsules": {"mode": mode}}})
    assert calls == [] and capsules.observations("arm") == []


def test_shadow_run_under_ainvoke() -> None:
    capsules = _gated(ScriptedChatModel())
    app = capsules.compile()

    async def main() -> list[dict[str, Any]]:
        return [await app.ainvoke({"doc": DOC}) for _ in range(5)]

    outs = asyncio.run(main())
    assert _tiers(capsules) == ["fine", "fine", "fine", "shadow:standard", "standard", "standard"]
    assert len({o["entities"] for o in outs}) == 1


def test_stream_of_a_shadow_run_shows_only_the_users_output() -> None:
    capsules = _gated(ScriptedChatModel())
    app = capsules.compile()
    for _ in range(2):
        app.invoke({"doc": DOC})
    chunks = list(app.stream({"doc": DOC}, stream_mode="messages"))
    assert _tiers(capsules)[-1] == "shadow:standard"
    texts = [c[0].content for c in chunks if c[0].content]
    assert not [t for t in texts if "### SECTION" in t]  # the shadow's merged call is hidden
    nodes = [c[1]["langgraph_node"] for c in chunks if c[0].content]
    # each member's fine answer streams once; the shadow's served answers never do
    assert sorted(nodes) == sorted(["scoping", *KINDS, "briefer"])


def test_explain_at_an_earlier_point_of_the_history() -> None:
    capsules = _gated(ScriptedChatModel())
    app = capsules.compile()
    for _ in range(5):
        app.invoke({"doc": DOC})
    assert capsules.explain("arm", at=0).tier == "fine"
    assert capsules.explain("arm", at=2).shadow  # after two fine runs: the switch run
    assert capsules.explain("arm", at=4).tier == "standard"  # after the passing shadow
    assert capsules.explain("arm", at=None) == capsules.explain("arm")
    with pytest.raises(ValueError):
        capsules.explain("arm", at=-1)


def test_same_task_readings_keep_compound_runs_from_being_audited() -> None:
    # every compound run of a repeated task is judged against its fine baseline, so the
    # audit counter never reaches 1 in 10 (aggressive): no fine run is ever added
    capsules = _gated(ScriptedChatModel())
    app = capsules.compile()
    with lc.track_usage() as usage:
        for _ in range(16):
            app.invoke({"doc": DOC})
    obs = capsules.observations("arm")
    assert [o["quality"] for o in obs[4:]] == [1.0] * 13
    assert not any(o.get("audit") for o in obs) and usage.by_purpose()["audit"]["calls"] == 0
    decision = capsules.explain("arm")
    assert not decision.audit
    assert "no audit: 0 compound run(s) since the last reading" in " ".join(decision.reasons)


def test_a_merge_that_sends_more_input_than_the_separate_calls_is_not_taken() -> None:
    """Three one-line prompts with nothing in common: the merged call's own wording costs
    more input than the three calls, so auto never switches, whatever the quality."""
    from field_apps import parallel_creative_app

    scripted = ScriptedChatModel()
    capsules = lc.capsulize(
        parallel_creative_app(scripted),
        policy=lc.ControllerPolicy.aggressive(quality_floor=0.5),
        judge=lambda task, reference, candidate: 1.0,  # quality is never the problem
    )
    app = capsules.compile()
    for i in range(6):
        app.invoke({"topic": f"owls {i}"})
    (group,) = capsules.plan.group_names
    obs = capsules.observations(group)
    shadows = [o for o in obs if o["shadow"]]
    assert shadows and all(o["tier"] == "standard" and o["quality"] == 1.0 for o in shadows)
    fine_inputs = {o["run_id"]: o["input_tokens"] for o in obs if not o["shadow"]}
    assert all(o["input_tokens"] > fine_inputs[o["run_id"]] for o in shadows)
    assert {o["tier"] for o in obs if not o["shadow"]} == {"fine"}  # never switched
    first = obs.index(shadows[0]) + 1
    why = " ".join(capsules.explain(group, at=first).reasons)
    assert "costs more input than the separate calls" in why
