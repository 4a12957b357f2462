"""Code of the nodes and routers the rewrite adds for one group.

Per run of a group (see ``rewrite.py`` for the wiring)::

    fine:      router(pred) -> members -> gate__G -> successors
    compound:  router(pred) -> capsule__G -> gate__G -> successors
    fallback:  router(pred) -> capsule__G -> failed members -> gate__G -> successors

``capsule__G`` runs every member's own function concurrently under a session, makes
one merged call for the parked calls, and *stages* the members' updates in the
group's private channel. Members whose section is missing or bad are routed to their
original nodes. ``gate__G`` commits staged updates (reducers applied exactly once)
and records the run. Fallback routing sits on the capsule node, not the gate, so the
gate runs exactly once per run and its successors and joins fire once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import (
    merge_configs,
)
from langgraph.types import Command
from pydantic import BaseModel

from langgraph_capsules._compat import (
    TAG_NOSTREAM,
    StateNodeSpec,
    node_runnable,
)
from langgraph_capsules.agents import GUIDANCE_KEY
from langgraph_capsules.compiler.audit_run import (
    apply_audit,
    audit_async,
    audit_judge_args,
    audit_sync,
)
from langgraph_capsules.compiler.execution import (
    CapsuleRun,
    Outcome,
    complete,
    derived_config,
    in_thread,
    with_handler,
)
from langgraph_capsules.compiler.judging import (
    Baselines,
    Judgement,
    input_digest,
    output_text,
    run_judge,
    task_key,
    task_text,
)
from langgraph_capsules.compiler.modes import record_flag, resolve_mode, tier_for_mode
from langgraph_capsules.compiler.plan import GroupPlan
from langgraph_capsules.compiler.records import (
    check_single_writers,
    commit_writes,
    observation,
    run_record,
    shadow_observation,
)
from langgraph_capsules.controller import Decision, decide
from langgraph_capsules.controller.decide import IncrementalDecider, fallback_decision
from langgraph_capsules.errors import member_routes_error
from langgraph_capsules.judges import Judge
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.stores import ControllerStore
from langgraph_capsules.stores._guard import StoreGuard, gate_run_id
from langgraph_capsules.strategies.guidance import guidance_hint
from langgraph_capsules.strategies.standard import (
    DEFAULT_SECTION_WORDS,
)
from langgraph_capsules.telemetry import SHADOW_KEY, UsageTracker
from langgraph_capsules.topology import returned_routing
from langgraph_capsules.types import (
    TIERS,
    CallRecord,
    GroupRunRecord,
    Observation,
    Tier,
)

__all__ = ["BUILT_TIERS", "GroupRuntime", "private_reducer", "resolve_mode", "tier_for_mode"]

BUILT_TIERS: tuple[Tier, ...] = ("fine", "standard", "sequential")
"""Tiers with a strategy for captured plain nodes (``two_phase`` runs as sequential)."""


def private_reducer(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer of a group's private channel: ``None`` clears, ``usage`` appends,
    ``outputs`` and ``digests`` (per member, for the judge) and ``wrote`` (the keys
    each member node wrote) merge."""
    if new is None:
        return {}
    out = dict(old or {})
    if "staging" in new:
        out["staging"] = new["staging"]
    if "usage" in new:
        out["usage"] = [*out.get("usage", []), *new["usage"]]
    for key in ("outputs", "digests", "wrote"):
        if key in new:
            out[key] = {**out.get(key, {}), **new[key]}
    return out


def _coerce(schema: Any, values: dict[str, Any]) -> Any:
    if isinstance(schema, type) and (issubclass(schema, BaseModel) or is_dataclass(schema)):
        return schema(**values)
    return values


@dataclass(frozen=True)
class RunPlan:
    """One run of a group: its tier, the tiers shadow-evaluated beside it, whether it is
    an audit, and whether the judge is paused (no judging at all)."""

    tier: Tier
    shadows: tuple[Tier, ...] = ()
    audit: bool = False
    judge_paused: bool = False


@dataclass
class GroupRuntime:
    """Everything one group's added nodes need at run time."""

    plan: GroupPlan
    specs: dict[str, StateNodeSpec[Any, Any]]
    """The members' original node specs (their runnables run inside the capsule node)."""
    input_keys: dict[str, list[str]]
    channels: Mapping[str, Any]
    default_mode: str
    record: Callable[[GroupRunRecord], None]
    section_words: int | None = DEFAULT_SECTION_WORDS
    policy: ControllerPolicy = field(default_factory=ControllerPolicy)
    store: ControllerStore | None = None
    graph_id: str = ""
    judge: Judge | None = None
    """The quality-gate judge; the gate is active with a judge and ``policy.quality_floor``."""
    baselines: Baselines = field(default_factory=Baselines)
    """Fine outputs per task, the references compound runs are judged against."""
    member_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Extra run metadata per member (declared agents: the group's shared reads)."""
    _last_decision: tuple[int, Decision] | None = None
    _decider: tuple[tuple[Any, ...], IncrementalDecider] | None = None
    store_guard: StoreGuard = field(default_factory=StoreGuard)
    """Guarded store I/O: appends retried then dropped, failed reads; with counters."""

    @property
    def built_tiers(self) -> frozenset[Tier]:
        """Tiers this group can run (the plan's: two_phase needs a declared tool agent)."""
        return frozenset(t for t in TIERS if t in self.plan.tiers)

    @property
    def has_tools(self) -> bool:
        """Some member is a declared agent with tools (exactly when two_phase is built)."""
        return "two_phase" in self.plan.tiers

    @property
    def judge_active(self) -> bool:
        """Whether compound and shadow runs are judged (a judge and a quality floor)."""
        return self.judge is not None and self.policy.quality_floor is not None

    # ----------------------------------------------------------------- routing
    def run_plan(self, config: RunnableConfig | None) -> RunPlan:
        """This run's tier, the compound tiers to shadow-evaluate beside it and whether
        it is an audit.

        A locked mode gives its tier and no shadow; ``auto`` asks the controller over
        the group's observation history (a pure function of it, so every worker sharing
        the store decides alike)."""
        locked = self._locked_plan(config)
        return locked if locked is not None else self._auto_plan(self.decide())

    async def arun_plan(self, config: RunnableConfig | None) -> RunPlan:
        """Async twin of :meth:`run_plan`: reads the store with its async interface."""
        locked = self._locked_plan(config)
        return locked if locked is not None else self._auto_plan(await self.adecide())

    def _locked_plan(self, config: RunnableConfig | None) -> RunPlan | None:
        mode = resolve_mode(config, self.plan.name, self.default_mode)
        if mode != "auto" or self.store is None:
            return RunPlan(tier_for_mode(mode, self.plan.name, has_tools=self.has_tools))
        return None

    @staticmethod
    def _auto_plan(d: Decision) -> RunPlan:
        return RunPlan(d.tier, d.shadow_tiers if d.shadow else (), d.audit, d.judge_paused)

    def decide(self) -> Decision:
        """The controller's decision for the group's next ``auto`` run.

        Equal to :meth:`decide_over` the whole history, but it folds only the records
        appended since the previous call, so it costs the same at any history length.
        A store that cannot be read does not fail the run: the last known decision
        stands (fine when there is none), and the failure is counted in
        ``store_guard`` and in the group's next run record (``store_errors``)."""
        decider = self._incremental()
        store, guard = self.store, self.store_guard
        ok = store is None or decider.update(
            lambda since: guard.history(store, self.graph_id, self.plan.name, since=since)
        )
        return self._decided(decider, ok)

    async def adecide(self) -> Decision:
        """Async twin of :meth:`decide`: the store is read with ``ahistory`` (native
        async I/O where the store has it), so an async run never blocks its loop."""
        decider = self._incremental()
        store, guard = self.store, self.store_guard
        ok = store is None or await decider.aupdate(
            lambda since: guard.ahistory(store, self.graph_id, self.plan.name, since=since)
        )
        return self._decided(decider, ok)

    def _incremental(self) -> IncrementalDecider:
        key: tuple[Any, ...] = (self.policy, len(self.plan.members), self.has_tools)
        key += (self.built_tiers, self.judge_active)
        held = self._decider
        if held is None or held[0] != key:
            decider = IncrementalDecider(
                self.policy,
                n_agents=len(self.plan.members),
                has_tools=self.has_tools,
                built_tiers=self.built_tiers,
                judge_active=self.judge_active,
            )
            held = self._decider = (key, decider)
        return held[1]

    def _decided(self, decider: IncrementalDecider, ok: bool) -> Decision:
        if not ok:
            last = self._last_decision
            return fallback_decision(
                None if last is None else last[1], "the controller store could not be read"
            )
        decision = decider.decide()
        self._last_decision = (decider.consumed, decision)
        return decision

    def decide_over(self, history: Sequence[Observation]) -> Decision:
        """The ``auto`` decision over a given history (e.g. a prefix of the group's)."""
        return decide(
            history,
            self.policy,
            mode="auto",
            n_agents=len(self.plan.members),
            has_tools=self.has_tools,
            built_tiers=self.built_tiers,
            judge_active=self.judge_active,
        )

    def guidance(self) -> str | None:
        """The output-guidance hint for the group's per-agent calls (spec 3.5).

        Called once per member and run: it reuses the decision the run's router made
        (the hint is advisory) instead of reading the store again."""
        cached = self._last_decision
        state = cached[1].state if cached is not None else self.decide().state
        return guidance_hint(self.policy, state.fine_output_per_agent, state.fine_runs)

    async def aguidance(self) -> str | None:
        """Async twin of :meth:`guidance`."""
        cached = self._last_decision
        state = cached[1].state if cached is not None else (await self.adecide()).state
        return guidance_hint(self.policy, state.fine_output_per_agent, state.fine_runs)

    def route_entry(self, state: Any, config: RunnableConfig) -> list[str] | str:
        """Router on each predecessor: members (fine) or the capsule node (compound or a
        shadow evaluation)."""
        return self._entry(self.run_plan(config))

    async def aroute_entry(self, state: Any, config: RunnableConfig) -> list[str] | str:
        """Async twin of :meth:`route_entry`."""
        return self._entry(await self.arun_plan(config))

    def _entry(self, plan: RunPlan) -> list[str] | str:
        if plan.tier == "fine" and not plan.shadows:
            return list(self.plan.members)
        return self.plan.capsule_node

    def route_after_capsule(self, state: Mapping[str, Any]) -> list[str] | str:
        """After the capsule node: members to run as nodes (fine, fallback) or the gate."""
        staging = (state.get(self.plan.channel) or {}).get("staging") or {}
        route = list(staging.get("route") or [])
        return route or self.plan.gate_node

    # ----------------------------------------------------- member instrumentation
    def instrumented(self, member: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """Sync and async wrappers of a member node that report its usage to the gate
        (and, with a judge, its input digest and output, for the baselines)."""
        runnable = node_runnable(self.specs[member])
        channel = self.plan.channel
        judging = self.judge is not None

        def report(input: Any, ret: Any, tracker: UsageTracker) -> Command[Any]:
            private: dict[str, Any] = {"usage": tracker.records}
            update = _update_of(ret)
            # the keys it wrote: a fallback member and a staged one writing one plain key
            # must fail as LangGraph fails two writers in one step
            private["wrote"] = {member: sorted(update or ())}
            if judging:
                private["digests"] = {member: input_digest(input)}
                if update is not None:
                    private["outputs"] = {member: update}
            return Command(update={channel: private})

        declared = member in self.member_metadata

        def guided(config: RunnableConfig, hint: str | None) -> RunnableConfig:
            if hint is None:
                return config
            return merge_configs(config, {"metadata": {GUIDANCE_KEY: hint}})

        def checked(ret: Any) -> Any:
            # A member's own routing would fire beside the gate's edges: its targets
            # would run twice. The plan keeps routing nodes out; this catches the rest.
            routing = returned_routing(ret)
            if routing is not None:
                raise member_routes_error(self.plan.name, member, routing)
            return ret

        def run(input: Any, config: RunnableConfig) -> Any:
            tracker = UsageTracker(track_runs=False)
            hint = self.guidance() if declared else None
            ret = checked(runnable.invoke(input, with_handler(guided(config, hint), tracker)))
            return [ret, report(input, ret, tracker)]

        async def arun(input: Any, config: RunnableConfig) -> Any:
            tracker = UsageTracker(track_runs=False)
            hint = await self.aguidance() if declared else None
            cfg = with_handler(guided(config, hint), tracker)
            ret = checked(await runnable.ainvoke(input, cfg))
            return [ret, report(input, ret, tracker)]

        return run, arun

    # ------------------------------------------------------------ capsule node
    def _member_input(self, member: str, state: Mapping[str, Any]) -> Any:
        values = {k: state[k] for k in self.input_keys[member] if k in state}
        return _coerce(self.specs[member].input_schema, values)

    def _member_config(
        self,
        member: str,
        config: RunnableConfig,
        tier: Tier,
        callbacks: Any,
        *,
        shadow: bool = False,
    ) -> RunnableConfig:
        """A member's config inside the capsule node; ``callbacks`` are the run's
        (:func:`~langgraph_capsules.compiler.execution.tracked_callbacks`)."""
        md = dict(self.specs[member].metadata or {})
        md.update(self.member_metadata.get(member, {}))
        md.update(
            langgraph_node=member,
            capsule_group=self.plan.name,
            capsule_member=member,
            capsule_tier=tier,
        )
        hint = self.guidance() if tier == "fine" and member in self.member_metadata else None
        if hint is not None:
            md[GUIDANCE_KEY] = hint
        tags: tuple[str, ...] = ()
        if shadow:
            md[SHADOW_KEY] = True
            tags = (TAG_NOSTREAM,)  # a shadow's tokens never reach the user's stream
        return derived_config(config, metadata=md, callbacks=callbacks, tags=tags)

    def _merged_config(
        self,
        config: RunnableConfig,
        members: Sequence[str],
        tier: Tier,
        callbacks: Any,
        *,
        shadow: bool = False,
    ) -> RunnableConfig:
        md: dict[str, Any] = {
            "capsule_group": self.plan.name,
            "capsule_merged": list(members),
            "capsule_tier": tier,
        }
        if shadow:
            md[SHADOW_KEY] = True
        return derived_config(
            config,
            metadata=md,
            callbacks=callbacks,
            tags=("capsule:merged", TAG_NOSTREAM),
            run_name=f"{self.plan.capsule_node}:merged",
        )

    def capsule_sync(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        """The capsule node (sync graphs)."""
        plan = self.run_plan(config)
        if plan.shadows:
            return self._shadow_sync(state, config, plan.shadows)
        if plan.tier == "fine":
            return self._stage_fine()
        if plan.audit:
            return audit_sync(self, state, config, plan.tier)
        run = CapsuleRun(self, state, config, plan.tier)
        return self._judge_off(run.stage(run.execute_sync()), plan)

    async def capsule_async(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        """The capsule node (async graphs)."""
        plan = await self.arun_plan(config)
        if plan.shadows:
            return await self._shadow_async(state, config, plan.shadows)
        if plan.tier == "fine":
            return self._stage_fine()
        if plan.audit:
            return await audit_async(self, state, config, plan.tier)
        run = CapsuleRun(self, state, config, plan.tier)
        return self._judge_off(run.stage(await run.execute_async()), plan)

    def _judge_off(self, out: dict[str, Any], plan: RunPlan) -> dict[str, Any]:
        """While the judge is paused the gate judges nothing, not even same-task runs."""
        if plan.judge_paused:
            out[self.plan.channel]["staging"]["judge"] = False
        return out

    def _stage_fine(self) -> dict[str, Any]:
        staging = {"tier": "fine", "route": list(self.plan.members), "updates": []}
        return {self.plan.channel: {"staging": staging}}

    # ------------------------------------------------------- shadow evaluation
    def _shadow_sync(
        self, state: dict[str, Any], config: RunnableConfig, tiers: Sequence[Tier]
    ) -> dict[str, Any]:
        """The switch run: fine for the user, then each shadow tier judged against it
        (the walk stops at the first tier that passes, or when the judge fails)."""
        fine = CapsuleRun(self, state, config, "fine")
        outcomes = fine.execute_sync()
        shadows: list[dict[str, Any]] = []
        for tier in tiers if complete(outcomes) else ():
            run = CapsuleRun(self, state, config, tier, shadow=True)
            candidate = run.execute_sync()
            args = self._shadow_judge_args(fine, outcomes, candidate)
            judgement = run_judge(*args, config)
            shadows.append(run.shadow_record(candidate, judgement))
            if self._passes(judgement) or judgement.score is None:
                break  # a failed judge would fail the next tier too: no more calls
        return fine.stage(outcomes, shadow_runs=shadows)

    async def _shadow_async(
        self, state: dict[str, Any], config: RunnableConfig, tiers: Sequence[Tier]
    ) -> dict[str, Any]:
        """Async twin of :meth:`_shadow_sync` (the judge runs in a worker thread)."""
        fine = CapsuleRun(self, state, config, "fine")
        outcomes = await fine.execute_async()
        shadows: list[dict[str, Any]] = []
        for tier in tiers if complete(outcomes) else ():
            run = CapsuleRun(self, state, config, tier, shadow=True)
            candidate = await run.execute_async()
            args = self._shadow_judge_args(fine, outcomes, candidate)
            judgement = await in_thread(run_judge, *args, config)
            shadows.append(run.shadow_record(candidate, judgement))
            if self._passes(judgement) or judgement.score is None:
                break  # a failed judge would fail the next tier too: no more calls
        return fine.stage(outcomes, shadow_runs=shadows)

    def _shadow_judge_args(
        self,
        fine: CapsuleRun,
        reference: Mapping[str, Outcome],
        candidate: Mapping[str, Outcome],
    ) -> tuple[Judge, str, str, str]:
        assert self.judge is not None
        ref = {m: o.update for m, o in reference.items()}
        # A member whose merged section failed would re-run fine: the user would get the
        # fine output for it, so that is what the candidate holds.
        cand = {m: (o.update if o.update is not None else ref[m]) for m, o in candidate.items()}
        return self.judge, task_text(fine.inputs), output_text(ref), output_text(cand)

    def _passes(self, judgement: Judgement) -> bool:
        floor = self.policy.quality_floor
        return judgement.score is not None and floor is not None and judgement.score >= floor

    # --------------------------------------------------------------- gate node
    def _task_outputs(self, state: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """This run's task key and every member's output (``None`` when incomplete)."""
        private = state.get(self.plan.channel) or {}
        staging = private.get("staging") or {}
        outputs = {m: u for m, u in staging.get("updates") or []}
        outputs.update(private.get("outputs") or {})
        key = staging.get("task")
        if key is None:
            digests = private.get("digests") or {}
            if set(digests) != set(self.plan.members):
                return None
            key = task_key(digests)
        if set(outputs) != set(self.plan.members):
            return None
        return key, outputs

    def _judge_args(
        self, state: Mapping[str, Any], config: RunnableConfig
    ) -> tuple[Judge, str, str, str] | None:
        """What the gate judges: an audit run's compound output against its fine
        reference (or alone, for a reference-free judge), else a compound run's output
        against the fine output of the same task. A fine run's output is kept as that
        task's baseline instead."""
        # locked modes bypass the judge, unless the run asks to be recorded
        # (``capsules.record``: what the oracle ablation uses)
        if self.judge is None or not self._recorded(config):
            return None
        found = self._task_outputs(state)
        staging = (state.get(self.plan.channel) or {}).get("staging") or {}
        audit = staging.get("audit")
        if audit is not None:
            if found is not None and audit.get("reference") is not None:
                self.baselines.put(found[0], audit["reference"])
            return audit_judge_args(self.judge, staging, None if found is None else found[1])
        if found is None or staging.get("judge") is False:
            return None
        key, outputs = found
        if staging.get("tier", "fine") == "fine":
            self.baselines.put(key, outputs)
            return None
        baseline = self.baselines.get(key)
        if baseline is None or not (self.judge_active or record_flag(config)):
            return None
        text = str(staging.get("task_text") or "")
        return self.judge, text, output_text(baseline), output_text(outputs)

    def gate(self, state: Mapping[str, Any], config: RunnableConfig) -> Any:
        """The gate node: commit staged updates exactly once and record the run."""
        args = self._judge_args(state, config)
        judgement = run_judge(*args, config) if args is not None else None
        observations = self._observations(state, config, judgement)
        if self.store is not None and self._recorded(config):
            # locked modes (fine, compound, a tier) bypass the controller: nothing recorded
            # A store failure never fails the run: retried, then dropped and counted.
            for o in observations:
                self.store_guard.append(self.store, o)
        return self._close(state, observations, judgement)

    async def agate(self, state: Mapping[str, Any], config: RunnableConfig) -> Any:
        """Async twin of :meth:`gate`: a judge runs in a worker thread and the store is
        written with its async interface, so the event loop never blocks."""
        args = self._judge_args(state, config)
        judgement = await in_thread(run_judge, *args, config) if args is not None else None
        observations = self._observations(state, config, judgement)
        if self.store is not None and self._recorded(config):
            for o in observations:
                await self.store_guard.aappend(self.store, o)
        return self._close(state, observations, judgement)

    def _recorded(self, config: RunnableConfig | None) -> bool:
        mode = resolve_mode(config, self.plan.name, self.default_mode)
        return mode in ("auto", "observe") or record_flag(config)

    def _observations(
        self, state: Mapping[str, Any], config: RunnableConfig, judgement: Judgement | None
    ) -> list[Observation]:
        """The run's observation, then one per shadow tier evaluated beside it."""
        private = state.get(self.plan.channel) or {}
        staging = private.get("staging") or {}
        usage: list[CallRecord] = [*staging.get("usage", []), *private.get("usage", [])]
        tier = staging.get("tier", "fine")
        fallback = list(staging.get("route") or []) if tier != "fine" else []
        # Stable across re-runs of this gate task on resume: the store keeps one record.
        obs = observation(
            self.plan, self.graph_id, staging, usage, tier, fallback, run_id=gate_run_id(config)
        )
        if judgement is not None:
            obs["quality"] = judgement.score
        apply_audit(obs, staging, judgement)
        shadows = [
            shadow_observation(self.plan, self.graph_id, obs, s)
            for s in staging.get("shadow_runs") or []
        ]
        return [obs, *shadows]

    def _close(
        self,
        state: Mapping[str, Any],
        observations: Sequence[Observation],
        judgement: Judgement | None,
    ) -> Any:
        private = state.get(self.plan.channel) or {}
        staging = private.get("staging") or {}
        tier = staging.get("tier", "fine")
        fallback = list(staging.get("route") or []) if tier != "fine" else []
        obs, *shadows = observations
        self.record(
            run_record(
                self.plan,
                obs,
                shadows,
                staging,
                judgement,
                store_errors=self.store_guard.take_unreported(),
            )
        )
        staged = staging.get("updates") or []
        check_single_writers(staged, private.get("wrote") or {}, fallback, self.channels)
        commits = commit_writes(staged)
        if not commits:
            return {self.plan.channel: None}
        return [Command(update={self.plan.channel: None}), *commits]


def _update_of(ret: Any) -> dict[str, Any] | None:
    """The state update a node returned, when it is a plain dict (or a Command's dict)."""
    if isinstance(ret, dict):
        return ret
    if isinstance(ret, Command) and isinstance(ret.update, dict):
        return ret.update
    return None
