"""Planning of dynamic fan-out groups (see :class:`DynamicGroupPlan`).

A conditional edge (a router returning ``Send``s or node names) starts its targets at
run time, so which instances run together is only known from the router's output. A
dynamic group names the targets whose instances one router call may batch, and the
routers it hangs off. Inferred: one group per conditional edge that has a target able
to run batched. Declared (``groups=``): the named nodes must all be targets of one
router (one node is enough: ``N`` instances of it).

A target runs batched unless it could not run merged whatever triggers it (conditional
out-edges, ``Command``/``Send``, ``defer=True``, a subgraph, ``interrupt()``), it is
excluded, it is a source of a fan-in join (a batch cannot signal the join's barrier),
or a successor of it is in a static group (whose entry the pass routes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from langgraph_capsules._compat import START
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.topology import Topology

__all__ = [
    "DynamicGroupPlan",
    "batched_note",
    "check_dynamic",
    "declared_routers",
    "infer_dynamic",
]

_GROUP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class DynamicGroupPlan:
    """A dynamic fan-out group: instances of ``members`` that one router call starts
    (``Send``s, or node names of a conditional edge) run as one capsule task.

    In compound mode the router's output for these targets becomes one ``Send`` to
    :attr:`capsule_node` per at most ``max_batch`` instances; in fine mode (and in
    ``auto``/``observe``/``sequential``, for now) the router's output is untouched."""

    name: str
    members: tuple[str, ...]
    """Target nodes whose instances are batched (graph order)."""
    routers: tuple[tuple[str, str], ...]
    """The conditional edges it hangs off: (source node, path name)."""
    inferred: bool
    notes: tuple[str, ...] = ()
    """Targets of the routers that are not batched, and why; other remarks."""

    @property
    def capsule_node(self) -> str:
        """Name of the node that runs a batch of instances under one merged call."""
        return f"capsule__{self.name}"


def batched_note(why: str, dynamic: str | None) -> str:
    if dynamic is None:
        return why
    return f"{why}; its runs started by a router are batched by dynamic group {dynamic!r}"


def _router_targets(topo: Topology, targets: frozenset[str] | None) -> list[str]:
    """A conditional edge's possible target nodes, in graph order (an opaque edge: the
    nodes nothing else triggers, which only a router can start)."""
    if targets is None:
        return [n for n in topo.nodes if not topo.triggers.get(n)]
    return [n for n in topo.nodes if n in targets]


def _routers_of(node: str, topo: Topology) -> list[tuple[str, str]]:
    return [
        (src, path)
        for src, paths in sorted(topo.branches.items())
        for path, targets in paths.items()
        if node in _router_targets(topo, targets)
    ]


def _dynamic_block(
    node: str,
    topo: Topology,
    excluded: Sequence[str],
    joins: set[str],
    static_of: Mapping[str, str],
    *,
    declared: bool,
) -> str | None:
    """Why a router's target cannot run batched (``None``: it can)."""
    if node in excluded:
        return "excluded by the user"
    if node in topo.intrinsic:
        return topo.intrinsic[node]
    if not declared and node in topo.uninferred:
        return topo.uninferred[node]
    if node in static_of:
        return f"is in group {static_of[node]!r}"
    if node in joins:
        return (
            "is a source of a fan-in join (add_edge([...], node)), which a batch of its "
            "instances cannot signal"
        )
    for succ in sorted(topo.successors.get(node, ())):
        if succ in static_of:
            return (
                f"its successor {succ!r} is in group {static_of[succ]!r}, whose entry the "
                "pass routes"
            )
    return None


def infer_dynamic(
    topo: Topology,
    excluded: Sequence[str],
    joins: set[str],
    static_of: Mapping[str, str],
    taken: set[str],
) -> list[DynamicGroupPlan]:
    """One dynamic group per conditional edge that has a target able to run batched."""
    out: list[DynamicGroupPlan] = []
    taken = set(taken)
    for src, paths in sorted(topo.branches.items()):
        for path, targets in paths.items():
            cands = _router_targets(topo, targets)
            why = {
                n: _dynamic_block(n, topo, excluded, joins, static_of, declared=False)
                for n in cands
            }
            ok = tuple(n for n in cands if why[n] is None)
            if not ok:
                continue
            base = "fanout_" + _name_part("start" if src == START else src)
            name, k = base, 2
            while name in taken or f"capsule__{name}" in taken:
                name, k = f"{base}_{k}", k + 1
            taken.add(name)
            notes = tuple(
                f"{n} runs as its own node when routed to: it {w}"
                for n, w in why.items()
                if w is not None
            )
            out.append(DynamicGroupPlan(name, ok, ((src, path),), inferred=True, notes=notes))
    return out


def _name_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "router"


def declared_routers(
    name: str, members: Sequence[str], topo: Topology, known: set[str]
) -> list[tuple[str, str]] | None:
    """The routers a declared group of router targets hangs off (``None``: the group has
    no router target, it is a static group).

    Raises:
        CapsuleConfigError: the group mixes router targets with plain-edge siblings, or
            names targets of different routers.
    """
    routers = {m: _routers_of(m, topo) for m in members if m in known}
    routed = [m for m in members if routers.get(m)]
    if not routed:
        return None
    for m in members:
        if m not in known:
            raise CapsuleConfigError(
                f"group {name!r} names {m!r}, which is not a node of this graph; "
                f"nodes: {sorted(known)}",
                code="unknown_node",
                node=m,
                group=name,
            )
    first = routed[0]
    src = routers[first][0][0]
    siblings = sorted(_router_targets(topo, topo.branches[src][routers[first][0][1]]))
    plain = [m for m in members if not routers[m]]
    if plain:
        raise CapsuleConfigError(
            f"node {first!r} cannot join group {name!r} with {plain[0]!r}: it is targeted by "
            f"a conditional edge from {src!r} (a router that returns Send or node names), so "
            f"it runs when that router starts it, not with the plain-edge siblings. Remove "
            f"it from the group (it keeps running as it is), or give the router's targets a "
            f"group of their own, e.g. {{'{name}_fanout': {siblings!r}}}: their instances "
            "are then batched per router call",
            code="ineligible_node",
            node=first,
            group=name,
        )
    common = set.intersection(*(set(routers[m]) for m in members))
    if not common:
        raise CapsuleConfigError(
            f"group {name!r} names targets of different routers ({first!r} is routed by "
            f"{src!r}); a dynamic group batches the targets of one router: split the group "
            "by router",
            code="mismatched_predecessors",
            node=first,
            group=name,
        )
    return sorted(common)


def check_group_name(name: object) -> None:
    """Refuse a group name LangGraph node names cannot be built from (``bad_group_name``)."""
    if not isinstance(name, str) or not _GROUP_NAME.match(name):
        raise CapsuleConfigError(
            f"group name {name!r} is not valid: use letters, digits and '_' and start with "
            "a letter",
            code="bad_group_name",
            group=str(name),
        )


def check_dynamic(
    name: str,
    members: Sequence[str],
    routers: Sequence[tuple[str, str]],
    topo: Topology,
    excluded: Sequence[str],
    joins: set[str],
    static_of: Mapping[str, str],
    known: set[str],
) -> DynamicGroupPlan:
    """Validate a declared dynamic group (one member is enough: N instances of it)."""
    check_group_name(name)
    if f"capsule__{name}" in known:
        raise CapsuleConfigError(
            f"group {name!r} would add node 'capsule__{name}', which already exists; "
            "rename the group",
            code="bad_group_name",
            group=name,
        )
    for m in members:
        if m in static_of:
            raise CapsuleConfigError(
                f"node {m!r} is in two groups, {static_of[m]!r} and {name!r}; put it in one "
                "group only",
                code="node_in_two_groups",
                node=m,
                group=name,
            )
        why = _dynamic_block(m, topo, excluded, joins, static_of, declared=True)
        if why is not None:
            raise CapsuleConfigError(
                f"node {m!r} cannot join dynamic group {name!r}: it {why}. Remove it from "
                "the group (it keeps running as it is)",
                code="ineligible_node",
                node=m,
                group=name,
            )
    ordered = tuple(n for n in topo.nodes if n in set(members))
    return DynamicGroupPlan(name, ordered, tuple(routers), inferred=False)
