"""Internal: replay a group's observation history into a working state.

Observations of one run (the fine record and any shadow records) share a ``run_id`` and
form one run, in order of its first record. Before each run the replay recomputes
what ``auto`` would have decided; the run's evidence is then read against it:

* a **fine** record adds a fine score (switch-up evidence, P6: post-revert only) and a
  verbosity reading;
* **shadow** records (``shadow=True``, ``tier`` = the compound tier that ran beside fine)
  go to the shadow gate while the group is fine and the gate is active;
* a **compound** record commits a switch when ``auto`` had decided to switch without a
  gate, and otherwise feeds the gate, the ladder and the switch-down check when it is the
  tier the group is in;
* anything else (runs of a locked mode or of ``observe`` mode) is recorded as evidence
  only: fine runs still feed the switch-up score, which is what onboarding with
  ``observe`` is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from langgraph_capsules.controller.audit import (
    AuditWork,
    audit_due,
    judge_pause_reason,
    judge_paused,
    observe_run,
)
from langgraph_capsules.controller.gate import (
    gate_active,
    ladder_step,
    latency_gate,
    shadow_verdict,
)
from langgraph_capsules.controller.score import ScoreBreakdown, composition_score
from langgraph_capsules.controller.state import ControllerState
from langgraph_capsules.controller.switching import (
    SwitchCheck,
    required_observations,
    switch_down,
    switch_up,
)
from langgraph_capsules.controller.tiers import (
    TierChoice,
    check_built_tiers,
    select_tier,
    tier_rank,
)
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.types import COMPOUND_TIERS, Observation, Tier

__all__ = ["MIN_AGENTS", "Context", "Plan", "Work", "auto_plan", "freeze", "make_context", "replay"]

MIN_AGENTS = 2
"""Single-agent guard: smaller groups never run compound (Table 18)."""


@dataclass(frozen=True)
class Context:
    """The fixed inputs of one replay."""

    policy: ControllerPolicy
    n_agents: int
    depth: int
    has_tools: bool
    built: frozenset[Tier]
    gate: bool


@dataclass
class Work:
    """Mutable replay state; frozen into a ControllerState at the end."""

    mode: Literal["fine", "compound"] = "fine"
    tier: Tier = "fine"
    override: Tier | None = None
    revert_count: int = 0
    revert_floor: int = 0
    fresh_fine: list[float] = field(default_factory=list)
    fine_outputs: list[float] = field(default_factory=list)
    stint_scores: list[float] = field(default_factory=list)
    stint_latency: list[float] = field(default_factory=list)
    quality: dict[str, list[float]] = field(default_factory=dict)
    quality_seen: dict[str, int] = field(default_factory=dict)
    fail_streak: int = 0
    ok_streak: int = 0
    judge_failures: int = 0
    switches: int = 0
    last_score: ScoreBreakdown | None = None
    observations: int = 0
    runs: int = 0
    events: list[str] = field(default_factory=list)
    audit: AuditWork = field(default_factory=AuditWork)
    """Audit sampling and judge health (``controller/audit.py``)."""

    def fine_output_per_agent(self, window: int) -> tuple[float | None, int]:
        recent = self.fine_outputs[-window:]
        return (sum(recent) / len(recent) if recent else None), len(recent)

    def record_quality(self, tier: Tier, quality: float, window: int) -> None:
        scores = self.quality.setdefault(tier, [])
        scores.append(quality)
        del scores[:-window]
        self.quality_seen[tier] = self.quality_seen.get(tier, 0) + 1

    def enter_compound(self, tier: Tier) -> None:
        self.mode, self.tier = "compound", tier
        self.stint_scores, self.stint_latency = [], []
        self.fail_streak = self.ok_streak = 0
        self.switches += 1

    def revert(self, position: int, *, clear_override: bool) -> None:
        # P6: later switching reads only observations after this point; the quality
        # windows start again too (the paper resets the window on revert).
        self.mode, self.tier = "fine", "fine"
        self.revert_count += 1
        self.revert_floor = position
        self.fresh_fine = []
        self.stint_scores, self.stint_latency = [], []
        self.quality, self.quality_seen = {}, {}
        self.fail_streak = self.ok_streak = 0
        if clear_override:
            self.override = None


@dataclass(frozen=True)
class Plan:
    """What ``auto`` runs next: the user's tier, the shadow tiers and why."""

    tier: Tier
    shadow_tiers: tuple[Tier, ...]
    reasons: tuple[str, ...]
    audit: bool = False
    """Audit the compound run: also run fine (unless the judge is reference-free) and
    judge compound against it."""


def _choice(work: Work, ctx: Context, *, override: Tier | None) -> TierChoice:
    per_agent, runs = work.fine_output_per_agent(ctx.policy.window_size)
    return select_tier(
        ctx.policy,
        has_tools=ctx.has_tools,
        fine_output_per_agent=per_agent,
        fine_runs=runs,
        built_tiers=ctx.built,
        override=override,
    )


def auto_plan(work: Work, ctx: Context) -> Plan:
    """What ``auto`` decides for the next run from the current replay state."""
    if ctx.n_agents < MIN_AGENTS:
        return Plan(
            "fine",
            (),
            (f"single-agent guard: a group of {ctx.n_agents} agent never runs compound",),
        )
    if work.mode == "compound":
        why = [f"compound: stay on {work.tier}"]
        if work.override is not None:
            why[0] += f" (escalation override {work.override})"
        q = work.quality.get(work.tier)
        if ctx.gate and q:
            why.append(
                f"rolling quality of {work.tier} {sum(q) / len(q):.2f} over {len(q)} score(s); "
                f"floor {ctx.policy.quality_floor:.2f}"
            )
        why.append(switch_down(work.stint_scores, ctx.policy).reason)
        if ctx.gate:
            call = audit_due(
                work.audit,
                ctx.policy,
                runs=work.runs,
                tier=work.tier,
                fail_streak=work.fail_streak,
                tier_readings=work.quality_seen.get(work.tier, 0),
                last_below_floor=q[-1] < (ctx.policy.quality_floor or 0.0) if q else False,
            )
            why.append(call.reason)
            return Plan(work.tier, (), tuple(why), audit=call.audit)
        return Plan(work.tier, (), tuple(why))
    check = switch_up(work.fresh_fine, ctx.policy, work.revert_count)
    if not check.fires:
        return Plan("fine", (), (f"fine: {check.reason}",))
    choice = _choice(work, ctx, override=work.override)
    reasons = [f"switch to compound: {check.reason}", *choice.reasons]
    if choice.tier == "fine":
        reasons.append("no compound tier is built: staying fine")
        return Plan("fine", (), tuple(reasons))
    paused = ctx.gate and judge_paused(work.audit, work.runs)
    if ctx.gate and not paused:
        tiers: tuple[Tier, ...] = (choice.tier,)
        if ctx.policy.compound_execution_model == "auto":
            rank = tier_rank(choice.tier)
            tiers += tuple(t for t in COMPOUND_TIERS if t in ctx.built and tier_rank(t) > rank)
        reasons.append(
            f"quality gate active: shadow-evaluate {', then '.join(tiers)} beside fine on the "
            "next run; the user gets fine"
        )
        return Plan("fine", tiers, tuple(reasons))
    if paused:
        # with a quality floor set, no switch goes ungated: stay fine (the original app's
        # cost) until the pause ends and a shadow evaluation can judge the switch
        reasons.append(f"{judge_pause_reason(work.audit)}: staying fine, no switch goes ungated")
        return Plan("fine", (), tuple(reasons))
    reasons.append(
        f"quality gate inactive (no judge or no quality_floor): run {choice.tier} directly"
    )
    return Plan(choice.tier, (), tuple(reasons))


def _compound_tier(value: str) -> Tier | None:
    return next((t for t in COMPOUND_TIERS if t == value), None)


def _runs(history: Sequence[Observation]) -> list[tuple[int, list[Observation]]]:
    """Split the history into runs: the observations sharing a ``run_id``, in order of
    each run's first record, paired with the position just past its last record.

    A run's records (fine, then its shadow records) are appended one by one, so another
    worker sharing the store may append between them; grouping by ``run_id`` instead of
    by adjacency keeps such a run whole, and every worker still reads the same runs."""
    runs: dict[str, tuple[int, list[Observation]]] = {}
    for i, obs in enumerate(history):
        key = str(obs.get("run_id"))
        if key in runs:
            runs[key][1].append(obs)
            runs[key] = (i + 1, runs[key][1])
        else:
            runs[key] = (i + 1, [obs])
    return list(runs.values())


def _compound_run(work: Work, ctx: Context, obs: Observation, score: float, end: int) -> None:
    """Gate, ladder, latency gate and switch-down for a run of the current compound tier."""
    policy = ctx.policy
    if obs.get("merged_members") == 0:
        # nothing could merge (tools, another model, calls outside the proxy) or every
        # section failed: a compound tier saves nothing here, so never settle on it
        tier = work.tier
        work.revert(end, clear_override=False)
        work.events.append(
            _backoff(
                f"nothing merged on this {tier} run (see the run's notes in the report): "
                "back to fine",
                work,
                ctx,
            )
        )
        return
    work.stint_scores.append(score)
    work.stint_latency.append(float(obs.get("latency_s", 0.0) or 0.0))
    quality = obs.get("quality")
    if ctx.gate:
        if quality is None and judge_paused(work.audit, work.runs - 1):
            work.events.append(f"this {work.tier} run was not judged: the judge is paused")
        elif quality is None:
            work.judge_failures += 1
            work.events.append(
                f"the judge failed on this {work.tier} run (no score; not counted)"
                if obs.get("judge_error")
                else f"no score for this {work.tier} run (no fine output of the same task to "
                "judge against, or the judge failed): not counted"
            )
        else:
            tier = work.tier
            work.record_quality(tier, float(quality), policy.window_size)
            base = _choice(work, ctx, override=None).tier
            step = ladder_step(
                work.quality[tier],
                scores_seen=work.quality_seen[tier],
                tier=tier,
                base_tier=base,
                override=work.override,
                fail_streak=work.fail_streak,
                ok_streak=work.ok_streak,
                policy=policy,
                built_tiers=ctx.built,
            )
            if step.action == "revert":
                work.revert(end, clear_override=True)
                work.events.append(_backoff(step.reason, work, ctx))
                return
            work.events.append(step.reason)
            work.fail_streak, work.ok_streak = step.fail_streak, step.ok_streak
            work.override = step.override
            if step.tier != tier:
                # A new rung starts a new stint for the score and latency windows.
                work.tier = step.tier
                work.stint_scores, work.stint_latency = [], []
                return
    elif quality is not None:
        work.record_quality(work.tier, float(quality), policy.window_size)
    slow = latency_gate(work.stint_latency, policy)
    if slow is not None:
        work.revert(end, clear_override=False)
        work.events.append(_backoff(slow, work, ctx))
        return
    check = switch_down(work.stint_scores, policy)
    if check.fires:
        work.revert(end, clear_override=False)
        work.events.append(_backoff(f"{check.reason}: reverted to fine", work, ctx))


def _backoff(reason: str, work: Work, ctx: Context) -> str:
    need = required_observations(ctx.policy, work.revert_count)
    return f"{reason} (revert {work.revert_count}; the next switch needs {need} fresh fine runs)"


def _replay_run(work: Work, ctx: Context, end: int, run: list[Observation]) -> None:
    main = [o for o in run if not o.get("shadow")]
    shadows = [o for o in run if o.get("shadow")]
    # What auto had decided before this run, read against the run's evidence; only
    # needed when the run holds compound or shadow records.
    needs_plan = bool(shadows) or any(o.get("tier") != "fine" for o in main)
    plan = auto_plan(work, ctx) if needs_plan else None
    work.events = []
    work.runs += 1
    work.observations += len(run)
    if main:
        obs = main[-1]
        tier = str(obs.get("tier", "fine"))
        compound = _compound_tier(tier)
        bd = composition_score(obs, ctx.policy, n_agents=ctx.n_agents, depth=ctx.depth)
        work.last_score = bd
        if tier == "fine":
            work.fresh_fine.append(bd.score)
            members = obs.get("members") or {}
            work.fine_outputs.append(
                float(obs.get("output_tokens", 0) or 0) / (len(members) or ctx.n_agents)
            )
            if work.mode == "compound":
                work.events.append("a fine run while compound (locked or observe): evidence only")
        elif compound is not None:
            if work.mode == "fine" and plan is not None and plan.tier != "fine":
                work.enter_compound(compound)
                work.events.append(f"ran {tier} as decided: the group is now compound")
            if work.mode == "compound" and compound == work.tier:
                _compound_run(work, ctx, obs, bd.score, end)
            else:
                work.events.append(
                    f"a {tier} run the controller did not choose (locked mode): evidence only"
                )
        else:
            work.events.append(f"an observation with unknown tier {tier!r}: ignored")
    if shadows:
        readings: list[tuple[Tier, float | None]] = []
        inputs: dict[Tier, int] = {}
        for o in shadows:
            t = _compound_tier(str(o.get("tier")))
            if t is None:
                work.events.append(f"a shadow observation with tier {o.get('tier')!r}: ignored")
                continue
            q = o.get("quality")
            readings.append((t, None if q is None else float(q)))
            inputs[t] = int(o.get("input_tokens", 0) or 0)
        fine = [o for o in main if o.get("tier") == "fine"]
        fine_input = int(fine[-1].get("input_tokens", 0) or 0) if fine else None
        _shadow_run(work, ctx, plan, readings, end, inputs=inputs, fine_input=fine_input)
    work.events.extend(observe_run(work.audit, run, run_number=work.runs, policy=ctx.policy))


def _shadow_run(
    work: Work,
    ctx: Context,
    plan: Plan | None,
    readings: list[tuple[Tier, float | None]],
    end: int,
    *,
    inputs: dict[Tier, int] | None = None,
    fine_input: int | None = None,
) -> None:
    window = ctx.policy.window_size
    floor = ctx.policy.quality_floor
    pending = plan is not None and bool(plan.shadow_tiers)
    if not (pending and floor is not None and work.mode == "fine"):
        for tier, q in readings:
            if q is not None:
                work.record_quality(tier, q, window)
        work.events.append("shadow scores recorded only (the shadow gate was not pending)")
        return
    verdict = shadow_verdict(readings, floor, inputs=inputs, fine_input=fine_input)
    work.judge_failures += verdict.judge_failures
    for tier, q in readings:
        if q is not None:
            work.record_quality(tier, q, window)
    work.events.extend(verdict.reasons[:-1])
    if verdict.outcome == "accept" and verdict.tier is not None:
        start_tier = plan.shadow_tiers[0] if plan and plan.shadow_tiers else verdict.tier
        note = ""
        if verdict.tier != start_tier:
            work.override = verdict.tier
            note = f" (persisted as the tier override; the walk started at {start_tier})"
        work.enter_compound(verdict.tier)
        work.events.append(f"{verdict.reasons[-1]}{note}")
    elif verdict.outcome == "block":
        work.revert(end, clear_override=False)
        work.events.append(_backoff(verdict.reasons[-1], work, ctx))
    else:
        work.events.append(verdict.reasons[-1])


def replay(history: Sequence[Observation], ctx: Context) -> Work:
    """Fold the history, run by run, into a working state (events of the last run kept)."""
    work = Work()
    for end, run in _runs(history):
        _replay_run(work, ctx, end, run)
    return work


def freeze(work: Work, ctx: Context) -> ControllerState:
    """The frozen, public view of a working state."""
    check: SwitchCheck
    if work.mode == "compound":
        check = switch_down(work.stint_scores, ctx.policy)
    else:
        check = switch_up(work.fresh_fine, ctx.policy, work.revert_count)
    per_agent, runs = work.fine_output_per_agent(ctx.policy.window_size)
    windows = {t: tuple(q) for t, q in work.quality.items() if q}
    return ControllerState(
        mode=work.mode,
        tier=work.tier,
        tier_override=work.override,
        confidence=check.confidence,
        fresh_observations=check.fresh,
        required_observations=check.required,
        revert_count=work.revert_count,
        revert_floor=work.revert_floor,
        fail_streak=work.fail_streak,
        ok_streak=work.ok_streak,
        quality_windows=windows,
        rolling_quality={t: sum(q) / len(q) for t, q in windows.items()},
        last_score=work.last_score,
        fine_output_per_agent=per_agent,
        fine_runs=runs,
        judge_failures=work.judge_failures,
        switches=work.switches,
        observations=work.observations,
        runs=work.runs,
    )


def make_context(
    policy: ControllerPolicy,
    n_agents: int,
    depth: int,
    has_tools: bool,
    built_tiers: frozenset[str],
    judge_active: bool,
) -> Context:
    """Validate the arguments shared by ``decide`` and ``controller_state``."""
    if not isinstance(policy, ControllerPolicy):
        raise CapsuleConfigError(
            f"policy must be a ControllerPolicy, got {type(policy).__name__}; "
            "use ControllerPolicy.coerce(...) first",
            code="bad_policy",
        )
    if n_agents < 1:
        raise ValueError(f"n_agents must be >= 1, got {n_agents}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    return Context(
        policy=policy,
        n_agents=n_agents,
        depth=depth,
        has_tools=has_tools,
        built=check_built_tiers(built_tiers),
        gate=gate_active(policy, judge_active),
    )
