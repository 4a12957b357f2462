"""Phase: which compound tier a group would run (spec 3.3) and the ladder's order.

The ladder is standard -> two_phase -> sequential (escalation always moves toward
per-agent dispatch). Only some tiers are built; a tier that is not built falls to the
nearest built one, and the reasons say so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.types import COMPOUND_TIERS, TIERS, Tier

__all__ = [
    "DEFAULT_BUILT_TIERS",
    "MIN_FINE_RUNS_FOR_VERBOSITY",
    "TierChoice",
    "check_built_tiers",
    "compound_tier",
    "nearest_built",
    "next_higher",
    "next_lower",
    "select_tier",
    "tier_rank",
]

DEFAULT_BUILT_TIERS: frozenset[Tier] = frozenset({"fine", "standard"})
"""Tiers that have a strategy today."""

MIN_FINE_RUNS_FOR_VERBOSITY = 3
"""Fine runs needed before the verbosity signal is trusted (fewer: standard)."""

_RANK: dict[str, int] = {tier: i for i, tier in enumerate(TIERS)}


def tier_rank(tier: str) -> int:
    """Position of ``tier`` on the ladder (fine 0, standard 1, two_phase 2, sequential 3).

    Args:
        tier: A tier name.

    Returns:
        The rank.

    Raises:
        CapsuleConfigError: ``bad_mode`` for an unknown tier.

    Example:
        >>> tier_rank("two_phase")
        2
    """
    try:
        return _RANK[tier]
    except KeyError:
        raise CapsuleConfigError(
            f"unknown tier {tier!r}; tiers: {list(TIERS)}", code="bad_mode"
        ) from None


def check_built_tiers(built: Iterable[str]) -> frozenset[Tier]:
    """Validate the set of built tiers (must hold ``fine`` and only known tiers).

    Args:
        built: Tier names that have a strategy.

    Returns:
        The same tiers as a frozenset.

    Raises:
        CapsuleConfigError: ``bad_mode`` naming the unknown tier or the missing ``fine``.

    Example:
        >>> sorted(check_built_tiers(["fine", "standard"]))
        ['fine', 'standard']
    """
    tiers = frozenset(built)
    unknown = sorted(t for t in tiers if t not in _RANK)
    if unknown:
        raise CapsuleConfigError(
            f"built_tiers holds unknown tier(s) {unknown}; tiers: {list(TIERS)}",
            code="bad_mode",
        )
    if "fine" not in tiers:
        raise CapsuleConfigError(
            "built_tiers must include 'fine' (the original app always runs); "
            "pass e.g. frozenset({'fine', 'standard'})",
            code="bad_mode",
        )
    return frozenset(t for t in TIERS if t in tiers)


def _built_compound(built: frozenset[Tier]) -> list[Tier]:
    return [t for t in COMPOUND_TIERS if t in built]


def compound_tier(has_tools: bool) -> Tier:
    """The merged tier mode ``"compound"`` runs: ``two_phase`` for a group with a
    declared tool agent (standard would drop its tools; capsules-spec 3.3, rule 5),
    ``standard`` otherwise.

    Example:
        >>> compound_tier(True), compound_tier(False)
        ('two_phase', 'standard')
    """
    return "two_phase" if has_tools else "standard"


def nearest_built(tier: Tier, built: frozenset[Tier]) -> Tier:
    """The built compound tier closest to ``tier`` on the ladder.

    A tie goes to the higher tier, toward per-agent dispatch [ours]: an unbuilt
    ``two_phase`` (wanted for tool-using agents) runs as ``sequential``, which keeps each
    agent's own call and tools, never as ``standard``, which would drop the tools.

    Args:
        tier: The wanted compound tier.
        built: Built tiers.

    Returns:
        ``tier`` itself when built, else the nearest built compound tier, else ``fine``.

    Example:
        >>> nearest_built("sequential", frozenset({"fine", "standard"}))
        'standard'
    """
    if tier in built:
        return tier
    candidates = _built_compound(built)
    if not candidates:
        return "fine"
    rank = tier_rank(tier)
    return min(candidates, key=lambda t: (abs(tier_rank(t) - rank), -tier_rank(t)))


def next_higher(tier: Tier, built: frozenset[Tier]) -> Tier | None:
    """The next built compound tier above ``tier`` (the escalation target), if any.

    Args:
        tier: The current compound tier.
        built: Built tiers.

    Returns:
        The next built tier up the ladder, or ``None`` at the top built tier.

    Example:
        >>> next_higher("standard", frozenset({"fine", "standard", "sequential"}))
        'sequential'
    """
    rank = tier_rank(tier)
    return next((t for t in _built_compound(built) if tier_rank(t) > rank), None)


def next_lower(tier: Tier, built: frozenset[Tier]) -> Tier | None:
    """The next built compound tier below ``tier`` (the de-escalation target), if any.

    Args:
        tier: The current compound tier.
        built: Built tiers.

    Returns:
        The next built compound tier down the ladder, or ``None`` at the bottom.

    Example:
        >>> next_lower("two_phase", frozenset({"fine", "standard", "two_phase"}))
        'standard'
    """
    rank = tier_rank(tier)
    lower = [t for t in _built_compound(built) if tier_rank(t) < rank]
    return lower[-1] if lower else None


@dataclass(frozen=True, kw_only=True)
class TierChoice:
    """The compound tier a group would run, and why.

    Example:
        >>> c = select_tier(ControllerPolicy(), has_tools=False, fine_output_per_agent=None,
        ...                 fine_runs=0, built_tiers=DEFAULT_BUILT_TIERS)
        >>> c.tier, c.reasons[0][:9]
        ('standard', 'tier auto')
    """

    tier: Tier
    """The built compound tier to run."""
    wanted: Tier
    """The tier the rules asked for before falling back to a built one."""
    reasons: tuple[str, ...]
    """Plain-English steps of the choice."""


def select_tier(
    policy: ControllerPolicy,
    *,
    has_tools: bool,
    fine_output_per_agent: float | None,
    fine_runs: int,
    built_tiers: frozenset[Tier],
    override: Tier | None = None,
) -> TierChoice:
    """Choose the compound tier (spec 3.3).

    Order: a persisted escalation override beats everything; then an explicit
    ``compound_execution_model``; then, for ``auto``, the paper's signals: verbosity
    (mean fine output tokens per agent over at least 3 fine runs: below
    ``verbosity_two_phase_threshold`` standard, below ``verbosity_sequential_threshold``
    two_phase, else sequential; fewer runs: standard) and tools (a standard choice becomes
    two_phase when any agent has tools). [ref] also forces sequential whenever the group
    has intra-group dependencies (P10); §7.5 of the paper has no such rule, so neither do
    we. Finally a tier that is not built falls to the nearest built one.

    Args:
        policy: The group's policy.
        has_tools: Whether any agent of the group has tools.
        fine_output_per_agent: Mean fine output tokens per agent, or ``None``.
        fine_runs: Fine runs behind ``fine_output_per_agent``.
        built_tiers: Tiers that have a strategy.
        override: A persisted escalation override, if any.

    Returns:
        The choice with its reasons.

    Example:
        >>> c = select_tier(ControllerPolicy(), has_tools=True, fine_output_per_agent=None,
        ...                 fine_runs=0, built_tiers=frozenset({"fine", "standard"}))
        >>> (c.wanted, c.tier)
        ('two_phase', 'standard')
    """
    reasons: list[str] = []
    wanted: Tier
    if override is not None:
        wanted = override
        reasons.append(f"escalation override {override} beats the tier selection")
    elif policy.compound_execution_model != "auto":
        wanted = policy.compound_execution_model
        reasons.append(f"policy tier is {wanted}")
    else:
        if fine_output_per_agent is None or fine_runs < MIN_FINE_RUNS_FOR_VERBOSITY:
            wanted = "standard"
            reasons.append(
                f"tier auto: {fine_runs} fine run(s), fewer than "
                f"{MIN_FINE_RUNS_FOR_VERBOSITY} needed for the verbosity signal -> standard"
            )
        else:
            out = fine_output_per_agent
            if out < policy.verbosity_two_phase_threshold:
                wanted = "standard"
                rule = f"< {policy.verbosity_two_phase_threshold}"
            elif out < policy.verbosity_sequential_threshold:
                wanted = "two_phase"
                rule = f"< {policy.verbosity_sequential_threshold}"
            else:
                wanted = "sequential"
                rule = f">= {policy.verbosity_sequential_threshold}"
            reasons.append(
                f"tier auto: mean fine output {out:.0f} tokens/agent over {fine_runs} fine "
                f"runs {rule} -> {wanted}"
            )
        if has_tools and wanted == "standard":
            wanted = "two_phase"
            reasons.append("tier auto: the group has tools -> two_phase")
    tier = nearest_built(wanted, built_tiers)
    if tier != wanted:
        reasons.append(f"{wanted} is not built; using the nearest built tier {tier}")
    return TierChoice(tier=tier, wanted=wanted, reasons=tuple(reasons))
