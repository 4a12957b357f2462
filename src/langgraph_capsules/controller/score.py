"""Phase: the composition score of one observation (spec 3.1, paper §6.1).

::

    s = w0·r_oh + w1·min(n/4, 1) + w2·o + w3·min(t̄/3, 1) - w4·min(d / max(n-1, 1), 1)

clamped to [0, 1], then overridden in order: context utilisation >= 0.85 -> 0.0 (the
merge would not fit), else error rate >= 0.15 -> 1.0 (merging shrinks the retry
surface). The score is a behavioural fingerprint of the group, not a quality ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.types import Observation

__all__ = ["ScoreBreakdown", "composition_score", "error_rate"]


@dataclass(frozen=True, kw_only=True)
class ScoreBreakdown:
    """One observation's composition score with every signal and term behind it.

    Example:
        >>> obs = {"tier": "fine", "output_tokens": 2000, "coordination_tokens": 0,
        ...        "tool_calls": 4, "errors": 0, "calls": 6}
        >>> bd = composition_score(obs, ControllerPolicy(), n_agents=2, depth=1)
        >>> round(bd.raw, 3), bd.override
        (0.242, None)
    """

    tier: str
    """Tier of the observation (fine and compound scores are not comparable)."""
    score: float
    """The score the controller uses: clamped to [0, 1], overrides applied."""
    raw: float
    """The weighted sum before clamping and overrides."""
    score_ref: float
    """The same score with the reference code's r_oh (prompt-token denominator); logged
    only (P1)."""
    r_oh: float
    """Coordination overhead per the paper: coordination tokens / output tokens."""
    r_oh_ref: float
    """Coordination overhead per [ref]: coordination tokens / prompt (input) tokens."""
    n_agents: int
    """Agents in the group."""
    tool_density: float
    """t̄: tool calls per agent in this run."""
    depth: int
    """Longest path in the group DAG (0 for a fan-out group)."""
    mean_output: float
    """Output tokens per agent in this run (feeds the dropped, zero-weight signal)."""
    error_rate: float
    """Errors per call (see :func:`error_rate`)."""
    context_utilisation: float | None
    """Mean share of the context window used, when the caller knows it."""
    terms: tuple[float, float, float, float, float]
    """Weighted terms (r_oh, agents, mean output, tools, -depth); sum = ``raw``."""
    override: Literal["context", "error_rate"] | None
    """Which override set the score, if any."""

    def to_dict(self) -> dict[str, Any]:
        """The breakdown as plain, JSON-safe data.

        Returns:
            Every field by name (terms as a list).

        Example:
            >>> "score" in composition_score(
            ...     {"tier": "fine", "output_tokens": 100, "input_tokens": 50,
            ...      "coordination_tokens": 5, "tool_calls": 0, "errors": 0, "calls": 2},
            ...     ControllerPolicy(), n_agents=2).to_dict()
            True
        """
        return {
            "tier": self.tier,
            "score": self.score,
            "raw": self.raw,
            "score_ref": self.score_ref,
            "r_oh": self.r_oh,
            "r_oh_ref": self.r_oh_ref,
            "n_agents": self.n_agents,
            "tool_density": self.tool_density,
            "depth": self.depth,
            "mean_output": self.mean_output,
            "error_rate": self.error_rate,
            "context_utilisation": self.context_utilisation,
            "terms": list(self.terms),
            "override": self.override,
        }

    def __str__(self) -> str:
        why = f", override {self.override}" if self.override else ""
        return (
            f"score {self.score:.3f} ({self.tier}; r_oh {self.r_oh:.3f}, n {self.n_agents}, "
            f"tools/agent {self.tool_density:.2f}, depth {self.depth}{why})"
        )


def _ratio(num: float, den: float) -> float:
    # An empty denominator (no output, or no prompt) carries no overhead signal.
    return num / den if den > 0 else 0.0


def error_rate(obs: Observation | dict[str, Any], n_agents: int) -> float:
    """Errors per call of one run, capped at 1.

    ``errors`` counts failed calls plus members that fell back; the denominator is the
    larger of the run's calls and the group size, so one fallback out of a 3-agent merged
    call (one call) counts as 1/3 [ours].

    Args:
        obs: The observation.
        n_agents: Agents in the group.

    Returns:
        The error rate in [0, 1].

    Example:
        >>> error_rate({"errors": 1, "calls": 1}, 3)
        0.3333333333333333
    """
    errors = int(obs.get("errors", 0) or 0)
    calls = int(obs.get("calls", 0) or 0)
    return min(1.0, _ratio(errors, max(calls, n_agents, 1)))


def composition_score(
    obs: Observation | dict[str, Any],
    policy: ControllerPolicy,
    *,
    n_agents: int,
    depth: int | None = 0,
    context_utilisation: float | None = None,
) -> ScoreBreakdown:
    """Score one observation of a group (spec 3.1).

    Signals, where the paper and the reference code differ, follow the paper:

    * r_oh = coordination tokens / **output** tokens ([paper]; [ref] divides by prompt
      tokens, P1: reported as ``r_oh_ref`` and ``score_ref``). No output gives 0.
    * n = agents in the group; t̄ = tool calls / n.
    * d = the longest path in the group DAG, passed in by the caller (a fan-out group
      has depth 0). [ref] uses n-1 for every group (P2); pass ``depth=None`` to
      reproduce that.
    * The third weight belongs to a mean-output signal the authors dropped as redundant
      with r_oh (weight 0 in every preset); [ours] defines it as output tokens per agent
      / ``verbosity_guidance_threshold``, capped at 1, so a non-zero weight means
      something.

    With ``policy.score_weights=None`` the score is the raw overhead ratio ([ref]).

    Args:
        obs: The observation (only the token, call, tool and error counts are read).
        policy: The policy (weights and override thresholds).
        n_agents: Agents in the group (>= 1).
        depth: Longest path in the group DAG, or ``None`` for the [ref] n-1.
        context_utilisation: Mean share of the context window the run used, if known
            (observations do not carry it; without it the context override is off).

    Returns:
        The frozen breakdown.

    Raises:
        ValueError: When ``n_agents < 1`` or ``depth < 0``.

    Example:
        >>> obs = {"tier": "fine", "output_tokens": 2000, "input_tokens": 900,
        ...        "coordination_tokens": 40, "tool_calls": 4, "errors": 0, "calls": 6}
        >>> round(composition_score(obs, ControllerPolicy(), n_agents=2, depth=1).score, 3)
        0.251
    """
    if n_agents < 1:
        raise ValueError(f"n_agents must be >= 1, got {n_agents}; pass the group's member count")
    d = max(n_agents - 1, 0) if depth is None else depth
    if d < 0:
        raise ValueError(f"depth must be >= 0, got {d}; pass the longest path in the group DAG")
    output = float(obs.get("output_tokens", 0) or 0)
    prompt = float(obs.get("input_tokens", 0) or 0)
    coordination = float(obs.get("coordination_tokens", 0) or 0)
    tools = float(obs.get("tool_calls", 0) or 0)
    r_oh = _ratio(coordination, output)
    r_oh_ref = _ratio(coordination, prompt)
    tool_density = tools / n_agents
    mean_output = output / n_agents
    err = error_rate(obs, n_agents)

    def weighted(r: float) -> tuple[float, float, float, float, float]:
        weights = policy.score_weights
        if weights is None:
            return (r, 0.0, 0.0, 0.0, 0.0)
        w_oh, w_n, w_out, w_tools, w_depth = weights
        return (
            w_oh * r,
            w_n * min(n_agents / 4, 1.0),
            w_out * min(mean_output / policy.verbosity_guidance_threshold, 1.0),
            w_tools * min(tool_density / 3, 1.0),
            -w_depth * min(d / max(n_agents - 1, 1), 1.0),
        )

    def finish(raw: float) -> tuple[float, Literal["context", "error_rate"] | None]:
        score = min(1.0, max(0.0, raw))
        if context_utilisation is not None and context_utilisation >= (
            policy.context_util_threshold
        ):
            return 0.0, "context"
        if err >= policy.error_rate_threshold:
            return 1.0, "error_rate"
        return score, None

    terms = weighted(r_oh)
    raw = sum(terms)
    score, override = finish(raw)
    score_ref, _ = finish(sum(weighted(r_oh_ref)))
    return ScoreBreakdown(
        tier=str(obs.get("tier", "fine")),
        score=score,
        raw=raw,
        score_ref=score_ref,
        r_oh=r_oh,
        r_oh_ref=r_oh_ref,
        n_agents=n_agents,
        tool_density=tool_density,
        depth=d,
        mean_output=mean_output,
        error_rate=err,
        context_utilisation=context_utilisation,
        terms=terms,
        override=override,
    )
