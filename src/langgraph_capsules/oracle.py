"""Oracle ablation: does the controller route each group where an oracle would?

For one app and model, :func:`oracle_ablation` runs every (group, tier) cell ``runs``
times on each input: a fine run, then each compound tier on the same input, every run
recorded and each compound run judged against that input's fine output. From the cells
it derives

* the **oracle routing** per group: the cheapest tier whose mean judged quality reaches
  the floor, else ``fine``. "Cheapest" follows the ladder (standard, two_phase,
  sequential: the order of cost the paper measured), and a tier whose measured cost
  is not below fine's is never chosen. The measured cost is the median per run of
  input + output tokens with cached input counted at :data:`CACHED_INPUT_WEIGHT`
  (providers bill prompt-cache reads at a tenth of the input price or less);
* the **controller routing** per group: :func:`~langgraph_capsules.decide` driven online
  over the very same observations (a fine run when it asks for fine, the recorded shadow
  readings when it asks for a shadow evaluation, recorded compound runs, cycled, when it
  asks for a tier) for ``steps`` runs; its routing is the tier it ran most often over
  the second half of the replay (the ladder may keep probing a cheaper rung, so the
  steady state is a majority, not the last run);

and reports agreement per group. The paper claims the controller matched the oracle on
every measured (model, group, mode) cell (capsules-spec 7.3).

The ablation runs on its own capsule graph with a fresh in-memory store: it never
touches a deployment's controller state.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph

from langgraph_capsules.compiler.runtime import BUILT_TIERS
from langgraph_capsules.controller import Decision, decide
from langgraph_capsules.controller.tiers import tier_rank
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.stores import InMemoryControllerStore
from langgraph_capsules.types import COMPOUND_TIERS, Observation, Tier

CACHED_INPUT_WEIGHT = 0.1
"""Cost of a cached input token relative to an uncached one in the oracle's cost."""

__all__ = [
    "CACHED_INPUT_WEIGHT",
    "OracleCell",
    "OracleReport",
    "OracleRow",
    "oracle_ablation",
    "replay_controller",
]


@dataclass(frozen=True)
class OracleCell:
    """One (group, tier) cell: ``runs`` recorded runs of the group at that tier."""

    group: str
    tier: Tier
    runs: int
    quality_mean: float | None
    """Mean judged quality against the fine output of the same input (fine: 1.0)."""
    quality_std: float | None
    judged: int
    """Runs with a score (a failed judgement is no score)."""
    tokens_median: float
    """Median cost per run of the group: input + output tokens, cached input tokens
    weighted by :data:`CACHED_INPUT_WEIGHT`."""
    passes: bool
    """``quality_mean >= floor``."""


@dataclass(frozen=True)
class OracleRow:
    """One group: the oracle's routing, the controller's, and whether they agree."""

    group: str
    oracle: Tier
    controller: Tier
    path: tuple[str, ...]
    """What the controller ran, run by run, in the online replay."""
    reasons: tuple[str, ...]
    """The controller's reasons for its final decision."""

    @property
    def agree(self) -> bool:
        """The controller routes the group where the oracle does."""
        return self.oracle == self.controller


@dataclass(frozen=True)
class OracleReport:
    """The ablation's result: ``str()`` is a table, ``to_dict()`` plain data."""

    label: str
    floor: float
    cells: tuple[OracleCell, ...]
    rows: tuple[OracleRow, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        """Share of groups where the controller matches the oracle."""
        return sum(r.agree for r in self.rows) / len(self.rows) if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe data."""
        return {
            "label": self.label,
            "floor": self.floor,
            "agreement": self.agreement,
            "meta": dict(self.meta),
            "cells": [vars(c) for c in self.cells],
            "rows": [{**vars(r), "path": list(r.path), "agree": r.agree} for r in self.rows],
        }

    def __str__(self) -> str:
        head = (
            f"{'group':<14} {'tier':<10} {'runs':>4} {'quality':>13} {'tokens':>8} "
            f"{'passes':>6}  oracle / controller"
        )
        lines = [f"oracle ablation: {self.label} (floor {self.floor:.2f})", head, "-" * len(head)]
        rows = {r.group: r for r in self.rows}
        for c in self.cells:
            q = "-" if c.quality_mean is None else f"{c.quality_mean:.3f}"
            if c.quality_std is not None:
                q += f" ±{c.quality_std:.3f}"
            verdict = ""
            row = rows.get(c.group)
            if row is not None and c.tier == "fine":
                mark = "agree" if row.agree else "DISAGREE"
                verdict = f"{row.oracle} / {row.controller}  {mark}"
            lines.append(
                f"{c.group:<14} {c.tier:<10} {c.runs:>4} {q:>13} {c.tokens_median:>8.0f} "
                f"{'yes' if c.passes else 'no':>6}  {verdict}"
            )
        agree = sum(r.agree for r in self.rows)
        lines.append(f"agreement: {agree}/{len(self.rows)} groups")
        return "\n".join(lines)


def _cell(group: str, tier: Tier, obs: Sequence[Observation], floor: float) -> OracleCell:
    tokens = [
        o["input_tokens"] - (1 - CACHED_INPUT_WEIGHT) * o["cached_tokens"] + o["output_tokens"]
        for o in obs
    ]
    if tier == "fine":
        scores = [1.0] * len(obs)  # the reference every compound run is judged against
    else:
        scores = [float(q) for o in obs if (q := o.get("quality")) is not None]
    mean = statistics.fmean(scores) if scores else None
    std = statistics.stdev(scores) if len(scores) >= 2 else None
    return OracleCell(
        group=group,
        tier=tier,
        runs=len(obs),
        quality_mean=mean,
        quality_std=std,
        judged=len(scores) if tier != "fine" else 0,
        tokens_median=statistics.median(tokens) if tokens else float("nan"),
        passes=mean is not None and mean >= floor,
    )


def oracle_tier(cells: Sequence[OracleCell]) -> Tier:
    """The lowest rung of the ladder that passes the floor and costs less than fine,
    else ``fine``."""
    fine = next((c for c in cells if c.tier == "fine"), None)
    passing = [
        c
        for c in cells
        if c.tier != "fine" and c.passes and (fine is None or c.tokens_median < fine.tokens_median)
    ]
    if not passing:
        return "fine"
    return min(passing, key=lambda c: tier_rank(c.tier)).tier


def replay_controller(
    fine: Sequence[Observation],
    compound: Mapping[Tier, Sequence[Observation]],
    policy: ControllerPolicy,
    *,
    n_agents: int,
    steps: int,
    built_tiers: Sequence[Tier] = BUILT_TIERS,
    has_tools: bool = False,
) -> tuple[Tier, tuple[str, ...], tuple[str, ...]]:
    """Drive the controller online over recorded observations.

    Each step asks :func:`decide` for the next run and answers it from the recordings:
    a fine observation for a fine run (plus, on a switch run, the recorded shadow
    readings of the tiers it asks for, stopping at the first that reaches the floor, as
    the capsule node does), or the next recorded observation of the tier it runs.
    Recordings are cycled in order.

    Returns:
        The controller's routing (the tier it ran most often over the second half of
        the steps, ties to the cheaper rung), what ran at each step, and the final
        decision's reasons.

    Raises:
        CapsuleConfigError: ``bad_policy`` when the policy has no ``quality_floor``.
    """
    floor = policy.quality_floor
    if floor is None:
        raise CapsuleConfigError(
            "the oracle ablation needs a quality floor: pass floor= or a policy with "
            "quality_floor set (e.g. ControllerPolicy.aggressive(quality_floor=0.75))",
            code="bad_policy",
        )
    if not fine:
        raise CapsuleConfigError("no fine observations to replay", code="bad_observation")
    built = frozenset(built_tiers)
    history: list[Observation] = []
    path: list[str] = []
    used: dict[str, int] = {}

    def take(tier: str, source: Sequence[Observation], run_id: str, shadow: bool) -> Observation:
        i = used.get(tier, 0)
        used[tier] = i + 1
        obs: Observation = {**source[i % len(source)]}
        obs["run_id"] = run_id
        obs["shadow"] = shadow
        history.append(obs)
        return obs

    def next_run() -> Decision:
        return decide(
            history,
            policy,
            mode="auto",
            n_agents=n_agents,
            has_tools=has_tools,
            built_tiers=built,
            judge_active=True,
        )

    for step in range(steps):
        d = next_run()
        run_id = f"oracle-{step}"
        if d.tier == "fine":
            take("fine", fine, run_id, False)
            label = "fine"
            for tier in d.shadow_tiers if d.shadow else ():
                recorded = compound.get(tier) or ()
                if not recorded:
                    break
                obs = take(tier, recorded, run_id, True)
                label += f"+shadow:{tier}"
                q = obs.get("quality")
                if q is not None and q >= floor:
                    break
            path.append(label)
        else:
            recorded = compound.get(d.tier) or ()
            if not recorded:
                raise CapsuleConfigError(
                    f"the controller chose {d.tier!r}, which was not recorded; record every "
                    "built tier",
                    code="bad_observation",
                )
            take(d.tier, recorded, run_id, False)
            path.append(d.tier)
    final = next_run()
    late = [p.split("+", 1)[0] for p in path[len(path) // 2 :]]
    ranks = {t: i for i, t in enumerate(("standard", "two_phase", "sequential", "fine"))}
    routing = max(sorted(set(late), key=lambda t: ranks[t]), key=late.count)
    return routing, tuple(path), final.reasons  # type: ignore[return-value]


def oracle_ablation(
    builder: StateGraph[Any, Any, Any, Any],
    inputs: Sequence[Any],
    *,
    judge: Any,
    groups: Mapping[str, Sequence[str]] | None = None,
    policy: ControllerPolicy | str | Mapping[str, Any] | None = None,
    floor: float | None = None,
    runs: int = 3,
    steps: int = 30,
    tiers: Sequence[Tier] | None = None,
    label: str = "",
    progress: Callable[[str], None] | None = None,
) -> OracleReport:
    """Run every (group, tier) cell ``runs`` times and compare the controller's routing
    with the oracle's.

    Args:
        builder: The app's ``StateGraph`` builder (its nodes call a
            :class:`~langgraph_capsules.CapsuleChatModel`).
        inputs: Graph inputs (tasks); each is run fine and at each compound tier.
        judge: The quality judge (anything :func:`~langgraph_capsules.as_judge`
            accepts); compound runs are judged against the fine output of the same input.
        groups: As for :func:`~langgraph_capsules.capsulize`.
        policy: The controller policy to replay (default: aggressive).
        floor: The quality floor (default: the policy's, else 0.75).
        runs: Runs per (input, tier).
        steps: Controller runs simulated per group.
        tiers: Compound tiers to record (default: every built one).
        label: Names the model or setup in the report.
        progress: Called with a line of text after each recorded run.

    Returns:
        The report: per (group, tier) cell quality and tokens, per group the oracle and
        controller routing and whether they agree.

    Raises:
        CapsuleConfigError: For no inputs, ``runs < 1``, ``steps < 1``, an unbuilt tier,
            a bad judge or policy.
    """
    from langgraph_capsules.graph import capsulize

    if not inputs:
        raise CapsuleConfigError("oracle_ablation needs at least one input", code="bad_input")
    if runs < 1 or steps < 1:
        raise CapsuleConfigError("runs and steps must be >= 1", code="bad_input")
    base = ControllerPolicy.coerce(policy if policy is not None else "aggressive")
    if floor is None:
        floor = base.quality_floor if base.quality_floor is not None else 0.75
    replayed = base.replace(quality_floor=floor)
    store = InMemoryControllerStore()
    capsules = capsulize(builder, groups=groups, judge=judge, store=store, mode="fine")
    built = {g: rt.built_tiers for g, rt in capsules.runtimes.items()}
    every = sorted({t for b in built.values() for t in b if t != "fine"}, key=tier_rank)
    compound_tiers = tuple(tiers) if tiers is not None else tuple(every)
    for t in compound_tiers:
        if t not in COMPOUND_TIERS or t not in every:
            raise CapsuleConfigError(
                f"tier {t!r} cannot be recorded; built compound tiers: {every}",
                code="bad_mode",
            )
    app = capsules.compile()
    # One group varies at a time, the others run fine: a group's compound run then sees
    # the inputs its fine runs saw, so it is judged against the same task's fine output.
    cells_to_run = [(None, "fine")] + [
        (g.name, t) for g in capsules.plan.groups for t in compound_tiers if t in built[g.name]
    ]
    names = [g.name for g in capsules.plan.groups]
    kept: dict[str, list[Observation]] = {n: [] for n in names}
    for rep in range(1, runs + 1):
        for i, task in enumerate(inputs, 1):
            for group, tier in cells_to_run:
                caps: dict[str, Any] = {"mode": "fine", "record": True}
                if group is not None:
                    caps["groups"] = {group: tier}
                config: RunnableConfig = {"configurable": {"capsules": caps}}
                seen = {n: len(store.history(capsules.plan.plan_id, n)) for n in names}
                app.invoke(task, config)
                for n in names:  # keep the varied group's records, and all of an all-fine run
                    if group is None or n == group:
                        kept[n] += store.history(capsules.plan.plan_id, n, since=seen[n])
                if progress is not None:
                    where = "every group fine" if group is None else f"{group} {tier}"
                    progress(f"run {rep}/{runs}, input {i}/{len(inputs)}, {where}")
    cells: list[OracleCell] = []
    rows: list[OracleRow] = []
    for g in capsules.plan.groups:
        history = kept[g.name]
        own_tiers = [t for t in compound_tiers if t in built[g.name]]
        by_tier = {t: [o for o in history if o["tier"] == t] for t in ("fine", *own_tiers)}
        own = [_cell(g.name, t, by_tier[t], floor) for t in ("fine", *own_tiers)]
        cells += own
        final, path, reasons = replay_controller(
            by_tier["fine"],
            {t: by_tier[t] for t in own_tiers},
            replayed,
            n_agents=len(g.members),
            steps=steps,
            built_tiers=tuple(sorted(built[g.name], key=tier_rank)),
            has_tools=capsules.runtimes[g.name].has_tools,
        )
        rows.append(OracleRow(g.name, oracle_tier(own), final, path, reasons))
    meta = {"runs": runs, "inputs": len(inputs), "steps": steps, "policy": repr(replayed)}
    return OracleReport(label=label, floor=floor, cells=tuple(cells), rows=tuple(rows), meta=meta)
