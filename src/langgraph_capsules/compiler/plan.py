"""Validate the user's grouping and produce the :class:`CapsulePlan`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph.graph import StateGraph

from langgraph_capsules._compat import END, START
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.topology import Topology, Trigger, infer_group_name

__all__ = ["PLAN_VERSION", "CapsulePlan", "GroupPlan", "make_plan"]

PLAN_VERSION = 1
_GROUP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


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
    """A stable hash of the groups; stamped into every checkpoint of the capsule graph."""

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
                }
                for g in self.groups
            ],
            "untouched": dict(self.untouched),
        }

    def __str__(self) -> str:
        lines = [f"CapsulePlan {self.plan_id}: {len(self.groups)} group(s)"]
        for g in self.groups:
            how = "inferred" if g.inferred else "declared"
            lines.append(f"  group {g.name!r} ({how}): {', '.join(g.members)}")
            lines.append(f"    nodes added: {g.capsule_node}, {g.gate_node}")
            tiers = f"    tiers: {', '.join(g.tiers)}"
            if "two_phase" not in g.tiers:
                tiers += " (two_phase runs as sequential: no declared agent with tools)"
            lines.append(tiers)
        if self.untouched:
            lines.append("  left as they are:")
            for node, why in self.untouched.items():
                lines.append(f"    {node}: {why}")
        return "\n".join(lines)


def _tiers(builder: StateGraph[Any, Any, Any, Any], members: Sequence[str]) -> tuple[str, ...]:
    from langgraph_capsules._compat import node_runnable
    from langgraph_capsules.agents import agent_spec

    specs = [agent_spec(node_runnable(builder.nodes[m])) for m in members]
    if any(s is not None and s.tools for s in specs):
        return ("fine", "standard", "two_phase", "sequential")
    return ("fine", "standard", "sequential")


def _plan_id(groups: Sequence[GroupPlan]) -> str:
    data = json.dumps(
        [PLAN_VERSION, [[g.name, list(g.members)] for g in groups]], separators=(",", ":")
    )
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
    if groups is None:
        taken = set(known)
        for trig, members in topo.siblings(exclude=excluded):
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
        owner: dict[str, str] = {}
        for name, declared in groups.items():
            planned.append(_check_group(name, list(declared), topo, ineligible, owner, known))
    planned = [dataclasses.replace(g, tiers=_tiers(builder, g.members)) for g in planned]
    planned.sort(key=lambda g: g.name)
    in_group = {m for g in planned for m in g.members}
    untouched = {
        n: ineligible.get(n, "not in any group")
        for n in topo.nodes
        if n not in in_group and n not in (START, END)
    }
    return CapsulePlan(tuple(planned), untouched, _plan_id(planned))


def _check_group(
    name: str,
    members: list[str],
    topo: Topology,
    ineligible: Mapping[str, str],
    owner: dict[str, str],
    known: set[str],
) -> GroupPlan:
    if not isinstance(name, str) or not _GROUP_NAME.match(name):
        raise CapsuleConfigError(
            f"group name {name!r} is not valid: use letters, digits and '_' and start with "
            "a letter",
            code="bad_group_name",
            group=str(name),
        )
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
