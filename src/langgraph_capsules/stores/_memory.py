"""The default controller store: a thread-safe log in this process's memory."""

from __future__ import annotations

import threading

from langgraph_capsules.stores._base import ControllerStore
from langgraph_capsules.stores._codec import (
    check_name,
    check_since,
    decode_observation,
    encode_observation,
    record_key,
)
from langgraph_capsules.types import Observation

__all__ = ["InMemoryControllerStore"]


class InMemoryControllerStore(ControllerStore):
    """Observations in this process's memory (the default store).

    Serves one process: appends from any number of threads get distinct, dense
    sequence numbers under one lock, and the history is lost when the process exits.
    Records are kept as JSON text, exactly like the persistent stores, so a test that
    passes here behaves the same against SQLite or a LangGraph ``BaseStore``. A record
    whose ``record_key`` is already in its group's log is not appended again.

    Example:
        >>> from langgraph_capsules.stores import InMemoryControllerStore
        >>> store = InMemoryControllerStore()
        >>> store.groups("plan-1")
        []
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: dict[str, dict[str, list[str]]] = {}
        self._keys: dict[tuple[str, str], dict[str, int]] = {}

    def append(self, obs: Observation) -> int:
        """Append one observation; see :meth:`ControllerStore.append`.

        Args:
            obs: The record to append.

        Returns:
            Its sequence number within (graph, group), starting at 1; for a record whose
            ``record_key`` is already in the log, the first one's number (nothing is
            appended).

        Raises:
            CapsuleConfigError: ``bad_observation`` for an invalid record.

        Example:
            >>> store = InMemoryControllerStore()
            >>> store.append(obs)  # obs: see ControllerStore's example  # doctest: +SKIP
            1
            >>> store.append(obs)  # doctest: +SKIP
            2
        """
        text = encode_observation(obs)
        key = record_key(obs)
        with self._lock:
            log = self._logs.setdefault(obs["graph"], {}).setdefault(obs["group"], [])
            if key is not None:
                keys = self._keys.setdefault((obs["graph"], obs["group"]), {})
                seen = keys.get(key)
                if seen is not None:
                    return seen
                keys[key] = len(log) + 1
            log.append(text)
            return len(log)

    def history(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        """Return a group's observations in order; see :meth:`ControllerStore.history`.

        Args:
            graph: The plan id of the capsule graph.
            group: The group name.
            since: Skip the first ``since`` records.

        Returns:
            Fresh copies of the records numbered ``since + 1`` onwards.

        Raises:
            CapsuleConfigError: ``bad_store_query`` for bad arguments.

        Example:
            >>> InMemoryControllerStore().history("plan-1", "research", since=2)
            []
        """
        check_name(graph, "graph")
        check_name(group, "group")
        check_since(since)
        with self._lock:
            texts = self._logs.get(graph, {}).get(group, [])[since:]
        return [decode_observation(t, where="memory") for t in texts]

    def groups(self, graph: str) -> list[str]:
        """Return the sorted group names of ``graph``; see :meth:`ControllerStore.groups`.

        Args:
            graph: The plan id of the capsule graph.

        Returns:
            Sorted group names.

        Raises:
            CapsuleConfigError: ``bad_store_query`` for an empty graph id.

        Example:
            >>> InMemoryControllerStore().groups("plan-1")
            []
        """
        check_name(graph, "graph")
        with self._lock:
            return sorted(self._logs.get(graph, {}))

    # Nothing here blocks for long, so the async twins skip the thread hop.
    async def aappend(self, obs: Observation) -> int:
        """Async twin of :meth:`append` (runs inline: it never blocks on I/O).

        Args:
            obs: The record to append.

        Returns:
            Its sequence number within (graph, group).
        """
        return self.append(obs)

    async def ahistory(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        """Async twin of :meth:`history` (runs inline).

        Args:
            graph: The plan id of the capsule graph.
            group: The group name.
            since: Skip the first ``since`` records.

        Returns:
            The records numbered ``since + 1`` onwards.
        """
        return self.history(graph, group, since=since)

    async def agroups(self, graph: str) -> list[str]:
        """Async twin of :meth:`groups` (runs inline).

        Args:
            graph: The plan id of the capsule graph.

        Returns:
            Sorted group names.
        """
        return self.groups(graph)
