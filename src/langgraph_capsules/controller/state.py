"""The controller state of one group, derived from its observation history.

Nothing here is stored: a :class:`ControllerState` is recomputed by replaying the
group's observations (oldest first), so it is always consistent with the evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langgraph_capsules.controller.score import ScoreBreakdown
from langgraph_capsules.types import Tier

__all__ = ["ControllerState"]


@dataclass(frozen=True, kw_only=True)
class ControllerState:
    """Where one group stands after its observation history.

    Example:
        >>> ControllerState().mode
        'fine'
    """

    mode: Literal["fine", "compound"] = "fine"
    """The controller's mode for the next run (locked modes aside)."""
    tier: Tier = "fine"
    """``fine``, or the compound tier in use when ``mode`` is compound."""
    tier_override: Tier | None = None
    """Persisted escalation override (beats automatic tier selection)."""
    confidence: float = 0.0
    """Switch-up confidence when fine; switch-down (revert) confidence when compound."""
    fresh_observations: int = 0
    """Fine scores since the last revert (fine) or compound scores since the switch."""
    required_observations: int = 0
    """Scores needed before the current switching check may fire (with back-off)."""
    revert_count: int = 0
    """Reverts to fine so far (blocked shadows included); sets the back-off."""
    revert_floor: int = 0
    """Index in the history after the last revert; only later observations count (P6)."""
    fail_streak: int = 0
    """Consecutive below-floor quality readings."""
    ok_streak: int = 0
    """Consecutive at-or-above-floor quality readings."""
    quality_windows: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    """Judge scores per tier since the last revert, last ``window_size`` each (P7)."""
    rolling_quality: Mapping[str, float] = field(default_factory=dict)
    """Mean of each non-empty quality window (q̄ per tier)."""
    last_score: ScoreBreakdown | None = None
    """Composition score of the latest non-shadow observation."""
    fine_output_per_agent: float | None = None
    """Mean fine output tokens per agent over the last ``window_size`` fine runs."""
    fine_runs: int = 0
    """Fine runs behind ``fine_output_per_agent``."""
    judge_failures: int = 0
    """Judgements that failed and were skipped (P13)."""
    switches: int = 0
    """Switches from fine to compound so far."""
    observations: int = 0
    """Observations replayed."""
    runs: int = 0
    """Runs replayed (a run's fine and shadow observations share one ``run_id``)."""

    def to_dict(self) -> dict[str, Any]:
        """The state as plain, JSON-safe data.

        Returns:
            Every field by name.

        Example:
            >>> ControllerState().to_dict()["revert_count"]
            0
        """
        return {
            "mode": self.mode,
            "tier": self.tier,
            "tier_override": self.tier_override,
            "confidence": self.confidence,
            "fresh_observations": self.fresh_observations,
            "required_observations": self.required_observations,
            "revert_count": self.revert_count,
            "revert_floor": self.revert_floor,
            "fail_streak": self.fail_streak,
            "ok_streak": self.ok_streak,
            "quality_windows": {k: list(v) for k, v in self.quality_windows.items()},
            "rolling_quality": dict(self.rolling_quality),
            "last_score": None if self.last_score is None else self.last_score.to_dict(),
            "fine_output_per_agent": self.fine_output_per_agent,
            "fine_runs": self.fine_runs,
            "judge_failures": self.judge_failures,
            "switches": self.switches,
            "observations": self.observations,
            "runs": self.runs,
        }

    def __str__(self) -> str:
        where = self.tier if self.mode == "compound" else "fine"
        override = f", override {self.tier_override}" if self.tier_override else ""
        quality = ", ".join(f"{t} {q:.2f}" for t, q in self.rolling_quality.items())
        lines = [
            f"{where}{override}; confidence {self.confidence:.2f} "
            f"({self.fresh_observations}/{self.required_observations} fresh)",
            f"reverts {self.revert_count}; streaks fail {self.fail_streak} ok {self.ok_streak}",
        ]
        if quality:
            lines.append(f"rolling quality: {quality}")
        if self.last_score is not None:
            lines.append(f"last {self.last_score}")
        return "; ".join(lines)
