"""Advisory policy calibration: paired fine/compound runs -> a recommended policy.

:func:`calibrate` runs a capsule graph twice per input, once locked ``fine`` and once
locked ``compound``, judges each group's compound output against its fine output of the
same input, scores the fine runs with the controller's composition score, and derives a
recommended :class:`~langgraph_capsules.ControllerPolicy` for the pipeline and for every
group. It is advisory only: locked runs bypass the controller and the gate, so nothing
is written to the controller store, and no policy is changed; applying the
recommendation is the caller's decision (``capsulize(..., policy=cal.recommended,
group_policies=cal.group_policies())``).

Recommendation rules
--------------------
A group *held* when the mean of its judged compound qualities is at or above its pass
floor (``pass_floor=``, else the group policy's ``quality_floor``, else
:data:`DEFAULT_PASS_FLOOR`); groups without a judged run are left out of every rule.
The pipeline recommendation applies the rules to the groups governed by the pipeline
policy (all groups when every group has its own policy); each group's recommendation
applies the same rules to that group alone, on its own policy.

* ``compose_at``. For a group that held, *hi* is the ``100·(1 - confidence)``-th
  percentile of its fine composition scores (a compose_at at or below it lets a
  ``confidence`` share of its runs agree); for a group that did not, *lo* is its
  highest fine score. With both kinds and ``max lo < min hi``: the midpoint. Only groups
  that held: ``min hi`` minus :data:`SCORE_MARGIN`. Groups that did not hold (alone, or
  not separated by the score): ``max lo`` plus :data:`SCORE_MARGIN`, so none of them
  composes (quality first; a reason names the groups that then would not compose
  either). No judged group: unchanged. Clamped to [:data:`MIN_COMPOSE_AT`, 1].
* ``decompose_at`` is kept when it is below the new ``compose_at``, else scaled by the
  base ratio ``decompose_at / compose_at`` (rounded down, so it stays below).
* ``quality_floor`` = the ``floor_percentile``-th percentile of the judged compound
  qualities of the groups that held, minus the MDD (``mdd=``, else the larger of
  :data:`MIN_MDD` and 2.5 x the mean per-group standard deviation of those qualities,
  spec 5.5), clamped to [0, 1]. No group held: the base floor, else the pass floor.
* ``verbosity_sequential_threshold`` / ``verbosity_two_phase_threshold``, from the
  median fine output tokens per agent *v* of each group: when every group that held is
  less verbose than every group that did not, sequential is set between them (so auto
  tier selection sends the failing groups to a per-agent tier and keeps the others on
  standard) and two_phase is lowered below it if needed. Otherwise sequential is raised
  just above the most verbose group that held, if needed (a group whose merged call held
  is not sent to sequential on verbosity alone), and two_phase is kept.
* ``verbosity_guidance_threshold`` is kept: calibration makes no guided runs, so it
  has no evidence of what a concise hint costs; the reason reports the distribution of
  fine output per agent and the groups ``auto`` guidance would hint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs

from langgraph_capsules.compiler.judging import output_text, run_judge, task_text
from langgraph_capsules.controller.score import composition_score
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.graph import CapsuleGraph
from langgraph_capsules.judges import Judge, as_judge
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.telemetry import UsageTracker
from langgraph_capsules.types import CallRecord, GroupRunRecord

__all__ = [
    "DEFAULT_PASS_FLOOR",
    "MIN_COMPOSE_AT",
    "MIN_MDD",
    "SCORE_MARGIN",
    "Calibration",
    "GroupCalibration",
    "calibrate",
]

DEFAULT_PASS_FLOOR = 0.75
"""Quality a group's compound runs must keep on average to count as held, when neither
``pass_floor=`` nor the group policy sets one (the paper's floor in every evaluation)."""
SCORE_MARGIN = 0.005
"""Distance kept between a recommended ``compose_at`` and the scores it must clear or
stay above."""
MIN_COMPOSE_AT = 0.01
"""Lowest recommended ``compose_at`` (``decompose_at`` must fit below it)."""
MIN_MDD = 0.03
"""Smallest minimum detectable difference subtracted from the floor (Opus's, spec 5.5)."""
_MDD_PER_SIGMA = 2.5
_MAX_JUDGE_ERRORS = 3


@dataclass(frozen=True, kw_only=True)
class GroupCalibration:
    """What calibration measured for one group, and the policy it recommends for it.

    Token and call figures are means per run over the paired runs.

    Example:
        >>> row = cal.group("arm")  # doctest: +SKIP
        >>> row.held, round(row.quality_mean, 2), row.recommended.compose_at  # doctest: +SKIP
        (True, 1.0, 0.1825)
    """

    group: str
    """The group name."""
    members: tuple[str, ...]
    """Its members."""
    policy: ControllerPolicy
    """The group's current policy (never changed by calibration)."""
    runs: int
    """Inputs on which the group ran in both the fine and the compound run."""
    fine_calls: float
    """Mean billed LLM calls of a fine run."""
    fine_input_tokens: float
    """Mean input tokens of a fine run."""
    fine_output_tokens: float
    """Mean output tokens of a fine run."""
    compound_calls: float
    """Mean billed LLM calls of a compound run."""
    compound_input_tokens: float
    """Mean input tokens of a compound run."""
    compound_output_tokens: float
    """Mean output tokens of a compound run."""
    fallbacks: int
    """Members that fell back to their own node in the compound runs (all runs)."""
    output_per_agent: float | None
    """Median fine output tokens per agent (the verbosity signal), ``None`` without runs."""
    scores: tuple[float, ...]
    """Composition score of each fine run under the group's policy."""
    score_median: float | None
    """Median of ``scores``."""
    qualities: tuple[float, ...]
    """Judged quality of each compound run against the fine run of the same input."""
    quality_mean: float | None
    """Mean of ``qualities`` (``None``: nothing judged)."""
    quality_min: float | None
    """Lowest of ``qualities``."""
    quality_std: float | None
    """Population standard deviation of ``qualities``."""
    n_judged: int
    """Runs with a quality score."""
    judge_failures: int
    """Runs whose judgement failed (raised or gave no score): skipped, not scored 0."""
    unjudged: int
    """Runs that could not be judged: a member's output is missing from a run's state."""
    judge_errors: tuple[str, ...]
    """The first few distinct judge errors."""
    pass_floor: float
    """The mean quality the group had to keep to count as held."""
    recommended: ControllerPolicy
    """The policy recommended for this group alone (from its own policy)."""
    reasons: tuple[str, ...]
    """Why each recommended value is what it is."""

    @property
    def held(self) -> bool | None:
        """Whether the compound quality held (mean >= ``pass_floor``); ``None`` unjudged."""
        if self.quality_mean is None:
            return None
        return self.quality_mean >= self.pass_floor

    @property
    def token_savings(self) -> float | None:
        """Share of (input + output) tokens the compound run saved, ``None`` without runs."""
        fine = self.fine_input_tokens + self.fine_output_tokens
        if not self.runs or fine <= 0:
            return None
        return 1.0 - (self.compound_input_tokens + self.compound_output_tokens) / fine

    def to_dict(self) -> dict[str, Any]:
        """The row as plain, JSON-safe data.

        Returns:
            Every field by name (policies as dicts), plus ``held`` and ``token_savings``.
        """
        data: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("policy", "recommended")
        }
        for name in ("members", "scores", "qualities", "judge_errors", "reasons"):
            data[name] = list(data[name])
        data["policy"] = self.policy.to_dict()
        data["recommended"] = self.recommended.to_dict()
        data["held"] = self.held
        data["token_savings"] = self.token_savings
        return data


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """The result of :func:`calibrate`: per-group measurements and recommended policies.

    Advisory only: nothing here is applied. ``str()`` gives a readable table.

    Example:
        >>> cal = calibrate(capsules, inputs, judge=FactRecallJudge())  # doctest: +SKIP
        >>> print(cal)  # doctest: +SKIP
        >>> capsulize(builder, policy=cal.recommended,
        ...           group_policies=cal.group_policies())  # doctest: +SKIP
    """

    inputs: int
    """Inputs run (each twice: locked fine, locked compound)."""
    base: ControllerPolicy
    """The graph's pipeline policy (unchanged)."""
    recommended: ControllerPolicy
    """The recommended pipeline policy (``base.replace(...)``)."""
    groups: tuple[GroupCalibration, ...]
    """One row per group, in plan order."""
    reasons: tuple[str, ...]
    """Why each recommended pipeline value is what it is."""
    pass_floor: float
    """The mean quality a group governed by the pipeline policy had to keep."""
    floor_percentile: float
    """Percentile of held groups' qualities the recommended floor starts from."""

    def group(self, name: str) -> GroupCalibration:
        """The row of group ``name``.

        Args:
            name: A group of the plan.

        Returns:
            Its row.

        Raises:
            KeyError: Naming the groups, when there is no such group.
        """
        for row in self.groups:
            if row.group == name:
                return row
        raise KeyError(f"no group {name!r}; groups: {[r.group for r in self.groups]}")

    def group_policies(self) -> dict[str, ControllerPolicy]:
        """Per group, its recommended policy (fit for ``capsulize(group_policies=...)``).

        Returns:
            A new dict group -> complete policy.
        """
        return {row.group: row.recommended for row in self.groups}

    def to_dict(self) -> dict[str, Any]:
        """The calibration as plain, JSON-safe data.

        Returns:
            Counts, the base and recommended policies, reasons and one dict per group.
        """
        return {
            "inputs": self.inputs,
            "pass_floor": self.pass_floor,
            "floor_percentile": self.floor_percentile,
            "base": self.base.to_dict(),
            "recommended": self.recommended.to_dict(),
            "reasons": list(self.reasons),
            "groups": [row.to_dict() for row in self.groups],
        }

    def __str__(self) -> str:
        lines = [
            f"calibration over {self.inputs} input(s), each run locked fine and locked "
            "compound (advisory: no policy was changed)",
            f"  {'group':<16} {'runs':>4} {'fine tok':>9} {'comp tok':>9} {'saved':>6} "
            f"{'score':>6} {'q mean':>6} {'q min':>6} {'q std':>6} {'judged':>6} "
            f"{'failed':>6}  held",
        ]
        for r in self.groups:
            held = {True: "yes", False: "no", None: "-"}[r.held]
            saved = "-" if r.token_savings is None else f"{r.token_savings:.0%}"
            lines.append(
                f"  {r.group:<16} {r.runs:>4} "
                f"{r.fine_input_tokens + r.fine_output_tokens:>9.0f} "
                f"{r.compound_input_tokens + r.compound_output_tokens:>9.0f} {saved:>6} "
                f"{_num(r.score_median):>6} {_num(r.quality_mean):>6} {_num(r.quality_min):>6} "
                f"{_num(r.quality_std):>6} {r.n_judged:>6} {r.judge_failures:>6}  {held}"
            )
        lines.append("recommended pipeline policy:")
        lines += _changes(self.base, self.recommended)
        lines += [f"  - {why}" for why in self.reasons]
        for r in self.groups:
            lines.append(f"recommended policy of group {r.group}:")
            lines += _changes(r.policy, r.recommended)
        return "\n".join(lines)


_TUNED = (
    "compose_at",
    "decompose_at",
    "quality_floor",
    "verbosity_two_phase_threshold",
    "verbosity_sequential_threshold",
    "verbosity_guidance_threshold",
)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _changes(base: ControllerPolicy, new: ControllerPolicy) -> list[str]:
    out = []
    for name in _TUNED:
        old, now = getattr(base, name), getattr(new, name)
        mark = "" if old == now else f" (was {old})"
        out.append(f"  {name:<31} {now}{mark}")
    return out


# --------------------------------------------------------------------- running
@dataclass
class _Run:
    """One invocation: the final state, who wrote which key, new run records, calls."""

    final: dict[str, Any]
    updates: dict[str, set[str]]
    """node -> state keys it wrote."""
    records: dict[str, list[GroupRunRecord]]
    calls: list[CallRecord]


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    return dict(dump()) if callable(dump) else {}


def _written_keys(update: Any) -> set[str]:
    if isinstance(update, Mapping):
        return {str(k) for k in update}
    if isinstance(update, (list, tuple)):
        return set().union(*(_written_keys(u) for u in update)) if update else set()
    return set(_as_dict(update)) if update is not None else set()


def _invoke(
    app: Any, graph: CapsuleGraph, value: Any, mode: str, config: RunnableConfig | None
) -> _Run:
    tracker = UsageTracker()
    # Holding the earlier records keeps their ids unique, so new records are exactly
    # the ones whose id was not seen before.
    before = graph.history()
    seen = {id(r) for r in before}
    # The run's "capsules" entry replaces the caller's whole: no per-group override can
    # unlock a group, so the controller store is never written.
    own: RunnableConfig = {
        "callbacks": [tracker],
        "configurable": {"capsules": {"mode": mode}},
    }
    cfg = merge_configs(config, own)
    final: dict[str, Any] = {}
    updates: dict[str, set[str]] = {}
    for kind, chunk in app.stream(value, cfg, stream_mode=["updates", "values"]):
        if kind == "values":
            final = _as_dict(chunk)
        elif isinstance(chunk, Mapping):
            for node, update in chunk.items():
                updates.setdefault(str(node), set()).update(_written_keys(update))
    records: dict[str, list[GroupRunRecord]] = {}
    for rec in graph.history():
        if id(rec) not in seen:
            records.setdefault(rec["group"], []).append(rec)
    return _Run(final, updates, records, list(tracker.records))


def _member_outputs(
    members: Sequence[str], fine: _Run, compound: _Run
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]] | None:
    """Each member's output in both runs: the final values of the keys it wrote in the
    fine run (keys other nodes also wrote, such as a shared log, are left out unless
    they are all the member wrote). ``None`` when a member's output is missing."""
    writers: dict[str, set[str]] = {}
    for node, keys in fine.updates.items():
        for key in keys:
            writers.setdefault(key, set()).add(node)
    ref: dict[str, dict[str, Any]] = {}
    cand: dict[str, dict[str, Any]] = {}
    for m in members:
        keys = fine.updates.get(m, set())
        own = {k for k in keys if writers.get(k) == {m}} or keys
        keys_sorted = sorted(own)
        if not keys_sorted or any(
            k not in fine.final or k not in compound.final for k in keys_sorted
        ):
            return None
        ref[m] = {k: fine.final[k] for k in keys_sorted}
        cand[m] = {k: compound.final[k] for k in keys_sorted}
    return ref, cand


@dataclass
class _Pairs:
    """Accumulated paired measurements of one group."""

    fine: list[GroupRunRecord] = dataclasses.field(default_factory=list)
    compound: list[GroupRunRecord] = dataclasses.field(default_factory=list)
    scores: list[float] = dataclasses.field(default_factory=list)
    per_agent: list[float] = dataclasses.field(default_factory=list)
    qualities: list[float] = dataclasses.field(default_factory=list)
    failures: int = 0
    unjudged: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


def _summed(records: Sequence[GroupRunRecord]) -> GroupRunRecord:
    """One record for a group that ran more than once in one invocation (a loop)."""
    out = records[0].copy()
    out["calls"] = sum(r["calls"] for r in records)
    out["input_tokens"] = sum(r["input_tokens"] for r in records)
    out["cached_tokens"] = sum(r["cached_tokens"] for r in records)
    out["output_tokens"] = sum(r["output_tokens"] for r in records)
    out["fallback"] = [m for r in records for m in r["fallback"]]
    return out


def _fine_observation(rec: GroupRunRecord, calls: Sequence[CallRecord]) -> dict[str, Any]:
    """The observation fields the composition score reads, for a fine run (the gate's
    own: coordination tokens are 0 in fine runs; tools and errors from the run's calls)."""
    billed = [c for c in calls if c["group"] == rec["group"] and c["kind"] != "served"]
    return {
        "tier": "fine",
        "calls": rec["calls"],
        "input_tokens": rec["input_tokens"],
        "cached_tokens": rec["cached_tokens"],
        "output_tokens": rec["output_tokens"],
        "coordination_tokens": 0,
        "tool_calls": sum(c["tool_calls"] for c in billed),
        "errors": len(rec["fallback"]) + sum(1 for c in billed if c["error"]),
    }


# ---------------------------------------------------------------- statistics
def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(np.asarray(values, dtype=float)))


def _row(
    name: str,
    members: tuple[str, ...],
    policy: ControllerPolicy,
    pairs: _Pairs,
    pass_floor: float,
) -> GroupCalibration:
    q = pairs.qualities

    def mean_of(values: Sequence[int]) -> float:
        return _mean(values) if values else 0.0

    fine, comp = pairs.fine, pairs.compound
    return GroupCalibration(
        group=name,
        members=members,
        policy=policy,
        runs=len(fine),
        fine_calls=mean_of([r["calls"] for r in fine]),
        fine_input_tokens=mean_of([r["input_tokens"] for r in fine]),
        fine_output_tokens=mean_of([r["output_tokens"] for r in fine]),
        compound_calls=mean_of([r["calls"] for r in comp]),
        compound_input_tokens=mean_of([r["input_tokens"] for r in comp]),
        compound_output_tokens=mean_of([r["output_tokens"] for r in comp]),
        fallbacks=sum(len(r["fallback"]) for r in comp),
        output_per_agent=_pct(pairs.per_agent, 50) if pairs.per_agent else None,
        scores=tuple(pairs.scores),
        score_median=_pct(pairs.scores, 50) if pairs.scores else None,
        qualities=tuple(q),
        quality_mean=_mean(q) if q else None,
        quality_min=min(q) if q else None,
        quality_std=float(np.std(np.asarray(q, dtype=float))) if q else None,
        n_judged=len(q),
        judge_failures=pairs.failures,
        unjudged=pairs.unjudged,
        judge_errors=tuple(pairs.errors),
        pass_floor=pass_floor,
        recommended=policy,
        reasons=(),
    )


# ------------------------------------------------------------ recommendation
def _names(rows: Sequence[GroupCalibration]) -> str:
    return ", ".join(r.group for r in rows)


def _compose_at(
    held: Sequence[GroupCalibration],
    lost: Sequence[GroupCalibration],
    base: ControllerPolicy,
    reasons: list[str],
) -> float:
    share = 100.0 * (1.0 - base.confidence)
    hi = min((_pct(r.scores, share) for r in held), default=None)
    lo = max((max(r.scores) for r in lost), default=None)
    if hi is not None and lo is not None and lo < hi:
        value = (lo + hi) / 2
        reasons.append(
            f"compose_at {value:.4f}: midway between the highest fine score {lo:.3f} of the "
            f"groups whose compound quality fell below the pass floor ({_names(lost)}) and "
            f"the score {hi:.3f} that a {base.confidence:.0%} share of fine runs of the "
            f"groups that held ({_names(held)}) reach"
        )
    elif lo is not None:
        value = lo + SCORE_MARGIN
        blocked = [r for r in held if _pct(r.scores, share) < value]
        extra = (
            f"; this also keeps {_names(blocked)} (which held) from composing: give them "
            "their recommended group policy"
            if blocked
            else ""
        )
        reasons.append(
            f"compose_at {value:.4f}: just above the highest fine score {lo:.3f} of the "
            f"groups whose compound quality fell below the pass floor ({_names(lost)}), so "
            f"they stay fine{extra}"
        )
    elif hi is not None:
        value = hi - SCORE_MARGIN
        reasons.append(
            f"compose_at {value:.4f}: just below the score {hi:.3f} that a "
            f"{base.confidence:.0%} share of fine runs of the groups that held "
            f"({_names(held)}) reach"
        )
    else:
        reasons.append(f"compose_at kept at {base.compose_at}: no group was judged")
        return base.compose_at
    clamped = min(1.0, max(MIN_COMPOSE_AT, value))
    rounded = round(clamped, 4)
    # Round for readability unless that would cross a score the value must separate.
    if (lo is None or rounded > lo) and (hi is None or rounded <= hi):
        return rounded
    return clamped


def _decompose_at(compose_at: float, base: ControllerPolicy, reasons: list[str]) -> float:
    if base.decompose_at < compose_at:
        return base.decompose_at
    value = math.floor(compose_at * base.decompose_at / base.compose_at * 1e4) / 1e4
    reasons.append(
        f"decompose_at {value}: the base ratio decompose_at/compose_at "
        f"({base.decompose_at}/{base.compose_at}) applied to the new compose_at, which it "
        "must stay below"
    )
    return value


def _floor(
    held: Sequence[GroupCalibration],
    base: ControllerPolicy,
    fallback: float,
    floor_percentile: float,
    mdd: float | None,
    reasons: list[str],
) -> float:
    scores = [q for r in held for q in r.qualities]
    if not scores:
        value = base.quality_floor if base.quality_floor is not None else fallback
        reasons.append(f"quality_floor {value}: no group held, so the floor is not lowered")
        return value
    start = _pct(scores, floor_percentile)
    if mdd is None:
        spreads = [r.quality_std for r in held if r.n_judged >= 2 and r.quality_std is not None]
        sigma = _mean(spreads) if spreads else 0.0
        margin = max(MIN_MDD, _MDD_PER_SIGMA * sigma)
        how = f"MDD {margin:.3f} = max({MIN_MDD}, 2.5 x mean quality std {sigma:.3f})"
    else:
        margin = mdd
        how = f"MDD {margin:.3f} (given)"
    value = round(min(1.0, max(0.0, start - margin)), 3)
    reasons.append(
        f"quality_floor {value}: the {floor_percentile:g}th percentile {start:.3f} of "
        f"{len(scores)} judged compound qualities of the groups that held "
        f"({_names(held)}), minus the {how}"
    )
    return value


def _verbosity(
    held: Sequence[GroupCalibration],
    lost: Sequence[GroupCalibration],
    base: ControllerPolicy,
    reasons: list[str],
) -> tuple[int, int]:
    v_held = [r.output_per_agent for r in held if r.output_per_agent is not None]
    v_lost = [r.output_per_agent for r in lost if r.output_per_agent is not None]
    two, seq = base.verbosity_two_phase_threshold, base.verbosity_sequential_threshold
    if v_held and v_lost and max(v_held) < min(v_lost):
        top, bottom = max(v_held), min(v_lost)
        cut = max(math.floor(top) + 1, math.ceil((top + bottom) / 2), 2)
        if cut <= bottom:
            two = max(1, min(two, cut - 1))
            reasons.append(
                f"verbosity_sequential_threshold {cut}: between the fine output per agent "
                f"of the groups that held (at most {top:.0f} tokens) and of those that did "
                f"not (at least {bottom:.0f}), so auto tier selection keeps the former on "
                f"standard and sends the latter to a per-agent tier; "
                f"verbosity_two_phase_threshold {two} (kept below it)"
            )
            return two, cut
    if v_held:
        top = max(v_held)
        need = math.floor(top) + 1
        why = (
            "verbosity does not separate the groups that held from those that did not; "
            if v_lost
            else ""
        )
        if need > seq:
            reasons.append(
                f"verbosity_sequential_threshold {need}: {why}raised just above the most "
                f"verbose group that held ({top:.0f} tokens per agent), which should stay "
                "on standard"
            )
            return two, need
        reasons.append(
            f"verbosity thresholds kept ({two}, {seq}): {why}every group that held is "
            f"below them (at most {top:.0f} tokens per agent)"
        )
        return two, seq
    reasons.append(f"verbosity thresholds kept ({two}, {seq}): no group held")
    return two, seq


def _guidance_reason(rows: Sequence[GroupCalibration], base: ControllerPolicy) -> str:
    per_agent = [r.output_per_agent for r in rows if r.output_per_agent is not None]
    threshold = base.verbosity_guidance_threshold
    text = (
        f"verbosity_guidance_threshold kept at {threshold}: calibration makes no guided "
        "runs, so it has no evidence of what a concise hint costs"
    )
    if per_agent:
        text += (
            f"; fine output per agent: median {_pct(per_agent, 50):.0f}, "
            f"p90 {_pct(per_agent, 90):.0f} tokens"
        )
        hinted = [
            r for r in rows if r.output_per_agent is not None and r.output_per_agent >= threshold
        ]
        if hinted:
            text += f"; auto guidance would hint {_names(hinted)}"
    return text


def _recommend(
    rows: Sequence[GroupCalibration],
    base: ControllerPolicy,
    *,
    fallback_floor: float,
    floor_percentile: float,
    mdd: float | None,
) -> tuple[ControllerPolicy, tuple[str, ...]]:
    """The rules of the module docstring, applied to ``rows`` on top of ``base``."""
    reasons: list[str] = []
    judged = [r for r in rows if r.held is not None and r.scores]
    held = [r for r in judged if r.held]
    lost = [r for r in judged if not r.held]
    compose_at = _compose_at(held, lost, base, reasons)
    decompose_at = _decompose_at(compose_at, base, reasons)
    floor = _floor(held, base, fallback_floor, floor_percentile, mdd, reasons)
    two, seq = _verbosity(held, lost, base, reasons)
    reasons.append(_guidance_reason(rows, base))
    policy = base.replace(
        compose_at=compose_at,
        decompose_at=decompose_at,
        quality_floor=floor,
        verbosity_two_phase_threshold=two,
        verbosity_sequential_threshold=seq,
    )
    return policy, tuple(reasons)


# ------------------------------------------------------------------ the entry
def _bad(message: str) -> CapsuleConfigError:
    return CapsuleConfigError(message, code="bad_calibration")


def _check_fraction(name: str, value: float | None, upper: float = 1.0) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0.0 <= value <= upper
    ):
        raise _bad(f"calibrate({name}=...) must be a number in [0, {upper:g}], got {value!r}")


def _resolve_judge(graph: CapsuleGraph, judge: Any) -> Judge:
    if judge is not None:
        return as_judge(judge)
    if graph.judge is not None:
        return graph.judge
    raise CapsuleConfigError(
        "calibrate() needs a judge to compare each group's compound output with its fine "
        "output, and neither judge= nor the graph has one; pass judge=FactRecallJudge(), "
        "LLMJudge(model) or a function (task, reference, candidate) -> score, or give "
        "capsulize(..., judge=...) one",
        code="bad_judge",
    )


def calibrate(
    graph: CapsuleGraph,
    inputs: Iterable[Any],
    *,
    judge: Any = None,
    config: RunnableConfig | None = None,
    floor_percentile: float = 10,
    pass_floor: float | None = None,
    mdd: float | None = None,
) -> Calibration:
    """Recommend a controller policy from paired fine/compound runs (advisory only).

    Each input runs twice through ``graph.compile()``: locked ``fine``, then locked
    ``compound``. Locked modes bypass the controller and the gate, so the controller
    store (:meth:`CapsuleGraph.observations`) and every policy stay as they were; the
    runs do appear in :meth:`CapsuleGraph.history` and :meth:`CapsuleGraph.report`,
    and their calls are billed like any other. Per group, each compound output is
    judged against the fine output of the same input (the members' final state values;
    the task the judge sees is the graph input), the fine runs are scored with the
    controller's composition score, and the rules of the module docstring give a
    recommended policy for the pipeline and for each group. A judge that raises or
    gives no score is counted in ``judge_failures`` and skipped, never scored 0.

    Run it on a graph that serves no other traffic meanwhile: run records of concurrent
    invocations of the same graph cannot be told apart from calibration's own.

    Args:
        graph: The capsule graph (from :func:`~langgraph_capsules.capsulize`).
        inputs: Graph inputs, as passed to ``invoke``.
        judge: The judge (anything :func:`~langgraph_capsules.as_judge` accepts);
            default the graph's own judge.
        config: A run config merged into every run (its ``capsules`` entry is
            replaced by the locked mode).
        floor_percentile: Percentile of the held groups' judged qualities the
            recommended ``quality_floor`` starts from, in [0, 100].
        pass_floor: Mean quality a group's compound runs must keep to count as held;
            default the group policy's ``quality_floor``, else
            :data:`DEFAULT_PASS_FLOOR`.
        mdd: The judge's minimum detectable difference, subtracted from the floor;
            default estimated from the qualities' spread (at least :data:`MIN_MDD`).

    Returns:
        The :class:`Calibration`.

    Raises:
        CapsuleConfigError: ``bad_judge`` when there is no judge (or ``judge`` is not
            one); ``bad_calibration`` for a graph that is not a ``CapsuleGraph``, a plan
            without groups, no inputs or an out-of-range option.
        Exception: Whatever a run of the graph itself raises (calibration stops).

    Example:
        >>> import langgraph_capsules as lc
        >>> capsules = lc.capsulize(builder, groups={"arm": ["a", "b"]})  # doctest: +SKIP
        >>> cal = calibrate(capsules, [{"doc": d} for d in docs],
        ...                 judge=lc.FactRecallJudge())  # doctest: +SKIP
        >>> print(cal)  # doctest: +SKIP
    """
    if not isinstance(graph, CapsuleGraph):
        raise _bad(
            f"calibrate() needs the CapsuleGraph returned by capsulize(); got "
            f"{type(graph).__name__} (pass the capsulized graph, not its compiled app)"
        )
    if not graph.plan.groups:
        raise _bad(
            "the capsule plan has no groups, so there is nothing to calibrate; declare "
            "capsulize(builder, groups={...})"
        )
    _check_fraction("floor_percentile", floor_percentile, upper=100.0)
    _check_fraction("pass_floor", pass_floor)
    _check_fraction("mdd", mdd)
    the_judge = _resolve_judge(graph, judge)
    values = list(inputs)
    if not values:
        raise _bad("calibrate() got no inputs; pass a list of graph inputs")

    app = graph.compile()
    pairs = {g.name: _Pairs() for g in graph.plan.groups}
    for value in values:
        fine = _invoke(app, graph, value, "fine", config)
        compound = _invoke(app, graph, value, "compound", config)
        task = task_text({"input": value})
        for g in graph.plan.groups:
            fine_recs = [r for r in fine.records.get(g.name, []) if r["tier"] == "fine"]
            comp_recs = [r for r in compound.records.get(g.name, []) if r["tier"] != "fine"]
            if not fine_recs or not comp_recs:
                continue  # the group did not run on this input in both modes
            acc = pairs[g.name]
            rec = _summed(fine_recs)
            acc.fine.append(rec)
            acc.compound.append(_summed(comp_recs))
            n = len(g.members)
            obs = _fine_observation(rec, fine.calls)
            acc.scores.append(composition_score(obs, graph.policies[g.name], n_agents=n).score)
            acc.per_agent.append(rec["output_tokens"] / n)
            outputs = _member_outputs(g.members, fine, compound)
            if outputs is None:
                acc.unjudged += 1
                continue
            ref, cand = outputs
            judgement = run_judge(the_judge, task, output_text(ref), output_text(cand), config)
            if judgement.score is None:
                acc.failures += 1
                error = str(judgement.details.get("error") or "no score")
                if error not in acc.errors and len(acc.errors) < _MAX_JUDGE_ERRORS:
                    acc.errors.append(error)
            else:
                acc.qualities.append(judgement.score)

    def floor_of(policy: ControllerPolicy) -> float:
        if pass_floor is not None:
            return float(pass_floor)
        return policy.quality_floor if policy.quality_floor is not None else DEFAULT_PASS_FLOOR

    rows: list[GroupCalibration] = []
    for g in graph.plan.groups:
        policy = graph.policies[g.name]
        row = _row(g.name, g.members, policy, pairs[g.name], floor_of(policy))
        recommended, reasons = _recommend(
            [row],
            policy,
            fallback_floor=row.pass_floor,
            floor_percentile=floor_percentile,
            mdd=mdd,
        )
        rows.append(dataclasses.replace(row, recommended=recommended, reasons=reasons))
    governed = [r for r in rows if r.policy == graph.policy] or rows
    base_floor = floor_of(graph.policy)
    recommended, reasons = _recommend(
        governed,
        graph.policy,
        fallback_floor=base_floor,
        floor_percentile=floor_percentile,
        mdd=mdd,
    )
    return Calibration(
        inputs=len(values),
        base=graph.policy,
        recommended=recommended,
        groups=tuple(rows),
        reasons=reasons,
        pass_floor=base_floor,
        floor_percentile=float(floor_percentile),
    )
