"""The ``ControllerStore`` interface: an append-only log of observations per group."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from types import TracebackType

from langgraph_capsules.types import Observation

__all__ = ["ControllerStore"]


class ControllerStore(ABC):
    """Where the controller keeps its observations: one append-only log per (graph, group).

    The controller's decisions are a deterministic function of a group's observation
    history, so every worker that shares a store reaches the same decision. A store
    therefore only has to do three things well: append a record, hand back the
    records of one group in sequence order, and list the groups it knows.

    Contract (pinned by the shared contract tests in ``tests/test_stores.py``):

    * ``append`` never changes or drops an earlier record; there is no update or delete.
    * ``append`` is idempotent on ``record_key``: a record whose ``record_key`` is already
      in its (graph, group) log is not appended again, and ``append`` returns the stored
      record's sequence number. Records without a ``record_key`` are always appended.
      (The gate keys its records by LangGraph's task id, so a gate that re-runs on
      resume writes nothing new.)
    * Sequence numbers are per (graph, group), start at 1 and have no gaps; ``history``
      returns records in sequence order, and ``history(since=n)`` returns the records
      numbered ``n + 1`` onwards.
    * Records round-trip exactly (values and key order): each store keeps the JSON text
      of the record, and rejects records that JSON would change (NaN, tuples, ...).
    * Returned records are fresh copies; mutating them does not change the store.
    * ``groups`` lists the group names of one graph, sorted.

    The async twins run the sync methods in a worker thread unless a store overrides
    them with native async I/O.

    Example:
        >>> from langgraph_capsules.stores import InMemoryControllerStore
        >>> store = InMemoryControllerStore()
        >>> obs = {"graph": "plan-1", "group": "research", "run_id": "run-1", "time": 0.0,
        ...        "tier": "fine", "members": {}, "calls": 3, "input_tokens": 900,
        ...        "cached_tokens": 0, "output_tokens": 300, "latency_s": 1.5,
        ...        "tool_calls": 0, "coordination_tokens": 0, "errors": 0,
        ...        "quality": None, "shadow": False}
        >>> store.append(obs)
        1
        >>> store.history("plan-1", "research") == [obs]
        True
        >>> store.groups("plan-1")
        ['research']
    """

    @abstractmethod
    def append(self, obs: Observation) -> int:
        """Append one observation to its group's log.

        Args:
            obs: The record; ``obs["graph"]`` and ``obs["group"]`` pick the log.

        Returns:
            The record's sequence number within (graph, group), starting at 1; for a
            record whose ``record_key`` is already in the log, the stored record's
            number (nothing is appended).

        Raises:
            CapsuleConfigError: ``bad_observation`` if the record misses a field, has a
                field of the wrong type, holds a value JSON cannot round-trip, or has a
                ``record_key`` that is not a non-empty str.
        """

    @abstractmethod
    def history(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        """Return a group's observations in sequence order.

        Args:
            graph: The plan id of the capsule graph (``Observation["graph"]``).
            group: The group name.
            since: Skip the first ``since`` records (the last sequence number already
                read); 0 returns everything.

        Returns:
            The records numbered ``since + 1`` onwards, oldest first; ``[]`` for an
            unknown group.

        Raises:
            CapsuleConfigError: ``bad_store_query`` for an empty graph/group name or a
                negative ``since``.
        """

    @abstractmethod
    def groups(self, graph: str) -> list[str]:
        """Return the names of the groups that have observations in ``graph``, sorted.

        Args:
            graph: The plan id of the capsule graph.

        Returns:
            Sorted group names; ``[]`` for an unknown graph.

        Raises:
            CapsuleConfigError: ``bad_store_query`` for an empty graph id.
        """

    async def aappend(self, obs: Observation) -> int:
        """Async twin of :meth:`append` (runs it in a worker thread by default).

        Args:
            obs: The record to append.

        Returns:
            The record's sequence number within (graph, group).
        """
        return await asyncio.to_thread(self.append, obs)

    async def ahistory(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        """Async twin of :meth:`history` (runs it in a worker thread by default).

        Args:
            graph: The plan id of the capsule graph.
            group: The group name.
            since: Skip the first ``since`` records.

        Returns:
            The records numbered ``since + 1`` onwards, oldest first.
        """
        return await asyncio.to_thread(self.history, graph, group, since=since)

    async def agroups(self, graph: str) -> list[str]:
        """Async twin of :meth:`groups` (runs it in a worker thread by default).

        Args:
            graph: The plan id of the capsule graph.

        Returns:
            Sorted group names.
        """
        return await asyncio.to_thread(self.groups, graph)

    def close(self) -> None:
        """Release connections or other resources; a no-op unless a store holds some.

        A closed store may be used again: it reopens what it needs on the next call.
        """
        return None

    def __enter__(self) -> ControllerStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
