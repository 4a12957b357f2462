"""The controller: scripted observation histories driven through every transition."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from langgraph_capsules.controller import (
    ControllerState,
    Decision,
    composition_score,
    controller_state,
    decide,
    ladder_step,
    latency_gate,
    nearest_built,
    required_observations,
    select_tier,
    shadow_verdict,
    switch_down,
    switch_up,
)
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.types import Observation, Tier

ALL_TIERS: frozenset[str] = frozenset({"fine", "standard", "two_phase", "sequential"})
FLOOR = 0.75
GATED = ControllerPolicy(quality_floor=FLOOR)


# --------------------------------------------------------------------------- helpers
def ob(
    run: int | str,
    tier: str = "fine",
    *,
    tools: int = 4,
    output: int = 2000,
    coord: int = 20,
    quality: float | None = None,
    shadow: bool = False,
    errors: int = 0,
    latency: float = 1.0,
    n: int = 2,
) -> Observation:
    """One observation of a 2-agent group.

    Defaults give a *high* fine score: r_oh = 20/2000 = 0.01, t̄ = 2 per agent, so
    s = 0.0045 + 0.125 + 0.1667 = 0.296 >= compose_at 0.23 (depth 0). ``tools=0`` gives a
    *low* fine score, 0.1295. Compound and shadow records carry no tool calls (standard
    sends none), score 0.1295 at depth 0 and 0.0795 at depth 1.
    """
    fine = tier == "fine" and not shadow
    return {
        "graph": "plan",
        "group": "research",
        "run_id": f"r{run}",
        "time": 0.0,
        "tier": tier,
        "members": {
            f"a{i}": {
                "input_tokens": 500,
                "cached_tokens": 0,
                "output_tokens": output // n,
                "calls": 1,
                "tool_calls": tools // n,
                "latency_s": latency,
            }
            for i in range(n)
        },
        "calls": n + tools if fine else 1,
        "input_tokens": 1000,
        "cached_tokens": 0,
        "output_tokens": output,
        "latency_s": latency,
        "tool_calls": tools if fine else 0,
        "coordination_tokens": coord,
        "errors": errors,
        "quality": quality,
        "shadow": shadow,
    }


def fine_runs(start: int, count: int, **kw: Any) -> list[Observation]:
    return [ob(start + i, **kw) for i in range(count)]


def shadow_run(run: int, *readings: tuple[str, float | None]) -> list[Observation]:
    """The fine record of a switch run followed by one shadow record per tier tried."""
    return [ob(run)] + [ob(run, tier, quality=q, shadow=True) for tier, q in readings]


def auto(history: Sequence[Observation], policy: ControllerPolicy = GATED, **kw: Any) -> Decision:
    kw.setdefault("n_agents", 2)
    kw.setdefault("judge_active", True)
    return decide(history, policy, mode="auto", **kw)


def switched(policy: ControllerPolicy = GATED, **kw: Any) -> list[Observation]:
    """3 high fine runs, then a shadow run that accepts standard at 0.8."""
    history = fine_runs(0, 3)
    assert auto(history, policy, **kw).shadow_tiers[0] == "standard"
    history += shadow_run(3, ("standard", 0.8))
    assert auto(history, policy, **kw).tier == "standard"
    return history


# --------------------------------------------------------------------------- score
def test_spec_pins_for_two_agents_depth_one() -> None:
    """[ours]: for n = 2, d = 1 the non-r_oh terms total 0.242 at t̄ = 2, 0.158 at t̄ = 1."""
    p = ControllerPolicy()
    for tools, expected in ((4, 0.242), (2, 0.158)):
        bd = composition_score(ob(0, tools=tools, coord=0), p, n_agents=2, depth=1)
        assert bd.r_oh == 0.0
        assert round(bd.raw, 3) == expected
        assert round(bd.score, 3) == expected
        assert round(sum(bd.terms[1:]), 3) == expected
    # r_oh itself is ~0.01-0.04: the partition at compose_at 0.23 is set by t̄.
    for coord in (20, 80):
        hi = composition_score(ob(0, tools=4, coord=coord), p, n_agents=2, depth=1)
        lo = composition_score(ob(0, tools=2, coord=coord), p, n_agents=2, depth=1)
        assert 0.01 <= hi.r_oh <= 0.04
        assert hi.score >= p.compose_at > lo.score


def test_score_terms_paper_and_reference_overhead() -> None:
    p = ControllerPolicy()
    bd = composition_score(ob(0, tools=4, coord=40, output=2000), p, n_agents=2, depth=1)
    assert bd.r_oh == pytest.approx(40 / 2000)  # [paper]: coordination / output
    assert bd.r_oh_ref == pytest.approx(40 / 1000)  # [ref]: coordination / prompt
    assert bd.terms == pytest.approx((0.45 * 0.02, 0.125, 0.0, 0.25 * 2 / 3, -0.05))
    assert bd.score_ref - bd.score == pytest.approx(0.45 * (0.04 - 0.02))
    assert (bd.n_agents, bd.tool_density, bd.depth, bd.mean_output) == (2, 2.0, 1, 1000.0)
    assert bd.override is None
    assert json.loads(json.dumps(bd.to_dict()))["terms"] == pytest.approx(list(bd.terms))
    assert str(bd).startswith("score 0.251 (fine; r_oh 0.020")


def test_depth_fan_out_and_reference_compat() -> None:
    p = ControllerPolicy()
    fan_out = composition_score(ob(0), p, n_agents=4, depth=0)
    chain = composition_score(ob(0), p, n_agents=4, depth=3)
    ref = composition_score(ob(0), p, n_agents=4, depth=None)  # [ref]: d = n - 1 (P2)
    assert fan_out.score - chain.score == pytest.approx(0.05)
    assert ref.depth == 3 and ref.score == chain.score
    with pytest.raises(ValueError, match="n_agents"):
        composition_score(ob(0), p, n_agents=0)


def test_clamp_and_overrides_in_order() -> None:
    p = ControllerPolicy()
    # error rate 1/6 >= 0.15 -> 1.0
    err = composition_score(ob(0, errors=1), p, n_agents=2)
    assert err.error_rate == pytest.approx(1 / 6)
    assert (err.score, err.override) == (1.0, "error_rate")
    just_below = composition_score(ob(0, errors=1, tools=5), p, n_agents=2)  # 1/7
    assert just_below.override is None
    # context >= 0.85 -> 0.0, and it wins over the error-rate override
    ctx = composition_score(ob(0, errors=1), p, n_agents=2, context_utilisation=0.85)
    assert (ctx.score, ctx.override) == (0.0, "context")
    assert composition_score(ob(0), p, n_agents=2, context_utilisation=0.84).override is None
    # clamp: a huge overhead ratio cannot push the score past 1
    big = composition_score(ob(0, coord=10_000, output=100), p, n_agents=4)
    assert big.raw > 1.0 and big.score == 1.0
    # no weights: the score is the raw overhead ratio
    raw = composition_score(ob(0, coord=300), ControllerPolicy(score_weights=None), n_agents=2)
    assert raw.score == pytest.approx(0.15) and raw.terms[1:] == (0.0, 0.0, 0.0, 0.0)
    # no output: no overhead signal rather than a division by zero
    assert composition_score(ob(0, output=0), p, n_agents=2).r_oh == 0.0


# --------------------------------------------------------------------------- switching
def test_back_off_grows_and_caps() -> None:
    p = ControllerPolicy()
    assert [required_observations(p, r) for r in range(7)] == [3, 6, 9, 12, 15, 15, 15]
    assert required_observations(ControllerPolicy.aggressive(), 2) == 6


def test_switch_checks_use_the_window() -> None:
    p = ControllerPolicy.aggressive()  # window 5, confidence 0.65, min_obs 2
    up = switch_up([0.1] * 10 + [0.3, 0.3, 0.3, 0.1, 0.3], p, 0)
    assert (up.window, up.agreeing, up.confidence, up.fires) == (5, 4, 0.8, True)
    assert up.reason == "confidence 0.80 >= 0.65: 4/5 recent fine scores >= compose_at 0.18"
    waiting = switch_up([0.3, 0.3, 0.3], p, 1)
    assert (waiting.fires, waiting.confidence, waiting.required) == (False, 0.0, 4)
    down = switch_down([0.2, 0.1, 0.14], p)
    assert (down.agreeing, down.fires) == (2, True)  # 2/3 >= 0.65
    assert not switch_down([0.1], p).fires  # fewer than min_observations


# --------------------------------------------------------------------------- tiers
@pytest.mark.parametrize(
    ("per_agent", "runs", "tools", "wanted"),
    [
        (None, 0, False, "standard"),
        (5000.0, 2, False, "standard"),  # fewer than 3 fine runs: no verbosity signal
        (1499.0, 3, False, "standard"),
        (1500.0, 3, False, "two_phase"),
        (3499.0, 3, False, "two_phase"),
        (3500.0, 3, False, "sequential"),
        (100.0, 5, True, "two_phase"),  # tools present -> two_phase
        (4000.0, 5, True, "sequential"),
    ],
)
def test_automatic_tier_choice(
    per_agent: float | None, runs: int, tools: bool, wanted: str
) -> None:
    choice = select_tier(
        ControllerPolicy(),
        has_tools=tools,
        fine_output_per_agent=per_agent,
        fine_runs=runs,
        built_tiers=ALL_TIERS,  # type: ignore[arg-type]
    )
    assert (choice.wanted, choice.tier) == (wanted, wanted)


def test_unbuilt_tiers_fall_to_the_nearest_built_and_say_so() -> None:
    built: frozenset[Tier] = frozenset({"fine", "standard"})
    choice = select_tier(
        ControllerPolicy(),
        has_tools=True,
        fine_output_per_agent=800.0,
        fine_runs=4,
        built_tiers=built,
    )
    assert (choice.wanted, choice.tier) == ("two_phase", "standard")
    assert choice.reasons == (
        "tier auto: mean fine output 800 tokens/agent over 4 fine runs < 1500 -> standard",
        "tier auto: the group has tools -> two_phase",
        "two_phase is not built; using the nearest built tier standard",
    )
    # a tie goes toward per-agent dispatch: sequential keeps the agents' tools
    assert nearest_built("two_phase", frozenset({"fine", "standard", "sequential"})) == "sequential"
    assert nearest_built("two_phase", frozenset({"fine", "sequential"})) == "sequential"
    assert nearest_built("standard", frozenset({"fine"})) == "fine"


def test_override_beats_explicit_tier() -> None:
    p = ControllerPolicy(compound_execution_model="standard")
    kw: dict[str, Any] = {"has_tools": False, "fine_output_per_agent": None, "fine_runs": 0}
    assert select_tier(p, built_tiers=ALL_TIERS, **kw).tier == "standard"  # type: ignore[arg-type]
    over = select_tier(p, built_tiers=ALL_TIERS, override="sequential", **kw)  # type: ignore[arg-type]
    assert over.tier == "sequential"
    assert over.reasons == ("escalation override sequential beats the tier selection",)


# --------------------------------------------------------------------------- gate units
def test_shadow_verdicts() -> None:
    ok = shadow_verdict([("standard", None), ("two_phase", 0.8)], FLOOR)
    assert (ok.outcome, ok.tier, ok.judged, ok.judge_failures) == ("accept", "two_phase", 1, 1)
    blocked = shadow_verdict([("standard", 0.7)], FLOOR)
    assert (blocked.outcome, blocked.tier) == ("block", None)
    nothing = shadow_verdict([("standard", None)], FLOOR)
    assert nothing.outcome == "no_observation"


def test_ladder_needs_a_floor_and_latency_gate_is_off_by_default() -> None:
    with pytest.raises(ValueError, match="quality_floor"):
        ladder_step(
            [0.5],
            scores_seen=1,
            tier="standard",
            base_tier="standard",
            override=None,
            fail_streak=0,
            ok_streak=0,
            policy=ControllerPolicy(),
            built_tiers=frozenset({"fine", "standard"}),
        )
    assert latency_gate([100.0, 100.0], ControllerPolicy()) is None
    assert latency_gate([3.0], ControllerPolicy(latency_threshold_ms=1000)) is None


# --------------------------------------------------------------------------- decide
def test_fresh_group_runs_fine() -> None:
    d = auto([])
    assert (d.tier, d.shadow, d.shadow_tiers) == ("fine", False, ())
    assert d.reasons == (
        "fine: 0 of 3 fresh fine runs needed before switching "
        "(min_observations 3 x min(1 + 0 revert(s), 5))",
    )
    assert d.state == ControllerState(required_observations=3)


def test_low_scores_stay_fine() -> None:
    history = fine_runs(0, 4, tools=0)
    d = auto(history)
    assert d.tier == "fine" and not d.shadow
    assert d.reasons == ("fine: confidence 0.00 < 0.80: 0/4 recent fine scores >= compose_at 0.23",)


def test_switch_without_gate_runs_compound_directly() -> None:
    policy = ControllerPolicy()  # no quality floor: the gate is inactive even with a judge
    history = fine_runs(0, 3)
    d = auto(history, policy)
    assert (d.tier, d.shadow) == ("standard", False)
    assert d.reasons == (
        "switch to compound: confidence 1.00 >= 0.80: 3/3 recent fine scores >= compose_at 0.23",
        "tier auto: mean fine output 1000 tokens/agent over 3 fine runs < 1500 -> standard",
        "quality gate inactive (no judge or no quality_floor): run standard directly",
    )
    history.append(ob(3, "standard"))
    d = auto(history, policy)
    assert d.tier == "standard"
    assert d.state.mode == "compound" and d.state.switches == 1
    assert d.reasons[0] == "last run: ran standard as decided: the group is now compound"


def test_switch_run_is_a_shadow_run_and_accepts() -> None:
    history = fine_runs(0, 3)
    d = auto(history)
    assert (d.tier, d.shadow, d.shadow_tiers) == ("fine", True, ("standard",))
    assert d.reasons[-1] == (
        "quality gate active: shadow-evaluate standard beside fine on the next run; "
        "the user gets fine"
    )
    history += shadow_run(3, ("standard", 0.82))
    d = auto(history)
    assert (d.tier, d.shadow) == ("standard", False)
    assert d.reasons[:2] == (
        "last run: shadow standard judged 0.82 >= floor 0.75",
        "last run: shadow gate passed: switch to standard",
    )
    assert d.state.mode == "compound" and d.state.tier == "standard"
    assert d.state.quality_windows == {"standard": (0.82,)}
    assert d.state.tier_override is None


def test_shadow_block_reverts_with_back_off() -> None:
    history = fine_runs(0, 3) + shadow_run(3, ("standard", 0.6))
    d = auto(history)
    assert (d.tier, d.shadow) == ("fine", False)
    assert d.reasons == (
        "last run: shadow standard judged 0.60 < floor 0.75",
        "last run: shadow gate blocked the switch: no tier reached the floor; staying fine "
        "(revert 1; the next switch needs 6 fresh fine runs)",
        "fine: 0 of 6 fresh fine runs needed before switching "
        "(min_observations 3 x min(1 + 1 revert(s), 5))",
    )
    assert (d.state.revert_count, d.state.revert_floor) == (1, len(history))
    # P6: only post-revert observations count; 5 fresh high scores are not enough
    history += fine_runs(4, 5)
    assert not auto(history).shadow
    assert auto(history).state.fresh_observations == 5
    history += fine_runs(9, 1)
    assert auto(history).shadow


def test_back_off_grows_with_each_blocked_switch() -> None:
    history: list[Observation] = []
    run = 0
    needed = []
    for _ in range(5):
        count = 0
        while not auto(history).shadow:
            history.append(ob(run))
            run += 1
            count += 1
        needed.append(count)
        history += shadow_run(run, ("standard", 0.5))
        run += 1
    assert needed == [3, 6, 9, 12, 15]
    assert auto(history).state.revert_count == 5
    assert auto(history).state.required_observations == 15  # capped at x5


def test_shadow_walk_upward_with_auto_tier_persists_the_override() -> None:
    history = fine_runs(0, 3)
    d = auto(history, built_tiers=ALL_TIERS)
    assert d.shadow_tiers == ("standard", "two_phase", "sequential")
    assert "shadow-evaluate standard, then two_phase, then sequential" in d.reasons[-1]
    history += shadow_run(3, ("standard", 0.6), ("two_phase", 0.8))
    d = auto(history, built_tiers=ALL_TIERS)
    assert d.tier == "two_phase"
    assert d.state.tier_override == "two_phase"
    assert d.reasons[:3] == (
        "last run: shadow standard judged 0.60 < floor 0.75",
        "last run: shadow two_phase judged 0.80 >= floor 0.75",
        "last run: shadow gate passed: switch to two_phase "
        "(persisted as the tier override; the walk started at standard)",
    )
    # P7: the rejected standard score stays in its own window
    assert d.state.quality_windows == {"standard": (0.6,), "two_phase": (0.8,)}
    history.append(ob(4, "two_phase", quality=0.72))
    d = auto(history, built_tiers=ALL_TIERS)
    assert d.state.rolling_quality["two_phase"] == pytest.approx(0.76)  # not polluted by 0.6
    assert (d.tier, d.state.fail_streak, d.state.ok_streak) == ("two_phase", 0, 1)


def test_explicit_policy_tier_tries_only_that_tier() -> None:
    policy = GATED.replace(compound_execution_model="standard")
    d = auto(fine_runs(0, 3), policy, built_tiers=ALL_TIERS)
    assert d.shadow_tiers == ("standard",)


def test_rolling_revert_without_escalation() -> None:
    policy = GATED.replace(escalation_enabled=False)
    history = switched(policy)
    history.append(ob(4, "standard", quality=0.6))
    d = auto(history, policy)
    assert (d.tier, d.state.mode, d.state.revert_count) == ("fine", "fine", 1)
    assert d.reasons[0] == (
        "last run: rolling quality of standard 0.70 < floor 0.75 over 2 score(s): reverted to "
        "fine (revert 1; the next switch needs 6 fresh fine runs)"
    )
    assert d.state.quality_windows == {}  # windows restart after a revert


def test_rolling_mean_damps_one_low_score() -> None:
    history = switched(GATED.replace(escalation_enabled=False))
    history.append(ob(4, "standard", quality=0.72))  # mean (0.8 + 0.72) / 2 = 0.76
    d = auto(history, GATED.replace(escalation_enabled=False))
    assert d.tier == "standard"
    assert d.reasons[0] == "last run: rolling quality of standard 0.76 >= floor 0.75"


def test_escalate_then_de_escalate() -> None:
    history = switched(built_tiers=ALL_TIERS)
    history.append(ob(4, "standard", quality=0.6))
    d = auto(history, built_tiers=ALL_TIERS)
    assert (d.tier, d.state.fail_streak) == ("standard", 1)
    assert d.reasons[0] == (
        "last run: rolling quality of standard 0.70 < floor 0.75: failure 1 of 2 before escalating"
    )
    history.append(ob(5, "standard", quality=0.6))
    d = auto(history, built_tiers=ALL_TIERS)
    assert (d.tier, d.state.tier_override) == ("two_phase", "two_phase")
    assert (d.state.fail_streak, d.state.ok_streak) == (0, 0)
    assert d.reasons[0] == (
        "last run: rolling quality of standard 0.67 < floor 0.75 for 2 consecutive readings: "
        "escalated standard -> two_phase"
    )
    for run in range(6, 10):
        history.append(ob(run, "two_phase", quality=0.9))
        assert auto(history, built_tiers=ALL_TIERS).tier == "two_phase"
    assert auto(history, built_tiers=ALL_TIERS).state.ok_streak == 4
    history.append(ob(10, "two_phase", quality=0.9))
    d = auto(history, built_tiers=ALL_TIERS)
    assert (d.tier, d.state.tier_override, d.state.ok_streak) == ("standard", None, 0)
    assert d.reasons[0] == (
        "last run: rolling quality of two_phase 0.90 >= floor 0.75 for 5 consecutive readings: "
        "de-escalated two_phase -> standard (override cleared)"
    )


def test_hard_revert_from_the_top_built_tier() -> None:
    history = switched()  # only fine and standard are built: standard is the top tier
    history += [ob(4, "standard", quality=0.6), ob(5, "standard", quality=0.6)]
    d = auto(history)
    assert (d.tier, d.state.mode, d.state.revert_count) == ("fine", "fine", 1)
    assert d.reasons[0] == (
        "last run: rolling quality of standard 0.67 < floor 0.75 for 2 consecutive readings at "
        "the top built tier standard: hard revert to fine (revert 1; the next switch needs 6 "
        "fresh fine runs)"
    )


def test_hard_revert_after_climbing_the_whole_ladder() -> None:
    history = switched(built_tiers=ALL_TIERS)
    tiers_seen = []
    run = 4
    while auto(history, built_tiers=ALL_TIERS).tier != "fine":
        tier = auto(history, built_tiers=ALL_TIERS).tier
        tiers_seen.append(tier)
        history.append(ob(run, tier, quality=0.5))
        run += 1
    assert tiers_seen == [
        "standard",
        "standard",
        "two_phase",
        "two_phase",
        "sequential",
        "sequential",
    ]
    d = auto(history, built_tiers=ALL_TIERS)
    assert "at the top built tier sequential: hard revert to fine" in d.reasons[0]
    assert d.state.tier_override is None  # the next switch walks from the base tier again


def test_judge_failures_are_no_observation() -> None:
    history = fine_runs(0, 3) + shadow_run(3, ("standard", None))
    d = auto(history)
    assert (d.tier, d.shadow, d.state.revert_count, d.state.judge_failures) == (
        "fine",
        True,
        0,
        1,
    )
    assert d.reasons[:2] == (
        "last run: shadow standard: the judge failed (no score; not counted)",
        "last run: shadow gate has no score: the switch is retried on the next run",
    )
    history = switched()
    history.append(ob(4, "standard", quality=None))
    d = auto(history)
    assert (d.tier, d.state.fail_streak, d.state.judge_failures) == ("standard", 0, 1)
    assert d.state.quality_windows == {"standard": (0.8,)}
    assert d.reasons[0] == (
        "last run: no score for this standard run (no fine output of the same task to judge "
        "against, or the judge failed): not counted"
    )


def test_gate_needs_a_judge_and_a_floor() -> None:
    history = fine_runs(0, 3)
    assert auto(history, GATED, judge_active=False).tier == "standard"
    assert auto(history, ControllerPolicy(), judge_active=True).tier == "standard"
    assert auto(history, GATED, judge_active=True).shadow


def test_score_based_switch_down() -> None:
    policy = ControllerPolicy()
    kw: dict[str, Any] = {"depth": 1, "judge_active": False}
    history = fine_runs(0, 3)
    assert auto(history, policy, **kw).tier == "standard"
    history += [ob(3 + i, "standard") for i in range(3)]  # compound scores 0.0795 <= 0.10
    d = auto(history, policy, **kw)
    assert (d.tier, d.state.revert_count) == ("fine", 1)
    assert d.reasons[0] == (
        "last run: revert confidence 1.00 >= 0.80: 3/3 recent compound scores <= decompose_at "
        "0.1: reverted to fine (revert 1; the next switch needs 6 fresh fine runs)"
    )


def test_compound_scores_never_feed_the_switch_up() -> None:
    # Out-of-band compound runs scoring 1.0 (error-rate override) are not fine evidence.
    history = [ob(i, "standard", errors=1) for i in range(5)]
    d = auto(history)
    assert d.state.fresh_observations == 0 and d.state.confidence == 0.0
    assert d.state.last_score is not None and d.state.last_score.score == 1.0
    assert d.reasons[0] == (
        "last run: a standard run the controller did not choose (locked mode): evidence only"
    )


def test_latency_gate_reverts_when_set() -> None:
    policy = ControllerPolicy(latency_threshold_ms=1500)
    history = fine_runs(0, 3)
    history += [ob(3, "standard", latency=2.0)]
    assert auto(history, policy).tier == "standard"  # one run is not a rolling mean
    history += [ob(4, "standard", latency=2.0)]
    d = auto(history, policy)
    assert d.tier == "fine"
    assert d.reasons[0] == (
        "last run: rolling compound latency 2000 ms > latency_threshold_ms 1500: reverted to "
        "fine (revert 1; the next switch needs 6 fresh fine runs)"
    )


def test_verbose_group_shadows_from_a_higher_tier() -> None:
    history = fine_runs(0, 3, output=4000)  # 2000 tokens per agent
    d = auto(history, built_tiers=ALL_TIERS)
    assert d.shadow_tiers == ("two_phase", "sequential")
    d = auto(history)  # two_phase is not built today
    assert d.shadow_tiers == ("standard",)
    assert "two_phase is not built; using the nearest built tier standard" in d.reasons


def test_observe_mode_records_only() -> None:
    history = fine_runs(0, 3)
    d = decide(history, GATED, mode="observe", n_agents=2, judge_active=True)
    assert (d.tier, d.shadow, d.shadow_tiers) == ("fine", False, ())
    assert d.reasons == (
        "observe mode: run fine and record only (no switching, no gate)",
        "auto would shadow-evaluate standard (switch to compound: confidence 1.00 >= 0.80: "
        "3/3 recent fine scores >= compose_at 0.23)",
    )
    # observed runs are evidence: switching to auto acts on them at once
    assert auto(history).shadow


@pytest.mark.parametrize(
    ("mode", "tier", "reason"),
    [
        (
            "fine",
            "fine",
            "mode fine is locked: run fine; the controller and the judge are bypassed",
        ),
        (
            "compound",
            "standard",
            "mode compound is locked: run standard; the controller and the judge are bypassed",
        ),
        (
            "standard",
            "standard",
            "mode standard is locked: run standard; the controller and the judge are bypassed",
        ),
    ],
)
def test_locked_modes_bypass_the_controller(mode: str, tier: str, reason: str) -> None:
    # A history in which auto would shadow-evaluate: locked modes ignore it.
    d = decide(fine_runs(0, 3), GATED, mode=mode, n_agents=2, judge_active=True)
    assert (d.tier, d.shadow, d.reasons) == (tier, False, (reason,))
    assert d.state.confidence == 1.0  # the state is still reported


def test_locked_compound_runs_do_not_switch_the_controller() -> None:
    history = [*fine_runs(0, 1), ob(1, "standard"), ob(2, "standard")]
    d = auto(history)
    assert d.state.mode == "fine" and d.state.switches == 0
    assert d.tier == "fine"


def test_single_agent_guard() -> None:
    history = fine_runs(0, 5, n=1)
    d = auto(history, n_agents=1)
    assert d.tier == "fine" and not d.shadow
    assert d.reasons == ("single-agent guard: a group of 1 agent never runs compound",)
    locked = decide(history, GATED, mode="compound", n_agents=1)
    assert locked.tier == "fine"
    assert "single-agent guard" in locked.reasons[0]
    shadowed = history + shadow_run(5, ("standard", 0.9))
    assert auto(shadowed, n_agents=1).state.mode == "fine"


def test_bad_arguments() -> None:
    with pytest.raises(CapsuleConfigError) as err:
        decide([], GATED, mode="merged", n_agents=2)
    assert err.value.code == "bad_mode" and "'observe'" in str(err.value)
    with pytest.raises(CapsuleConfigError) as err:
        decide([], GATED, mode="auto", n_agents=2, built_tiers=frozenset({"fine", "turbo"}))
    assert err.value.code == "bad_mode" and "turbo" in str(err.value)
    with pytest.raises(CapsuleConfigError, match="must include 'fine'"):
        decide([], GATED, mode="auto", n_agents=2, built_tiers=frozenset({"standard"}))
    with pytest.raises(CapsuleConfigError) as err:
        decide([], "balanced", mode="auto", n_agents=2)  # type: ignore[arg-type]
    assert err.value.code == "bad_policy"
    with pytest.raises(ValueError, match="n_agents"):
        decide([], GATED, mode="auto", n_agents=0)


def test_decision_is_data_and_readable() -> None:
    history = fine_runs(0, 3) + shadow_run(3, ("standard", 0.82))
    d = auto(history)
    data = json.loads(json.dumps(d.to_dict()))
    assert data["tier"] == "standard" and data["shadow"] is False
    assert data["state"]["quality_windows"] == {"standard": [0.82]}
    assert data["state"]["last_score"]["tier"] == "fine"
    text = str(auto(fine_runs(0, 3)))
    assert text.startswith("run fine (shadow-evaluate standard beside it) [mode auto]")
    assert "  - quality gate active" in text
    assert controller_state(history, GATED, n_agents=2, judge_active=True) == d.state


# --------------------------------------------------------------------------- replay
def drive(
    policy: ControllerPolicy,
    judge: Callable[[int, str], float | None],
    runs: int,
    **kw: Any,
) -> tuple[list[Observation], list[tuple[int, Decision]]]:
    """Run a scripted loop: decide, run what was decided, append the observations."""
    history: list[Observation] = []
    decisions: list[tuple[int, Decision]] = []
    floor = policy.quality_floor or 0.0
    for run in range(runs):
        d = auto(history, policy, **kw)
        decisions.append((len(history), d))
        if d.shadow:
            history.append(ob(run))
            for tier in d.shadow_tiers:
                q = judge(run, tier)
                history.append(ob(run, tier, quality=q, shadow=True))
                if q is not None and q >= floor:
                    break
        elif d.tier == "fine":
            history.append(ob(run))
        else:
            history.append(ob(run, d.tier, quality=judge(run, d.tier)))
    return history, decisions


def test_replay_reproduces_every_step() -> None:
    rank = {"standard": 0, "two_phase": 1, "sequential": 2}

    def judge(run: int, tier: str) -> float | None:
        if run % 7 == 6:
            return None  # the judge fails now and then
        if run < 12:
            return 0.6 + 0.1 * rank[tier]  # standard fails, two_phase passes
        if run < 24:
            return 0.95  # everything passes: de-escalation
        return 0.4  # everything fails: climb, then hard revert

    kw: dict[str, Any] = {"built_tiers": ALL_TIERS}
    history, decisions = drive(GATED, judge, 60, **kw)
    seen = {d.tier for _, d in decisions} | {"shadow" for _, d in decisions if d.shadow}
    assert {"fine", "standard", "two_phase", "sequential", "shadow"} <= seen
    final = auto(history, **kw)
    assert final.state.revert_count >= 1 and final.state.judge_failures >= 1
    # the same history twice gives equal decisions
    assert auto(history, **kw) == final
    assert auto(list(history), **kw).to_dict() == final.to_dict()
    # replaying the history step by step reproduces each step's decision
    for length, decision in decisions:
        assert auto(history[:length], **kw) == decision


def test_de_escalation_never_drops_below_the_automatic_tier() -> None:
    kw: dict[str, Any] = {"built_tiers": ALL_TIERS, "has_tools": True}  # base tier two_phase
    history = fine_runs(0, 3)
    assert auto(history, **kw).shadow_tiers == ("two_phase", "sequential")
    history += shadow_run(3, ("two_phase", 0.6), ("sequential", 0.9))
    assert auto(history, **kw).state.tier_override == "sequential"
    history += [ob(4 + i, "sequential", quality=0.9) for i in range(5)]
    d = auto(history, **kw)
    assert (d.tier, d.state.tier_override) == ("two_phase", None)
    assert d.reasons[0].endswith("de-escalated sequential -> two_phase (override cleared)")
