"""What a group's gate writes: the controller's observations, the run record and the
members' state updates.

``observation`` builds the record the controller folds (documented on
:class:`~langgraph_capsules.types.Observation`); ``run_record`` the in-process record
``capsules.history()`` and ``report()`` show; ``commit_writes`` the members' staged
updates as LangGraph would have applied them had the members run as nodes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.errors import ErrorCode, InvalidUpdateError, create_error_message
from langgraph.types import Command

from langgraph_capsules._compat import BinaryOperatorAggregate
from langgraph_capsules.compiler.audit_run import audit_summary
from langgraph_capsules.compiler.judging import Judgement
from langgraph_capsules.compiler.plan import GroupPlan
from langgraph_capsules.stores._guard import shadow_record_key
from langgraph_capsules.types import CallRecord, GroupRunRecord, MemberUsage, Observation

__all__ = [
    "check_single_writers",
    "commit_writes",
    "observation",
    "run_record",
    "shadow_observation",
]


def observation(
    plan: GroupPlan,
    graph_id: str,
    staging: Mapping[str, Any],
    usage: Sequence[CallRecord],
    tier: str,
    fallback: Sequence[str],
    *,
    run_id: str | None = None,
) -> Observation:
    """The run's record for the controller; ``run_id`` (a new one when ``None``) is also
    its ``record_key``."""
    billed = [r for r in usage if r["kind"] != "served"]
    members: dict[str, MemberUsage] = {}
    for m in plan.members:
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
    run_id = run_id or str(uuid.uuid4())
    obs: Observation = {
        "graph": graph_id,
        "group": plan.name,
        "run_id": run_id,
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
        "record_key": run_id,
    }
    if tier != "fine" and "served" in staging:
        obs["merged_members"] = int(staging["served"])
    return obs


def shadow_observation(
    plan: GroupPlan, graph_id: str, main: Observation, shadow: Mapping[str, Any]
) -> Observation:
    """The record of one shadow tier evaluated beside the run ``main`` (same run id,
    its own record key)."""
    obs = observation(
        plan, graph_id, shadow, shadow.get("usage") or [], shadow["tier"], shadow["route"]
    )
    obs["run_id"] = main["run_id"]
    obs["record_key"] = shadow_record_key(main["run_id"], shadow["tier"])
    obs["time"] = main["time"]
    obs["quality"] = shadow["judgement"]["score"]
    obs["shadow"] = True
    obs["judge_error"] = obs["quality"] is None
    return obs


def run_record(
    plan: GroupPlan,
    obs: Observation,
    shadows: Sequence[Observation],
    staging: Mapping[str, Any],
    judgement: Judgement | None,
    *,
    store_errors: int,
) -> GroupRunRecord:
    """The run record ``capsules.history()`` and ``report()`` show."""
    judge_runs = [judgement.summary()] if judgement is not None else []
    judge_runs += [s["judgement"] for s in staging.get("shadow_runs") or []]
    return {
        "group": plan.name,
        "tier": str(staging.get("tier", "fine")),
        "run_key": obs["run_id"],
        "time": obs["time"],
        "members": list(plan.members),
        "fallback": list(staging.get("route") or []) if obs["tier"] != "fine" else [],
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
        "audit": audit_summary(staging),
        "store_errors": store_errors,
        "notes": [str(n) for n in (staging.get("merge") or {}).get("notes") or []],
    }


def commit_writes(staged: Sequence[Sequence[Any]]) -> list[Command[Any]]:
    """One write per member, in node-name order as LangGraph applies a superstep.

    All of them land in the gate's one superstep, so every channel sees exactly the
    values it saw when the members ran as nodes: reducers apply once per member, and
    two members writing one plain key raise LangGraph's own ``InvalidUpdateError``
    ("At key 'x': Can receive only one value per step"), as the original graph does."""
    return [
        Command(update=dict(update))
        for _member, update in sorted(staged, key=lambda mu: mu[0])
        if update
    ]


def check_single_writers(
    staged: Sequence[Sequence[Any]],
    wrote: Mapping[str, Sequence[str]],
    fallback: Sequence[str],
    channels: Mapping[str, Any],
) -> None:
    """Raise LangGraph's ``InvalidUpdateError`` when a member re-run as its own node and
    a staged member wrote the same plain key: had they run as nodes they would have
    written it in one step, which LangGraph refuses. (Their writes land in different
    supersteps here, so LangGraph cannot see it itself.)"""
    rerun = {k for m in fallback for k in wrote.get(m) or ()}
    for _member, update in staged:
        for key in update or {}:
            if key in rerun and not _multi_write(channels.get(key)):
                raise InvalidUpdateError(
                    create_error_message(
                        message=(
                            f"At key '{key}': Can receive only one value per step. "
                            "Use an Annotated key to handle multiple values."
                        ),
                        error_code=ErrorCode.INVALID_CONCURRENT_GRAPH_UPDATE,
                    )
                )


def _multi_write(channel: Any) -> bool:
    """A channel that takes several writes per step (a reducer or a topic)."""
    return isinstance(channel, BinaryOperatorAggregate) or type(channel).__name__ == "Topic"
