"""The gate on unique inputs: audit sampling (a share of compound runs also runs fine and
is judged against it), reference-free judges, and a failing judge that backs off."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import DOC, KINDS, build_app, overlap

import langgraph_capsules as lc
from langgraph_capsules.controller import decide
from langgraph_capsules.controller.audit import AuditWork, audit_due
from langgraph_capsules.testing import ScriptedChatModel

FLOOR = 0.75
# aggressive switching (the scripted app's score clears 0.18, not balanced's 0.23), with
# a 10-run window and one audit in 5 compound runs
AUDITED = lc.ControllerPolicy.aggressive(quality_floor=FLOOR, window_size=10, audit_rate=0.2)


def unique(i: int) -> dict[str, Any]:
    """A new task on every run: no fine output of the same task to judge against."""
    return {"doc": f"{DOC}\n\nUnique note {i}: item {i * 7} changed."}


def _gated(model: ScriptedChatModel, **kw: Any) -> lc.CapsuleGraph:
    return lc.capsulize(
        build_app(lc.CapsuleChatModel(model)),
        groups={"arm": list(KINDS)},
        policy=kw.pop("policy", AUDITED),
        judge=kw.pop("judge", overlap),
        **kw,
    )


def _tiers(capsules: lc.CapsuleGraph) -> list[str]:
    """One label per observation: ``shadow:`` tier, and ``*`` on an audited run."""
    out = []
    for o in capsules.observations("arm"):
        label = f"shadow:{o['tier']}" if o["shadow"] else o["tier"]
        out.append(label + ("*" if o.get("audit") else ""))
    return out


def _degrade_on_unique_inputs(capsules: lc.CapsuleGraph, scripted: ScriptedChatModel) -> int:
    """13 healthy unique runs, then the model degrades: runs until the group is fine."""
    app = capsules.compile()
    for i in range(13):
        app.invoke(unique(i))
    scripted.compress = scripted.compress_turns = 0.1  # every merged section, every tier
    for k in range(1, 40):
        app.invoke(unique(100 + k))
        if capsules.explain("arm").state.mode == "fine":
            return k
    return 0


# ------------------------------------------------------------------ (a) unique inputs
def test_degraded_group_on_unique_inputs_reverts_within_the_window() -> None:
    scripted = ScriptedChatModel()
    capsules = _gated(scripted)
    with lc.track_usage() as usage:
        app = capsules.compile()
        for i in range(13):
            app.invoke(unique(i))
        healthy = usage.by_purpose()
    tiers = _tiers(capsules)
    # fine, the switch run (fine + shadow), then standard with every 5th run audited
    assert tiers[:4] == ["fine", "fine", "fine", "shadow:standard"]
    assert tiers[4:] == (["standard"] * 4 + ["standard*"]) * 2
    obs = capsules.observations("arm")
    audited = [o for o in obs if o.get("audit")]
    assert [o["quality"] for o in audited] == [1.0, 1.0]
    assert all(o["quality"] is None for o in obs[4:] if not o.get("audit"))  # unique tasks
    # the audit's fine run is billed apart, and it is what the user got (audit_serve=fine)
    assert healthy["audit"]["calls"] == 2 * 3
    assert all(o["audit_calls"] == 3 and o["audit_input_tokens"] > 0 for o in audited)
    record = capsules.history("arm")[-1]
    assert record["audit"] == {
        "served": "fine",
        "calls": 3,
        "input_tokens": audited[-1]["audit_input_tokens"],
        "output_tokens": audited[-1]["audit_output_tokens"],
    }
    assert "audit (served fine)" in capsules.report(print_=False).text
    # the audits cost a bounded share of the group's tokens
    group = usage.by_group()["arm"]
    share = (healthy["audit"]["input_tokens"] + healthy["audit"]["output_tokens"]) / (
        group["input_tokens"] + group["output_tokens"]
    )
    assert 0.0 < share < AUDITED.audit_max_cost_share

    # now the model degrades to 10% of each section on every tier (judged about 0.33)
    scripted.compress = scripted.compress_turns = 0.1
    runs_to_revert = 0
    for k in range(1, 40):
        app.invoke(unique(100 + k))
        if capsules.explain("arm").state.mode == "fine":
            runs_to_revert = k
            break
    assert 0 < runs_to_revert <= AUDITED.window_size
    state = capsules.explain("arm").state
    assert state.revert_count == 1 and state.tier_override is None
    after = capsules.observations("arm")[len(obs) :]
    judged = [o for o in after if o["quality"] is not None]
    assert judged and all(o.get("audit") for o in judged)  # every reading was an audit
    assert all(o["quality"] < FLOOR for o in judged)
    # the ladder climbed to sequential before the hard revert
    assert {o["tier"] for o in after} == {"standard", "sequential"}


def test_without_audits_a_degraded_group_on_unique_inputs_is_never_judged() -> None:
    # audit_rate=0 is the old gate: only same-task readings, so no revert (issue 10)
    scripted = ScriptedChatModel()
    capsules = _gated(scripted, policy=AUDITED.replace(audit_rate=0.0))
    assert _degrade_on_unique_inputs(capsules, scripted) == 0
    assert all(o["quality"] is None for o in capsules.observations("arm")[4:])
    assert "audits off" in " ".join(capsules.explain("arm").reasons)


# ------------------------------------------------------------- (b) deterministic
def test_audit_decision_is_a_function_of_the_history(tmp_path: Path) -> None:
    capsules = _gated(ScriptedChatModel())
    app = capsules.compile()
    for i in range(16):
        app.invoke(unique(i))
    history = capsules.observations("arm")
    sqlite = lc.SqliteControllerStore(str(tmp_path / "c.db"))
    memory = lc.InMemoryControllerStore()
    for obs in history:
        sqlite.append(obs)
        memory.append(obs)
    graph = history[0]["graph"]
    built = frozenset({"fine", "standard", "sequential"})
    kw: dict[str, Any] = {"mode": "auto", "n_agents": 3, "judge_active": True, "built_tiers": built}
    for k in range(len(history) + 1):
        a = decide(sqlite.history(graph, "arm")[:k], AUDITED, **kw)
        b = decide(memory.history(graph, "arm")[:k], AUDITED, **kw)
        assert a == b and a.audit == b.audit
        assert a == capsules.explain("arm", at=k)
    # the audit flags follow the 1-in-5 rule, never chance
    # (k = 4: just after the switch run; 17 observations = 16 runs)
    flags = [capsules.explain("arm", at=k).audit for k in range(4, len(history) + 1)]
    assert flags == ([False] * 4 + [True]) * 2 + [False] * 4
    assert [o.get("audit", False) for o in history[4:]] == flags[:-1]
    app.invoke(unique(99))
    decision = capsules.explain("arm")
    assert decision.audit and decision.to_dict()["audit"] is True
    assert "audit: 4 compound run(s) since the last reading (1 in 5)" in decision.reasons
    assert "(audit: judge it against fine on the same input)" in str(decision)


def test_routine_audits_respect_the_cost_cap_and_failing_readings_do_not() -> None:
    policy = AUDITED.replace(audit_max_cost_share=0.2)
    due: dict[str, Any] = {"runs": 9, "tier": "standard", "fail_streak": 0, "tier_readings": 2}
    costly = AuditWork(since_evaluated=4, tokens=[(100, 0)] * 3 + [(300, 150)])
    call = audit_due(costly, policy, **due)
    assert not call.audit
    assert call.reason.startswith("audit skipped: audit tokens are 25% of the group's tokens")
    cheap = AuditWork(since_evaluated=4, tokens=[(100, 0)] * 9 + [(200, 10)])
    assert audit_due(cheap, policy, **due).audit
    # a reading below the floor is confirmed, and a new rung is read, whatever it costs
    assert audit_due(costly, policy, **{**due, "fail_streak": 1}).audit
    assert audit_due(costly, policy, **{**due, "tier_readings": 0}).audit
    # one run fewer since the last reading: not yet
    early = AuditWork(since_evaluated=3)
    assert not audit_due(early, policy, **due).audit
    assert not audit_due(cheap, policy.replace(audit_rate=0.0), **due).audit


# ---------------------------------------------------------------- (c) audit_serve
def length_ratio(task: str, reference: str, candidate: str) -> float:
    """A judge that sees a shortened answer (the overlap judge sees word sets)."""
    return min(1.0, len(candidate.split()) / max(1, len(reference.split())))


def _serve_run(serve: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], lc.CapsuleGraph]:
    # merged sections keep 90% of their words: compound differs from fine, still passes
    capsules = _gated(
        ScriptedChatModel(compress=0.9),
        policy=AUDITED.replace(audit_serve=serve),
        judge=length_ratio,
    )
    app = capsules.compile()
    outs = [app.invoke(unique(i)) for i in range(8)]
    plain_app = build_app(ScriptedChatModel()).compile()
    plain = [plain_app.invoke(unique(i)) for i in range(8)]
    return outs, plain, capsules


@pytest.mark.parametrize("serve", ["fine", "compound"])
def test_audit_serve_picks_the_output_the_user_gets(serve: str) -> None:
    outs, plain, capsules = _serve_run(serve)
    main = [o for o in capsules.observations("arm") if not o["shadow"]]  # one per run
    assert [o["tier"] for o in main] == ["fine"] * 3 + ["standard"] * 5
    assert [bool(o.get("audit")) for o in main] == [False] * 7 + [True]

    def fine_answers(i: int) -> bool:
        return all(outs[i][k] == plain[i][k] for k in KINDS)

    assert all(fine_answers(i) for i in range(3))  # fine runs, the switch run included
    assert not any(fine_answers(i) for i in range(3, 7))  # compound: shorter sections
    assert fine_answers(7) == (serve == "fine")  # the audit run
    audit = main[7]
    assert audit["quality"] is not None and FLOOR <= audit["quality"] < 1.0
    assert capsules.history("arm")[-1]["audit"]["served"] == serve  # type: ignore[index]
    # the observation is the compound run's own usage either way
    assert audit["calls"] == 1 and audit["audit_calls"] == 3


def test_the_reading_does_not_depend_on_which_output_is_served() -> None:
    readings = {}
    for serve in ("fine", "compound"):
        _, _, capsules = _serve_run(serve)
        readings[serve] = [o["quality"] for o in capsules.observations("arm") if o.get("audit")]
    assert readings["fine"] == readings["compound"] and len(readings["fine"]) == 1


# ------------------------------------------------------------ (d) a failing judge
def _broken(task: str, reference: str, candidate: str) -> Any:
    raise RuntimeError("judge backend down")


GATED = lc.ControllerPolicy.aggressive(quality_floor=FLOOR)


def test_a_judge_that_always_fails_backs_off_and_explain_says_so() -> None:
    calls = {}
    for name, judge in (("fine only", None), ("broken", _broken)):
        scripted = ScriptedChatModel()
        capsules = _gated(scripted, judge=judge, policy=GATED)
        app = capsules.compile()
        mode = {"configurable": {"capsules": {"mode": "fine"}}} if judge is None else None
        for _ in range(8):
            assert app.invoke({"doc": DOC}, mode)["brief"]
        calls[name] = len(scripted.calls)
    # before: every run after the first two was a shadow run (64 calls); now two failed
    # shadow runs pause the judge, and while it is paused no switch goes ungated: the
    # group stays fine, at the original app's cost plus the two failed shadows' calls
    assert calls["broken"] <= calls["fine only"] + 4
    obs = capsules.observations("arm")
    failed = [o for o in obs if o.get("judge_error")]
    assert len(failed) == 2 and all(o["shadow"] and o["quality"] is None for o in failed)
    assert [o["tier"] for o in obs if not o["shadow"]][-4:] == ["fine"] * 4
    decision = capsules.explain("arm")
    text = " ".join(decision.reasons)
    assert "judge failing: 2 consecutive no-score readings, shadow evaluation" in text
    assert decision.to_dict()["judge_paused"] is False  # the pause just ended: probe next
    during = capsules.explain("arm", at=len(obs) - 1)
    assert during.judge_paused
    assert any("shadow evaluation paused until run 9 (pause 1)" in r for r in during.reasons)
    # the probe (a shadow evaluation once the pause is over) fails: a longer pause
    app = capsules.compile()
    app.invoke({"doc": DOC})
    assert capsules.observations("arm")[-1]["judge_error"] is True
    after = capsules.explain("arm")
    assert after.judge_paused and not after.audit
    assert any("paused until run 16 (pause 2)" in r for r in after.reasons)


# ------------------------------------------------------- (e) reference-free judges
def test_a_reference_free_judge_scores_compound_runs_without_a_fine_run() -> None:
    references: list[str] = []

    def words(task: str, reference: str, candidate: str) -> float:
        references.append(reference)
        return min(1.0, len(candidate.split()) / 60)

    words.reference_free = True  # type: ignore[attr-defined]
    scripted = ScriptedChatModel()
    capsules = _gated(scripted, judge=words)
    with lc.track_usage() as usage:
        app = capsules.compile()
        for i in range(13):
            app.invoke(unique(i))
    audited = [o for o in capsules.observations("arm") if o.get("audit")]
    assert len(audited) == 2 and all(o["quality"] == 1.0 for o in audited)
    assert all(o["audit_calls"] == 0 and o["calls"] == 1 for o in audited)  # no fine run
    assert usage.by_purpose()["audit"]["calls"] == 0
    assert references[-2:] == ["", ""]
    assert capsules.history("arm")[-1]["audit"] == {
        "served": "compound",
        "calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
    }


def test_llm_judge_in_reference_free_mode() -> None:
    reply = json.dumps({"completeness": 8, "accuracy": 8, "structure": 8, "conciseness": 8})
    judge_model = ScriptedChatModel(respond=lambda prompt: reply)
    judge = lc.LLMJudge(judge_model, reference_free=True)
    assert lc.judges.is_reference_free(judge) and judge.orders == ("task_only",)
    messages = judge.messages("List the claims.", "REF TEXT", "CANDIDATE TEXT")
    assert "<answer>" in messages[1].content and "REF TEXT" not in messages[1].content
    capsules = _gated(ScriptedChatModel(), judge=judge)
    with lc.track_usage() as usage:
        app = capsules.compile()
        for i in range(8):
            app.invoke(unique(i))
    audited = [o for o in capsules.observations("arm") if o.get("audit")]
    assert [o["quality"] for o in audited] == [0.8]
    assert audited[0]["audit_calls"] == 1  # one judge call, no fine run
    assert usage.by_purpose()["audit"]["calls"] == 0
    assert usage.by_purpose()["judge"]["calls"] == 2  # the shadow and the audit
    with pytest.raises(lc.CapsuleConfigError):
        lc.LLMJudge(judge_model, reference_free=True, rubric_version="capsules-rubric-v1")


# ------------------------------------------------------------------- (f) async
def test_audits_under_ainvoke_behave_as_under_invoke() -> None:
    scripted = ScriptedChatModel()
    sync = _gated(scripted)
    sync_runs = _degrade_on_unique_inputs(sync, scripted)

    scripted_a = ScriptedChatModel()
    capsules = _gated(scripted_a)
    app = capsules.compile()

    async def main() -> int:
        for i in range(13):
            await app.ainvoke(unique(i))
        scripted_a.compress = scripted_a.compress_turns = 0.1
        for k in range(1, 40):
            await app.ainvoke(unique(100 + k))
            if capsules.explain("arm").state.mode == "fine":
                return k
        return 0

    assert asyncio.run(main()) == sync_runs > 0
    assert _tiers(capsules) == _tiers(sync)
    quality = [o["quality"] for o in capsules.observations("arm")]
    assert quality == [o["quality"] for o in sync.observations("arm")]
    assert sum(1 for o in capsules.observations("arm") if o.get("audit")) >= 4


# ------------------------------------------------- (g) a judge raising in an audit
@pytest.mark.parametrize("serve", ["fine", "compound"])
@pytest.mark.parametrize("run", ["invoke", "ainvoke"])
def test_a_judge_raising_during_an_audit_never_fails_the_run(serve: str, run: str) -> None:
    def flaky(task: str, reference: str, candidate: str) -> float:
        if "Unique note 7" in task:
            raise RuntimeError("judge backend down")
        return overlap(task, reference, candidate)

    capsules = _gated(ScriptedChatModel(), judge=flaky, policy=AUDITED.replace(audit_serve=serve))
    app = capsules.compile()
    if run == "invoke":
        outs = [app.invoke(unique(i)) for i in range(8)]
    else:

        async def main() -> list[dict[str, Any]]:
            return [await app.ainvoke(unique(i)) for i in range(8)]

        outs = asyncio.run(main())
    plain = build_app(ScriptedChatModel()).compile().invoke(unique(7))
    assert {k: outs[7][k] for k in KINDS} == {k: plain[k] for k in KINDS}  # healthy model
    assert outs[7]["brief"] == plain["brief"]
    audit = capsules.observations("arm")[-1]
    assert audit["audit"] and audit["judge_error"] and audit["quality"] is None
    decision = capsules.explain("arm")
    assert decision.tier == "standard" and decision.state.mode == "compound"
    assert "the judge failed on this standard run" in decision.reasons[0]


@pytest.mark.parametrize("serve", ["fine", "compound"])
def test_stream_of_an_audit_run_shows_only_the_served_output(serve: str) -> None:
    capsules = _gated(ScriptedChatModel(), policy=AUDITED.replace(audit_serve=serve))
    app = capsules.compile()
    for i in range(7):
        app.invoke(unique(i))
    assert capsules.explain("arm").audit
    chunks = list(app.stream(unique(7), stream_mode="messages"))
    assert capsules.observations("arm")[-1]["audit"]
    texts = [c[0].content for c in chunks if c[0].content]
    assert not [t for t in texts if "### SECTION" in t]  # the merged call never streams
    nodes = [c[1]["langgraph_node"] for c in chunks if c[0].content]
    # each member's answer streams once: fine's, or compound's served answers
    assert sorted(nodes) == sorted(["scoping", *KINDS, "briefer"])
    audit_tagged = [c for c in chunks if c[1].get("capsule_audit")]
    assert bool(audit_tagged) == (serve == "fine")
