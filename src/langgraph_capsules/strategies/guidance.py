"""Output guidance on per-agent calls (capsules-spec 3.5).

A hint asking for a shorter answer goes only on per-agent calls (fine calls of declared
agents, sequential calls), never on merged calls. ``auto`` adds the concise hint only
when the group's mean fine output is at least ``verbosity_guidance_threshold`` tokens
per agent over at least 3 fine runs; otherwise it is silent.
"""

from __future__ import annotations

from langgraph_capsules.policy import ControllerPolicy

__all__ = ["HINTS", "MIN_FINE_RUNS", "guidance_hint"]

HINTS = {
    "concise": "Keep this answer tight — roughly 300 to 400 words.",
    "moderate": "Keep this answer focused — roughly 500 to 600 words.",
    "brief": "Keep this answer brief — roughly 200 words.",
}
"""The hint of each guidance level (our wording)."""
MIN_FINE_RUNS = 3
"""``auto`` never adds a hint before this many fine runs."""


def guidance_hint(
    policy: ControllerPolicy, fine_output_per_agent: float | None, fine_runs: int
) -> str | None:
    """The hint for the group's per-agent calls, or ``None`` for no guidance.

    Example:
        >>> guidance_hint(ControllerPolicy(), 2000.0, 3)
        'Keep this answer tight — roughly 300 to 400 words.'
        >>> guidance_hint(ControllerPolicy(), 2000.0, 2) is None
        True
    """
    level = policy.output_guidance
    if level == "none":
        return None
    if level != "auto":
        return HINTS[level]
    if fine_runs < MIN_FINE_RUNS or fine_output_per_agent is None:
        return None
    if fine_output_per_agent >= policy.verbosity_guidance_threshold:
        return HINTS["concise"]
    return None
