"""The fleet controller store: an adapter over LangGraph's ``BaseStore``."""

from __future__ import annotations

import asyncio
import hashlib
import string
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote
from uuid import uuid4

from langgraph.store.base import BaseStore, Item

from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.stores._base import ControllerStore
from langgraph_capsules.stores._codec import (
    check_name,
    check_since,
    decode_observation,
    encode_observation,
    record_key,
)
from langgraph_capsules.types import Observation

__all__ = ["BaseStoreControllerStore"]

_FORMAT = 1
_SAFE = frozenset(string.ascii_letters + string.digits + "-_")
_OBSERVATIONS = "observations"

# (clock, key, observation text): the sort key of an observation and its payload.
_Entry = tuple[int, str, str]


def _label(name: str) -> str:
    """Encode a graph id or group name as a namespace label (no '.', never empty)."""
    return "".join(
        c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in name
    )


def _unlabel(label: str) -> str:
    return unquote(label, errors="surrogatepass")


class BaseStoreControllerStore(ControllerStore):
    """Observations in a LangGraph ``BaseStore``, for deployments with many workers.

    Any ``langgraph.store.base.BaseStore`` works: ``InMemoryStore`` (tests, one
    process), ``PostgresStore`` or ``RedisStore`` (a fleet), or the store a LangGraph
    deployment already provides. Each observation is one item in the namespace
    ``(*namespace, "observations", graph, group)`` (graph and group percent-encoded,
    because namespace labels may not contain ``.``); the record is kept as JSON text,
    so it round-trips exactly even where the backend reorders JSON keys (``JSONB``).
    Items are written with ``index=False`` (never embedded) and ``ttl=None`` (never
    expire).

    **How sequence numbers are assigned.** ``BaseStore`` has no atomic counter and no
    put-if-absent, so the adapter cannot reserve "the next number" the way SQLite's
    ``BEGIN IMMEDIATE`` does, and it never writes to a shared counter key (a lost
    update there would lose or duplicate numbers). Instead:

    1. ``append`` reads the group's items and stamps the new one with a logical clock
       ``1 + max(clock seen)`` (a Lamport clock), under a key that is unique by
       construction: ``"<clock>:<run_id>:<random hex>"``. Two writers never overwrite
       each other, so no observation is ever lost.
    2. The history is the items sorted by ``(clock, key)``, and an observation's
       sequence number is its 1-based position in that order. Every worker that reads
       the same set of items computes the same order, hence the same decisions.

    **Idempotent records.** A record with a ``record_key`` is stored under a key derived
    from it alone (``"rk-<sha256 of record_key>"``), so a second append of it finds the
    item and writes nothing, and two writers racing on the same record key write the
    same item (the last ``put`` wins; no duplicate can appear). Records without a
    ``record_key`` get the unique key above and are always appended.

    **Consistency.** Within one adapter object appends are serialised by a lock, so
    in one process the numbers returned by ``append`` are dense, distinct and final.
    Across processes sharing a ``PostgresStore`` (each ``put`` commits on its own, and
    reads see every committed item) an observation appended after a worker has seen
    ``n`` observations always gets a clock above all of them, so it sorts after them.
    Only appends that overlap in time can tie on the clock; the tie is broken by key,
    the same way everywhere, but the number ``append`` returned for one of them can be
    off until both are visible: it is *provisional*, and ``history`` is the source of
    truth. Once no append is in flight, all workers agree on one dense, gap-free
    order. Backends with replica reads or eventual consistency (e.g. a Redis replica)
    converge the same way once writes have propagated. If you need numbers that are
    final at the moment ``append`` returns across a fleet, use a store with a
    transaction (``SqliteControllerStore`` on one machine, or a ``ControllerStore``
    subclass over a database sequence).

    Cost: ``append`` and ``history`` read the group's whole log (paged by
    ``page_size``); a controller keeps one short log per group, so this stays small.

    Args:
        store: The LangGraph store to keep observations in.
        namespace: Namespace prefix for everything this adapter writes; give each
            independent controller its own. Labels must be non-empty, contain no ``.``
            and the first may not be ``"langgraph"`` (reserved by LangGraph).
        page_size: Items fetched per ``search`` call.

    Raises:
        CapsuleConfigError: ``bad_store`` if ``store`` is not a ``BaseStore``, the
            namespace is invalid, or ``page_size`` is not a positive int.

    Example:
        >>> from langgraph.store.memory import InMemoryStore
        >>> from langgraph_capsules.stores import BaseStoreControllerStore
        >>> store = BaseStoreControllerStore(InMemoryStore(), namespace=("acme", "capsules"))
        >>> store.groups("plan-1")
        []
    """

    def __init__(
        self,
        store: BaseStore,
        namespace: Sequence[str] = ("langgraph_capsules",),
        *,
        page_size: int = 500,
    ) -> None:
        if not isinstance(store, BaseStore):
            raise CapsuleConfigError(
                f"BaseStoreControllerStore needs a langgraph.store.base.BaseStore (e.g. "
                f"InMemoryStore(), PostgresStore.from_conn_string(...)), got "
                f"{type(store).__name__}.",
                code="bad_store",
            )
        self.store = store
        """The wrapped LangGraph store."""
        self.namespace = self._check_namespace(namespace)
        """The namespace prefix everything is written under."""
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise CapsuleConfigError(
                f"BaseStoreControllerStore(page_size=...) must be an int >= 1, got "
                f"{page_size!r}; the default 500 suits most backends.",
                code="bad_store",
            )
        self.page_size = page_size
        """Items fetched per ``search`` call."""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"BaseStoreControllerStore({type(self.store).__name__}(), namespace={self.namespace!r})"
        )

    @staticmethod
    def _check_namespace(namespace: object) -> tuple[str, ...]:
        problem = None
        labels: tuple[Any, ...] = ()
        if isinstance(namespace, str) or not isinstance(namespace, (tuple, list)):
            problem = f"must be a tuple of str labels, got {type(namespace).__name__}"
        else:
            labels = tuple(namespace)
            if not labels:
                problem = "is empty"
            elif any(not isinstance(x, str) or not x for x in labels):
                problem = "has a label that is not a non-empty str"
            elif any("." in x or "\x00" in x for x in labels):
                problem = "has a label with '.' or a NUL byte, which BaseStore forbids"
            elif labels[0] == "langgraph":
                problem = "starts with 'langgraph', which LangGraph reserves"
        if problem is not None:
            raise CapsuleConfigError(
                f"BaseStoreControllerStore namespace {namespace!r} {problem}. Pass a tuple "
                "of plain labels such as ('langgraph_capsules',) or ('acme', 'capsules').",
                code="bad_store",
            )
        return labels

    def _group_ns(self, graph: str, group: str) -> tuple[str, ...]:
        return (*self.namespace, _OBSERVATIONS, _label(graph), _label(group))

    def _graph_ns(self, graph: str) -> tuple[str, ...]:
        return (*self.namespace, _OBSERVATIONS, _label(graph))

    # ---------------------------------------------------------------- items
    def _entry(self, item: Item) -> _Entry:
        value = item.value
        clock = value.get("clock") if isinstance(value, dict) else None
        text = value.get("observation") if isinstance(value, dict) else None
        if (
            not isinstance(value, dict)
            or value.get("format") != _FORMAT
            or isinstance(clock, bool)
            or not isinstance(clock, int)
            or clock < 1
            or not isinstance(text, str)
        ):
            raise CapsuleConfigError(
                f"item {item.key!r} in namespace {item.namespace!r} is not a "
                f"langgraph_capsules observation (format {_FORMAT}); something else writes "
                "into this namespace. Give BaseStoreControllerStore a namespace of its own.",
                code="bad_store",
            )
        return (clock, item.key, text)

    def _collect(self, found: dict[str, _Entry], page: Sequence[Item], ns: tuple[str, ...]) -> bool:
        """Add one search page to ``found``; True while more pages may follow."""
        new = 0
        for item in page:
            # search() matches a namespace *prefix*; keep exactly this group's items.
            if tuple(item.namespace) == ns and item.key not in found:
                found[item.key] = self._entry(item)
                new += 1
        # Offset paging over a log that grows meanwhile may repeat items (never skip
        # them, since nothing is deleted); stop on a short page or a page of repeats.
        return len(page) >= self.page_size and new > 0

    def _read(self, ns: tuple[str, ...]) -> list[_Entry]:
        found: dict[str, _Entry] = {}
        offset = 0
        while True:
            page = self.store.search(ns, limit=self.page_size, offset=offset)
            if not self._collect(found, page, ns):
                break
            offset += len(page)
        return sorted(found.values())

    async def _aread(self, ns: tuple[str, ...]) -> list[_Entry]:
        found: dict[str, _Entry] = {}
        offset = 0
        while True:
            page = await self.store.asearch(ns, limit=self.page_size, offset=offset)
            if not self._collect(found, page, ns):
                break
            offset += len(page)
        return sorted(found.values())

    @staticmethod
    def _item_key(obs: Observation) -> str | None:
        """The item key of a record with a ``record_key`` (``None`` without one)."""
        key = record_key(obs)
        if key is None:
            return None
        return "rk-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    @staticmethod
    def _position(entries: list[_Entry], key: str | None) -> int | None:
        """The 1-based position of the item ``key`` in ``entries`` (None if absent)."""
        if key is None:
            return None
        return next((i for i, (_, k, _) in enumerate(entries, 1) if k == key), None)

    def _new_item(
        self, obs: Observation, entries: list[_Entry], key: str | None
    ) -> tuple[str, dict[str, Any]]:
        text = encode_observation(obs)
        clock = max((c for c, _, _ in entries), default=0) + 1
        value: dict[str, Any] = {
            "format": _FORMAT,
            "clock": clock,
            "run_id": obs["run_id"],
            "observation": text,
        }
        if key is None:
            return f"{clock:012d}:{obs['run_id']}:{uuid4().hex}", value
        value["record_key"] = record_key(obs)
        return key, value

    def _decode(self, entries: list[_Entry], ns: tuple[str, ...]) -> list[Observation]:
        return [decode_observation(t, where=f"item {k!r} in {ns!r}") for _, k, t in entries]

    def _groups(self, namespaces: list[tuple[str, ...]]) -> set[str]:
        depth = len(self.namespace) + 3
        return {_unlabel(ns[depth - 1]) for ns in namespaces if len(ns) == depth}

    @asynccontextmanager
    async def _alocked(self) -> AsyncIterator[None]:
        # The lock is shared with the sync methods (threads); poll instead of blocking
        # the event loop, which also keeps cancellation safe.
        while not self._lock.acquire(blocking=False):
            await asyncio.sleep(0.001)
        try:
            yield
        finally:
            self._lock.release()

    # ---------------------------------------------------------------- the interface
    def append(self, obs: Observation) -> int:
        """Append one observation; see the class docstring for how it is numbered.

        Args:
            obs: The record to append.

        Returns:
            Its sequence number within (graph, group): final within this process,
            provisional while appends from other processes overlap with it. For a
            record whose ``record_key`` is already stored, the stored one's number.

        Raises:
            CapsuleConfigError: ``bad_observation`` for an invalid record; ``bad_store``
                if the namespace holds items this library did not write.

        Example:
            >>> store.append(obs)  # obs: a complete Observation  # doctest: +SKIP
            1
        """
        encode_observation(obs)  # validate before taking the lock or touching the store
        ns = self._group_ns(obs["graph"], obs["group"])
        wanted = self._item_key(obs)
        with self._lock:
            entries = self._read(ns)
            seen = self._position(entries, wanted)
            if seen is not None:
                return seen
            key, value = self._new_item(obs, entries, wanted)
            self.store.put(ns, key, value, index=False, ttl=None)
        return len(entries) + 1

    def history(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        """Return a group's observations in ``(clock, key)`` order.

        Args:
            graph: The plan id of the capsule graph.
            group: The group name.
            since: Skip the first ``since`` records.

        Returns:
            The records numbered ``since + 1`` onwards.

        Raises:
            CapsuleConfigError: ``bad_store_query`` for bad arguments; ``bad_store`` if
                the namespace holds items this library did not write.

        Example:
            >>> store.history("plan-1", "research", since=10)  # doctest: +SKIP
            []
        """
        check_name(graph, "graph")
        check_name(group, "group")
        check_since(since)
        ns = self._group_ns(graph, group)
        return self._decode(self._read(ns)[since:], ns)

    def groups(self, graph: str) -> list[str]:
        """Return the sorted group names of ``graph``.

        Args:
            graph: The plan id of the capsule graph.

        Returns:
            Sorted group names.

        Raises:
            CapsuleConfigError: ``bad_store_query`` for an empty graph id.

        Example:
            >>> store.groups("plan-1")  # doctest: +SKIP
            ['research']
        """
        check_name(graph, "graph")
        prefix = self._graph_ns(graph)
        found: set[str] = set()
        offset = 0
        while True:
            page = self.store.list_namespaces(
                prefix=prefix, max_depth=len(prefix) + 1, limit=self.page_size, offset=offset
            )
            found |= self._groups(page)
            if len(page) < self.page_size:
                break
            offset += len(page)
        return sorted(found)

    async def aappend(self, obs: Observation) -> int:
        """Async twin of :meth:`append`, over the store's native async API.

        Args:
            obs: The record to append.

        Returns:
            Its sequence number within (graph, group).
        """
        encode_observation(obs)
        ns = self._group_ns(obs["graph"], obs["group"])
        wanted = self._item_key(obs)
        async with self._alocked():
            entries = await self._aread(ns)
            seen = self._position(entries, wanted)
            if seen is not None:
                return seen
            key, value = self._new_item(obs, entries, wanted)
            await self.store.aput(ns, key, value, index=False, ttl=None)
        return len(entries) + 1

    async def ahistory(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        """Async twin of :meth:`history`, over the store's native async API.

        Args:
            graph: The plan id of the capsule graph.
            group: The group name.
            since: Skip the first ``since`` records.

        Returns:
            The records numbered ``since + 1`` onwards.
        """
        check_name(graph, "graph")
        check_name(group, "group")
        check_since(since)
        ns = self._group_ns(graph, group)
        return self._decode((await self._aread(ns))[since:], ns)

    async def agroups(self, graph: str) -> list[str]:
        """Async twin of :meth:`groups`, over the store's native async API.

        Args:
            graph: The plan id of the capsule graph.

        Returns:
            Sorted group names.
        """
        check_name(graph, "graph")
        prefix = self._graph_ns(graph)
        found: set[str] = set()
        offset = 0
        while True:
            page = await self.store.alist_namespaces(
                prefix=prefix, max_depth=len(prefix) + 1, limit=self.page_size, offset=offset
            )
            found |= self._groups(page)
            if len(page) < self.page_size:
                break
            offset += len(page)
        return sorted(found)
