"""``auto`` mode: the controller decides each run from the group's observations."""

from __future__ import annotations

from pathlib import Path

from conftest import DOC, KINDS, build_app

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel


def _tiers(capsules: lc.CapsuleGraph, group: str = "arm") -> list[str]:
    return [o["tier"] for o in capsules.observations(group)]


def test_gate_writes_one_observation_per_controlled_run() -> None:
    capsules = lc.capsulize(
        build_app(lc.CapsuleChatModel(ScriptedChatModel())),
        groups={"arm": list(KINDS)},
        policy="aggressive",
    )
    app = capsules.compile()
    app.invoke({"doc": DOC}, {"configurable": {"capsules": {"mode": "compound"}}})
    assert capsules.observations("arm") == []  # locked modes bypass the controller
    app.invoke({"doc": DOC}, {"configurable": {"capsules": {"mode": "observe"}}})
    for _ in range(2):
        app.invoke({"doc": DOC})  # auto: fine, then merged after 2 observations
    fine, _fine2, comp = capsules.observations("arm")
    assert (fine["tier"], comp["tier"]) == ("fine", "standard")
    assert fine["calls"] == 3 and comp["calls"] == 1
    assert set(fine["members"]) == set(KINDS)
    assert all(m["calls"] == 1 and m["input_tokens"] > 0 for m in fine["members"].values())
    assert comp["coordination_tokens"] > 0 and fine["coordination_tokens"] == 0
    assert comp["input_tokens"] < fine["input_tokens"] and comp["errors"] == 0
    assert fine["graph"] == capsules.plan.plan_id and fine["shadow"] is False


def test_auto_switches_a_group_whose_score_clears_the_preset() -> None:
    """Three tool-free agents score 0.25 * min(3/4, 1) = 0.1875: above the aggressive
    preset's compose_at (0.18), below balanced (0.23). So aggressive merges after its
    minimum of 2 observations and balanced never does."""
    scripted = ScriptedChatModel()
    builder = build_app(lc.CapsuleChatModel(scripted))
    aggressive = lc.capsulize(builder, groups={"arm": list(KINDS)}, policy="aggressive")
    app = aggressive.compile()
    for _ in range(4):
        app.invoke({"doc": DOC})
    assert _tiers(aggressive) == ["fine", "fine", "standard", "standard"]
    decision = aggressive.explain("arm")
    assert decision.tier == "standard" and decision.reasons

    balanced = lc.capsulize(builder, groups={"arm": list(KINDS)})
    app_b = balanced.compile()
    for _ in range(4):
        app_b.invoke({"doc": DOC})
    assert _tiers(balanced) == ["fine"] * 4
    assert balanced.explain("arm").tier == "fine"


def test_workers_sharing_a_sqlite_store_decide_alike(tmp_path: Path) -> None:
    store = lc.SqliteControllerStore(tmp_path / "controller.db")
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()))
    worker1 = lc.capsulize(builder, groups={"arm": list(KINDS)}, policy="aggressive", store=store)
    worker2 = lc.capsulize(
        builder,
        groups={"arm": list(KINDS)},
        policy="aggressive",
        store=lc.SqliteControllerStore(tmp_path / "controller.db"),
    )
    worker1.compile().invoke({"doc": DOC})
    worker2.compile().invoke({"doc": DOC})
    # two fine observations from two workers: both now decide to merge
    assert worker1.explain("arm").tier == worker2.explain("arm").tier == "standard"
    worker2.compile().invoke({"doc": DOC})
    assert _tiers(worker1) == _tiers(worker2) == ["fine", "fine", "standard"]


def test_report_says_what_auto_runs_next() -> None:
    capsules = lc.capsulize(
        build_app(lc.CapsuleChatModel(ScriptedChatModel())),
        groups={"arm": list(KINDS)},
        policy="aggressive",
    )
    app = capsules.compile()
    app.invoke({"doc": DOC})
    assert capsules.report(print_=False).data["groups"]["arm"]["next_auto_run"]["tier"] == "fine"
    app.invoke({"doc": DOC})
    report = capsules.report(print_=False)
    assert report.data["groups"]["arm"]["next_auto_run"]["tier"] == "standard"
    assert "next auto run: standard" in report.text
