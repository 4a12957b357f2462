"""Validate the user's grouping and produce the :class:`CapsulePlan`.

Two kinds of group:

* **static** (:class:`GroupPlan`): plain-edge siblings that always run in one superstep;
* **dynamic** (:class:`DynamicGroupPlan`): the targets of a conditional edge (a router
  returning ``Send``s or node names). Which instances run together is only known when
  the router runs, so the group is formed per router call from its output (see
  ``compiler/dynamic.py``). Inferred for every conditional edge with a target that can
  run merged; ``groups=`` may declare one by naming targets of one router.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph.graph import StateGraph

from langgraph_capsules._compat import DEFAULT_ERROR_HANDLER, END, START
from langgraph_capsules.compiler.dynamic_plan import (
    DynamicGroupPlan,
    batched_note,
    check_dynamic,
    check_group_name,
    declared_routers,
    infer_dynamic,
)
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.topology import Topology, Trigger, infer_group_name

__all__ = ["PLAN_VERSION", "CapsulePlan", "DynamicGroupPlan", "GroupPlan", "make_plan"]

PLAN_VERSION = 2


@dataclass(frozen=True)
class GroupPlan:
    """One capsule group in the plan."""

    name: str
    members: tuple[str, ...]
    """Members in task order (as declared, or graph order when inferred)."""
    triggers: frozenset[Trigger]
    """What triggers every member (their common predecessors and joins)."""
    inferred: bool
    tiers: tuple[str, ...] = ("fine", "standard", "sequential")
    """Tiers the group can run. ``two_phase`` needs a declared agent with tools
    (:func:`langgraph_capsules.agent`); without one it runs as ``sequential``."""
    notes: tuple[str, ...] = ()
    """What the pass saw that may keep the group from merging (e.g. a member's chat
    model not wrapped in ``CapsuleChatModel``)."""

    @property
    def capsule_node(self) -> str:
        """Name of the node that decides the tier and runs the merged call."""
        return f"capsule__{self.name}"

    @property
    def gate_node(self) -> str:
        """Name of the node that commits staged updates and records the run."""
        return f"gate__{self.name}"

    @property
    def channel(self) -> str:
        """Name of the group's private state channel (never visible to users)."""
        return f"capsule__{self.name}__private"


@dataclass(frozen=True)
class CapsulePlan:
    """What the pass did: the groups it formed and the nodes it left alone, with why.

    ``str(plan)`` is a readable summary; the attributes are the data.
    """

    groups: tuple[GroupPlan, ...]
    untouched: Mapping[str, str] = field(default_factory=dict)
    """Nodes not in any group, with the reason."""
    plan_id: str = ""
    """A stable hash of the groups, the dynamic groups and the graph's shape (nodes,
    edges, state keys); stamped into every checkpoint of the capsule graph."""
    notes: tuple[str, ...] = ()
    """Plan-wide remarks (e.g. ``groups={}``: no groups, on purpose)."""
    dynamic: tuple[DynamicGroupPlan, ...] = ()
    """Dynamic fan-out groups (``Send`` map-reduce, conditional edges to several nodes)."""

    @property
    def group_names(self) -> tuple[str, ...]:
        """Every group name, static then dynamic (what a run's ``groups`` may name)."""
        return (*(g.name for g in self.groups), *(d.name for d in self.dynamic))

    def group(self, name: str) -> GroupPlan:
        """The group called ``name`` (``KeyError`` listing the groups otherwise)."""
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no group {name!r}; groups: {[g.name for g in self.groups]}")

    def group_of(self, node: str) -> GroupPlan | None:
        """The group a node belongs to, if any."""
        return next((g for g in self.groups if node in g.members), None)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data."""
        return {
            "plan_id": self.plan_id,
            "groups": [
                {
                    "name": g.name,
                    "members": list(g.members),
                    "capsule_node": g.capsule_node,
                    "gate_node": g.gate_node,
                    "inferred": g.inferred,
                    "notes": list(g.notes),
                }
                for g in self.groups
            ],
            "dynamic": [
                {
                    "name": d.name,
                    "members": list(d.members),
                    "routers": [{"source": src, "path": path} for src, path in d.routers],
                    "capsule_node": d.capsule_node,
                    "inferred": d.inferred,
                    "notes": list(d.notes),
                }
                for d in self.dynamic
            ],
            "untouched": dict(self.untouched),
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        head = f"CapsulePlan {self.plan_id}: {len(self.groups)} group(s)"
        if self.dynamic:
            head += f", {len(self.dynamic)} dynamic group(s)"
        lines = [head]
        lines += [f"  note: {n}" for n in self.notes]
        for g in self.groups:
            how = "inferred" if g.inferred else "declared"
            lines.append(f"  group {g.name!r} ({how}): {', '.join(g.members)}")
            lines.append(f"    nodes added: {g.capsule_node}, {g.gate_node}")
            tiers = f"    tiers: {', '.join(g.tiers)}"
            if "two_phase" not in g.tiers:
                tiers += " (two_phase runs as sequential: no declared agent with tools)"
            lines.append(tiers)
            lines += [f"    note: {n}" for n in g.notes]
        for d in self.dynamic:
            how = "inferred" if d.inferred else "declared"
            lines.append(f"  dynamic group {d.name!r} ({how}): {', '.join(d.members)}")
            routers = ", ".join(f"{src} -> {path}" for src, path in d.routers)
            lines.append(f"    router: {routers} (Send or conditional edge; grouped per call)")
            lines.append(f"    node added: {d.capsule_node}")
            lines.append(
                "    tiers: fine, standard (at most max_batch instances per merged call; "
                "auto, observe and sequential run fine for now)"
            )
            lines += [f"    note: {n}" for n in d.notes]
        if self.untouched:
            lines.append("  left as they are:")
            for node, why in self.untouched.items():
                lines.append(f"    {node}: {why}")
        return "\n".join(lines)


def _tiers(topo: Topology, members: Sequence[str]) -> tuple[str, ...]:
    specs = [topo.agents.get(m) for m in members]
    if any(s is not None and s.tools for s in specs):
        return ("fine", "standard", "two_phase", "sequential")
    return ("fine", "standard", "sequential")


def _graph_signature(builder: StateGraph[Any, Any, Any, Any]) -> list[Any]:
    """The graph's shape as plain sorted data: state keys, nodes, plain edges, fan-in
    joins and conditional edges (source, name, declared targets). Deterministic across
    processes; the node functions are left out (a prompt tweak keeps the id)."""
    skip = {DEFAULT_ERROR_HANDLER}  # compile() may write it back into the builder
    branches = [
        [src, name, None if b.ends is None else sorted(map(str, b.ends.values()))]
        for src, paths in builder.branches.items()
        for name, b in paths.items()
    ]
    return [
        sorted(builder.channels),
        sorted(n for n in builder.nodes if n not in skip),
        sorted([s, d] for s, d in builder.edges if s not in skip and d not in skip),
        sorted([list(starts), d] for starts, d in builder.waiting_edges),
        sorted(branches, key=lambda b: json.dumps(b)),
    ]


def _plan_id(
    groups: Sequence[GroupPlan],
    dynamic: Sequence[DynamicGroupPlan] = (),
    builder: StateGraph[Any, Any, Any, Any] | None = None,
) -> str:
    """A 12-hex hash of the groups (names, members), the dynamic groups (names,
    members, routers) and, given ``builder``, the graph's shape, so that two different
    apps (even with no groups) get different ids and a rebuilt app gets the same."""
    body: list[Any] = [PLAN_VERSION, [[g.name, list(g.members)] for g in groups]]
    body.append([[d.name, list(d.members), [list(r) for r in d.routers]] for d in dynamic])
    if builder is not None:
        body.append(_graph_signature(builder))
    data = json.dumps(body, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:12]


def make_plan(
    builder: StateGraph[Any, Any, Any, Any],
    topo: Topology,
    groups: Mapping[str, Sequence[str]] | None,
    exclude: Iterable[str],
) -> CapsulePlan:
    """Validate ``groups``/``exclude`` against the graph and build the plan.

    Raises:
        CapsuleConfigError: naming the node or group and the fix.
    """
    known = set(topo.nodes)
    excluded: list[str] = list(exclude)
    for node in excluded:
        if node not in known:
            raise CapsuleConfigError(
                f"exclude names {node!r}, which is not a node of this graph; "
                f"nodes: {sorted(known)}",
                code="unknown_node",
                node=node,
            )
    ineligible = dict(topo.ineligible)
    for node in excluded:
        ineligible.setdefault(node, "excluded by the user")

    planned: list[GroupPlan] = []
    notes: list[str] = []
    dropped: dict[str, str] = {}
    declared_dynamic: list[tuple[str, list[str], list[tuple[str, str]]]] = []
    if groups is None:
        taken = set(known)
        for trig, members in topo.siblings(exclude=excluded):
            clash = _routed_successor(members, topo, declared=False)
            if clash is not None:
                dropped.update(dict.fromkeys(members, clash))
                continue
            name = infer_group_name(members, trig, taken)
            taken.add(name)
            planned.append(GroupPlan(name, tuple(members), trig, inferred=True))
    else:
        if not isinstance(groups, Mapping):
            raise CapsuleConfigError(
                "groups must be a mapping of group name to member node names, "
                f"e.g. {{'arm': ['a', 'b']}}; got {type(groups).__name__}",
                code="bad_group_name",
            )
        if not groups:
            notes.append(
                "groups={} declares no groups, so nothing is grouped and the graph runs as "
                "the original; omit groups= (or pass None) to infer fan-out groups"
            )
        owner: dict[str, str] = {}
        for name, declared in groups.items():
            members = _member_list(name, declared)
            routers = declared_routers(name, members, topo, known)
            if routers is not None:
                declared_dynamic.append((name, members, routers))
                continue
            group = _check_group(name, members, topo, ineligible, owner, known)
            clash = _routed_successor(group.members, topo, declared=True)
            if clash is not None:
                raise CapsuleConfigError(
                    f"group {name!r} cannot run merged: {clash}. Remove the group, or declare "
                    "the router's targets",
                    code="successor_routed",
                    group=name,
                )
            planned.append(group)
    planned = [
        dataclasses.replace(g, tiers=_tiers(topo, g.members), notes=_group_notes(g.members, topo))
        for g in planned
    ]
    planned.sort(key=lambda g: g.name)
    in_group = {m for g in planned for m in g.members}
    static_of = {m: g.name for g in planned for m in g.members}
    joins = {s for starts, _d in builder.waiting_edges for s in starts}
    if groups is None:
        dynamic = infer_dynamic(topo, excluded, joins, static_of, known | set(static_of.values()))
    else:
        dynamic = []
        dyn_owner: dict[str, str] = {}
        for name, members, routers in declared_dynamic:
            d = check_dynamic(name, members, routers, topo, excluded, joins, static_of, known)
            for m in d.members:
                if dyn_owner.setdefault(m, name) != name:
                    raise CapsuleConfigError(
                        f"node {m!r} is in two groups, {dyn_owner[m]!r} and {name!r}; put "
                        "it in one group only",
                        code="node_in_two_groups",
                        node=m,
                        group=name,
                    )
            dynamic.append(d)
    dynamic.sort(key=lambda d: d.name)
    batched = {m: d.name for d in reversed(dynamic) for m in d.members}
    untouched = {
        n: batched_note(
            ineligible.get(n) or dropped.get(n) or topo.uninferred.get(n) or "not in any group",
            batched.get(n),
        )
        for n in topo.nodes
        if n not in in_group and n not in (START, END)
    }
    return CapsulePlan(
        tuple(planned), untouched, _plan_id(planned, dynamic, builder), tuple(notes), tuple(dynamic)
    )


def _member_list(name: Any, declared: Any) -> list[str]:
    """A group's members as declared: a list/tuple of node names (not a string)."""
    if isinstance(declared, str) or not isinstance(declared, Iterable):
        if isinstance(declared, str):  # list("m1") would be ['m', '1']
            got, example = f"the string {declared!r}", f"[{declared!r}, ...]"
        else:
            got, example = f"a {type(declared).__name__}", "['a', 'b']"
        raise CapsuleConfigError(
            f"group {name!r} lists its members as {got}; give a list of node names, "
            f"e.g. {{{name!r}: {example}}}",
            code="bad_group_members",
            group=str(name),
        )
    members = list(declared)
    odd = [m for m in members if not isinstance(m, str)]
    if odd:
        raise CapsuleConfigError(
            f"group {name!r} lists {odd[0]!r}, which is not a node name; give a list of "
            "node names (strings)",
            code="bad_group_members",
            group=str(name),
        )
    return members


def _routed_successor(members: Sequence[str], topo: Topology, *, declared: bool) -> str | None:
    """Why a group's gate would make a successor run twice, or ``None``.

    The gate runs one superstep after the members. A successor that a node outside the
    group can also trigger at run time (conditional edge, ``Command``/``Send``) in the
    members' superstep would then run twice where the original ran it once. A router
    downstream of the members runs later and is safe; a router whose code merely may
    route (unreadable code) is a doubt that keeps inferred groups only."""
    mset = set(members)
    successors = {
        n
        for n, trigs in topo.triggers.items()
        for t in trigs
        if n not in mset and mset & ({t} if isinstance(t, str) else set(t))
    }
    later = topo.descendants(members)
    for src, targets in sorted(topo.routes.items()):
        if src in mset or src in later or (declared and src in topo.uninferred):
            continue
        hit = sorted(successors if targets is None else successors & targets)
        if hit:
            how = "may route to any node" if targets is None else f"may route to {hit[0]!r}"
            return (
                f"its successor {hit[0]!r} may also be triggered at run time by {src!r} "
                f"({how}, by a conditional edge or Command/Send) in the same superstep; the "
                f"group's gate adds a superstep, so {hit[0]!r} would run twice. If {src!r} "
                f"never routes to {hit[0]!r}, declare its targets (a Command[Literal[...]] "
                "return hint, destinations= or a path_map)"
            )
    return None


def _group_notes(members: Sequence[str], topo: Topology) -> tuple[str, ...]:
    return tuple(
        f"{m} calls a chat model not wrapped in CapsuleChatModel "
        f"({', '.join(topo.unwrapped[m])}); its calls on it are never merged: wrap the model "
        "with lc.CapsuleChatModel"
        for m in members
        if m in topo.unwrapped
    )


def _check_group(
    name: str,
    members: list[str],
    topo: Topology,
    ineligible: Mapping[str, str],
    owner: dict[str, str],
    known: set[str],
) -> GroupPlan:
    check_group_name(name)
    for reserved in (f"capsule__{name}", f"gate__{name}", f"capsule__{name}__private"):
        if reserved in known:
            raise CapsuleConfigError(
                f"group {name!r} would add node {reserved!r}, which already exists; "
                "rename the group",
                code="bad_group_name",
                group=name,
            )
    if len(set(members)) < 2:
        raise CapsuleConfigError(
            f"group {name!r} has {len(set(members))} member(s); a group needs at least two "
            "(a single agent gains nothing from merging: leave it out of groups)",
            code="group_too_small",
            group=name,
        )
    for m in members:
        if m not in known:
            raise CapsuleConfigError(
                f"group {name!r} names {m!r}, which is not a node of this graph; "
                f"nodes: {sorted(known)}",
                code="unknown_node",
                node=m,
                group=name,
            )
        if m in owner and owner[m] != name:
            raise CapsuleConfigError(
                f"node {m!r} is in two groups, {owner[m]!r} and {name!r}; put it in one group only",
                code="node_in_two_groups",
                node=m,
                group=name,
            )
        owner[m] = name
        if m in ineligible:
            raise CapsuleConfigError(
                f"node {m!r} cannot join group {name!r}: it {ineligible[m]}. "
                "Remove it from the group (it keeps running as it is)",
                code="ineligible_node",
                node=m,
                group=name,
            )
    mset = set(members)
    for m in members:
        inner = [
            t for t in topo.triggers[m] if (t in mset) or (isinstance(t, tuple) and mset & set(t))
        ]
        if inner:
            src = inner[0] if isinstance(inner[0], str) else "+".join(inner[0])
            raise CapsuleConfigError(
                f"group {name!r} is a fan-out group but has an edge {src!r} -> {m!r} between "
                "its members; a group's members must be independent siblings",
                code="edge_within_group",
                node=m,
                group=name,
            )
    first = topo.triggers[members[0]]
    for m in members[1:]:
        if topo.triggers[m] != first:
            raise CapsuleConfigError(
                f"members of group {name!r} are triggered by different nodes: "
                f"{members[0]!r} by {sorted(map(str, first))}, {m!r} by "
                f"{sorted(map(str, topo.triggers[m]))}; group only siblings that share "
                "their predecessors",
                code="mismatched_predecessors",
                node=m,
                group=name,
            )
    return GroupPlan(name, tuple(dict.fromkeys(members)), first, inferred=False)
