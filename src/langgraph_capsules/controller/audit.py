"""Phase: audit sampling and the judge's health (pure; part of the replay).

Compound runs on unique inputs have no fine output of the same task to be judged
against, so the gate samples them: an **audit** run executes the compound tier *and*
fine on the same input, serves one of them (``policy.audit_serve``) and judges compound
against fine (a reference-free judge needs no fine run). The audit's reading feeds the
rolling mean, the ladder and the revert like any other reading.

Which run is audited is a pure function of the group's history, so workers sharing a
store agree (never random). With ``n = ceil(1 / audit_rate)``, the next compound run is
audited when

1. the tier's last reading fell below the floor, or the ladder's fail streak runs: the
   reading is confirmed at once (the rolling mean still holds older, good readings), or
2. the current tier has no reading yet (the rung an escalation climbed to, or a switch
   made while the judge was paused), or
3. it is the ``n``-th compound run since the last evaluated one (judged, or audited).

Only rule 3, the routine audit, is skipped while audit tokens exceed
``audit_max_cost_share`` of the group's tokens over the last ``window_size`` runs: the
checks that follow a failing reading are what makes a degraded group revert quickly:
from the first reading below the floor every run is audited until the ladder escalates
(and the new rung is audited at once) or reverts.

**Judge health.** A judgement that gives no score (the judge raised or returned
garbage) is recorded as ``judge_error=True``. After ``judge_failure_limit`` consecutive
ones the judge is paused: no shadow evaluations, audits or same-task judging for
``min_observations x min(1 + pauses, 5)`` runs (the switch back-off), during which the
gate is off and the group behaves as without a judge. A scored judgement ends the
streak; while the streak stands, a single failing probe after a pause pauses again,
for longer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from langgraph_capsules.controller.switching import required_observations
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.types import COMPOUND_TIERS, Observation

__all__ = [
    "AuditCall",
    "AuditWork",
    "audit_due",
    "audit_interval",
    "audit_share",
    "judge_health_reason",
    "judge_pause_reason",
    "judge_paused",
    "observe_run",
    "pause_length",
]


@dataclass
class AuditWork:
    """Replay state of audit sampling and of the judge's health (mutable).

    Example:
        >>> AuditWork().since_evaluated
        0
    """

    since_evaluated: int = 0
    """Compound runs since the last evaluated one (a quality reading or an audit)."""
    tokens: list[tuple[int, int]] = field(default_factory=list)
    """Per recent run (last ``window_size``): (group tokens incl. audits, audit tokens)."""
    error_streak: int = 0
    """Consecutive judgements that gave no score (``judge_error``)."""
    pauses: int = 0
    """Judge pauses so far (sets the pause length, like ``revert_count``)."""
    paused_until: int = 0
    """The judge is paused until this run number, which judges again (runs count from 1)."""


@dataclass(frozen=True)
class AuditCall:
    """Whether the next compound run is audited, and why.

    Example:
        >>> AuditCall(False, "audits off").audit
        False
    """

    audit: bool
    reason: str


def audit_interval(rate: float) -> int:
    """Compound runs per routine audit: ``ceil(1 / rate)`` (0 when audits are off).

    Args:
        rate: ``policy.audit_rate``.

    Returns:
        The interval in runs.

    Example:
        >>> audit_interval(0.2), audit_interval(0.3), audit_interval(0.0)
        (5, 4, 0)
    """
    if rate <= 0:
        return 0
    return max(1, math.ceil(round(1.0 / rate, 9)))


def pause_length(policy: ControllerPolicy, pauses: int) -> int:
    """Runs the judge stays paused on its ``pauses``-th pause (the switch back-off).

    Args:
        policy: The group's policy.
        pauses: Pauses so far, this one included (1 for the first).

    Returns:
        ``min_observations x min(1 + pauses, 5)``.

    Example:
        >>> pause_length(ControllerPolicy(min_observations=2), 1)
        4
    """
    return required_observations(policy, pauses)


def judge_paused(work: AuditWork, runs: int) -> bool:
    """Whether the judge is paused for the run after ``runs`` replayed runs.

    Example:
        >>> judge_paused(AuditWork(paused_until=6), 4), judge_paused(AuditWork(paused_until=6), 5)
        (True, False)
    """
    return runs + 1 < work.paused_until


def judge_pause_reason(work: AuditWork) -> str:
    """The explanation of the current pause (``explain()`` shows it).

    Example:
        >>> judge_pause_reason(AuditWork(error_streak=2, pauses=1, paused_until=7))[-28:]
        'paused until run 7 (pause 1)'
    """
    return (
        f"judge failing: {work.error_streak} consecutive no-score readings, shadow "
        f"evaluation paused until run {work.paused_until} (pause {work.pauses})"
    )


def judge_health_reason(work: AuditWork, runs: int, policy: ControllerPolicy) -> str | None:
    """A line on the judge's health for ``explain()`` (``None`` while it gives scores).

    Args:
        work: The audit state after the history.
        runs: Runs replayed so far.
        policy: The group's policy.

    Returns:
        The pause while paused; after a pause, that the next judgement probes the judge;
        before the first pause, the streak so far.

    Example:
        >>> p = ControllerPolicy(judge_failure_limit=2)
        >>> judge_health_reason(AuditWork(error_streak=1), 3, p)
        'judge: 1 consecutive no-score reading(s); 2 pause shadow evaluation'
    """
    streak, limit = work.error_streak, policy.judge_failure_limit
    if judge_paused(work, runs):
        return judge_pause_reason(work)
    if streak >= limit and work.pauses:
        return (
            f"judge failing: {streak} consecutive no-score readings, shadow evaluation was "
            f"paused until run {work.paused_until} (pause {work.pauses}); the next "
            f"judgement probes it, and a failure pauses it for "
            f"{pause_length(policy, work.pauses + 1)} runs"
        )
    if streak:
        return f"judge: {streak} consecutive no-score reading(s); {limit} pause shadow evaluation"
    return None


def _tokens(obs: Observation) -> int:
    return int(obs.get("input_tokens", 0) or 0) + int(obs.get("output_tokens", 0) or 0)


def _audit_tokens(obs: Observation) -> int:
    return int(obs.get("audit_input_tokens", 0) or 0) + int(obs.get("audit_output_tokens", 0) or 0)


def observe_run(
    work: AuditWork, run: Sequence[Observation], *, run_number: int, policy: ControllerPolicy
) -> list[str]:
    """Fold one run's records (main and shadow) into the audit state.

    Args:
        work: The state, updated in place.
        run: The run's observations (one ``run_id``), in order.
        run_number: This run's number (the replay's run count after it, from 1).
        policy: The group's policy.

    Returns:
        Event lines (a judge pause starting), for ``explain()``.
    """
    audit_tokens = sum(_audit_tokens(o) for o in run)
    work.tokens.append((sum(_tokens(o) for o in run) + audit_tokens, audit_tokens))
    del work.tokens[: -policy.window_size]
    errors = 0
    for obs in run:
        if obs.get("judge_error"):
            errors += 1
            work.error_streak += 1
        elif obs.get("quality") is not None:
            work.error_streak = 0
    for obs in run:
        shadow = bool(obs.get("shadow"))
        evaluated = obs.get("quality") is not None or bool(obs.get("audit"))
        if shadow or evaluated:
            work.since_evaluated = 0
        elif obs.get("tier") in COMPOUND_TIERS:
            work.since_evaluated += 1
    limit = policy.judge_failure_limit
    if errors and work.error_streak >= limit and not judge_paused(work, run_number - 1):
        work.pauses += 1
        work.paused_until = run_number + pause_length(policy, work.pauses) + 1
        return [f"{judge_pause_reason(work)}; the gate is off meanwhile, as without a judge"]
    return []


def audit_share(work: AuditWork) -> float:
    """Audit tokens as a share of the group's tokens over the recent runs (0 when none)."""
    total = sum(t for t, _ in work.tokens)
    return sum(a for _, a in work.tokens) / total if total else 0.0


def audit_due(
    work: AuditWork,
    policy: ControllerPolicy,
    *,
    runs: int,
    tier: str,
    fail_streak: int,
    tier_readings: int,
    last_below_floor: bool = False,
) -> AuditCall:
    """Whether the next run of a compound group (gate active) is audited.

    Args:
        work: The audit state after the history.
        policy: The group's policy.
        runs: Runs replayed so far.
        tier: The compound tier the group runs.
        fail_streak: Consecutive below-floor readings (the ladder's).
        tier_readings: Quality readings of ``tier`` since the last revert.
        last_below_floor: Whether the tier's last reading fell below the floor.

    Returns:
        The call and its reason.

    Example:
        >>> p = ControllerPolicy(audit_rate=0.2)
        >>> audit_due(AuditWork(since_evaluated=4), p, runs=9, tier="standard",
        ...           fail_streak=0, tier_readings=1).audit
        True
    """
    n = audit_interval(policy.audit_rate)
    if n == 0:
        return AuditCall(False, "audits off (audit_rate 0): only same-task readings")
    if judge_paused(work, runs):
        return AuditCall(False, f"no audit: {judge_pause_reason(work)}")
    if fail_streak > 0 or last_below_floor:
        return AuditCall(
            True, f"audit: confirm the last reading below the floor (fail streak {fail_streak})"
        )
    if tier_readings == 0:
        return AuditCall(True, f"audit: {tier} has no quality reading yet")
    if work.since_evaluated + 1 < n:
        left = n - 1 - work.since_evaluated
        return AuditCall(
            False,
            f"no audit: {work.since_evaluated} compound run(s) since the last reading; "
            f"the next audit in {left} run(s) (1 in {n})",
        )
    share = audit_share(work)
    why = f"audit: {work.since_evaluated} compound run(s) since the last reading (1 in {n})"
    if share > policy.audit_max_cost_share:
        return AuditCall(
            False,
            f"audit skipped: audit tokens are {share:.0%} of the group's tokens over the last "
            f"{len(work.tokens)} run(s) (audit_max_cost_share {policy.audit_max_cost_share:.0%})",
        )
    return AuditCall(True, why)
