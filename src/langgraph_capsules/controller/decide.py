"""Phase: replay a group's history into a state, then decide the next run.

The controller is a pure function: ``decide(history, policy, ...)`` replays the
observations (oldest first) and returns a :class:`Decision`. There are no clocks,
randomness or I/O, so every worker that reads the same history reaches the same
decision, and a decision can be replayed in a test without an LLM.

How the replay reads the evidence
---------------------------------
Observations of one run (the fine record and any shadow records) share a ``run_id``
and form one run, in order of its first record. Before each run the replay
recomputes what ``auto`` would have decided; the run's evidence is then read against it:

* a **fine** record adds a fine score (switch-up evidence, P6: post-revert only) and a
  verbosity reading;
* **shadow** records (``shadow=True``, ``tier`` = the compound tier that ran beside fine)
  go to the shadow gate while the group is fine and the gate is active;
* a **compound** record commits a switch when ``auto`` had decided to switch without a
  gate, and otherwise feeds the gate, the ladder and the switch-down check when it is the
  tier the group is in;
* anything else (runs of a locked mode or of ``observe`` mode) is recorded as evidence
  only: fine runs still feed the switch-up score, which is what onboarding with
  ``observe`` is for.

Modes: ``auto`` (the controller decides); ``observe`` (always fine, record only);
``fine`` / ``compound`` / ``standard`` (locked: the controller and the judge are
bypassed; ``compound`` means the merged tier that fits: ``two_phase`` for a group with
tools, ``standard`` otherwise).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from langgraph_capsules.controller._fold import DEFAULT_UNDO_RUNS, Fold
from langgraph_capsules.controller._replay import (
    MIN_AGENTS,
    Context,
    Work,
    auto_plan,
    freeze,
    make_context,
    replay,
)
from langgraph_capsules.controller.audit import judge_health_reason, judge_paused
from langgraph_capsules.controller.state import ControllerState
from langgraph_capsules.controller.tiers import DEFAULT_BUILT_TIERS, compound_tier, nearest_built
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.types import COMPOUND_TIERS, MODES, Observation, Tier

__all__ = ["Decision", "IncrementalDecider", "controller_state", "decide", "fallback_decision"]


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What the group runs next, and why.

    Example:
        >>> d = decide([], ControllerPolicy(), mode="auto", n_agents=3)
        >>> (d.tier, d.shadow)
        ('fine', False)
    """

    tier: Tier
    """The tier that produces the user's output in the next run."""
    shadow: bool
    """True on the switch run: ``shadow_tiers`` run beside fine on the same input and
    are judged; the user gets the fine output."""
    shadow_tiers: tuple[Tier, ...]
    """Compound tiers to shadow-evaluate, in order; stop at the first that scores at or
    above ``quality_floor`` and write one ``shadow=True`` observation per tier that ran."""
    mode: str
    """The controller mode the decision was made in."""
    state: ControllerState
    """The group's state after the history."""
    reasons: tuple[str, ...]
    """Plain-English reasons: what the last run changed, then why this tier."""
    audit: bool = False
    """An audit run (compound, gate active): the compound tier runs and, unless the judge
    is reference-free, fine runs on the same input too; the user gets the output
    ``policy.audit_serve`` names and compound is judged against fine."""
    judge_paused: bool = False
    """The judge failed ``judge_failure_limit`` times in a row: no shadow evaluation,
    audit or judging until the pause ends (the reasons say until which run)."""

    def to_dict(self) -> dict[str, Any]:
        """The decision as plain, JSON-safe data.

        Returns:
            Every field by name, the state as a dict.

        Example:
            >>> decide([], ControllerPolicy(), mode="fine", n_agents=2).to_dict()["tier"]
            'fine'
        """
        return {
            "tier": self.tier,
            "shadow": self.shadow,
            "shadow_tiers": list(self.shadow_tiers),
            "mode": self.mode,
            "audit": self.audit,
            "judge_paused": self.judge_paused,
            "reasons": list(self.reasons),
            "state": self.state.to_dict(),
        }

    def __str__(self) -> str:
        head = f"run {self.tier}"
        if self.shadow:
            head += f" (shadow-evaluate {', then '.join(self.shadow_tiers)} beside it)"
        if self.audit:
            head += " (audit: judge it against fine on the same input)"
        lines = [f"{head} [mode {self.mode}]"]
        lines += [f"  - {r}" for r in self.reasons]
        lines.append(f"  state: {self.state}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- public
def controller_state(
    history: Sequence[Observation],
    policy: ControllerPolicy,
    *,
    n_agents: int,
    depth: int = 0,
    has_tools: bool = False,
    built_tiers: frozenset[str] = DEFAULT_BUILT_TIERS,
    judge_active: bool = False,
) -> ControllerState:
    """Replay a group's history into its state (what ``decide`` sees).

    Args:
        history: The group's observations, oldest first.
        policy: The group's resolved policy.
        n_agents: Agents in the group.
        depth: Longest path in the group DAG (0 for a fan-out group).
        has_tools: Whether any agent of the group has tools.
        built_tiers: Tiers that have a strategy.
        judge_active: Whether a judge is configured.

    Returns:
        The frozen state.

    Raises:
        CapsuleConfigError: ``bad_policy`` for a policy that is not a ControllerPolicy,
            ``bad_mode`` for unknown built tiers.
        ValueError: For ``n_agents < 1`` or ``depth < 0``.

    Example:
        >>> controller_state([], ControllerPolicy(), n_agents=2).required_observations
        3
    """
    ctx = make_context(policy, n_agents, depth, has_tools, built_tiers, judge_active)
    return freeze(replay(history, ctx), ctx)


def decide(
    history: Sequence[Observation],
    policy: ControllerPolicy,
    *,
    mode: str,
    n_agents: int,
    depth: int = 0,
    has_tools: bool = False,
    built_tiers: frozenset[str] = DEFAULT_BUILT_TIERS,
    judge_active: bool = False,
) -> Decision:
    """Decide the tier of a group's next run from its observation history.

    Pure and deterministic: the same arguments always give an equal decision.

    Args:
        history: The group's observations, oldest first (fine and shadow records of
            one run share a ``run_id``).
        policy: The group's resolved policy (group policy over pipeline policy).
        mode: ``auto``, ``observe``, ``fine``, ``compound`` or ``standard``. A locked
            mode (``fine``, ``compound``, ``standard``) outranks every policy.
        n_agents: Agents in the group (fewer than 2 never run compound).
        depth: Longest path in the group DAG (0 for a fan-out group).
        has_tools: Whether any agent of the group has tools (auto picks two_phase).
        built_tiers: Tiers that have a strategy; an unbuilt tier falls to the nearest
            built one.
        judge_active: Whether a judge is configured; the gate needs it **and**
            ``policy.quality_floor``.

    Returns:
        The decision: the tier for the next run, whether it is a shadow run, the
        state and the reasons.

    Raises:
        CapsuleConfigError: ``bad_mode`` for an unknown mode or built tier,
            ``bad_policy`` for a policy that is not a ControllerPolicy.
        ValueError: For ``n_agents < 1`` or ``depth < 0``.

    Example:
        >>> obs = {"run_id": "r1", "tier": "fine", "shadow": False, "output_tokens": 900,
        ...        "input_tokens": 800, "coordination_tokens": 20, "tool_calls": 6,
        ...        "errors": 0, "calls": 8, "members": {}, "quality": None}
        >>> history = [dict(obs, run_id=f"r{i}") for i in range(3)]
        >>> d = decide(history, ControllerPolicy(), mode="auto", n_agents=2, depth=1)
        >>> d.tier
        'standard'
    """
    if mode not in MODES:
        raise CapsuleConfigError(
            f"unknown capsule mode {mode!r}; use one of {list(MODES)}", code="bad_mode"
        )
    ctx = make_context(policy, n_agents, depth, has_tools, built_tiers, judge_active)
    return _decision(replay(history, ctx), ctx, mode)


def _decision(work: Work, ctx: Context, mode: str) -> Decision:
    """The decision after a replayed state (``decide`` past its replay)."""
    policy = ctx.policy
    state = freeze(work, ctx)
    events = tuple(f"last run: {e}" for e in work.events)
    if mode == "fine":
        return Decision(
            tier="fine",
            shadow=False,
            shadow_tiers=(),
            mode=mode,
            state=state,
            reasons=("mode fine is locked: run fine; the controller and the judge are bypassed",),
        )
    if mode == "compound" or mode in COMPOUND_TIERS:
        return _locked_compound(mode, ctx, state)
    plan = auto_plan(work, ctx)
    if mode == "observe":
        if plan.shadow_tiers:
            would = f"shadow-evaluate {plan.shadow_tiers[0]}"
        else:
            would = f"run {plan.tier}"
        return Decision(
            tier="fine",
            shadow=False,
            shadow_tiers=(),
            mode=mode,
            state=state,
            reasons=(
                *events,
                "observe mode: run fine and record only (no switching, no gate)",
                f"auto would {would} ({plan.reasons[0]})",
            ),
        )
    health = judge_health_reason(work.audit, work.runs, policy) if ctx.gate else None
    if health is not None and not any(health in r for r in plan.reasons):
        plan = replace(plan, reasons=(*plan.reasons, health))
    return Decision(
        tier=plan.tier,
        shadow=bool(plan.shadow_tiers),
        shadow_tiers=plan.shadow_tiers,
        mode=mode,
        state=state,
        reasons=(*events, *plan.reasons),
        audit=plan.audit,
        judge_paused=ctx.gate and judge_paused(work.audit, work.runs),
    )


def _locked_compound(mode: str, ctx: Context, state: ControllerState) -> Decision:
    if ctx.n_agents < MIN_AGENTS:
        return Decision(
            tier="fine",
            shadow=False,
            shadow_tiers=(),
            mode=mode,
            state=state,
            reasons=(
                f"mode {mode} is locked, but the single-agent guard keeps a group of "
                f"{ctx.n_agents} agent fine",
            ),
        )
    # "compound" is the merged tier that fits (two_phase for a tool group); a named
    # tier is kept
    wanted: Tier = compound_tier(ctx.has_tools) if mode == "compound" else mode  # type: ignore[assignment]
    tier = nearest_built(wanted, ctx.built)
    reasons = [f"mode {mode} is locked: run {tier}; the controller and the judge are bypassed"]
    if tier == "fine":
        reasons = [f"mode {mode} is locked, but no compound tier is built: run fine"]
    elif tier != wanted:
        reasons.append(f"{wanted} is not built; using the nearest built tier {tier}")
    elif mode == "compound" and tier == "two_phase":
        reasons.append("a member has tools: compound merges in two_phase (standard drops tools)")
    return Decision(
        tier=tier, shadow=False, shadow_tiers=(), mode=mode, state=state, reasons=tuple(reasons)
    )


# --------------------------------------------------------------------- incremental
def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise CapsuleConfigError(
            f"unknown capsule mode {mode!r}; use one of {list(MODES)}", code="bad_mode"
        )


Reader = Callable[[int], "Sequence[Observation] | None"]
"""``read(since)``: the history's records numbered ``since + 1`` onwards, oldest first
(``None`` when they could not be read)."""
AsyncReader = Callable[[int], "Awaitable[Sequence[Observation] | None]"]
"""The async twin of :data:`Reader` (e.g. over a store's ``ahistory``)."""


class IncrementalDecider:
    """:func:`decide` over a group's growing history, at a constant cost per new run.

    ``decide`` replays the whole history on every call. This keeps the replay's state
    and how many observations it has consumed, and each :meth:`update` reads and folds
    only the records appended since (``read(since)``, e.g.
    ``lambda n: store.history(graph, group, since=n)``). Its decisions equal
    ``decide(history, ...)`` over the same records, including runs whose records arrive
    in several reads or interleaved with other runs' records (see
    ``controller/_fold.py``). A store whose order shifted under it (the record before
    the new ones is no longer the last one it read), or a late record of a run folded
    long ago, makes it rebuild from the whole history. Thread-safe.

    Args:
        policy: The group's resolved policy.
        n_agents: Agents in the group.
        depth: Longest path in the group DAG.
        has_tools: Whether any agent of the group has tools.
        built_tiers: Tiers that have a strategy.
        judge_active: Whether a judge is configured.
        undo_runs: Recent runs that can still take a late record without a rebuild.

    Raises:
        CapsuleConfigError: As :func:`decide`.
        ValueError: For ``n_agents < 1``, ``depth < 0`` or ``undo_runs < 1``.

    Example:
        >>> history = []
        >>> decider = IncrementalDecider(ControllerPolicy(), n_agents=2)
        >>> decider.update(lambda since: history[since:])
        True
        >>> decider.decide().tier, decider.consumed
        ('fine', 0)
    """

    def __init__(
        self,
        policy: ControllerPolicy,
        *,
        n_agents: int,
        depth: int = 0,
        has_tools: bool = False,
        built_tiers: frozenset[str] = DEFAULT_BUILT_TIERS,
        judge_active: bool = False,
        undo_runs: int = DEFAULT_UNDO_RUNS,
    ) -> None:
        self.context = make_context(policy, n_agents, depth, has_tools, built_tiers, judge_active)
        """The replay's fixed inputs."""
        self.rebuilds = 0
        """Full replays so far (after a shifted store order or a very late record)."""
        self._undo = undo_runs
        self._fold = Fold(self.context, undo_runs=undo_runs)
        self._cache: dict[str, Decision] = {}
        self._lock = threading.Lock()

    @property
    def consumed(self) -> int:
        """Observations folded so far (the last sequence number read)."""
        return self._fold.consumed

    def update(self, read: Reader) -> bool:
        """Fold the records appended since the last update.

        Args:
            read: ``read(since)`` returns the records numbered ``since + 1`` onwards
                (called with one record of overlap, to check the order did not shift),
                or ``None`` when they cannot be read.

        Returns:
            True when the state is up to date; False when ``read`` returned ``None``
            (the state is left as it was).
        """
        with self._lock:
            fold = self._fold
            got = read(max(fold.consumed - 1, 0))
            if got is None:
                return False
            new = list(got)
            if fold.consumed:
                if not new or new[0] != fold.last:
                    return self._rebuild(read)
                new = new[1:]
            if not new:
                return True
            self._cache.clear()
            if not fold.extend(new):
                return self._rebuild(read)
            return True

    async def aupdate(self, read: AsyncReader) -> bool:
        """Async twin of :meth:`update`: the records are read with ``await read(since)``
        outside the lock (an event loop never waits on it), then folded as
        :meth:`update` folds them. When the fold moved in between and needs records
        before the ones read, or must rebuild, the whole history is read once more.

        Args:
            read: ``await read(since)`` returns the records numbered ``since + 1``
                onwards, or ``None`` when they cannot be read.

        Returns:
            As :meth:`update`.
        """
        since = max(self.consumed - 1, 0)
        got = await read(since)
        if got is None:
            return False
        fetched = list(got)
        short = False

        def local(n: int) -> Sequence[Observation] | None:
            nonlocal short
            if n >= since:
                return fetched[n - since :]
            short = True  # a rebuild or a fold that moved back: needs older records
            return None

        ok = self.update(local)
        if not short:
            return ok
        whole = await read(0)
        if whole is None:
            return False
        every = list(whole)
        return self.update(lambda n: every[n:])

    def _rebuild(self, read: Reader) -> bool:
        # The old fold may be half-updated: drop it, so that a failed read here leaves
        # a fold that rebuilds on the next update.
        self._fold = Fold(self.context, undo_runs=self._undo)
        self._cache.clear()
        got = read(0)
        if got is None:
            return False
        self._fold.extend(list(got))
        self.rebuilds += 1
        return True

    def decide(self, mode: str = "auto") -> Decision:
        """The decision after the records folded so far (what :func:`decide` returns
        over them).

        Args:
            mode: As :func:`decide`.

        Returns:
            The decision (cached until new records are folded).

        Raises:
            CapsuleConfigError: ``bad_mode`` for an unknown mode.
        """
        _check_mode(mode)
        with self._lock:
            decision = self._cache.get(mode)
            if decision is None:
                decision = _decision(self._fold.work, self.context, mode)
                self._cache[mode] = decision
            return decision


def fallback_decision(last: Decision | None, why: str) -> Decision:
    """What a run does when the group's history cannot be read.

    Args:
        last: The last decision made from the history, if any.
        why: What failed, for the reasons.

    Returns:
        ``last`` with a first reason saying it was reused, or a plain fine decision
        (empty state) when there is no earlier decision.

    Example:
        >>> fallback_decision(None, "store locked").tier
        'fine'
    """
    if last is not None:
        return replace(last, reasons=(f"{why}: the last known decision stands", *last.reasons))
    return Decision(
        tier="fine",
        shadow=False,
        shadow_tiers=(),
        mode="auto",
        state=ControllerState(),
        reasons=(f"{why}, and no earlier decision is known: run fine",),
    )
