"""The gate on unique inputs: audit sampling (a share of compound runs also runs fine and
is judged against it), reference-free judges, and a failing judge that backs off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    scripted.compress = scripted.compress_turns = 0.2  # every merged section, every tier
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

    # now the model degrades to 20% of each section on every tier
    scripted.compress = scripted.compress_turns = 0.2
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
