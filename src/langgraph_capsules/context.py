"""Topology-aware context for declared agents in linear chains (capsules-spec 3.7).

A declared agent sees only the keys it declares. In a linear chain of declared agents
(``a -> b -> c``: ``c``'s only trigger is ``b`` and ``b``'s only successor is ``c``),
the capsule pass narrows that further by default: ``c`` sees its predecessor's output
and the graph's inputs, not the outputs of agents further up the chain, even when it
declares them (``predecessor_only``). ``lc.agent(..., context="full")`` keeps every
declared read. Fan-out and join topologies are left as declared (siblings never see
each other unless they declare it).

The narrowing is a fine-tier saving of the capsule graph: the original graph, run on
its own, gives every agent all the keys it declares.
"""

from __future__ import annotations

from langgraph_capsules.agents import HIDDEN_READS_KEY, AgentSpec
from langgraph_capsules.topology import Topology

__all__ = ["HIDDEN_READS_KEY", "hidden_reads"]


def _ancestors(node: str, topo: Topology) -> set[str]:
    seen: set[str] = set()
    todo = [node]
    while todo:
        for trig in topo.triggers.get(todo.pop(), frozenset()):
            for src in (trig,) if isinstance(trig, str) else tuple(trig):
                if src not in seen:
                    seen.add(src)
                    todo.append(src)
    return seen


def hidden_reads(topo: Topology) -> dict[str, list[str]]:
    """Per declared agent in a linear chain, the declared reads to hide.

    Returns:
        ``{node: [key, ...]}`` for every agent whose predecessor-only context drops a
        key it declares; agents with ``context="full"`` and agents outside linear
        chains are left out.
    """
    specs: dict[str, AgentSpec] = topo.agents
    writer = {key: n for n, s in specs.items() for key in s.writes}
    out: dict[str, list[str]] = {}
    for node, spec in specs.items():
        if spec.context == "full":
            continue
        triggers = topo.triggers.get(node, frozenset())
        if len(triggers) != 1:
            continue
        (pred,) = tuple(triggers)
        if not isinstance(pred, str) or pred not in specs:
            continue
        if topo.successors.get(pred) != frozenset({node}):
            continue  # pred fans out: not a linear link
        upstream = _ancestors(node, topo)
        hidden = [
            k for k in spec.reads if writer.get(k) not in (None, pred) and writer[k] in upstream
        ]
        if hidden:
            out[node] = hidden
    return out
