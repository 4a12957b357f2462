"""Dynamic fan-out groups: ``Send`` map-reduce and conditional edges to several nodes.

A router (the path function of ``add_conditional_edges``) decides at run time which
nodes run next: ``[Send("generate_joke", {"subject": s}) for s in subjects]``, or
``["a", "b", "c"]``. Each entry is an *instance*: a target node and its input (the
``Send`` argument, or the state for a node name). The design, per router call:

* **Grouping is the router's output, nothing else.** The pass wraps the router. In
  compound mode (``compound``/``standard``, globally or for the group) the wrapper
  takes the instances whose target is in the dynamic group and, when there are at least
  two, replaces them with one ``Send`` to ``capsule__<group>`` per at most
  ``policy.max_batch`` instances (``N`` instances: ``ceil(N / max_batch)`` batches of
  near-equal size, at the place of their first instance; other entries stay as they
  are). No timing window, no waiting for other routers: the same output always gives
  the same batches. In every other mode (``fine``, and for now ``auto``, ``observe``,
  ``sequential``) the router's output is returned untouched, so the graph runs exactly
  as the original.
* **A batch runs every instance's own node function** in the capsule node, under a
  session (:class:`~langgraph_capsules.compiler.execution.CapsuleRun`, whose
  "members" here are instance ids ``<node>#<k>``, each with its own node spec and
  input). Their first calls on a ``CapsuleChatModel`` park and are answered by one
  merged call; the shared-content split hoists what every instance's prompt has in
  common (the node's instructions) and sends each instance's own input as one task.
* **Writes as if the N tasks had run.** The capsule node returns one
  ``Command(update=...)`` per instance, in the router's order, all in the superstep the
  instances would have run in, so reducers see the same values (an ``operator.add``
  list gets every item once, in ``Send`` order), two instances writing one plain key
  fail as LangGraph fails them, and the targets' successors are triggered once, one
  superstep later, by ``Command(goto=...)``, as their plain edges would have.
* **No output is lost.** An instance whose section is missing or bad (or whose merged
  call failed, or whose function raised on its served answer) is re-run through its
  original node function with no session (one real call, as alone), inside the same
  capsule task. Re-running there rather than through ``Send(node, input)`` keeps every
  write in the original superstep and order and the successors' single trigger (a
  ``Send`` fallback would land one superstep later, after the successors were
  triggered by the rest). An error of that re-run is raised, as the node would have.

A target can be batched when it only updates state and reaches its successors by plain
edges (see ``compiler/dynamic_plan.py``). A batch is split again in the capsule node
when its calls would not fit the model's input limit (the chat model's profile
``max_input_tokens``; each call counts its prompt plus its output budget), and a call
that fits with no other passes through alone, with the reason in the run record.
Limits: a node's ``RetryPolicy``, ``CachePolicy`` and
``Send`` timeout do not apply inside the capsule node; ``interrupt_before`` on a
target does not stop a batch; ``stream_mode="updates"`` shows one
``capsule__<group>`` update per batch, not one per instance.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextvars import copy_context
from dataclasses import dataclass, field, is_dataclass
from typing import Any, TypedDict, get_type_hints

from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.graph import StateGraph
from langgraph.types import Command, Send
from pydantic import BaseModel

from langgraph_capsules._compat import (
    CONFIG_KEY_READ_STATE,
    END,
    RunnableCallable,
    StateNodeSpec,
    node_runnable,
)
from langgraph_capsules.compiler.dynamic_plan import DynamicGroupPlan
from langgraph_capsules.compiler.execution import (
    CapsuleRun,
    Outcome,
    derived_config,
    tracked_callbacks,
)
from langgraph_capsules.compiler.modes import resolve_mode
from langgraph_capsules.compiler.plan import CapsulePlan, GroupPlan
from langgraph_capsules.compiler.records import observation, run_record
from langgraph_capsules.compiler.runtime import GroupRuntime
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.strategies.standard import DEFAULT_SECTION_WORDS
from langgraph_capsules.telemetry import UsageTracker
from langgraph_capsules.types import GroupRunRecord, Tier

__all__ = ["BATCH_KEY", "DynamicRuntime", "wire_dynamic"]

BATCH_KEY = "capsule_batch"
"""Key of a batch ``Send``'s argument: the instances, each ``{"id", "node", "arg"}``
(a ``Send``) or ``{"id", "node", "pull": True}`` (a node name: it reads the state)."""

_READ_STATE = CONFIG_KEY_READ_STATE  # LangGraph private API, through _compat
"""LangGraph's per-task state reader in ``config["configurable"]`` (also read by
``langgraph.prebuilt.ToolNode``): a ``Send`` task's own view of the state."""

_MERGED_MODES = ("compound", "standard")


def _coerce(schema: Any, values: dict[str, Any]) -> Any:
    if isinstance(schema, type) and (issubclass(schema, BaseModel) or is_dataclass(schema)):
        return schema(**values)
    return values


@dataclass
class InstanceRuntime(GroupRuntime):
    """A :class:`GroupRuntime` for one batch: its "members" are instance ids, each with
    the spec of its target node and its own input (what ``CapsuleRun`` runs)."""

    node_of: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)

    def _member_input(self, member: str, state: Mapping[str, Any]) -> Any:
        return self.inputs[member]

    def _member_config(
        self,
        member: str,
        config: RunnableConfig,
        tier: Tier,
        callbacks: Any,
        *,
        shadow: bool = False,
    ) -> RunnableConfig:
        node = self.node_of[member]
        md = dict(self.specs[member].metadata or {})
        md.update(
            langgraph_node=node,
            capsule_group=self.plan.name,
            capsule_member=node,
            capsule_instance=member,
            capsule_tier=tier,
        )
        return derived_config(config, metadata=md, callbacks=callbacks)


@dataclass
class DynamicRuntime:
    """Run-time code of one dynamic group: the router wrapper and the capsule node."""

    plan: DynamicGroupPlan
    specs: dict[str, StateNodeSpec[Any, Any]]
    """The targets' original node specs."""
    input_keys: dict[str, list[str]]
    successors: dict[str, tuple[str, ...]]
    """Per target, the nodes its plain edges trigger (``END`` left out)."""
    channels: Mapping[str, Any]
    default_mode: str
    record: Callable[[GroupRunRecord], None]
    section_words: int | None = DEFAULT_SECTION_WORDS
    policy: ControllerPolicy = field(default_factory=ControllerPolicy)
    graph_id: str = ""

    # ------------------------------------------------------------------ router
    def merges(self, config: RunnableConfig | None) -> bool:
        """Whether this run batches the group (compound/standard); else fine."""
        return resolve_mode(config, self.plan.name, self.default_mode) in _MERGED_MODES

    def wrap_router(self, path: Runnable[Any, Any], ends: Mapping[Hashable, str] | None) -> Any:
        """The router ``path`` with its output regrouped (sync and async)."""

        def route(value: Any, config: RunnableConfig) -> Any:
            return self.regroup(path.invoke(value, config), ends, config)

        async def aroute(value: Any, config: RunnableConfig) -> Any:
            return self.regroup(await path.ainvoke(value, config), ends, config)

        return RunnableCallable(route, aroute, name=path.name, trace=False, recurse=False)

    def regroup(
        self, result: Any, ends: Mapping[Hashable, str] | None, config: RunnableConfig
    ) -> Any:
        """The router's output with the group's instances batched (compound mode with
        two or more instances), else ``result`` itself."""
        if not self.merges(config):
            return result
        items = list(result) if isinstance(result, (list, tuple)) else [result]
        members = set(self.plan.members)
        found: list[tuple[int, dict[str, Any]]] = []
        pulled: set[str] = set()
        for i, item in enumerate(items):
            if isinstance(item, Send):
                if item.node in members:
                    found.append(
                        (i, {"id": f"{item.node}#{i}", "node": item.node, "arg": item.arg})
                    )
            elif isinstance(item, Hashable):
                node = ends.get(item) if ends else item
                if isinstance(node, str) and node in members and node not in pulled:
                    pulled.add(node)
                    found.append((i, {"id": f"{node}#{i}", "node": node, "pull": True}))
        if len(found) < 2:
            return result
        batches = _split(found, self.policy.max_batch)
        first = {batch[0][0]: batch for batch in batches}
        taken = {i for i, _inst in found}
        out: list[Any] = []
        for i, item in enumerate(items):
            if i in first:
                insts = [inst for _i, inst in first[i]]
                out.append(Send(self.plan.capsule_node, {BATCH_KEY: insts}))
            elif i not in taken:
                out.append(item)
        return out

    # ------------------------------------------------------------ capsule node
    def _batch(self, payload: Mapping[str, Any], config: RunnableConfig) -> InstanceRuntime:
        insts: list[dict[str, Any]] = list(payload[BATCH_KEY])
        state: Mapping[str, Any] = {}
        if any(inst.get("pull") for inst in insts):
            read = (config.get("configurable") or {}).get(_READ_STATE)
            state = read() if callable(read) else {}
            state = state if isinstance(state, Mapping) else {}
        ids = [str(inst["id"]) for inst in insts]
        node_of = {str(inst["id"]): str(inst["node"]) for inst in insts}
        inputs: dict[str, Any] = {}
        for inst in insts:
            node = inst["node"]
            if inst.get("pull"):
                values = {k: state[k] for k in self.input_keys[node] if k in state}
                inputs[inst["id"]] = _coerce(self.specs[node].input_schema, values)
            else:
                inputs[inst["id"]] = inst["arg"]
        return InstanceRuntime(
            plan=GroupPlan(self.plan.name, tuple(ids), frozenset(), inferred=self.plan.inferred),
            specs={i: self.specs[node_of[i]] for i in ids},
            input_keys={i: self.input_keys[node_of[i]] for i in ids},
            channels=self.channels,
            default_mode=self.default_mode,
            record=self.record,
            section_words=self.section_words,
            policy=self.policy,
            graph_id=self.graph_id,
            node_of=node_of,
            inputs=inputs,
        )

    def capsule_sync(self, payload: dict[str, Any], config: RunnableConfig) -> Any:
        """The capsule node (sync graphs): run a batch, re-run failed instances alone."""
        rt = self._batch(payload, config)
        run = CapsuleRun(rt, {}, config, "standard")
        outcomes = run.execute_sync()
        failed = [i for i, o in outcomes.items() if o.update is None]
        tracker = UsageTracker(track_runs=False)
        reruns: dict[str, Any] = {}
        if failed:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(failed)) as pool:
                futures = {
                    i: pool.submit(copy_context().run, self._rerun_sync, rt, i, config, tracker)
                    for i in failed
                }
                reruns = {i: f.result() for i, f in futures.items()}
        self._record(rt, run, outcomes, tracker)
        return self._writes(rt, outcomes, reruns)

    async def capsule_async(self, payload: dict[str, Any], config: RunnableConfig) -> Any:
        """Async twin of :meth:`capsule_sync`."""
        rt = self._batch(payload, config)
        run = CapsuleRun(rt, {}, config, "standard")
        outcomes = await run.execute_async()
        failed = [i for i, o in outcomes.items() if o.update is None]
        tracker = UsageTracker(track_runs=False)
        results = await asyncio.gather(*(self._rerun_async(rt, i, config, tracker) for i in failed))
        self._record(rt, run, outcomes, tracker)
        return self._writes(rt, outcomes, dict(zip(failed, results, strict=True)))

    def _rerun_sync(
        self, rt: InstanceRuntime, iid: str, config: RunnableConfig, tracker: UsageTracker
    ) -> Any:
        cfg = rt._member_config(iid, config, "fine", tracked_callbacks(config, tracker))
        return node_runnable(rt.specs[iid]).invoke(rt.inputs[iid], cfg)

    async def _rerun_async(
        self, rt: InstanceRuntime, iid: str, config: RunnableConfig, tracker: UsageTracker
    ) -> Any:
        cfg = rt._member_config(iid, config, "fine", tracked_callbacks(config, tracker))
        return await node_runnable(rt.specs[iid]).ainvoke(rt.inputs[iid], cfg)

    def _writes(
        self, rt: InstanceRuntime, outcomes: Mapping[str, Outcome], reruns: Mapping[str, Any]
    ) -> Any:
        """One write per instance in the router's order, then the targets' successors."""
        out: list[Command[Any]] = []
        for iid in rt.plan.members:
            update = reruns[iid] if iid in reruns else outcomes[iid].update
            if update is not None and update != {}:
                out.append(Command(update=update))
        goto: list[str] = []
        for node in dict.fromkeys(rt.node_of.values()):
            goto.extend(s for s in self.successors.get(node, ()) if s not in goto)
        if goto:
            out.append(Command(goto=goto))
        return out or None

    def _record(
        self,
        rt: InstanceRuntime,
        run: CapsuleRun,
        outcomes: Mapping[str, Outcome],
        reruns: UsageTracker,
    ) -> None:
        staging = dict(run.stage(outcomes)[rt.plan.channel]["staging"])
        usage = [*staging.get("usage", []), *reruns.records]
        fallback = list(staging.get("route") or [])
        obs = observation(rt.plan, self.graph_id, staging, usage, "standard", fallback)
        self.record(run_record(rt.plan, obs, [], staging, None, store_errors=0))


def _split(
    found: Sequence[tuple[int, dict[str, Any]]], max_batch: int
) -> list[list[tuple[int, dict[str, Any]]]]:
    """``ceil(N / max_batch)`` consecutive batches of near-equal size."""
    n = len(found)
    k = math.ceil(n / max(1, max_batch))
    size, extra = divmod(n, k)
    out, start = [], 0
    for b in range(k):
        end = start + size + (1 if b < extra else 0)
        out.append(list(found[start:end]))
        start = end
    return out


def _schema(
    name: str, specs: Mapping[str, StateNodeSpec[Any, Any]], keys: Mapping[str, list[str]]
) -> type:
    fields: dict[str, Any] = {}
    for node, spec in specs.items():
        try:
            hints = get_type_hints(spec.input_schema, include_extras=True)
        except Exception:
            hints = {}
        fields.update({k: hints.get(k, Any) for k in keys[node]})
    made: type = TypedDict(name, fields, total=False)  # type: ignore[misc]
    return made


def wire_dynamic(
    n: StateGraph[Any, Any, Any, Any],
    source: StateGraph[Any, Any, Any, Any],
    plan: CapsulePlan,
    *,
    default_mode: str,
    record: Callable[[GroupRunRecord], None],
    section_words: int | None,
    policies: Mapping[str, ControllerPolicy],
    policy: ControllerPolicy | None,
    graph_id: str,
) -> dict[str, DynamicRuntime]:
    """Add ``capsule__<group>`` per dynamic group and wrap the routers it hangs off.

    Call it last: a target's successors are read from ``n``'s final plain edges."""
    out: dict[str, DynamicRuntime] = {}
    for d in plan.dynamic:
        specs = {m: source.nodes[m] for m in d.members}
        keys = {m: list(source.schemas[specs[m].input_schema]) for m in d.members}
        successors = {
            m: tuple(sorted({dst for s, dst in n.edges if s == m and dst != END}))
            for m in d.members
        }
        rt = DynamicRuntime(
            plan=d,
            specs=specs,
            input_keys=keys,
            successors=successors,
            channels=source.channels,
            default_mode=default_mode,
            record=record,
            section_words=section_words,
            policy=policies.get(d.name) or policy or ControllerPolicy(),
            graph_id=graph_id,
        )
        out[d.name] = rt
        n.add_node(
            d.capsule_node,
            RunnableCallable(rt.capsule_sync, rt.capsule_async, name=d.capsule_node, trace=False),
            input_schema=_schema(f"CapsuleBatch_{d.name}", specs, keys),
            metadata={
                "capsule": {"group": d.name, "members": list(d.members), "dynamic": True},
                "capsule_role": "capsule",
            },
        )
        for src, path in d.routers:
            branch = n.branches[src][path]
            n.branches[src][path] = branch._replace(path=rt.wrap_router(branch.path, branch.ends))
    return out
