"""``ControllerPolicy``: every threshold the controller, the gate and the ladder read.

A policy is a frozen, keyword-only dataclass validated on construction. Build one from a
preset (:meth:`ControllerPolicy.aggressive`, :meth:`~ControllerPolicy.balanced`,
:meth:`~ControllerPolicy.conservative`), change it with :meth:`~ControllerPolicy.replace`
(which returns a validated copy), or let :meth:`~ControllerPolicy.coerce` accept the usual
shorthands.

Per-group policies and precedence
---------------------------------
A group may carry its own **complete** policy, built with ``replace()`` on a base policy,
never as a partial merge (a partial dict would bypass validation of the combination).
Which policy and tier apply to one run of one group, highest first:

1. a **locked run mode** (``fine``, ``compound``, ``standard``: the controller and the
   judge are bypassed, so no policy threshold applies);
2. the **group policy** (``group_policies[group]``);
3. the **pipeline policy** (``policy=`` or a preset name).

:func:`resolve_policy` implements 2-3; the caller resolves the policy once per group and
passes it to every threshold site (gates, tier selection, escalation, windows, guidance
and hints). A persisted tier override (escalation) beats automatic tier selection.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from langgraph_capsules.errors import CapsuleConfigError

__all__ = [
    "DEFAULT_SCORE_WEIGHTS",
    "PRESETS",
    "AuditServe",
    "CompoundExecutionModel",
    "ControllerPolicy",
    "MergedOutputStructure",
    "OutputGuidance",
    "PromptStyle",
    "SequentialContextStrategy",
    "coerce_group_policies",
    "resolve_policy",
]

CompoundExecutionModel = Literal["auto", "standard", "two_phase", "sequential"]
PromptStyle = Literal["standard", "compact"]
MergedOutputStructure = Literal["none", "budgeted", "budgeted_adaptive", "reinforced"]
OutputGuidance = Literal["none", "auto", "concise", "moderate", "brief"]
SequentialContextStrategy = Literal["full", "predecessor_only"]
AuditServe = Literal["fine", "compound"]

DEFAULT_SCORE_WEIGHTS: tuple[float, float, float, float, float] = (0.45, 0.25, 0.0, 0.25, 0.05)
"""Composition-score weights of every preset: r_oh, agent count, (dropped) mean output,
tool density, dependency depth."""

PRESETS: tuple[str, ...] = ("aggressive", "balanced", "conservative")
"""Names accepted by :meth:`ControllerPolicy.coerce` (``sensitivity=`` presets)."""

# Table 3.2 of the spec: switching thresholds per preset (weights are shared; the quality
# floor is deliberately not part of any preset). [ours] Audit sampling per preset: the more
# eager a preset is to merge, the less it pays to check merges on unique inputs.
_PRESET_VALUES: dict[str, dict[str, Any]] = {
    "aggressive": {
        "compose_at": 0.18,
        "decompose_at": 0.14,
        "confidence": 0.65,
        "min_observations": 2,
        "window_size": 5,
        "audit_rate": 0.1,
        "audit_max_cost_share": 0.3,
    },
    "balanced": {
        "compose_at": 0.23,
        "decompose_at": 0.10,
        "confidence": 0.80,
        "min_observations": 3,
        "window_size": 10,
        "audit_rate": 0.2,
        "audit_max_cost_share": 0.5,
    },
    "conservative": {
        "compose_at": 0.35,
        "decompose_at": 0.10,
        "confidence": 0.90,
        "min_observations": 5,
        "window_size": 10,
        "audit_rate": 0.25,
        "audit_max_cost_share": 0.5,
    },
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "compound_execution_model": ("auto", "standard", "two_phase", "sequential"),
    "compound_prompt_style": ("standard", "compact"),
    "merged_output_structure": ("none", "budgeted", "budgeted_adaptive", "reinforced"),
    "output_guidance": ("none", "auto", "concise", "moderate", "brief"),
    "sequential_context_strategy": ("full", "predecessor_only"),
    "audit_serve": ("fine", "compound"),
}
_PROBABILITIES = (
    "compose_at",
    "decompose_at",
    "confidence",
    "error_rate_threshold",
    "context_util_threshold",
    "audit_rate",
    "audit_max_cost_share",
)
_POSITIVE_INTS = (
    "min_observations",
    "window_size",
    "verbosity_two_phase_threshold",
    "verbosity_sequential_threshold",
    "verbosity_guidance_threshold",
    "escalation_min_failures",
    "escalation_decay_window",
    "judge_failure_limit",
    "max_batch",
)
_BOOLS = ("cache_aligned_prompts", "escalation_enabled")


def _bad(field: str, problem: str, fix: str) -> CapsuleConfigError:
    return CapsuleConfigError(
        f"ControllerPolicy.{field} {problem}; {fix}",
        code="bad_policy",
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class ControllerPolicy:
    """Thresholds of the composition score, switching, tier choice, gate and ladder.

    The bare constructor is the **balanced** preset ([ours]: the reference code's bare
    defaults, compose_at 0.40 and no weights, almost never compose). Every field is
    validated in ``__post_init__``; a bad value raises
    :class:`~langgraph_capsules.errors.CapsuleConfigError` with code ``"bad_policy"``
    naming the field and the fix. See the module docstring for per-group policies and
    precedence.

    Example:
        >>> p = ControllerPolicy.balanced(quality_floor=0.75)
        >>> (p.compose_at, p.decompose_at, p.quality_floor)
        (0.23, 0.1, 0.75)
        >>> p.replace(compose_at=0.3).compose_at
        0.3
        >>> ControllerPolicy() == ControllerPolicy.balanced()
        True
    """

    compose_at: float = 0.23
    """Switch up when this share of fine-mode scores is >= this value ([ref] bare 0.40)."""
    decompose_at: float = 0.10
    """Switch down when the compound-mode scores are <= this value ([ref] bare 0.15)."""
    confidence: float = 0.80
    """Share of the rolling window that must agree before a switch, in [0, 1]."""
    min_observations: int = 3
    """Fresh observations needed before any switch; grows by ``min(1 + reverts, 5)``."""
    window_size: int = 10
    """Length of every rolling window (scores, latency, quality per tier)."""
    score_weights: tuple[float, float, float, float, float] | None = DEFAULT_SCORE_WEIGHTS
    """Weights of (r_oh, agent count, mean output [dropped], tool density, depth); ``None``
    makes the score the raw overhead ratio r_oh ([ref])."""
    error_rate_threshold: float = 0.15
    """An error rate at or above this forces the score to 1.0 (merging shrinks retries)."""
    context_util_threshold: float = 0.85
    """A context utilisation at or above this forces the score to 0.0 (would not fit)."""
    latency_threshold_ms: float | None = None
    """Revert to fine when compound rolling latency exceeds this ([ref] code-only; off)."""
    quality_floor: float | None = None
    """Minimum rolling-mean judge score; the gate is active only with a judge and a floor.
    Not part of any preset ([paper] uses 0.75 in every evaluation)."""
    compound_execution_model: CompoundExecutionModel = "auto"
    """Compound tier: ``auto`` picks per group (§7.5); [ref] defaults to ``standard``, we
    follow the paper."""
    compound_tool_budget: int = 0
    """Tools sent to a merged call: 0 none (default), -1 or > 0 the union of all tools."""
    compound_min_output_words: int | None = None
    """Depth hint for merged sections in words; ``None`` computes it after 3 fine runs."""
    compound_prompt_style: PromptStyle = "standard"
    """``compact`` swaps role titles for neutral step markers (small models)."""
    verbosity_two_phase_threshold: int = 1500
    """Mean fine output tokens per agent from which auto picks two_phase over standard."""
    verbosity_sequential_threshold: int = 3500
    """Mean fine output tokens per agent from which auto picks sequential."""
    verbosity_guidance_threshold: int = 1500
    """Mean fine output tokens per agent from which ``auto`` guidance adds a concise hint."""
    merged_output_structure: MergedOutputStructure = "budgeted"
    """Structural length hint of merged calls (spec 3.6)."""
    output_guidance: OutputGuidance = "auto"
    """Output-length guidance on per-agent calls (spec 3.5)."""
    sequential_context_strategy: SequentialContextStrategy = "predecessor_only"
    """Context an agent sees in the sequential tier."""
    cache_aligned_prompts: bool = True
    """Shared prefix first, variable tail last (spec 3.8)."""
    escalation_enabled: bool = True
    """Climb the ladder standard -> two_phase -> sequential on repeated low quality."""
    escalation_min_failures: int = 2
    """Consecutive below-floor readings that trigger escalation (or the hard revert)."""
    escalation_decay_window: int = 5
    """Consecutive at-or-above-floor readings that drop one tier."""
    audit_rate: float = 0.2
    """[ours] Share of compound runs audited while the gate is active: the group also runs
    fine on the same input and the compound output is judged against it, so the gate has
    readings on unique inputs (no fine output of the same task). Deterministic: a run is
    audited when it is the ``ceil(1 / audit_rate)``-th compound run since the last judged
    one; a reading below the floor is confirmed on the next run, and the first run on a
    rung with no reading is audited. ``0`` turns audits off (only same-task readings)."""
    audit_serve: AuditServe = "fine"
    """Which output the user gets on an audit run: ``fine`` (the safer: the reference) or
    ``compound`` (what the group runs anyway; failed sections still fall back)."""
    audit_max_cost_share: float = 0.5
    """Routine audits are skipped while audit tokens (the fine reference run and the
    judge's calls) exceed this share of the group's tokens over the last ``window_size``
    runs; confirming a reading below the floor is never skipped. ``1.0``: no cap."""
    judge_failure_limit: int = 2
    """Consecutive no-score judgements (the judge raised or returned garbage) after which
    shadow evaluations and audits pause; the pause grows like the switch back-off
    (``min_observations x min(1 + pauses, 5)`` runs). While paused the gate is off."""
    max_batch: int = 8
    """[ours] Dynamic fan-out groups (``Send`` map-reduce, a conditional edge to several
    nodes): at most this many instances are answered by one merged call; ``N`` instances
    of one router call make ``ceil(N / max_batch)`` merged calls, run concurrently. A
    model whose profile gives ``max_input_tokens`` gets merges that fit it (a batch is
    split further when its prompts and output budgets would not)."""

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            self._check_probability(name, getattr(self, name))
        if self.quality_floor is not None:
            self._check_probability("quality_floor", self.quality_floor)
        if not self.decompose_at < self.compose_at:
            raise _bad(
                "decompose_at",
                f"({self.decompose_at}) must be below compose_at ({self.compose_at})",
                "lower decompose_at or raise compose_at",
            )
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _bad(name, f"must be a positive integer, got {value!r}", f"pass {name}=1+")
        if not self.verbosity_sequential_threshold > self.verbosity_two_phase_threshold:
            raise _bad(
                "verbosity_sequential_threshold",
                f"({self.verbosity_sequential_threshold}) must be above "
                f"verbosity_two_phase_threshold ({self.verbosity_two_phase_threshold})",
                "raise verbosity_sequential_threshold or lower verbosity_two_phase_threshold",
            )
        self._check_weights()
        if self.latency_threshold_ms is not None and not (
            _is_number(self.latency_threshold_ms)
            and math.isfinite(self.latency_threshold_ms)
            and self.latency_threshold_ms > 0
        ):
            raise _bad(
                "latency_threshold_ms",
                f"must be a positive number of milliseconds or None, got "
                f"{self.latency_threshold_ms!r}",
                "pass e.g. latency_threshold_ms=20000, or None to turn the latency gate off",
            )
        budget = self.compound_tool_budget
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < -1:
            raise _bad(
                "compound_tool_budget",
                f"must be an integer >= -1, got {budget!r}",
                "use 0 for no tools in merged calls, -1 or a positive number for all tools",
            )
        words = self.compound_min_output_words
        if words is not None and (
            not isinstance(words, int) or isinstance(words, bool) or words < 1
        ):
            raise _bad(
                "compound_min_output_words",
                f"must be a positive integer or None, got {words!r}",
                "pass e.g. 150, or None to compute it after 3 fine runs",
            )
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise _bad(name, f"is {value!r}", f"use one of {list(allowed)}")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise _bad(
                    name, f"must be True or False, got {getattr(self, name)!r}", "pass a bool"
                )

    def _check_probability(self, name: str, value: object) -> None:
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)) or not (
            0.0 <= value <= 1.0
        ):
            raise _bad(name, f"must be a number in [0, 1], got {value!r}", f"pass {name}=0.0..1.0")

    def _check_weights(self) -> None:
        weights = self.score_weights
        if weights is None:
            return
        if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
            raise _bad(
                "score_weights",
                f"must be 5 numbers or None, got {weights!r}",
                "pass (0.45, 0.25, 0.0, 0.25, 0.05), or None for the raw overhead ratio",
            )
        values = tuple(weights)
        if len(values) != 5 or not all(_is_number(w) for w in values):
            raise _bad(
                "score_weights",
                f"must be exactly 5 numbers (r_oh, agents, mean output, tools, depth), got "
                f"{weights!r}",
                "pass (0.45, 0.25, 0.0, 0.25, 0.05), or None for the raw overhead ratio",
            )
        if not all(math.isfinite(w) and w >= 0 for w in values):
            raise _bad(
                "score_weights",
                f"must all be finite and >= 0, got {weights!r}",
                "use non-negative weights (the depth weight is subtracted by the formula)",
            )
        # Normalise a list or other sequence to the declared tuple of floats.
        object.__setattr__(self, "score_weights", tuple(float(w) for w in values))

    # ------------------------------------------------------------------ builders
    @classmethod
    def _build(cls, base: Mapping[str, Any], overrides: Mapping[str, Any]) -> ControllerPolicy:
        _check_names(overrides)
        return cls(**{**base, **overrides})

    @classmethod
    def aggressive(cls, **overrides: Any) -> ControllerPolicy:
        """The aggressive preset: compose_at 0.18, decompose_at 0.14, confidence 0.65,
        min_observations 2, window 5; audits 1 in 10 compound runs, cost cap 0.3.

        Args:
            **overrides: Any field to change on top of the preset.

        Returns:
            A validated policy.

        Raises:
            CapsuleConfigError: ``bad_policy`` for an unknown field or a bad value.

        Example:
            >>> ControllerPolicy.aggressive(quality_floor=0.75).window_size
            5
        """
        return cls._build(_PRESET_VALUES["aggressive"], overrides)

    @classmethod
    def balanced(cls, **overrides: Any) -> ControllerPolicy:
        """The balanced preset (the default): compose_at 0.23, decompose_at 0.10,
        confidence 0.80, min_observations 3, window 10; audits 1 in 5 compound runs, cost
        cap 0.5.

        Args:
            **overrides: Any field to change on top of the preset.

        Returns:
            A validated policy.

        Raises:
            CapsuleConfigError: ``bad_policy`` for an unknown field or a bad value.

        Example:
            >>> ControllerPolicy.balanced().compose_at
            0.23
        """
        return cls._build(_PRESET_VALUES["balanced"], overrides)

    @classmethod
    def conservative(cls, **overrides: Any) -> ControllerPolicy:
        """The conservative preset: compose_at 0.35, decompose_at 0.10, confidence 0.90,
        min_observations 5, window 10; audits 1 in 4 compound runs, cost cap 0.5.

        Args:
            **overrides: Any field to change on top of the preset.

        Returns:
            A validated policy.

        Raises:
            CapsuleConfigError: ``bad_policy`` for an unknown field or a bad value.

        Example:
            >>> ControllerPolicy.conservative().min_observations
            5
        """
        return cls._build(_PRESET_VALUES["conservative"], overrides)

    def replace(self, **changes: Any) -> ControllerPolicy:
        """A validated copy with ``changes`` applied (the way to build a group policy).

        Args:
            **changes: Fields to change.

        Returns:
            A new, validated policy; ``self`` is unchanged.

        Raises:
            CapsuleConfigError: ``bad_policy`` for an unknown field or a bad value.

        Example:
            >>> base = ControllerPolicy.balanced(quality_floor=0.65)
            >>> base.replace(quality_floor=0.85).quality_floor
            0.85
        """
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def coerce(cls, value: ControllerPolicy | str | Mapping[str, Any] | None) -> ControllerPolicy:
        """Accept the shorthands for a policy.

        Args:
            value: ``None`` (balanced), a preset name (``"aggressive"``, ``"balanced"``,
                ``"conservative"``), a dict of field overrides on balanced (an optional
                ``"preset"`` key picks another base preset), or a policy (returned as is).

        Returns:
            A validated policy.

        Raises:
            CapsuleConfigError: ``bad_policy`` for an unknown preset, field or value.

        Example:
            >>> ControllerPolicy.coerce("aggressive").compose_at
            0.18
            >>> ControllerPolicy.coerce({"preset": "conservative", "quality_floor": 0.8}).confidence
            0.9
        """
        if value is None:
            return cls.balanced()
        if isinstance(value, ControllerPolicy):
            return value
        if isinstance(value, str):
            return cls._build(_preset(value), {})
        if isinstance(value, Mapping):
            overrides = dict(value)
            preset = overrides.pop("preset", "balanced")
            if not isinstance(preset, str):
                raise _bad(
                    "preset", f"must be a preset name, got {preset!r}", f"use {list(PRESETS)}"
                )
            return cls._build(_preset(preset), overrides)
        raise CapsuleConfigError(
            f"cannot make a ControllerPolicy from {type(value).__name__}; pass None, a preset "
            f"name {list(PRESETS)}, a dict of overrides or a ControllerPolicy",
            code="bad_policy",
        )

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain, JSON-safe data.

        Returns:
            Every field by name (weights as a list).

        Example:
            >>> ControllerPolicy().to_dict()["window_size"]
            10
        """
        data = dataclasses.asdict(self)
        if self.score_weights is not None:
            data["score_weights"] = list(self.score_weights)
        return data


_FIELDS = frozenset(f.name for f in dataclasses.fields(ControllerPolicy))


def _check_names(changes: Mapping[str, Any]) -> None:
    unknown = sorted(set(changes) - _FIELDS)
    if unknown:
        raise CapsuleConfigError(
            f"unknown ControllerPolicy field(s) {unknown}; valid fields: {sorted(_FIELDS)}",
            code="bad_policy",
        )


def _preset(name: str) -> dict[str, Any]:
    try:
        return _PRESET_VALUES[name]
    except KeyError:
        raise CapsuleConfigError(
            f"unknown policy preset {name!r}; use one of {list(PRESETS)}",
            code="bad_policy",
        ) from None


def coerce_group_policies(
    value: Mapping[str, ControllerPolicy | str] | None,
) -> dict[str, ControllerPolicy]:
    """Validate a mapping group -> complete policy.

    Args:
        value: ``None`` or a mapping from group name to a :class:`ControllerPolicy` or a
            preset name. A dict of overrides is refused: a group policy must be complete,
            built with ``base.replace(...)``, so that validation sees the whole combination.

    Returns:
        A new dict group -> policy.

    Raises:
        CapsuleConfigError: ``bad_policy`` naming the group when a value is not a policy.

    Example:
        >>> base = ControllerPolicy.balanced(quality_floor=0.65)
        >>> gp = coerce_group_policies({"synthesis": base.replace(quality_floor=0.85)})
        >>> gp["synthesis"].quality_floor
        0.85
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CapsuleConfigError(
            f"group policies must be a dict group -> ControllerPolicy, got {type(value).__name__}",
            code="bad_policy",
        )
    out: dict[str, ControllerPolicy] = {}
    for group, policy in value.items():
        if isinstance(policy, (ControllerPolicy, str)):
            out[str(group)] = ControllerPolicy.coerce(policy)
            continue
        raise CapsuleConfigError(
            f"the policy of group {group!r} is a {type(policy).__name__}; a group policy must "
            "be a complete ControllerPolicy: build it with base_policy.replace(...) instead "
            "of a partial dict",
            code="bad_policy",
            group=str(group),
        )
    return out


def resolve_policy(
    group: str,
    policy: ControllerPolicy | str | Mapping[str, Any] | None,
    group_policies: Mapping[str, ControllerPolicy | str] | None = None,
) -> ControllerPolicy:
    """The policy that applies to ``group``: its own policy, else the pipeline policy.

    A locked run mode outranks both (see the module docstring); that is decided by the
    caller before any policy is read.

    Args:
        group: The group name.
        policy: The pipeline policy or a shorthand accepted by
            :meth:`ControllerPolicy.coerce`.
        group_policies: Mapping group -> complete policy (see
            :func:`coerce_group_policies`).

    Returns:
        The complete policy of the group.

    Raises:
        CapsuleConfigError: ``bad_policy`` for a bad pipeline or group policy.

    Example:
        >>> base = ControllerPolicy.balanced(quality_floor=0.65)
        >>> per_group = {"synthesis": base.replace(quality_floor=0.85)}
        >>> resolve_policy("synthesis", base, per_group).quality_floor
        0.85
        >>> resolve_policy("gather", base, per_group).quality_floor
        0.65
    """
    groups = coerce_group_policies(group_policies)
    if group in groups:
        return groups[group]
    return ControllerPolicy.coerce(policy)
