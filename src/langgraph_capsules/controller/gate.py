"""Phase: the quality gate and the escalation ladder (spec 3.4; paper §5.1, §9.2, §9.3).

The gate is active only with a judge **and** a ``quality_floor``. It acts at two points:

* **Switch run (shadow gate).** The compound tier runs beside fine on the same input and
  is judged; the user gets fine. The first tier that scores at or above the floor is
  accepted; when none does, the switch is blocked and counts as a revert (back-off).
* **Compound runs (ladder).** Each judged run adds to its tier's quality window; q̄ is
  that window's mean. Below the floor the failure streak grows and, after
  ``escalation_min_failures`` readings, the group climbs one built tier, or reverts to
  fine from the top built tier (hard revert). At or above the floor the ok streak grows
  and, after ``escalation_decay_window`` readings, an escalated group drops one tier.
  Without escalation the group reverts as soon as q̄ < floor over at least 2 scores
  (Eq. 1). [ref] only *recommends* that revert; we flip to fine (P4).

A judge failure (quality ``None``) is no observation (P13): it neither passes nor fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from langgraph_capsules.controller.tiers import next_higher, next_lower, tier_rank
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.types import Tier

__all__ = [
    "MIN_SCORES_FOR_REVERT",
    "LadderStep",
    "ShadowVerdict",
    "gate_active",
    "ladder_step",
    "latency_gate",
    "shadow_verdict",
]

MIN_SCORES_FOR_REVERT = 2
"""Judge scores a tier needs before its rolling mean may revert the group (Eq. 1)."""


def gate_active(policy: ControllerPolicy, judge_active: bool) -> bool:
    """Whether the quality gate runs: a judge **and** a quality floor are both set.

    Args:
        policy: The group's policy.
        judge_active: Whether a judge is configured.

    Returns:
        ``True`` only with both.

    Example:
        >>> gate_active(ControllerPolicy(quality_floor=0.75), judge_active=False)
        False
    """
    return judge_active and policy.quality_floor is not None


@dataclass(frozen=True, kw_only=True)
class ShadowVerdict:
    """What a shadow run decided.

    Example:
        >>> shadow_verdict([("standard", None)], 0.75).outcome
        'no_observation'
    """

    outcome: Literal["accept", "block", "no_observation"]
    """``accept``: switch to ``tier``; ``block``: every judged tier fell below the floor;
    ``no_observation``: the judge failed on every tier."""
    tier: Tier | None
    """The accepted tier (``accept`` only)."""
    judged: int
    """Tiers that received a score."""
    judge_failures: int
    """Tiers whose judgement failed."""
    reasons: tuple[str, ...]
    """One line per shadow tier, then the verdict."""


def shadow_verdict(
    readings: Sequence[tuple[Tier, float | None]],
    floor: float,
    *,
    inputs: Mapping[Tier, int] | None = None,
    fine_input: int | None = None,
) -> ShadowVerdict:
    """Judge a shadow run: accept the first tier that scores at or above ``floor``.

    A ``standard`` shadow whose merged call sent more input tokens than the fine run
    beside it (``inputs``, ``fine_input``) is not accepted whatever its quality: with
    short prompts and little shared content the merged prompt's own wording costs more
    than the sharing saves, and a merge then saves calls at a higher token bill.

    Args:
        readings: ``(tier, quality)`` for each shadow tier in the order they ran; a
            ``None`` quality is a judge failure.
        floor: The quality floor.
        inputs: Input tokens each shadow tier sent on this run.
        fine_input: Input tokens of the fine run beside them.

    Returns:
        The verdict.

    Example:
        >>> v = shadow_verdict([("standard", 0.6), ("two_phase", 0.8)], 0.75)
        >>> (v.outcome, v.tier)
        ('accept', 'two_phase')
        >>> shadow_verdict([("standard", 0.9)], 0.75, inputs={"standard": 153},
        ...                fine_input=28).outcome
        'block'
    """
    lines: list[str] = []
    judged = failures = 0
    accepted: Tier | None = None
    for tier, quality in readings:
        if quality is None:
            failures += 1
            lines.append(f"shadow {tier}: the judge failed (no score; not counted)")
            continue
        judged += 1
        ok = quality >= floor
        lines.append(f"shadow {tier} judged {quality:.2f} {'>=' if ok else '<'} floor {floor:.2f}")
        sent = (inputs or {}).get(tier) if tier == "standard" else None
        if ok and sent is not None and fine_input and sent > fine_input:
            ok = False
            lines.append(
                f"shadow {tier} sent {sent} input tokens > fine's {fine_input}: the merge "
                "costs more input than the separate calls"
            )
        if ok and accepted is None:
            accepted = tier
    if accepted is not None:
        lines.append(f"shadow gate passed: switch to {accepted}")
        return ShadowVerdict(
            outcome="accept",
            tier=accepted,
            judged=judged,
            judge_failures=failures,
            reasons=tuple(lines),
        )
    if judged:
        lines.append("shadow gate blocked the switch: no tier reached the floor; staying fine")
        return ShadowVerdict(
            outcome="block", tier=None, judged=judged, judge_failures=failures, reasons=tuple(lines)
        )
    lines.append("shadow gate has no score: the switch is retried on the next run")
    return ShadowVerdict(
        outcome="no_observation",
        tier=None,
        judged=0,
        judge_failures=failures,
        reasons=tuple(lines),
    )


@dataclass(frozen=True, kw_only=True)
class LadderStep:
    """What one judged compound run did to the ladder.

    Example:
        >>> step = ladder_step([0.9], scores_seen=1, tier="standard", base_tier="standard",
        ...                    override=None, fail_streak=0, ok_streak=2,
        ...                    policy=ControllerPolicy(quality_floor=0.75),
        ...                    built_tiers=frozenset({"fine", "standard"}))
        >>> step.action, step.ok_streak
        ('stay', 3)
    """

    action: Literal["stay", "escalate", "de_escalate", "revert"]
    """``revert`` returns the group to fine (rolling revert or hard revert)."""
    tier: Tier
    """Tier of the next run (``fine`` after a revert)."""
    override: Tier | None
    """The persisted tier override after this step."""
    fail_streak: int
    """Consecutive below-floor readings after this step."""
    ok_streak: int
    """Consecutive at-or-above-floor readings after this step."""
    rolling: float
    """q̄: mean of the tier's quality window."""
    reason: str
    """Plain-English explanation."""


def ladder_step(
    window: Sequence[float],
    *,
    scores_seen: int,
    tier: Tier,
    base_tier: Tier,
    override: Tier | None,
    fail_streak: int,
    ok_streak: int,
    policy: ControllerPolicy,
    built_tiers: frozenset[Tier],
) -> LadderStep:
    """Update streaks and climb, descend or revert after one judged compound run.

    Args:
        window: The current tier's quality window, newest last (already holds this
            run's score).
        scores_seen: Scores recorded for this tier since the last revert (not capped by
            the window; Eq. 1 needs at least 2).
        tier: The compound tier that ran.
        base_tier: The tier automatic selection would pick without an override (the
            ladder never drops below it).
        override: The persisted override before this run.
        fail_streak: Failure streak before this run.
        ok_streak: Ok streak before this run.
        policy: The group's policy (``quality_floor`` must be set).
        built_tiers: Tiers that have a strategy (unbuilt rungs are skipped).

    Returns:
        The step.

    Raises:
        ValueError: When ``policy.quality_floor`` is ``None`` or the window is empty.

    Example:
        >>> p = ControllerPolicy(quality_floor=0.75)
        >>> s = ladder_step([0.8, 0.6, 0.6], scores_seen=3, tier="standard",
        ...                 base_tier="standard", override=None, fail_streak=1, ok_streak=0,
        ...                 policy=p, built_tiers=frozenset({"fine", "standard"}))
        >>> s.action, s.tier
        ('revert', 'fine')
    """
    floor = policy.quality_floor
    if floor is None or not window:
        raise ValueError("ladder_step needs a quality_floor and at least one score")
    rolling = sum(window) / len(window)
    mean = f"rolling quality of {tier} {rolling:.2f}"
    if rolling < floor:
        fail, ok = fail_streak + 1, 0
        below = f"{mean} < floor {floor:.2f}"
        if not policy.escalation_enabled:
            if scores_seen >= MIN_SCORES_FOR_REVERT:
                return LadderStep(
                    action="revert",
                    tier="fine",
                    override=None,
                    fail_streak=0,
                    ok_streak=0,
                    rolling=rolling,
                    reason=f"{below} over {len(window)} score(s): reverted to fine",
                )
            return _stay(
                tier,
                override,
                fail,
                ok,
                rolling,
                f"{below} on the first score: waiting for a second",
            )
        if fail < policy.escalation_min_failures:
            return _stay(
                tier,
                override,
                fail,
                ok,
                rolling,
                f"{below}: failure {fail} of {policy.escalation_min_failures} before escalating",
            )
        higher = next_higher(tier, built_tiers)
        if higher is not None:
            return LadderStep(
                action="escalate",
                tier=higher,
                override=higher,
                fail_streak=0,
                ok_streak=0,
                rolling=rolling,
                reason=f"{below} for {fail} consecutive readings: escalated {tier} -> {higher}",
            )
        if scores_seen >= MIN_SCORES_FOR_REVERT:
            return LadderStep(
                action="revert",
                tier="fine",
                override=None,
                fail_streak=0,
                ok_streak=0,
                rolling=rolling,
                reason=(
                    f"{below} for {fail} consecutive readings at the top built tier {tier}: "
                    "hard revert to fine"
                ),
            )
        return _stay(tier, override, fail, ok, rolling, f"{below} on the first score at {tier}")
    fail, ok = 0, ok_streak + 1
    above = f"{mean} >= floor {floor:.2f}"
    if override is not None and ok >= policy.escalation_decay_window:
        lower = next_lower(tier, built_tiers)
        target = (
            lower if lower is not None and tier_rank(lower) > tier_rank(base_tier) else base_tier
        )
        new_override = target if tier_rank(target) > tier_rank(base_tier) else None
        cleared = "" if new_override is not None else " (override cleared)"
        return LadderStep(
            action="de_escalate",
            tier=target,
            override=new_override,
            fail_streak=0,
            ok_streak=0,
            rolling=rolling,
            reason=(
                f"{above} for {ok} consecutive readings: de-escalated {tier} -> {target}{cleared}"
            ),
        )
    return _stay(tier, override, fail, ok, rolling, above)


def _stay(
    tier: Tier, override: Tier | None, fail: int, ok: int, rolling: float, reason: str
) -> LadderStep:
    return LadderStep(
        action="stay",
        tier=tier,
        override=override,
        fail_streak=fail,
        ok_streak=ok,
        rolling=rolling,
        reason=reason,
    )


def latency_gate(latencies_s: Sequence[float], policy: ControllerPolicy) -> str | None:
    """The [ref] code-only latency gate (off unless ``latency_threshold_ms`` is set).

    Args:
        latencies_s: Latencies in seconds of the current compound stint, oldest first.
        policy: The group's policy.

    Returns:
        A reason when the rolling mean over the last ``window_size`` runs (at least 2)
        exceeds the threshold, else ``None``.

    Example:
        >>> latency_gate([3.0, 5.0], ControllerPolicy(latency_threshold_ms=2000))
        'rolling compound latency 4000 ms > latency_threshold_ms 2000: reverted to fine'
    """
    limit = policy.latency_threshold_ms
    if limit is None or len(latencies_s) < MIN_SCORES_FOR_REVERT:
        return None
    window = list(latencies_s)[-policy.window_size :]
    mean_ms = 1000.0 * sum(window) / len(window)
    if mean_ms > limit:
        return (
            f"rolling compound latency {mean_ms:.0f} ms > latency_threshold_ms {limit:g}: "
            "reverted to fine"
        )
    return None
