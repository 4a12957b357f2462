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

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import copy_context
from dataclasses import dataclass, field, is_dataclass
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    merge_configs,
    patch_config,
    var_child_runnable_config,
)
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command
from pydantic import BaseModel

from langgraph_capsules._compat import (
    TAG_NOSTREAM,
    BinaryOperatorAggregate,
    RunnableCallable,
    StateNodeSpec,
    node_runnable,
)
from langgraph_capsules._session import PASS_THROUGH, SESSION, MergeAbort, Parked, Slot
from langgraph_capsules.agents import GUIDANCE_KEY
from langgraph_capsules.compiler.judging import (
    Baselines,
    Judgement,
    input_digest,
    output_text,
    run_judge,
    task_key,
    task_text,
)
from langgraph_capsules.compiler.plan import GroupPlan
from langgraph_capsules.controller import Decision, decide
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.judges import Judge
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.stores import ControllerStore
from langgraph_capsules.strategies.guidance import guidance_hint
from langgraph_capsules.strategies.sequential import SequentialPlan, build_sequential
from langgraph_capsules.strategies.standard import (
    DEFAULT_SECTION_WORDS,
    build_merged_prompt,
    split_reply,
)
from langgraph_capsules.telemetry import SHADOW_KEY, UsageTracker
from langgraph_capsules.types import (
    MODES,
    TIERS,
    CallRecord,
    GroupRunRecord,
    MemberUsage,
    Observation,
    Tier,
)

__all__ = ["BUILT_TIERS", "GroupRuntime", "private_reducer", "resolve_mode", "tier_for_mode"]

BUILT_TIERS: tuple[Tier, ...] = ("fine", "standard", "sequential")
"""Tiers with a strategy for captured plain nodes (``two_phase`` runs as sequential)."""
WORDS_PER_TOKEN = 0.6
"""Words of English prose per token budgeted in the structural hint (conservative)."""
MERGED_BUDGET_HEADROOM = 1.5
"""A merged call cannot cap each section on its own, so one long early section would
starve the later ones (measured with the 0.5B model: sections 2 and 3 cut off); the
merged call's ``max_tokens`` is the sum of the members' budgets times this headroom."""
MARKER_TOKENS = 16
"""Extra ``max_tokens`` per section of a merged call, for its marker line."""


def private_reducer(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer of a group's private channel: ``None`` clears, ``usage`` appends,
    ``outputs`` and ``digests`` (per member, for the judge) merge."""
    if new is None:
        return {}
    out = dict(old or {})
    if "staging" in new:
        out["staging"] = new["staging"]
    if "usage" in new:
        out["usage"] = [*out.get("usage", []), *new["usage"]]
    for key in ("outputs", "digests"):
        if key in new:
            out[key] = {**out.get(key, {}), **new[key]}
    return out


def resolve_mode(config: RunnableConfig | None, group: str, default_mode: str) -> str:
    """The controller mode of one group for one run.

    Precedence: ``configurable.capsules.groups[group]``, then
    ``configurable.capsules.mode``, then the graph's ``mode``.

    Raises:
        CapsuleConfigError: ``bad_mode`` when the run's capsules config is not a dict.
    """
    caps = ((config or {}).get("configurable") or {}).get("capsules") or {}
    if not isinstance(caps, Mapping):
        raise CapsuleConfigError(
            "config['configurable']['capsules'] must be a dict such as {'mode': 'compound'}; "
            f"got {type(caps).__name__}",
            code="bad_mode",
            group=group,
        )
    per_group = caps.get("groups") or {}
    return str(per_group.get(group) or caps.get("mode") or default_mode)


def tier_for_mode(mode: str, group: str | None = None) -> Tier:
    """Map a controller mode or tier name to the tier it runs (``bad_mode`` otherwise)."""
    if mode in ("auto", "observe", "fine"):
        return "fine"  # without a controller consulted, auto runs fine
    if mode in ("compound", "standard"):
        return "standard"
    if mode in ("sequential", "two_phase"):
        # two_phase needs declared agents with tools; for captured plain nodes it runs
        # as sequential (the plan says so)
        return "sequential"
    raise CapsuleConfigError(
        f"unknown capsule mode {mode!r}; use one of {list(MODES)}",
        code="bad_mode",
        group=group,
    )


def _coerce(schema: Any, values: dict[str, Any]) -> Any:
    if isinstance(schema, type) and (issubclass(schema, BaseModel) or is_dataclass(schema)):
        return schema(**values)
    return values


def _multi_write(channel: Any) -> bool:
    return isinstance(channel, BinaryOperatorAggregate) or type(channel).__name__ == "Topic"


@dataclass
class _Outcome:
    update: dict[str, Any] | None = None
    reason: str | None = None


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
    section_words: int = DEFAULT_SECTION_WORDS
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
    def run_plan(self, config: RunnableConfig | None) -> tuple[Tier, tuple[Tier, ...]]:
        """This run's tier and the compound tiers to shadow-evaluate beside it.

        A locked mode gives its tier and no shadow; ``auto`` asks the controller over
        the group's observation history (a pure function of it, so every worker sharing
        the store decides alike)."""
        mode = resolve_mode(config, self.plan.name, self.default_mode)
        if mode == "two_phase" and "two_phase" in self.built_tiers:
            return "two_phase", ()
        if mode != "auto" or self.store is None:
            return tier_for_mode(mode, self.plan.name), ()
        decision = self.decide()
        return decision.tier, (decision.shadow_tiers if decision.shadow else ())

    def decide(self) -> Decision:
        """The controller's decision for the group's next ``auto`` run."""
        history = self.store.history(self.graph_id, self.plan.name) if self.store else []
        cached = self._last_decision
        # decide() is a pure function of an append-only history: its length identifies it,
        # so the router(s) and the capsule node of one run replay the history only once.
        if cached is not None and cached[0] == len(history):
            return cached[1]
        decision = self.decide_over(history)
        self._last_decision = (len(history), decision)
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

    def route_entry(self, state: Any, config: RunnableConfig) -> list[str] | str:
        """Router on each predecessor: members (fine) or the capsule node (compound or a
        shadow evaluation)."""
        tier, shadows = self.run_plan(config)
        if tier == "fine" and not shadows:
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
            if judging:
                private["digests"] = {member: input_digest(input)}
                update = _update_of(ret)
                if update is not None:
                    private["outputs"] = {member: update}
            return Command(update={channel: private})

        declared = member in self.member_metadata

        def guided(config: RunnableConfig) -> RunnableConfig:
            hint = self.guidance() if declared else None
            if hint is None:
                return config
            return merge_configs(config, {"metadata": {GUIDANCE_KEY: hint}})

        def run(input: Any, config: RunnableConfig) -> Any:
            tracker = UsageTracker(track_runs=False)
            ret = runnable.invoke(input, _with_handler(guided(config), tracker))
            return [ret, report(input, ret, tracker)]

        async def arun(input: Any, config: RunnableConfig) -> Any:
            tracker = UsageTracker(track_runs=False)
            ret = await runnable.ainvoke(input, _with_handler(guided(config), tracker))
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
        tracker: UsageTracker,
        *,
        shadow: bool = False,
    ) -> RunnableConfig:
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
        own: RunnableConfig = {"metadata": md, "callbacks": [tracker]}
        if shadow:
            md[SHADOW_KEY] = True
            own["tags"] = [TAG_NOSTREAM]  # a shadow's tokens never reach the user's stream
        return merge_configs(config, own)

    def _merged_config(
        self,
        config: RunnableConfig,
        members: Sequence[str],
        tier: Tier,
        tracker: UsageTracker,
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
        return merge_configs(
            config,
            {
                "metadata": md,
                "tags": ["capsule:merged", TAG_NOSTREAM],
                "callbacks": [tracker],
                "run_name": f"{self.plan.capsule_node}:merged",
            },
        )

    def capsule_sync(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        """The capsule node (sync graphs)."""
        tier, shadows = self.run_plan(config)
        if shadows:
            return self._shadow_sync(state, config, shadows)
        if tier == "fine":
            return self._stage_fine()
        run = _CapsuleRun(self, state, config, tier)
        return run.stage(run.execute_sync())

    async def capsule_async(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        """The capsule node (async graphs)."""
        tier, shadows = self.run_plan(config)
        if shadows:
            return await self._shadow_async(state, config, shadows)
        if tier == "fine":
            return self._stage_fine()
        run = _CapsuleRun(self, state, config, tier)
        return run.stage(await run.execute_async())

    def _stage_fine(self) -> dict[str, Any]:
        staging = {"tier": "fine", "route": list(self.plan.members), "updates": []}
        return {self.plan.channel: {"staging": staging}}

    # ------------------------------------------------------- shadow evaluation
    def _shadow_sync(
        self, state: dict[str, Any], config: RunnableConfig, tiers: Sequence[Tier]
    ) -> dict[str, Any]:
        """The switch run: fine for the user, then each shadow tier judged against it."""
        fine = _CapsuleRun(self, state, config, "fine")
        outcomes = fine.execute_sync()
        shadows: list[dict[str, Any]] = []
        for tier in tiers if _complete(outcomes) else ():
            run = _CapsuleRun(self, state, config, tier, shadow=True)
            candidate = run.execute_sync()
            args = self._shadow_judge_args(fine, outcomes, candidate)
            judgement = run_judge(*args, config)
            shadows.append(run.shadow_record(candidate, judgement))
            if self._passes(judgement):
                break
        return fine.stage(outcomes, shadow_runs=shadows)

    async def _shadow_async(
        self, state: dict[str, Any], config: RunnableConfig, tiers: Sequence[Tier]
    ) -> dict[str, Any]:
        """Async twin of :meth:`_shadow_sync` (the judge runs in a worker thread)."""
        fine = _CapsuleRun(self, state, config, "fine")
        outcomes = await fine.execute_async()
        shadows: list[dict[str, Any]] = []
        for tier in tiers if _complete(outcomes) else ():
            run = _CapsuleRun(self, state, config, tier, shadow=True)
            candidate = await run.execute_async()
            args = self._shadow_judge_args(fine, outcomes, candidate)
            judgement = await _in_thread(run_judge, *args, config)
            shadows.append(run.shadow_record(candidate, judgement))
            if self._passes(judgement):
                break
        return fine.stage(outcomes, shadow_runs=shadows)

    def _shadow_judge_args(
        self,
        fine: _CapsuleRun,
        reference: Mapping[str, _Outcome],
        candidate: Mapping[str, _Outcome],
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
        """What the gate judges: a compound run's output against the fine output of the
        same task. A fine run's output is kept as that task's baseline instead."""
        # locked modes bypass the judge, unless the run asks to be recorded
        # (``capsules.record``: what the oracle ablation uses)
        if self.judge is None or not self._recorded(config):
            return None
        found = self._task_outputs(state)
        if found is None:
            return None
        key, outputs = found
        staging = (state.get(self.plan.channel) or {}).get("staging") or {}
        if staging.get("tier", "fine") == "fine":
            self.baselines.put(key, outputs)
            return None
        baseline = self.baselines.get(key)
        if baseline is None or not (self.judge_active or _record_flag(config)):
            return None
        text = str(staging.get("task_text") or "")
        return self.judge, text, output_text(baseline), output_text(outputs)

    def gate(self, state: Mapping[str, Any], config: RunnableConfig) -> Any:
        """The gate node: commit staged updates exactly once and record the run."""
        args = self._judge_args(state, config)
        judgement = run_judge(*args, config) if args is not None else None
        return self._close(state, config, judgement)

    async def agate(self, state: Mapping[str, Any], config: RunnableConfig) -> Any:
        """Async twin of :meth:`gate` (a judge runs in a worker thread)."""
        args = self._judge_args(state, config)
        judgement = await _in_thread(run_judge, *args, config) if args is not None else None
        return self._close(state, config, judgement)

    def _recorded(self, config: RunnableConfig | None) -> bool:
        mode = resolve_mode(config, self.plan.name, self.default_mode)
        return mode in ("auto", "observe") or _record_flag(config)

    def _close(
        self, state: Mapping[str, Any], config: RunnableConfig, judgement: Judgement | None
    ) -> Any:
        private = state.get(self.plan.channel) or {}
        staging = private.get("staging") or {}
        usage: list[CallRecord] = [*staging.get("usage", []), *private.get("usage", [])]
        tier = staging.get("tier", "fine")
        fallback = list(staging.get("route") or []) if tier != "fine" else []
        obs = self._observation(staging, usage, tier, fallback)
        if judgement is not None:
            obs["quality"] = judgement.score
        shadows = [self._shadow_observation(obs, s) for s in staging.get("shadow_runs") or []]
        if self.store is not None and self._recorded(config):
            # locked modes (fine, compound, a tier) bypass the controller: nothing recorded
            for o in (obs, *shadows):
                self.store.append(o)
        judge_runs = [judgement.summary()] if judgement is not None else []
        judge_runs += [s["judgement"] for s in staging.get("shadow_runs") or []]
        self.record(
            {
                "group": self.plan.name,
                "tier": tier,
                "run_key": obs["run_id"],
                "time": obs["time"],
                "members": list(self.plan.members),
                "fallback": fallback,
                "fallback_reasons": dict(staging.get("reasons") or {}),
                "calls": obs["calls"],
                "input_tokens": obs["input_tokens"],
                "cached_tokens": obs["cached_tokens"],
                "output_tokens": obs["output_tokens"],
                "latency_s": float(staging.get("elapsed_s", 0.0)),
                "error": staging.get("error"),
                "quality": obs["quality"],
                "shadow": [
                    {
                        "tier": o["tier"],
                        "quality": o["quality"],
                        "calls": o["calls"],
                        "input_tokens": o["input_tokens"],
                        "output_tokens": o["output_tokens"],
                    }
                    for o in shadows
                ],
                "judge_calls": sum(j["calls"] for j in judge_runs),
                "judge_input_tokens": sum(j["input_tokens"] for j in judge_runs),
                "judge_output_tokens": sum(j["output_tokens"] for j in judge_runs),
            }
        )
        commits = self._commit(staging.get("updates") or [])
        if not commits:
            return {self.plan.channel: None}
        return [Command(update={self.plan.channel: None}), *commits]

    def _shadow_observation(self, main: Observation, shadow: Mapping[str, Any]) -> Observation:
        obs = self._observation(shadow, shadow.get("usage") or [], shadow["tier"], shadow["route"])
        obs["run_id"] = main["run_id"]
        obs["time"] = main["time"]
        obs["quality"] = shadow["judgement"]["score"]
        obs["shadow"] = True
        return obs

    def _observation(
        self,
        staging: Mapping[str, Any],
        usage: Sequence[CallRecord],
        tier: str,
        fallback: Sequence[str],
    ) -> Observation:
        """The run's record for the controller (what counts is documented on
        :class:`~langgraph_capsules.types.Observation`)."""
        billed = [r for r in usage if r["kind"] != "served"]
        members: dict[str, MemberUsage] = {}
        for m in self.plan.members:
            own = [r for r in billed if r["member"] == m]
            members[m] = {
                "input_tokens": sum(r["input_tokens"] for r in own),
                "cached_tokens": sum(r["cached_tokens"] for r in own),
                "output_tokens": sum(r["output_tokens"] for r in own),
                "calls": len(own),
                "tool_calls": sum(r["tool_calls"] for r in own),
                "latency_s": sum(r["latency_s"] for r in own),
            }
        merge = staging.get("merge") or {}
        return {
            "graph": self.graph_id,
            "group": self.plan.name,
            "run_id": str(uuid.uuid4()),
            "time": time.time(),
            "tier": tier,
            "members": members,
            "calls": len(billed),
            "input_tokens": sum(r["input_tokens"] for r in billed),
            "cached_tokens": sum(r["cached_tokens"] for r in billed),
            "output_tokens": sum(r["output_tokens"] for r in billed),
            "latency_s": float(staging.get("elapsed_s") or sum(r["latency_s"] for r in billed)),
            "tool_calls": sum(r["tool_calls"] for r in billed),
            "coordination_tokens": int(merge.get("coordination_tokens", 0)),
            "errors": len(fallback) + sum(1 for r in billed if r["error"]),
            "quality": None,
            "shadow": False,
        }

    def _commit(self, staged: Sequence[Sequence[Any]]) -> list[Command[Any]]:
        """Fold single-value keys (one writer per key in a fan-out group); write reducer
        keys once per member, in node-name order as LangGraph applies a superstep."""
        folded: dict[str, Any] = {}
        per_member: list[Command[Any]] = []
        for _member, update in sorted(staged, key=lambda mu: mu[0]):
            multi = {k: v for k, v in update.items() if _multi_write(self.channels.get(k))}
            folded.update({k: v for k, v in update.items() if k not in multi})
            if multi:
                per_member.append(Command(update=multi))
        return ([Command(update=folded)] if folded else []) + per_member


def _record_flag(config: RunnableConfig | None) -> bool:
    """``configurable.capsules.record``: record (and, with a judge, judge) a run of a
    locked mode too."""
    caps = ((config or {}).get("configurable") or {}).get("capsules") or {}
    return isinstance(caps, Mapping) and caps.get("record") is True


def _update_of(ret: Any) -> dict[str, Any] | None:
    """The state update a node returned, when it is a plain dict (or a Command's dict)."""
    if isinstance(ret, dict):
        return ret
    if isinstance(ret, Command) and isinstance(ret.update, dict):
        return ret.update
    return None


def _complete(outcomes: Mapping[str, _Outcome]) -> bool:
    """Every member produced an update (a shadow evaluation needs the whole fine output)."""
    return all(o.update is not None for o in outcomes.values())


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call in a worker thread with the current context."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, copy_context().run, fn, *args)


class _CapsuleRun:
    """One run of one group's members inside the capsule node.

    With a compound ``tier`` every member runs under a session and the parked calls are
    answered from one merged call; with ``tier="fine"`` (the fine half of a shadow
    evaluation) the members run with no session, one real call each. ``shadow`` marks
    the calls of a shadow evaluation (metadata ``capsule_shadow``, never streamed).
    """

    def __init__(
        self,
        rt: GroupRuntime,
        state: Mapping[str, Any],
        config: RunnableConfig,
        tier: Tier,
        *,
        shadow: bool = False,
    ) -> None:
        self.rt = rt
        self.config = config
        self.tier = tier
        self.shadow = shadow
        self.members = list(rt.plan.members)
        self.tracker = UsageTracker()
        self.slots = {m: Slot(rt.plan.name, m, tier) for m in self.members}
        self.inputs = {m: rt._member_input(m, state) for m in self.members}
        self.configs = {
            m: rt._member_config(m, config, tier, self.tracker, shadow=shadow) for m in self.members
        }
        self.problems: dict[str, str] = {}
        self.started = time.perf_counter()
        self.merge_stats: dict[str, Any] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -------------------------------------------------- running the members
    def _member_sync(self, member: str) -> Any:
        cfg = self.configs[member]
        manager = get_callback_manager_for_config(cfg)
        run = manager.on_chain_start(None, self.inputs[member], name=member)
        child = patch_config(cfg, callbacks=run.get_child())
        var_child_runnable_config.set(child)
        try:
            out = node_runnable(self.rt.specs[member]).invoke(self.inputs[member], child)
        except BaseException as e:
            run.on_chain_error(e)
            raise
        run.on_chain_end(out if isinstance(out, dict) else {"output": out})
        return out

    async def _member_async(self, member: str) -> Any:
        cfg = self.configs[member]
        manager = get_async_callback_manager_for_config(cfg)
        run = await manager.on_chain_start(None, self.inputs[member], name=member)
        child = patch_config(cfg, callbacks=run.get_child())
        var_child_runnable_config.set(child)
        runnable = node_runnable(self.rt.specs[member])
        try:
            if _sync_only(runnable):
                # A parked sync member blocks its thread until the merged answer comes: run
                # it on this run's own threads, never on the loop's shared default executor
                # (12 parked members of 4 groups would exhaust it and deadlock).
                loop = asyncio.get_running_loop()
                ctx = copy_context()
                out = await loop.run_in_executor(
                    self._threads(), ctx.run, runnable.invoke, self.inputs[member], child
                )
            else:
                out = await runnable.ainvoke(self.inputs[member], child)
        except BaseException as e:
            await run.on_chain_error(e)
            raise
        await run.on_chain_end(out if isinstance(out, dict) else {"output": out})
        return out

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=len(self.members), thread_name_prefix=self.rt.plan.capsule_node
            )
        return self._pool

    def _context(self, member: str) -> Any:
        ctx = copy_context()
        ctx.run(var_child_runnable_config.set, self.configs[member])
        if self.tier != "fine":
            ctx.run(SESSION.set, self.slots[member])
        return ctx

    def execute_sync(self) -> dict[str, _Outcome]:
        """Run the members (and the merged call); each member's outcome."""
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self.members), thread_name_prefix=self.rt.plan.capsule_node
        )
        try:
            futures = {
                m: pool.submit(self._context(m).run, self._member_sync, m) for m in self.members
            }
            for m in self.members:
                concurrent.futures.wait(
                    [self.slots[m].parked, futures[m]],
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
            try:
                self._answer_sync()
            finally:
                self._abort_unanswered("capsule node stopped before answering")
            concurrent.futures.wait(list(futures.values()))
        finally:
            pool.shutdown(wait=True)
        return {m: self._outcome_of_future(futures[m]) for m in self.members}

    async def execute_async(self) -> dict[str, _Outcome]:
        """Async twin of :meth:`execute_sync`."""
        tasks = {
            m: self._context(m).run(asyncio.ensure_future, self._member_async(m))
            for m in self.members
        }
        for m in self.members:
            parked = asyncio.wrap_future(self.slots[m].parked)
            await asyncio.wait({parked, tasks[m]}, return_when=asyncio.FIRST_COMPLETED)
        try:
            await self._answer_async()
        finally:
            self._abort_unanswered("capsule node stopped before answering")
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        return {m: self._outcome(r) for m, r in zip(tasks, results, strict=True)}

    # --------------------------------------------------- the merged call(s)
    def _buckets(self) -> list[list[str]]:
        """Parked members grouped by the model they called (only those merge together)."""
        buckets: dict[int, list[str]] = {}
        for m in self.members:
            slot = self.slots[m]
            if slot.parked.done():
                buckets.setdefault(id(slot.parked.result().model), []).append(m)
        out: list[list[str]] = []
        for bucket in buckets.values():
            if len(bucket) < 2:
                for m in bucket:
                    self.slots[m].answer.set_result(PASS_THROUGH)
            else:
                out.append(bucket)
        return out

    def _prepare(self, bucket: list[str]) -> tuple[Any, Any, dict[str, Any]] | None:
        parked: list[Parked] = [self.slots[m].parked.result() for m in bucket]
        model = parked[0].model
        kwargs = _merged_kwargs(parked, model)
        words = self.rt.section_words
        if "max_tokens" in kwargs:  # the hint must fit the members' own budgets
            per_member = kwargs["max_tokens"] // len(bucket)
            words = max(40, min(words, int(per_member * WORDS_PER_TOKEN)))
            kwargs["max_tokens"] = int(kwargs["max_tokens"] * MERGED_BUDGET_HEADROOM)
            kwargs["max_tokens"] += MARKER_TOKENS * len(bucket)
        prompt = build_merged_prompt(bucket, [p.messages for p in parked], section_words=words)
        if prompt is None:
            for m in bucket:
                self.slots[m].answer.set_result(PASS_THROUGH)
            return None
        self.merge_stats = {
            "payload_tokens": prompt.payload_tokens,
            "coordination_tokens": prompt.coordination_tokens,
            "floor_tokens": prompt.floor_tokens,
            "naive_tokens": prompt.naive_tokens,
        }
        return prompt, model, kwargs

    def _prepared(self) -> list[tuple[list[str], Any, Any, dict[str, Any], RunnableConfig]]:
        """Per merge bucket: members, prompt, model, call options and config."""
        out = []
        for bucket in self._buckets():
            prepared = self._prepare(bucket)
            if prepared is not None:
                cfg = self.rt._merged_config(
                    self.config, bucket, self.tier, self.tracker, shadow=self.shadow
                )
                out.append((bucket, *prepared, cfg))
        return out

    # ------------------------------------------------ the sequential calls
    def _sequential(self) -> list[tuple[list[str], SequentialPlan, Any]]:
        """Per bucket: members, the conversation and the model (sequential tier)."""
        out = []
        hint = self.rt.guidance()
        context = self.rt.policy.sequential_context_strategy
        for bucket in self._buckets():
            parked = [self.slots[m].parked.result() for m in bucket]
            plan = build_sequential(
                bucket, [p.messages for p in parked], context=context, hint=hint
            )
            if plan is None:
                for m in bucket:
                    self.slots[m].answer.set_result(PASS_THROUGH)
                continue
            self.merge_stats = {
                "payload_tokens": plan.payload_tokens,
                "coordination_tokens": plan.coordination_tokens,
            }
            out.append((bucket, plan, parked[0].model))
        return out

    def _turn_config(self, member: str) -> RunnableConfig:
        md: dict[str, Any] = {
            "capsule_group": self.rt.plan.name,
            "capsule_member": member,
            "capsule_tier": self.tier,
            "langgraph_node": member,
        }
        if self.shadow:
            md[SHADOW_KEY] = True
        return merge_configs(
            self.config,
            {
                "metadata": md,
                "tags": ["capsule:sequential", TAG_NOSTREAM],
                "callbacks": [self.tracker],
                "run_name": f"{self.rt.plan.capsule_node}:{member}",
            },
        )

    def _turn_kwargs(self, member: str) -> dict[str, Any]:
        parked = self.slots[member].parked.result()
        return {k: v for k, v in parked.kwargs.items() if v is not None}

    def _turn_done(self, member: str, reply: Any, answers: list[str | None]) -> None:
        if isinstance(reply, BaseException):
            self.problems[member] = f"sequential call failed: {type(reply).__name__}: {reply}"
            self.slots[member].answer.set_exception(MergeAbort(self.problems[member]))
            answers.append(None)
            return
        text = reply.content if isinstance(reply.content, str) else str(reply.content)
        self.slots[member].answer.set_result(text)  # the member goes on at once
        answers.append(text)

    def _answer_sequential_sync(self) -> None:
        for bucket, plan, model in self._sequential():
            answers: list[str | None] = []
            for k, m in enumerate(bucket):
                try:
                    reply: Any = model.inner.invoke(
                        plan.messages(k, answers), self._turn_config(m), **self._turn_kwargs(m)
                    )
                except Exception as e:
                    reply = e
                self._turn_done(m, reply, answers)

    async def _answer_sequential_async(self) -> None:
        for bucket, plan, model in self._sequential():
            answers: list[str | None] = []
            for k, m in enumerate(bucket):
                try:
                    reply: Any = await model.inner.ainvoke(
                        plan.messages(k, answers), self._turn_config(m), **self._turn_kwargs(m)
                    )
                except Exception as e:
                    reply = e
                self._turn_done(m, reply, answers)

    def _answer_sync(self) -> None:
        if self.tier == "sequential":
            self._answer_sequential_sync()
            return
        replies = []
        for bucket, prompt, model, kwargs, cfg in self._prepared():
            try:
                reply: Any = model.inner.invoke(prompt.messages, cfg, **kwargs)
            except Exception as e:  # the merged call failed: every member falls back
                reply = e
            replies.append((bucket, prompt, reply))
        self._distribute(replies)

    async def _answer_async(self) -> None:
        if self.tier == "sequential":
            await self._answer_sequential_async()
            return
        replies = []
        for bucket, prompt, model, kwargs, cfg in self._prepared():
            try:
                reply: Any = await model.inner.ainvoke(prompt.messages, cfg, **kwargs)
            except Exception as e:
                reply = e
            replies.append((bucket, prompt, reply))
        self._distribute(replies)

    def _distribute(self, replies: list[tuple[list[str], Any, Any]]) -> None:
        for bucket, prompt, reply in replies:
            if isinstance(reply, BaseException):
                reason = f"merged call failed: {type(reply).__name__}: {reply}"
                for m in bucket:
                    self.problems[m] = reason
                    self.slots[m].answer.set_exception(MergeAbort(reason))
                continue
            text = reply.content if isinstance(reply.content, str) else str(reply.content)
            answers, problems = split_reply(text, prompt)
            for m in bucket:
                if m in answers:
                    self.slots[m].answer.set_result(answers[m])
                else:
                    self.problems[m] = f"section {problems[m]}"
                    self.slots[m].answer.set_exception(MergeAbort(self.problems[m]))

    def _abort_unanswered(self, reason: str) -> None:
        for slot in self.slots.values():
            if slot.parked.done() and not slot.answer.done():
                slot.answer.set_exception(MergeAbort(reason))

    # -------------------------------------------------------------- results
    def _outcome_of_future(self, fut: concurrent.futures.Future[Any]) -> _Outcome:
        exc = fut.exception()
        return self._outcome(exc if exc is not None else fut.result())

    def _outcome(self, result: Any) -> _Outcome:
        if isinstance(result, MergeAbort):
            return _Outcome(reason=result.reason)
        if isinstance(result, GraphBubbleUp):
            return _Outcome(reason=f"{type(result).__name__} (interrupt or parent command)")
        if isinstance(result, BaseException):
            return _Outcome(reason=f"raised {type(result).__name__}: {result}")
        if result is None:
            return _Outcome(update={})
        if isinstance(result, dict):
            return _Outcome(update=result)
        return _Outcome(reason=f"returned {type(result).__name__}; only dict updates are staged")

    def stage(
        self,
        outcomes: Mapping[str, _Outcome],
        *,
        shadow_runs: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """The capsule node's write: staged updates, members to re-run as nodes, usage
        (and, with a judge, the task key and text the gate judges against)."""
        updates = [[m, o.update] for m, o in outcomes.items() if o.update is not None]
        route = [m for m, o in outcomes.items() if o.update is None]
        staging: dict[str, Any] = {
            "tier": self.tier,
            "updates": updates,
            "route": route,
            "reasons": self._reasons(outcomes),
            "usage": list(self.tracker.records),
            "merge": self.merge_stats,
            "elapsed_s": time.perf_counter() - self.started,
        }
        if self.rt.judge is not None:
            staging["task"] = task_key({m: input_digest(v) for m, v in self.inputs.items()})
            staging["task_text"] = task_text(self.inputs)
        if shadow_runs:
            staging["shadow_runs"] = list(shadow_runs)
        return {self.rt.plan.channel: {"staging": staging}}

    def shadow_record(
        self,
        outcomes: Mapping[str, _Outcome],
        judgement: Judgement,
    ) -> dict[str, Any]:
        """What the gate needs to write this shadow tier's observation."""
        return {
            "tier": self.tier,
            "route": [m for m, o in outcomes.items() if o.update is None],
            "reasons": self._reasons(outcomes),
            "usage": list(self.tracker.records),
            "merge": self.merge_stats,
            "elapsed_s": time.perf_counter() - self.started,
            "judgement": judgement.summary(),
        }

    def _reasons(self, outcomes: Mapping[str, _Outcome]) -> dict[str, str]:
        return {
            m: self.problems.get(m) or o.reason or ""
            for m, o in outcomes.items()
            if o.update is None
        }


def _sync_only(runnable: Any) -> bool:
    """A node made from a plain ``def`` (LangGraph would run its ``ainvoke`` in a thread)."""
    if not isinstance(runnable, RunnableCallable) or runnable.func is None:
        return False
    afunc = runnable.afunc
    return afunc is None or getattr(afunc, "__wrapped__", None) is runnable.func


def _with_handler(config: RunnableConfig, handler: Any) -> RunnableConfig:
    """Add a callback handler to a node run's config.

    The callback manager in a node's config is created for that node run alone
    (LangGraph's ``RunnableSeq`` makes a child manager per run), and the ambient
    config that calls without ``config=`` read is this same dict, so adding the
    handler in place reaches every LLM call of the node at no copying cost.
    """
    callbacks = config.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        callbacks.add_handler(handler, inherit=True)
        return config
    cfg = merge_configs(config, {"callbacks": [handler]})
    var_child_runnable_config.set(cfg)
    return cfg


def _merged_kwargs(parked: Sequence[Parked], model: Any) -> dict[str, Any]:
    """Call options for the merged call: options every member used alike, and a
    ``max_tokens`` budget that is the sum of the members' budgets when all are known
    (the capsule node adds :data:`MARKER_TOKENS` per section and fits the structural
    hint's words per section to one member's budget)."""
    budget_keys = ("max_tokens", "max_completion_tokens")
    first = parked[0].kwargs
    common = {
        k: v
        for k, v in first.items()
        if v is not None and k not in budget_keys and all(p.kwargs.get(k) == v for p in parked)
    }
    inner = getattr(model, "inner", None)
    default_budget = getattr(inner, "max_tokens", None) or getattr(
        inner, "max_completion_tokens", None
    )
    budgets = [
        p.kwargs.get("max_tokens") or p.kwargs.get("max_completion_tokens") or default_budget
        for p in parked
    ]
    if all(isinstance(b, int) and b > 0 for b in budgets):
        common["max_tokens"] = sum(budgets)
    return common
