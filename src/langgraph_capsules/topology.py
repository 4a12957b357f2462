"""Read a ``StateGraph`` builder: dependencies, which nodes can be merged, fan-out groups.

A node can join a group when it is plain-edge triggered and does nothing the merged
path could not reproduce. These nodes stay as they are (and the plan says why):

* nodes with conditional out-edges (``add_conditional_edges`` from the node);
* nodes that may return ``Command``/``Send`` (declared ``destinations`` or a
  ``Command`` return hint);
* ``defer=True`` nodes, subgraphs, nodes whose code calls ``interrupt()``;
* nodes targeted by a conditional edge (their runs are not tied to their siblings'),
  including any node when the graph has an *opaque* conditional edge (no ``path_map``
  and no ``Literal`` return hint): it could route anywhere;
* nodes the user excluded.

Fan-out groups are inferred from siblings: eligible nodes with the same set of
triggers (plain-edge predecessors and fan-in joins) and at least two members. Such
siblings never have edges among them and always run in the same superstep.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from langgraph.graph import StateGraph
from langgraph.pregel import Pregel

from langgraph_capsules._compat import END, START, node_functions

__all__ = ["Topology", "Trigger", "read_topology"]

Trigger = str | tuple[str, ...]
"""A node's trigger: a predecessor name (plain edge) or a fan-in join's sources."""


def _calls_interrupt(fn: Any) -> bool:
    code = getattr(fn, "__code__", None)
    if code is None:
        code = getattr(getattr(fn, "__call__", None), "__code__", None)  # noqa: B004
    if code is None:
        return False
    stack = [code]
    while stack:
        c = stack.pop()
        if "interrupt" in c.co_names:
            return True
        stack.extend(k for k in c.co_consts if hasattr(k, "co_names"))
    return False


@dataclass(frozen=True)
class Topology:
    """A static reading of a builder's graph."""

    nodes: tuple[str, ...]
    triggers: dict[str, frozenset[Trigger]]
    """Per node, what triggers it through static edges (plain predecessors, joins)."""
    successors: dict[str, frozenset[str]]
    """Per node, targets of its plain out-edges."""
    ineligible: dict[str, str]
    """Nodes that cannot join a group, with the reason."""

    def siblings(self, exclude: Iterable[str] = ()) -> list[tuple[frozenset[Trigger], list[str]]]:
        """Eligible nodes grouped by identical (non-empty) trigger sets, 2+ per set."""
        skip = set(exclude)
        by_trigger: dict[frozenset[Trigger], list[str]] = {}
        for n in self.nodes:
            if n in self.ineligible or n in skip or not self.triggers[n]:
                continue
            by_trigger.setdefault(self.triggers[n], []).append(n)
        return [(t, ms) for t, ms in by_trigger.items() if len(ms) >= 2]


def read_topology(builder: StateGraph[Any, Any, Any, Any]) -> Topology:
    """Read dependencies and eligibility from a builder (the builder is not modified)."""
    nodes = tuple(n for n, spec in builder.nodes.items() if not spec.is_error_handler and n != END)
    triggers: dict[str, set[Trigger]] = {n: set() for n in nodes}
    successors: dict[str, set[str]] = {n: set() for n in (*nodes, START)}
    for src, dst in builder.edges:
        if dst in triggers:
            triggers[dst].add(src)
        successors.setdefault(src, set()).add(dst)
    for starts, dst in builder.waiting_edges:
        if dst in triggers:
            triggers[dst].add(tuple(sorted(starts)))

    ineligible: dict[str, str] = {}
    opaque: list[str] = []
    for src, branches in builder.branches.items():
        for branch in branches.values():
            if branch.ends is None:
                opaque.append(src)
                continue
            for target in branch.ends.values():
                if target in triggers and target not in ineligible:
                    ineligible[target] = f"targeted by a conditional edge from '{src}'"
    for name in nodes:
        spec = builder.nodes[name]
        reason = None
        if builder.branches.get(name):
            reason = "has conditional out-edges"
        elif spec.ends:
            reason = "may return Command/Send (declares destinations)"
        elif spec.defer:
            reason = "is deferred (defer=True)"
        elif isinstance(spec.runnable, Pregel):
            reason = "is a subgraph"
        elif any(_calls_interrupt(f) for f in node_functions(spec)):
            reason = "calls interrupt()"
        elif name in ineligible:
            continue
        elif opaque:
            reason = (
                f"may be targeted by the conditional edge from '{opaque[0]}', which has no "
                "path_map (give add_conditional_edges a path_map or a Literal return hint)"
            )
        elif not triggers[name]:
            reason = "has no incoming edges"
        if reason is not None:
            ineligible[name] = reason
    return Topology(
        nodes=nodes,
        triggers={n: frozenset(t) for n, t in triggers.items()},
        successors={n: frozenset(s) for n, s in successors.items()},
        ineligible=ineligible,
    )


_NAME_OK = re.compile(r"[^A-Za-z0-9_]+")


def infer_group_name(members: list[str], triggers: frozenset[Trigger], taken: set[str]) -> str:
    """A deterministic name: the members' common leading word, else ``after_<preds>``."""
    heads = {m.split("_")[0] for m in members}
    if len(heads) == 1 and len(next(iter(heads))) >= 3:
        base = next(iter(heads))
    else:
        preds: list[str] = []
        for t in sorted(triggers, key=str):
            preds.extend(t if isinstance(t, tuple) else (t,))
        base = "after_" + "_".join("start" if p == START else p for p in preds)
    base = _NAME_OK.sub("_", base).strip("_") or "group"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name
