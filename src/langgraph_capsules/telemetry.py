"""Usage telemetry: per run, per group and per member calls, tokens and latency.

``with track_usage() as usage:`` records every chat-model call made in the block (in
any graph, capsule or not) through a LangChain callback handler registered once with
``register_configure_hook``. Calls are attributed by the metadata the capsule pass
puts on them: merged calls to their group, served calls (zero usage) and fine-tier
calls to their member. Totals equal those of langchain-core's
``UsageMetadataCallbackHandler`` because served calls carry zero usage and no model
name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

from langgraph_capsules._session import MergeAbort
from langgraph_capsules.types import CallRecord

__all__ = [
    "AUDIT_KEY",
    "JUDGE_KEY",
    "PURPOSES",
    "SHADOW_KEY",
    "UsageReport",
    "UsageTracker",
    "cache_read_tokens",
    "track_usage",
]

JUDGE_KEY = "capsule_judge"
"""Run metadata marking a quality-gate judge call (set by the judges and the gate)."""
SHADOW_KEY = "capsule_shadow"
"""Run metadata marking a call of a shadow evaluation (set by the capsule node)."""
AUDIT_KEY = "capsule_audit"
"""Run metadata marking a call of an audit's fine reference run (set by the capsule node)."""
PURPOSES: tuple[str, ...] = ("run", "shadow", "judge", "audit")
"""Why a call was made: the user's output, or the quality gate's overhead (see
:class:`~langgraph_capsules.types.CallRecord`)."""


def cache_read_tokens(usage: dict[str, Any] | None) -> int:
    """Cached input tokens of a ``usage_metadata`` dict (incl. tier-prefixed keys)."""
    details = (usage or {}).get("input_token_details") or {}
    return int(
        sum(v or 0 for k, v in details.items() if k == "cache_read" or k.endswith("_cache_read"))
    )


_ATTRIBUTION_KEYS = (
    "capsule_merged",
    "capsule_unmergeable",
    JUDGE_KEY,
    SHADOW_KEY,
    AUDIT_KEY,
    "capsule_group",
    "capsule_member",
    "capsule_tier",
    "langgraph_node",
)
"""The run metadata a call record is built from (all that is kept of a call's
metadata while it runs, instead of a copy of LangGraph's whole run metadata)."""


def _attribution(metadata: dict[str, Any] | None) -> dict[str, Any]:
    if not metadata:
        return {}
    return {k: metadata[k] for k in _ATTRIBUTION_KEYS if k in metadata}


class UsageTracker(BaseCallbackHandler):
    """A callback handler that turns chat-model runs into :class:`CallRecord` rows."""

    run_inline = True
    raise_error = False

    def __init__(self, *, track_runs: bool = True) -> None:
        self.track_runs = track_runs
        self.records: list[CallRecord] = []
        self._lock = threading.Lock()
        self._parent: dict[UUID, UUID | None] = {}
        self._open: dict[UUID, tuple[float, dict[str, Any], str | None]] = {}

    @property
    def ignore_chain(self) -> bool:
        """Chain events only serve to find root runs (off for per-node trackers)."""
        return not self.track_runs

    # ------------------------------------------------------------- run tree
    def _root(self, run_id: UUID | None) -> str | None:
        seen = 0
        while run_id is not None and seen < 10_000:
            parent = self._parent.get(run_id)
            if parent is None:
                return str(run_id)
            run_id = parent
            seen += 1
        return None if run_id is None else str(run_id)

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            self._parent[run_id] = parent_run_id

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        params = invocation_params or {}
        model = params.get("model_name") or params.get("model")
        with self._lock:
            self._parent[run_id] = parent_run_id
            self._open[run_id] = (time.perf_counter(), _attribution(metadata), model)

    def _finish(self, run_id: UUID, message: Any, error: BaseException | None) -> None:
        with self._lock:
            start, md, model = self._open.pop(run_id, (time.perf_counter(), {}, None))
            root = self._root(run_id)
        usage = getattr(message, "usage_metadata", None) or {}
        rmeta = getattr(message, "response_metadata", None) or {}
        if rmeta.get("capsule_served") or isinstance(error, MergeAbort):
            kind = "served"  # answered (or aborted) from a merged call: never billed
        elif md.get("capsule_merged"):
            kind = "merged"
        elif md.get("capsule_unmergeable"):
            kind = "unmergeable"
        else:
            kind = "real"
        purpose = "run"
        if md.get(JUDGE_KEY):
            purpose = "judge"
        elif md.get(SHADOW_KEY):
            purpose = "shadow"
        elif md.get(AUDIT_KEY):
            purpose = "audit"
        group = md.get("capsule_group") or rmeta.get("capsule_group")
        member = md.get("capsule_member") or rmeta.get("capsule_member")
        if member is None and group is not None and kind != "merged":
            member = md.get("langgraph_node")
        rec: CallRecord = {
            "run_id": root,
            "group": group,
            "member": member,
            "node": md.get("langgraph_node"),
            "kind": kind,  # type: ignore[typeddict-item]
            "purpose": purpose,  # type: ignore[typeddict-item]
            "tier": md.get("capsule_tier") or rmeta.get("capsule_tier"),
            "model": rmeta.get("model_name") or model,
            "input_tokens": int(usage.get("input_tokens", 0) or 0),
            "cached_tokens": cache_read_tokens(usage),
            "output_tokens": int(usage.get("output_tokens", 0) or 0),
            "latency_s": time.perf_counter() - start,
            "tool_calls": len(getattr(message, "tool_calls", None) or []),
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }
        with self._lock:
            self.records.append(rec)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        message = None
        if response.generations and response.generations[0]:
            message = getattr(response.generations[0][0], "message", None)
        self._finish(run_id, message, None)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._finish(run_id, None, error)


_ACTIVE: ContextVar[UsageTracker | None] = ContextVar("langgraph_capsules_usage", default=None)
register_configure_hook(_ACTIVE, inheritable=True)

_SUM_KEYS = ("input_tokens", "cached_tokens", "output_tokens")


def _int(row: CallRecord, key: str) -> int:
    value: Any = row.get(key, 0)
    return int(value or 0)


class UsageReport:
    """What :func:`track_usage` recorded; grows while the block runs."""

    def __init__(self, tracker: UsageTracker) -> None:
        self._tracker = tracker

    @property
    def calls(self) -> list[CallRecord]:
        """Every recorded call, in completion order."""
        with self._tracker._lock:
            return list(self._tracker.records)

    @staticmethod
    def _sum(rows: list[CallRecord]) -> dict[str, Any]:
        billed = [r for r in rows if r["kind"] != "served"]
        out: dict[str, Any] = {k: sum(_int(r, k) for r in billed) for k in _SUM_KEYS}
        out["calls"] = len(billed)
        out["merged_calls"] = sum(1 for r in rows if r["kind"] == "merged")
        out["served_calls"] = sum(1 for r in rows if r["kind"] == "served")
        out["unmergeable_calls"] = sum(1 for r in rows if r["kind"] == "unmergeable")
        for purpose in PURPOSES[1:]:
            own = [r for r in billed if r.get("purpose") == purpose]
            out[f"{purpose}_calls"] = len(own)
            out[f"{purpose}_input_tokens"] = sum(_int(r, "input_tokens") for r in own)
            out[f"{purpose}_output_tokens"] = sum(_int(r, "output_tokens") for r in own)
        out["latency_s"] = sum(r["latency_s"] for r in billed)
        return out

    def totals(self) -> dict[str, Any]:
        """Sums over every real call (served calls count as zero and are not calls)."""
        return self._sum(self.calls)

    def by_purpose(self) -> dict[str, dict[str, Any]]:
        """Totals per purpose: ``run`` (the user's output), ``shadow``, ``judge`` and
        ``audit`` (the quality gate's overhead; part of the honest total)."""
        out: dict[str, dict[str, Any]] = {}
        for purpose in PURPOSES:
            out[purpose] = self._sum([r for r in self.calls if r.get("purpose") == purpose])
        return out

    def by_run(self) -> dict[str | None, dict[str, Any]]:
        """Totals per root run (one graph invocation)."""
        runs: dict[str | None, list[CallRecord]] = {}
        for r in self.calls:
            runs.setdefault(r["run_id"], []).append(r)
        return {k: self._sum(v) for k, v in runs.items()}

    def by_group(self) -> dict[str | None, dict[str, Any]]:
        """Totals per capsule group (``None``: calls outside any group)."""
        groups: dict[str | None, list[CallRecord]] = {}
        for r in self.calls:
            groups.setdefault(r["group"], []).append(r)
        return {k: self._sum(v) for k, v in groups.items()}

    def by_member(self) -> dict[tuple[str | None, str | None], dict[str, Any]]:
        """Totals per (group, member); merged calls appear with member ``None``."""
        members: dict[tuple[str | None, str | None], list[CallRecord]] = {}
        for r in self.calls:
            members.setdefault((r["group"], r["member"]), []).append(r)
        return {k: self._sum(v) for k, v in members.items()}

    def table(self) -> str:
        """A plain-text table per (group, member)."""
        head = f"{'group':<16} {'member':<22} {'calls':>5} {'input':>8} {'cached':>7} {'output':>7}"
        lines = [head, "-" * len(head)]
        rows = sorted(self.by_member().items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))
        for (group, member), s in rows:
            name = member if member is not None else ("(merged call)" if group else "-")
            lines.append(
                f"{group or '-':<16} {name:<22} {s['calls']:>5} {s['input_tokens']:>8} "
                f"{s['cached_tokens']:>7} {s['output_tokens']:>7}"
            )
        t = self.totals()
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<16} {'':<22} {t['calls']:>5} {t['input_tokens']:>8} "
            f"{t['cached_tokens']:>7} {t['output_tokens']:>7}"
        )
        for purpose, p in self.by_purpose().items():
            if purpose != "run" and p["calls"]:
                lines.append(
                    f"{'  of which':<16} {purpose:<22} {p['calls']:>5} {p['input_tokens']:>8} "
                    f"{p['cached_tokens']:>7} {p['output_tokens']:>7}"
                )
        return "\n".join(lines)


@contextmanager
def track_usage() -> Iterator[UsageReport]:
    """Record every chat-model call made inside the block.

    Yields:
        A :class:`UsageReport` (per run, group and member: calls, input, cached and
        output tokens, latency).

    Example:
        >>> from langgraph_capsules.testing import ScriptedChatModel
        >>> with track_usage() as usage:
        ...     _ = ScriptedChatModel().invoke("hello")
        >>> usage.totals()["calls"]
        1
    """
    tracker = UsageTracker()
    token = _ACTIVE.set(tracker)
    try:
        yield UsageReport(tracker)
    finally:
        _ACTIVE.reset(token)
