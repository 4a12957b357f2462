"""Rewrite a builder copy: keep every node, add ``capsule__G``/``gate__G`` per group.

Dynamic groups (``Send`` / conditional-edge fan-out) are wired by
``compiler/dynamic.py``: one ``capsule__<group>`` node and the routers wrapped.

Wiring per static group ``G`` (all decisions are static; names are deterministic so that a
rebuilt graph resumes its own checkpoints)::

    P --(router: fine)--> members --> gate__G --> successors
    P --(router: compound)--> capsule__G --(ok)--> gate__G
                                         --(fallback)--> failed members --> gate__G

* **Exit.** ``gate__G`` takes over the members' out-edges: plain edges and places in
  fan-in joins. Every member gets an edge to the gate.
* **Entry.** Plain edges ``P -> member`` become one router branch on ``P`` (so a fine
  run costs no extra superstep); a fan-in join into the members becomes a join into
  ``capsule__G``, which then routes fine runs to the members.
* **Successor joins.** A node fed by plain edges from several siblings of the original
  graph (which always ran in one superstep) gets a fan-in join over the rewritten
  sources instead, so it still runs once when one group takes the fallback path and
  finishes a superstep later than its siblings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypedDict, get_type_hints

from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph

from langgraph_capsules._compat import END, RunnableCallable, clone_builder
from langgraph_capsules.agents import HIDDEN_READS_KEY, SHARED_READS_KEY
from langgraph_capsules.compiler.dynamic import wire_dynamic
from langgraph_capsules.compiler.plan import CapsulePlan
from langgraph_capsules.compiler.runtime import GroupRuntime, private_reducer
from langgraph_capsules.context import hidden_reads
from langgraph_capsules.judges import Judge
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.stores import ControllerStore
from langgraph_capsules.topology import Topology
from langgraph_capsules.types import GroupRunRecord

__all__ = ["rewrite"]


def _typeddict(name: str, fields: dict[str, Any]) -> type:
    """A TypedDict built at run time (an ``input_schema`` that registers channels)."""
    made: type = TypedDict(name, fields, total=False)  # type: ignore[misc]
    return made


def _hints(schema: Any, keys: list[str]) -> dict[str, Any]:
    try:
        hints = get_type_hints(schema, include_extras=True)
    except Exception:
        hints = {}
    return {k: hints.get(k, Any) for k in keys}


def rewrite(
    source: StateGraph[Any, Any, Any, Any],
    topo: Topology,
    plan: CapsulePlan,
    *,
    default_mode: str,
    record: Callable[[GroupRunRecord], None],
    section_words: int | None,
    policies: Mapping[str, ControllerPolicy],
    store: ControllerStore | None,
    judge: Judge | None = None,
    policy: ControllerPolicy | None = None,
) -> tuple[StateGraph[Any, Any, Any, Any], dict[str, GroupRuntime]]:
    """Build the capsule graph's builder from a copy of ``source``.

    Dynamic groups (``plan.dynamic``) are wired last by
    :func:`~langgraph_capsules.compiler.dynamic.wire_dynamic`; their policy is
    ``policies[name]``, else ``policy`` (the pipeline's), else the default."""
    n = clone_builder(source)
    hidden = hidden_reads(topo)  # predecessor-only context in linear chains
    for node, keys in hidden.items():
        n.nodes[node] = dataclasses.replace(
            n.nodes[node], metadata={**(n.nodes[node].metadata or {}), HIDDEN_READS_KEY: keys}
        )
    runtimes: dict[str, GroupRuntime] = {}
    member_of: dict[str, str] = {}
    routed: dict[str, list[tuple[GroupRuntime, type]]] = {}

    # ---- exits first for every group, so chained groups see each other's gates
    for g in plan.groups:
        mset = set(g.members)
        member_of.update({m: g.name for m in g.members})
        succ = {d for s, d in n.edges if s in mset and d not in mset}
        n.edges = {(s, d) for s, d in n.edges if s not in mset}
        n.edges |= {(g.gate_node, d) for d in succ}
        n.waiting_edges = {
            (tuple(dict.fromkeys(g.gate_node if x in mset else x for x in starts)), d)
            for starts, d in n.waiting_edges
        }

    for g in plan.groups:
        mset = set(g.members)
        specs = {m: source.nodes[m] for m in g.members}
        input_keys = {m: list(source.schemas[specs[m].input_schema]) for m in g.members}
        private_t = Annotated[dict[str, Any], private_reducer]
        private_schema = _typeddict(f"CapsulePrivate_{g.name}", {g.channel: private_t})
        capsule_fields: dict[str, Any] = {}
        for m in g.members:
            capsule_fields.update(_hints(specs[m].input_schema, input_keys[m]))
        capsule_fields[g.channel] = private_t
        capsule_schema = _typeddict(f"CapsuleInput_{g.name}", capsule_fields)
        agents = {m: topo.agents.get(m) for m in g.members}
        declared = [a for a in agents.values() if a is not None]
        member_metadata: dict[str, dict[str, Any]] = {
            m: {HIDDEN_READS_KEY: hidden[m]} for m in g.members if m in hidden
        }
        if len(declared) >= 2:  # the keys every declared member reads: the shared prefix
            shared = sorted(set.intersection(*(set(a.reads) for a in declared)))
            for m, a in agents.items():
                if a is not None:
                    member_metadata.setdefault(m, {})[SHARED_READS_KEY] = shared
        rt = GroupRuntime(
            plan=g,
            member_metadata=member_metadata,
            specs=specs,
            input_keys=input_keys,
            channels=source.channels,
            default_mode=default_mode,
            record=record,
            section_words=section_words,
            policy=policies[g.name],
            store=store,
            graph_id=plan.plan_id,
            judge=judge,
        )
        runtimes[g.name] = rt

        # ---- entry
        preds = sorted({s for s, d in n.edges if d in mset})
        n.edges = {(s, d) for s, d in n.edges if d not in mset}
        joins = {starts for starts, d in n.waiting_edges if d in mset}
        n.waiting_edges = {(st, d) for st, d in n.waiting_edges if d not in mset}
        n.waiting_edges |= {(st, g.capsule_node) for st in joins}
        for p in preds:
            routed.setdefault(p, []).append((rt, private_schema))

        # ---- added nodes
        meta = {"capsule": {"group": g.name, "members": list(g.members)}}
        for m in g.members:  # attribution for every call a member makes, at no run-time cost
            member_meta = {**(n.nodes[m].metadata or {}), "capsule_group": g.name}
            member_meta["capsule_member"] = m
            member_meta.update(rt.member_metadata.get(m, {}))
            n.nodes[m] = dataclasses.replace(n.nodes[m], metadata=member_meta)
        n.add_node(
            g.capsule_node,
            RunnableCallable(rt.capsule_sync, rt.capsule_async, name=g.capsule_node, trace=False),
            input_schema=capsule_schema,
            metadata={**meta, "capsule_role": "capsule"},
        )
        after = RunnableCallable(
            rt.route_after_capsule, name=f"capsule_after__{g.name}", trace=False
        )
        n.add_conditional_edges(g.capsule_node, after, [*g.members, g.gate_node])
        branch = n.branches[g.capsule_node][f"capsule_after__{g.name}"]
        n.branches[g.capsule_node][f"capsule_after__{g.name}"] = branch._replace(
            input_schema=private_schema
        )
        n.add_node(
            g.gate_node,
            RunnableCallable(rt.gate, rt.agate, name=g.gate_node, trace=False),
            input_schema=private_schema,
            metadata={**meta, "capsule_role": "gate"},
        )
        n.edges |= {(m, g.gate_node) for m in g.members}
        for m in g.members:
            func, afunc = rt.instrumented(m)
            n.nodes[m] = dataclasses.replace(
                n.nodes[m], runnable=RunnableCallable(func, afunc, name=m, trace=False)
            )

    for p, entries in routed.items():
        _add_router(n, p, entries)
    _join_successors(n, topo, plan, member_of)
    wire_dynamic(
        n,
        source,
        plan,
        default_mode=default_mode,
        record=record,
        section_words=section_words,
        policies=policies,
        policy=policy,
        graph_id=plan.plan_id,
    )
    return n, runtimes


def _add_router(
    n: StateGraph[Any, Any, Any, Any], pred: str, entries: list[tuple[GroupRuntime, type]]
) -> None:
    """One branch on ``pred`` routing every group it feeds: members or capsule node."""
    rts = [rt for rt, _schema in entries]

    def route(state: Any, config: RunnableConfig) -> list[str]:
        out: list[str] = []
        for rt in rts:
            target = rt.route_entry(state, config)
            out.extend([target] if isinstance(target, str) else target)
        return out

    async def aroute(state: Any, config: RunnableConfig) -> list[str]:
        # async runs read the controller store with its async interface: no blocking
        out: list[str] = []
        for rt in rts:
            target = await rt.aroute_entry(state, config)
            out.extend([target] if isinstance(target, str) else target)
        return out

    ends = [x for rt in rts for x in (*rt.plan.members, rt.plan.capsule_node)]
    name = "capsule_route"
    router = RunnableCallable(route, aroute, name=name, trace=False)
    n.add_conditional_edges(pred, router, ends)
    # the router reads no state: give it a (tiny) private schema to read
    n.branches[pred][name] = n.branches[pred][name]._replace(input_schema=entries[0][1])


def _join_successors(
    n: StateGraph[Any, Any, Any, Any],
    topo: Topology,
    plan: CapsulePlan,
    member_of: Mapping[str, str],
) -> None:
    gates = {g.gate_node: g for g in plan.groups}
    timing_unsafe = {
        node for node, why in topo.ineligible.items() if "targeted" in why or "defer" in why
    }
    targets = {d for _s, d in n.edges if d != END}
    for dst in sorted(targets):
        srcs = sorted({s for s, d in n.edges if d == dst})
        if len(srcs) < 2 or not any(s in gates for s in srcs):
            continue
        classes = set()
        for s in srcs:
            if s in gates:
                classes.add(gates[s].triggers)
            elif s in topo.triggers and s not in timing_unsafe and s not in member_of:
                classes.add(topo.triggers[s])
            else:
                classes.add(frozenset({("?", s)}))
        if len(classes) != 1 or not next(iter(classes)):
            continue  # sources were not siblings: keep the original plain edges
        n.edges = {(s, d) for s, d in n.edges if not (d == dst and s in srcs)}
        n.waiting_edges.add((tuple(srcs), dst))
