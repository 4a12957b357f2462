"""Phase: score-driven switching between fine and compound (spec 3.2, Table 3).

::

    win = scores[-window_size:]
    required = min_observations x min(1 + revert_count, 5)
    fine:     confidence = share(win >= compose_at);   switch up when >= policy.confidence
    compound: confidence = share(win <= decompose_at); switch down when >= policy.confidence

[ours] rules on top of [ref]:

* Only **post-revert** observations count (P6): [ref] keeps old scores across a revert,
  the paper resets the window; we follow the paper.
* Observations carry their tier and scores of different tiers are not comparable (the
  standard tier sends no tools, so its t̄ is 0): only fine-tier scores feed the switch-up
  check and only scores of the current compound stint feed the switch-down check.
* The back-off multiplier ``min(1 + reverts, 5)`` brakes switching **up** only; a
  switch down needs ``min_observations`` compound scores (reverting is never slowed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langgraph_capsules.policy import ControllerPolicy

__all__ = ["MAX_BACKOFF", "SwitchCheck", "required_observations", "switch_down", "switch_up"]

MAX_BACKOFF = 5
"""Cap of the back-off multiplier ``1 + revert_count``."""


def required_observations(policy: ControllerPolicy, revert_count: int) -> int:
    """Fresh fine observations needed before a switch up, after ``revert_count`` reverts.

    Args:
        policy: The group's policy.
        revert_count: Reverts to fine so far.

    Returns:
        ``min_observations x min(1 + revert_count, 5)``.

    Example:
        >>> required_observations(ControllerPolicy(), 1)
        6
        >>> required_observations(ControllerPolicy(), 9)
        15
    """
    return policy.min_observations * min(1 + max(revert_count, 0), MAX_BACKOFF)


@dataclass(frozen=True, kw_only=True)
class SwitchCheck:
    """The outcome of one switching check.

    Example:
        >>> check = switch_up([0.3, 0.3, 0.1], ControllerPolicy(), 0)
        >>> check.agreeing, check.window, check.fires
        (2, 3, False)
    """

    direction: Literal["up", "down"]
    """``up``: fine -> compound; ``down``: compound -> fine."""
    confidence: float
    """Share of the window past the threshold (0 while not enough fresh observations)."""
    fresh: int
    """Scores counted since the last revert (up) or the switch (down)."""
    required: int
    """Scores needed before the check may fire."""
    agreeing: int
    """Scores in the window past the threshold."""
    window: int
    """Scores in the window."""
    fires: bool
    """Whether the switch should happen."""
    reason: str
    """Plain-English explanation."""

    def to_dict(self) -> dict[str, Any]:
        """The check as plain data.

        Returns:
            Every field by name.

        Example:
            >>> switch_up([0.3, 0.3, 0.3], ControllerPolicy(), 0).to_dict()["fires"]
            True
        """
        return {
            "direction": self.direction,
            "confidence": self.confidence,
            "fresh": self.fresh,
            "required": self.required,
            "agreeing": self.agreeing,
            "window": self.window,
            "fires": self.fires,
            "reason": self.reason,
        }


def switch_up(
    fresh_fine_scores: Sequence[float], policy: ControllerPolicy, revert_count: int
) -> SwitchCheck:
    """Whether a fine group should switch to compound.

    Args:
        fresh_fine_scores: Scores of fine-tier observations since the last revert,
            oldest first.
        policy: The group's policy.
        revert_count: Reverts so far (sets the back-off).

    Returns:
        The check; ``fires`` when enough fresh scores exist and the share of the last
        ``window_size`` at or above ``compose_at`` reaches ``policy.confidence``.

    Example:
        >>> switch_up([0.3, 0.1, 0.3], ControllerPolicy(), 0).confidence
        0.6666666666666666
    """
    required = required_observations(policy, revert_count)
    fresh = len(fresh_fine_scores)
    if fresh < required:
        reason = (
            f"{fresh} of {required} fresh fine runs needed before switching "
            f"(min_observations {policy.min_observations} x min(1 + {revert_count} "
            f"revert(s), {MAX_BACKOFF}))"
        )
        return SwitchCheck(
            direction="up",
            confidence=0.0,
            fresh=fresh,
            required=required,
            agreeing=0,
            window=0,
            fires=False,
            reason=reason,
        )
    window = fresh_fine_scores[-policy.window_size :]
    agreeing = sum(1 for s in window if s >= policy.compose_at)
    confidence = agreeing / len(window)
    fires = confidence >= policy.confidence
    reason = (
        f"confidence {confidence:.2f} {'>=' if fires else '<'} {policy.confidence:.2f}: "
        f"{agreeing}/{len(window)} recent fine scores >= compose_at {policy.compose_at}"
    )
    return SwitchCheck(
        direction="up",
        confidence=confidence,
        fresh=fresh,
        required=required,
        agreeing=agreeing,
        window=len(window),
        fires=fires,
        reason=reason,
    )


def switch_down(stint_scores: Sequence[float], policy: ControllerPolicy) -> SwitchCheck:
    """Whether a compound group should switch back to fine on its scores.

    Args:
        stint_scores: Scores of the current compound stint (compound-tier runs since the
            switch), oldest first.
        policy: The group's policy.

    Returns:
        The check; ``fires`` when at least ``min_observations`` scores exist and the
        share of the last ``window_size`` at or below ``decompose_at`` reaches
        ``policy.confidence``.

    Example:
        >>> switch_down([0.05, 0.05, 0.05], ControllerPolicy()).fires
        True
    """
    required = policy.min_observations
    fresh = len(stint_scores)
    if fresh < required:
        return SwitchCheck(
            direction="down",
            confidence=0.0,
            fresh=fresh,
            required=required,
            agreeing=0,
            window=0,
            fires=False,
            reason=f"{fresh} of {required} compound runs needed before a score-based revert",
        )
    window = stint_scores[-policy.window_size :]
    agreeing = sum(1 for s in window if s <= policy.decompose_at)
    confidence = agreeing / len(window)
    fires = confidence >= policy.confidence
    reason = (
        f"revert confidence {confidence:.2f} {'>=' if fires else '<'} "
        f"{policy.confidence:.2f}: {agreeing}/{len(window)} recent compound scores <= "
        f"decompose_at {policy.decompose_at}"
    )
    return SwitchCheck(
        direction="down",
        confidence=confidence,
        fresh=fresh,
        required=required,
        agreeing=agreeing,
        window=len(window),
        fires=fires,
        reason=reason,
    )
