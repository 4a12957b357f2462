"""Can this capsule graph continue a thread that another graph wrote?

A thread written by the original graph, or by another capsule plan, is safe to continue
when nothing of the other graph is left in flight: the thread is finished, or every
pending task is a node this graph has with the same meaning (an original node, due on a
trigger channel this graph has too), and no private staging channel of a group holds
data. It is not safe when a ``capsule__*``/``gate__*`` node (or a ``Send`` to one) of
another plan is pending, or a group's staged outputs wait for their gate: this graph
would silently not run them (LangGraph schedules only the nodes it has), or run its own
group's node on another plan's staging.

The check reads only the checkpoint tuple the run start already loads (its channel
values and versions and its pending writes); it is graph-independent except for the
node names and trigger channels passed in. It relies on LangGraph's channel naming
(``branch:to:<node>``, ``join:<sources>:<node>``, ``__pregel_tasks``), stable across
langgraph 1.x.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RESUME_POLICIES", "ResumeHazard", "resume_hazard"]

RESUME_POLICIES = ("check", "allow")
"""``check``: continue another graph's thread only when safe; ``allow``: never check."""

_BRANCH = "branch:to:"
_JOIN = "join:"
_TASKS = "__pregel_tasks"
_NULL_TASK_ID = "00000000-0000-0000-0000-000000000000"  # writes of the run's input
_PRIVATE = re.compile(r"^capsule__(?P<group>[A-Za-z][A-Za-z0-9_]*)__private$")
_ADDED = re.compile(r"^(?:capsule|gate)__(?P<group>[A-Za-z][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class ResumeHazard:
    """Why a thread must not be continued here: ``reason`` completes "the thread ...";
    ``node``/``group`` name what is in flight, when known."""

    reason: str
    node: str | None = None
    group: str | None = None


def _group_of(name: str | None) -> str | None:
    m = _ADDED.match(name or "") or _PRIVATE.match(name or "")
    return m.group("group") if m else None


def _pending(checkpoint: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """(node, trigger channel) of every task the checkpoint has due, read from its
    channels alone (the node need not exist in any graph at hand)."""
    values: Mapping[str, Any] = checkpoint.get("channel_values") or {}
    versions: Mapping[str, Any] = checkpoint.get("channel_versions") or {}
    seen: Mapping[str, Mapping[str, Any]] = checkpoint.get("versions_seen") or {}

    def unseen(node: str, chan: str) -> bool:
        version = versions.get(chan)
        return version is None or (seen.get(node) or {}).get(chan) != version

    out: list[tuple[str | None, str]] = []
    for chan, value in values.items():
        if chan.startswith(_BRANCH):
            node = chan[len(_BRANCH) :]
            if unseen(node, chan):
                out.append((node, chan))
        elif chan.startswith(_JOIN):  # a fan-in join, complete or still filling
            node = chan.rsplit(":", 1)[-1]
            if value and unseen(node, chan):
                out.append((node, chan))
        elif chan == _TASKS:
            out.extend((getattr(send, "node", None), _TASKS) for send in value or ())
    return out


def resume_hazard(
    checkpoint: Mapping[str, Any],
    pending_writes: Iterable[Sequence[Any]] | None,
    *,
    triggers: Mapping[str, Sequence[str]],
    original: frozenset[str],
    members: Mapping[str, str] | None = None,
    channels: frozenset[str] | None = None,
) -> ResumeHazard | None:
    """What in a checkpoint another graph wrote this graph cannot continue, or ``None``.

    Args:
        checkpoint: The saved checkpoint (``CheckpointTuple.checkpoint``).
        pending_writes: Its pending writes (writes of tasks that finished in a step
            that did not complete).
        triggers: Per node of this graph, the channels that trigger it.
        original: This graph's nodes that mean what they mean in the original graph
            (every node but the capsule, gate and dynamic capsule nodes of its plan).
        members: Per member of a static group of this plan, its group (whose gate this
            graph routes the member's out-edges through).
        channels: This graph's channels (``None``: not checked).
    """
    pending = _pending(checkpoint)
    if not pending:
        return None  # finished: the next input starts a new run over the same state
    for node, chan in pending:
        if node not in original or node not in triggers:
            group = _group_of(node)
            if node in triggers and group is not None:
                what = (
                    f"has {node!r} pending, a node of that graph's group {group!r}, not of "
                    "this graph's group of the same name"
                )
            else:
                what = f"has {node!r} pending, a node of that graph that this graph does not have"
            return ResumeHazard(what, node, group)
        if chan != _TASKS and chan not in triggers[node]:
            return ResumeHazard(
                f"has {node!r} due on {chan!r}, an edge this graph rewires, so this graph "
                f"would never run {node!r}",
                node,
            )
    values: Mapping[str, Any] = checkpoint.get("channel_values") or {}
    for chan, value in values.items():
        m = _PRIVATE.match(chan)
        if m and value:
            return ResumeHazard(
                f"holds staged data of group {m.group('group')!r} in {chan!r}, which only the "
                "graph that wrote it commits",
                group=m.group("group"),
            )
    writes = [w for w in pending_writes or () if w[0] != _NULL_TASK_ID]
    if any(not w[1].startswith("__") or w[1] == _TASKS for w in writes):
        # a step that stopped part-way (an error, an interrupt): some of its tasks saved
        # their writes, wired as the writer wires them, and the rest run again here
        mine = members or {}
        for group in dict.fromkeys(mine[n] for n, _c in pending if n is not None and n in mine):
            names = ", ".join(sorted({n for n, _c in pending if n and mine.get(n) == group}))
            return ResumeHazard(
                f"stopped part-way through the step that runs the members of group {group!r} "
                f"({names}): the finished ones saved their writes with the writer's edges, "
                f"and this graph would run the rest through 'gate__{group}', so the steps "
                "after them would run twice",
                group=group,
            )
    for write in writes:
        _task, chan, value = write[0], write[1], write[2]
        m = _PRIVATE.match(chan)
        target = (
            chan[len(_BRANCH) :]
            if chan.startswith(_BRANCH)
            else getattr(value, "node", None)
            if chan == _TASKS
            else None
        )
        if m and value is not None:
            return ResumeHazard(
                f"has a pending write of staged data of group {m.group('group')!r}",
                group=m.group("group"),
            )
        if chan.startswith(_JOIN) and channels is not None and chan not in channels:
            return ResumeHazard(
                f"has a pending write to {chan!r}, a join this graph does not have",
                chan.rsplit(":", 1)[-1],
            )
        if target is not None and target not in original:
            return ResumeHazard(
                f"has a pending write that starts {target!r}, a node of the graph that wrote "
                "the thread",
                target,
                _group_of(target),
            )
    return None
