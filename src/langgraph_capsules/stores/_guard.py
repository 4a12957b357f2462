"""Keep the controller store out of the user's run: stable record keys and guarded I/O.

* :func:`gate_run_id` derives a group-run's ``run_id`` from the LangGraph task that runs
  the gate. LangGraph derives a task id from the checkpoint it starts from, the step,
  the node and the task path, so when a thread is resumed and the gate re-runs (its
  first attempt failed, or ``durability="exit"`` re-executes finished siblings) it gets
  the same task id, the same ``run_id`` and the same ``record_key``\\ s, and the store
  ignores the second append.
* :class:`StoreGuard` appends with a few short retries and then drops the record, and
  reads with one attempt; every failure is counted and logged, never raised into the
  user's run. The outputs were produced: losing one observation only delays what the
  controller learns, failing the run would lose the user's work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.stores._base import ControllerStore
from langgraph_capsules.types import Observation

__all__ = ["APPEND_BACKOFF_S", "StoreGuard", "gate_run_id", "shadow_record_key"]

logger = logging.getLogger("langgraph_capsules.stores")

APPEND_BACKOFF_S: tuple[float, ...] = (0.005, 0.02, 0.08)
"""Pauses between the attempts of one append (so four attempts, ~0.1 s at most)."""

_RUN_NAMESPACE = uuid.UUID("5b0c3f0e-7d3a-4b8e-9a51-6c1f2f4d9e21")
_NOT_TRANSIENT = frozenset({"bad_observation", "bad_store_query"})


def gate_run_id(config: Mapping[str, Any] | None) -> str | None:
    """A run id that is the same every time LangGraph executes the same gate task.

    Args:
        config: The gate node's ``RunnableConfig``.

    Returns:
        A UUID string derived from the thread id and the task's checkpoint namespace
        (``"gate__G:<task id>"``, nested under a parent graph's tasks for a subgraph);
        ``None`` when the config names no task (the gate was called outside LangGraph).

    Example:
        >>> cfg = {"metadata": {"langgraph_checkpoint_ns": "gate__arm:1f2e"},
        ...        "configurable": {"thread_id": "t1"}}
        >>> gate_run_id(cfg) == gate_run_id(cfg), gate_run_id({})
        (True, None)
    """
    if not config:
        return None
    metadata = config.get("metadata") or {}
    configurable = config.get("configurable") or {}
    ns = metadata.get("langgraph_checkpoint_ns") or configurable.get("checkpoint_ns")
    if not isinstance(ns, str) or ":" not in ns:
        return None
    thread = configurable.get("thread_id")
    return str(uuid.uuid5(_RUN_NAMESPACE, f"{thread!s}\x00{ns}"))


def shadow_record_key(run_id: str, tier: str) -> str:
    """The ``record_key`` of a run's shadow record of ``tier`` (the main record's is
    its ``run_id``).

    Example:
        >>> shadow_record_key("r1", "standard")
        'r1/shadow/standard'
    """
    return f"{run_id}/shadow/{tier}"


def _transient(exc: BaseException) -> bool:
    return not (isinstance(exc, CapsuleConfigError) and exc.code in _NOT_TRANSIENT)


@dataclass
class StoreGuard:
    """Guarded store I/O for one group, with counters of what failed.

    Thread-safe; one per group runtime.

    Example:
        >>> from langgraph_capsules.stores import InMemoryControllerStore
        >>> guard = StoreGuard()
        >>> guard.history(InMemoryControllerStore(), "plan-1", "arm")
        []
        >>> guard.failed_appends, guard.failed_reads
        (0, 0)
    """

    backoff_s: Sequence[float] = APPEND_BACKOFF_S
    """Pauses between append attempts; ``len(backoff_s) + 1`` attempts in all."""
    sleep: Callable[[float], None] = time.sleep
    asleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    """The async runs' pause (they never block the event loop)."""
    failed_appends: int = 0
    """Appends dropped after every attempt failed (the records are lost)."""
    failed_reads: int = 0
    """Reads that failed (the decision fell back)."""
    _unreported: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def store_errors(self) -> int:
        """Failed store operations so far (dropped appends plus failed reads)."""
        return self.failed_appends + self.failed_reads

    def take_unreported(self) -> int:
        """Failures since the previous call (what the next run record reports)."""
        with self._lock:
            n, self._unreported = self._unreported, 0
        return n

    def _count(self, attr: str) -> None:
        with self._lock:
            setattr(self, attr, getattr(self, attr) + 1)
            self._unreported += 1

    def append(self, store: ControllerStore, obs: Observation) -> bool:
        """Append ``obs``, retrying transient failures with a short backoff.

        Args:
            store: The controller store.
            obs: The record.

        Returns:
            True when the record is stored (or was already: appends are idempotent on
            ``record_key``); False when it was dropped after the last attempt (counted
            and logged as a warning).
        """
        pauses = list(self.backoff_s)
        while True:
            try:
                store.append(obs)
                return True
            except Exception as exc:
                if pauses and _transient(exc):
                    self.sleep(pauses.pop(0))
                    continue
                self._dropped(obs, exc)
                return False

    async def aappend(self, store: ControllerStore, obs: Observation) -> bool:
        """Async twin of :meth:`append`: the store's ``aappend`` (native async I/O where
        the store has it, else a worker thread) and non-blocking pauses."""
        pauses = list(self.backoff_s)
        while True:
            try:
                await store.aappend(obs)
                return True
            except Exception as exc:
                if pauses and _transient(exc):
                    await self.asleep(pauses.pop(0))
                    continue
                self._dropped(obs, exc)
                return False

    def _dropped(self, obs: Observation, exc: BaseException) -> None:
        self._count("failed_appends")
        logger.warning(
            "capsule group %r: dropped a %s observation (run %s) after the "
            "controller store failed: %s: %s. The run's outputs are unaffected; "
            "the controller decides without this record.",
            obs.get("group"),
            "shadow" if obs.get("shadow") else str(obs.get("tier")),
            obs.get("run_id"),
            type(exc).__name__,
            exc,
        )

    def history(
        self, store: ControllerStore, graph: str, group: str, *, since: int = 0
    ) -> list[Observation] | None:
        """Read a group's records numbered ``since + 1`` onwards, or ``None`` if the
        read failed (counted and logged as a warning; the caller falls back)."""
        try:
            return store.history(graph, group, since=since)
        except Exception as exc:
            self._read_failed(group, exc)
            return None

    async def ahistory(
        self, store: ControllerStore, graph: str, group: str, *, since: int = 0
    ) -> list[Observation] | None:
        """Async twin of :meth:`history`, over the store's ``ahistory``."""
        try:
            return await store.ahistory(graph, group, since=since)
        except Exception as exc:
            self._read_failed(group, exc)
            return None

    def _read_failed(self, group: str, exc: BaseException) -> None:
        self._count("failed_reads")
        logger.warning(
            "capsule group %r: could not read the controller store (%s: %s); the "
            "run uses the last known decision (fine when there is none).",
            group,
            type(exc).__name__,
            exc,
        )
