"""The fleet controller store with one total order: PostgreSQL through ``psycopg`` (v3)."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # psycopg is an optional extra, imported when a store is made
    import psycopg

__all__ = ["POSTGRES_SCHEMA_VERSION", "PostgresControllerStore"]

POSTGRES_SCHEMA_VERSION = 1
"""Version of the table layout written by this release (kept in the schema table)."""

_EXTRA_HINT = "pip install 'langgraph-capsules[postgres]'"
_COMPONENT = "controller_store"
_SCHEMA_TABLE = "langgraph_capsules_schema"
_OBS_TABLE = "langgraph_capsules_observations"
_COLUMNS = frozenset({"graph", "grp", "seq", "run_id", "time", "data", "record_key"})
_MAX_IDLE = 8
"""Idle connections a store keeps per kind (sync, async) for the next call."""

# Creating the tables is serialized across every client by one advisory lock, so two
# workers starting at once on an empty database cannot race in CREATE TABLE.
_SETUP_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('langgraph_capsules.setup', 0))"
_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {_SCHEMA_TABLE} ("
    " component TEXT PRIMARY KEY,"
    " version INTEGER NOT NULL)",
    # One row per observation. (graph, grp, seq) is the key, so a duplicate sequence
    # number is impossible; (graph, grp, record_key) is unique, and NULL keys (records
    # without one) never conflict with each other.
    f"CREATE TABLE IF NOT EXISTS {_OBS_TABLE} ("
    " graph TEXT NOT NULL,"
    " grp TEXT NOT NULL,"
    " seq BIGINT NOT NULL,"
    " run_id TEXT NOT NULL,"
    " time DOUBLE PRECISION NOT NULL,"
    " data TEXT NOT NULL,"
    " record_key TEXT,"
    " PRIMARY KEY (graph, grp, seq),"
    " UNIQUE (graph, grp, record_key))",
    f"INSERT INTO {_SCHEMA_TABLE} (component, version) "
    f"VALUES ('{_COMPONENT}', {POSTGRES_SCHEMA_VERSION}) ON CONFLICT (component) DO NOTHING",
)
_TABLES = "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL"
_VERSION = f"SELECT version FROM {_SCHEMA_TABLE} WHERE component = %s"
_LAYOUT = (
    "SELECT column_name FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND table_name = %s"
)
_ENCODING = "SHOW server_encoding"

# The append, in one READ COMMITTED transaction. The advisory lock serializes the
# appends of one (graph, group) across every client; each later statement takes a new
# snapshot, so it sees every append committed before the lock was granted. The lock is
# released only after this transaction commits, hence sequence order == commit order:
# seq n+1 is assigned after seq n committed, and no reader can see n+1 without n.
_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, true)"
_GROUP_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s || chr(31) || %s, 0))"
_SEEN = f"SELECT seq FROM {_OBS_TABLE} WHERE graph = %s AND grp = %s AND record_key = %s"
_INSERT = (
    f"INSERT INTO {_OBS_TABLE} (graph, grp, seq, run_id, time, data, record_key) "
    "SELECT %s, %s, COALESCE(MAX(seq), 0) + 1, %s, %s, %s, %s "
    f"FROM {_OBS_TABLE} WHERE graph = %s AND grp = %s "
    "RETURNING seq"
)
_HISTORY = (
    f"SELECT seq, data FROM {_OBS_TABLE} WHERE graph = %s AND grp = %s AND seq > %s ORDER BY seq"
)
_GROUPS = f"SELECT DISTINCT grp FROM {_OBS_TABLE} WHERE graph = %s"


def _require_psycopg() -> None:
    """Raise ``bad_store`` naming the extra to install when psycopg is missing."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise CapsuleConfigError(
            f"PostgresControllerStore needs psycopg (v3), which is not installed: {_EXTRA_HINT}",
            code="bad_store",
        ) from exc


def _reopen(conninfo: str, timeout: float) -> PostgresControllerStore:
    """Unpickle helper: a store object travels to another process as (conninfo, timeout)."""
    return PostgresControllerStore(conninfo, timeout=timeout)


def _pg_text(value: str, what: str, code: str, group: str | None = None) -> str:
    """Return ``value`` if PostgreSQL can store it as TEXT (UTF-8, no NUL character)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        ok = False
    else:
        ok = "\x00" not in value
    if not ok:
        raise CapsuleConfigError(
            f"the {what} {value!r:.60} holds a NUL character or a lone surrogate, which "
            "PostgreSQL text cannot store; use a name of printable characters.",
            code=code,
            group=group,
        )
    return value


class PostgresControllerStore(ControllerStore):
    """Observations in a PostgreSQL database, shared by every worker of a fleet.

    Unlike :class:`BaseStoreControllerStore` over LangGraph's ``PostgresStore`` (whose
    appends may briefly sort in an order that a worker's earlier read did not see), this
    store gives every worker **one total order** per (graph, group):

    * **Sequence numbers are assigned under a lock.** An append runs one READ COMMITTED
      transaction that takes the transaction-scoped advisory lock of its (graph, group)
      (``pg_advisory_xact_lock``), reads ``MAX(seq)`` and inserts ``MAX(seq) + 1``. The
      lock is released when the transaction commits, so the next append of the group
      sees this one: numbers are dense from 1, sequence order is commit order, and a
      reader can never see record ``n + 1`` without record ``n``. Every decision a
      worker makes is therefore the controller's pure function of a prefix of the one
      final history. ``(graph, grp, seq)`` is the primary key besides.
    * **Idempotent appends.** ``(graph, grp, record_key)`` is unique (records without a
      key may repeat); a record whose key is already in the log is not inserted again
      and ``append`` returns the stored record's number.
    * **Exact records.** Each record is kept as the JSON text of the shared codec, so
      it round-trips exactly (values and key order), like every other store.
    * **Native async.** The async twins use ``psycopg.AsyncConnection``: no thread, and
      the event loop is never blocked.
    * **A schema version table** (``langgraph_capsules_schema``, shared with the SQLite
      layout's name): tables written by another release are refused with
      ``CapsuleConfigError(code="bad_store")``.

    Connections are opened on first use, not by the constructor; the store keeps a few
    idle ones (sync and async apart) for the next call, and a call holds its connection
    alone, so the store may be shared by threads and tasks. ``setup()`` creates the
    tables (idempotent, safe to run from many workers at once); the first call of a
    store object does the same, so calling it is only needed to fail fast at start-up
    or to create the tables with a more privileged role. Connection errors (the server
    restarting, a dropped socket) propagate as ``psycopg.OperationalError``, and the
    next call opens a new connection; the controller's ``StoreGuard`` retries them.

    PostgreSQL text cannot hold a NUL character, so graph ids, group names, run ids and
    record keys with one are refused (``bad_observation`` / ``bad_store_query``). The
    database must use the UTF8 encoding; PostgreSQL 11 or newer. Pickling a store sends
    its conninfo and timeout, so it can be passed to ``multiprocessing`` workers.

    Args:
        conninfo: A libpq connection string or URI, e.g.
            ``"postgresql://app@db.internal:5432/capsules"``.
        timeout: Seconds an append waits for its group's lock before failing with
            ``store_busy`` (the lock is held only while another append commits); also
            the connect timeout unless ``conninfo`` sets ``connect_timeout``.

    Raises:
        CapsuleConfigError: ``bad_store`` when psycopg is not installed (install it with
            ``pip install 'langgraph-capsules[postgres]'``), for a conninfo that does
            not parse or a timeout that is not a number of seconds > 0.

    Example:
        >>> from langgraph_capsules.stores import PostgresControllerStore
        >>> store = PostgresControllerStore("postgresql://localhost/capsules")
        >>> store.setup()  # doctest: +SKIP
        >>> store.groups("plan-1")  # doctest: +SKIP
        []
    """

    def __init__(self, conninfo: str, *, timeout: float = 30.0) -> None:
        _require_psycopg()
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        if not isinstance(conninfo, str):
            raise CapsuleConfigError(
                f"PostgresControllerStore needs a libpq connection string, got "
                f"{type(conninfo).__name__} {conninfo!r:.60}; pass e.g. "
                "'postgresql://user@host:5432/dbname'.",
                code="bad_store",
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise CapsuleConfigError(
                f"PostgresControllerStore(timeout=...) must be a number of seconds > 0, got "
                f"{timeout!r}; the default 30.0 suits most deployments.",
                code="bad_store",
            )
        try:
            params = conninfo_to_dict(conninfo)
        except Exception as exc:  # psycopg.ProgrammingError: not a connection string
            raise CapsuleConfigError(
                f"PostgresControllerStore could not parse its connection string ({exc}); "
                "pass a libpq conninfo such as 'host=localhost dbname=capsules' or a URI "
                "such as 'postgresql://user@host:5432/dbname'.",
                code="bad_store",
            ) from exc
        self.conninfo = conninfo
        """The connection string, as given."""
        self.timeout = float(timeout)
        """Seconds an append waits for its group's lock (and to connect)."""
        shown = {k: v for k, v in params.items() if k != "password"}
        self._shown = make_conninfo("", **shown) or "(libpq defaults)"
        self._connect_kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            # libpq counts whole seconds and treats values below 2 as 2
            self._connect_kwargs["connect_timeout"] = max(2, math.ceil(self.timeout))
        self._lock_timeout = f"{max(1, round(self.timeout * 1000))}ms"
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._aidle: list[psycopg.AsyncConnection[Any]] = []
        self._generation = 0
        self._pid = os.getpid()
        self._ready = False

    def __repr__(self) -> str:
        return f"PostgresControllerStore({self._shown!r})"

    def __reduce__(
        self,
    ) -> tuple[Callable[[str, float], PostgresControllerStore], tuple[str, float]]:
        return (_reopen, (self.conninfo, self.timeout))

    # ---------------------------------------------------------------- connections
    def _forget_after_fork(self) -> None:
        """In a forked child, drop (never close) the parent's connections; call locked."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._idle = []
            self._aidle = []
            self._generation += 1

    def _take(self) -> tuple[psycopg.Connection[Any] | None, int]:
        with self._lock:
            self._forget_after_fork()
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn, self._generation
            return None, self._generation

    def _atake(self) -> tuple[psycopg.AsyncConnection[Any] | None, int]:
        with self._lock:
            self._forget_after_fork()
            while self._aidle:
                conn = self._aidle.pop()
                if not conn.closed:
                    return conn, self._generation
            return None, self._generation

    def _reusable(self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
        from psycopg.pq import TransactionStatus

        return not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection held by this call alone, given back to the idle list after it."""
        import psycopg

        conn, generation = self._take()
        if conn is None:
            conn = psycopg.Connection.connect(
                self.conninfo, autocommit=True, **self._connect_kwargs
            )
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        try:
            if not self._ready:
                self._setup(conn)
            yield conn
        finally:
            # Give it back unless it broke or a cancelled call left a query running.
            if self._reusable(conn):
                with self._lock:
                    if generation == self._generation and len(self._idle) < _MAX_IDLE:
                        self._idle.append(conn)
                        conn = None
            else:
                self._drop_idle_if_broken(conn)
            if conn is not None:
                conn.close()

    @asynccontextmanager
    async def _aconnection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Async twin of :meth:`_connection` (an ``AsyncConnection``)."""
        import psycopg

        conn, generation = self._atake()
        if conn is None:
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, **self._connect_kwargs
            )
            await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)
        try:
            if not self._ready:
                await self._asetup(conn)
            yield conn
        finally:
            if self._reusable(conn):
                with self._lock:
                    if generation == self._generation and len(self._aidle) < _MAX_IDLE:
                        self._aidle.append(conn)
                        conn = None
            else:
                self._drop_idle_if_broken(conn)
            if conn is not None:
                await conn.close()

    def _drop_idle_if_broken(
        self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None
    ) -> None:
        """After a lost connection the idle ones are likely lost too (a server restart):
        close them so the caller's retry opens a fresh connection."""
        if conn is not None and conn.closed:
            self.close()

    # ---------------------------------------------------------------- schema
    def setup(self) -> None:
        """Create the store's tables if they do not exist, and check their version.

        Idempotent and safe to run from many workers at once (an advisory lock
        serializes the creation). The first call of a store object does the same, so
        this is only needed to fail fast at start-up or to create the tables with a
        role that may create tables when the workers' role may not.

        Raises:
            CapsuleConfigError: ``bad_store`` for tables written by another release or
                another application, a database whose encoding is not UTF8, or a role
                without the privileges needed.
            psycopg.OperationalError: The server could not be reached.

        Example:
            >>> PostgresControllerStore("dbname=capsules").setup()  # doctest: +SKIP
        """
        self._ready = False  # check again, even if an earlier call did
        with self._connection():  # which creates and checks the tables
            pass

    async def asetup(self) -> None:
        """Async twin of :meth:`setup`.

        Example:
            >>> await PostgresControllerStore("dbname=capsules").asetup()  # doctest: +SKIP
        """
        self._ready = False
        async with self._aconnection():
            pass

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        with self._errors("set up"):
            (encoding,) = _one(conn.execute(_ENCODING).fetchone())
            schema_table, obs_table = _one(
                conn.execute(_TABLES, (_SCHEMA_TABLE, _OBS_TABLE)).fetchone()
            )
            if not (schema_table and obs_table):
                with conn.transaction():
                    conn.execute(_SETUP_LOCK)
                    for statement in _CREATE:
                        conn.execute(statement)
            version = conn.execute(_VERSION, (_COMPONENT,)).fetchone()
            columns = {str(r[0]) for r in conn.execute(_LAYOUT, (_OBS_TABLE,)).fetchall()}
        self._check_schema(encoding, version, columns)

    async def _asetup(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with self._errors("set up"):
            (encoding,) = _one(await (await conn.execute(_ENCODING)).fetchone())
            schema_table, obs_table = _one(
                await (await conn.execute(_TABLES, (_SCHEMA_TABLE, _OBS_TABLE))).fetchone()
            )
            if not (schema_table and obs_table):
                async with conn.transaction():
                    await conn.execute(_SETUP_LOCK)
                    for statement in _CREATE:
                        await conn.execute(statement)
            version = await (await conn.execute(_VERSION, (_COMPONENT,))).fetchone()
            rows = await (await conn.execute(_LAYOUT, (_OBS_TABLE,))).fetchall()
        self._check_schema(encoding, version, {str(r[0]) for r in rows})

    def _check_schema(self, encoding: object, version: Any, columns: set[str]) -> None:
        fix = (
            "Give the controller store a database (or a search_path schema) of its own, "
            "or drop the leftover langgraph_capsules_* tables."
        )
        if str(encoding).upper() != "UTF8":
            raise CapsuleConfigError(
                f"the database of the controller store {self._shown!r} uses the encoding "
                f"{encoding!r}; the store needs UTF8 (group names may be any Unicode). "
                "Create its database with ENCODING 'UTF8'.",
                code="bad_store",
            )
        if version is None or not _COLUMNS <= columns:
            raise CapsuleConfigError(
                f"{self._shown!r} has a {_SCHEMA_TABLE} or {_OBS_TABLE} table that the "
                f"controller store did not write (no version row, or columns "
                f"{sorted(columns)}). {fix}",
                code="bad_store",
            )
        found = version[0]
        if found != POSTGRES_SCHEMA_VERSION:
            newer = isinstance(found, int) and found > POSTGRES_SCHEMA_VERSION
            raise CapsuleConfigError(
                f"{self._shown!r} holds controller store schema version {found!r}, but this "
                f"release reads version {POSTGRES_SCHEMA_VERSION}. "
                + ("Upgrade langgraph-capsules to the release that wrote it." if newer else fix),
                code="bad_store",
            )
        self._ready = True

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn psycopg errors that are not transient into CapsuleConfigErrors.

        Connection errors (``psycopg.OperationalError``) propagate unchanged: they are
        transient, and the caller's ``StoreGuard`` retries them.
        """
        import psycopg

        try:
            yield
        except psycopg.errors.LockNotAvailable as exc:
            raise CapsuleConfigError(
                f"could not {action} the controller store {self._shown!r}: another append "
                f"of the same group held its lock for more than {self.timeout:g}s ({exc}). "
                "Raise PostgresControllerStore(timeout=...) or end the session that keeps "
                "a transaction open.",
                code="store_busy",
            ) from exc
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            if isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn)):
                self._ready = False  # the tables were dropped: the next call recreates
            raise CapsuleConfigError(
                f"could not {action} the controller store {self._shown!r}: "
                f"{type(exc).__name__}: {exc}. Check that the role may create and write "
                f"the {_OBS_TABLE} table (or run store.setup() once with one that may) and "
                "that nothing else writes to it.",
                code="bad_store",
            ) from exc

    # ---------------------------------------------------------------- the interface
    def _insert_args(self, obs: Observation) -> tuple[str | None, tuple[Any, ...]]:
        """Validate a record; return its key and the parameters of the insert."""
        text = encode_observation(obs)
        key = record_key(obs)
        group = obs["group"]
        for what, value in (
            ("graph id", obs["graph"]),
            ("group name", group),
            ("run_id", obs["run_id"]),
            ("record_key", key or ""),
        ):
            _pg_text(value, what, "bad_observation", group)
        args = (
            obs["graph"],
            group,
            obs["run_id"],
            float(obs["time"]),
            text,
            key,
            obs["graph"],
            group,
        )
        return key, args

    def append(self, obs: Observation) -> int:
        """Append one observation; see :meth:`ControllerStore.append`.

        One transaction takes the (graph, group) advisory lock, checks the record key,
        and inserts ``MAX(seq) + 1``; the number is final when it returns.

        Args:
            obs: The record to append.

        Returns:
            Its sequence number within (graph, group), starting at 1; for a record whose
            ``record_key`` is already in the log, the stored record's number.

        Raises:
            CapsuleConfigError: ``bad_observation`` for an invalid record; ``store_busy``
                if the group's lock stayed taken for ``timeout`` seconds; ``bad_store``
                for tables the store cannot use.
            psycopg.OperationalError: The connection failed (transient; nothing or the
                whole record was written, and a retry with its record key is safe).

        Example:
            >>> store.append(obs)  # obs: a complete Observation  # doctest: +SKIP
            1
        """
        key, args = self._insert_args(obs)
        with self._connection() as conn, self._errors("append to"), conn.transaction():
            conn.execute(_LOCK_TIMEOUT, (self._lock_timeout,))
            conn.execute(_GROUP_LOCK, (obs["graph"], obs["group"]))
            if key is not None:
                seen = conn.execute(_SEEN, (obs["graph"], obs["group"], key)).fetchone()
                if seen is not None:
                    return int(seen[0])
            (seq,) = _one(conn.execute(_INSERT, args).fetchone())
        return int(seq)

    async def aappend(self, obs: Observation) -> int:
        """Async twin of :meth:`append`, on a ``psycopg.AsyncConnection``.

        Args:
            obs: The record to append.

        Returns:
            The record's sequence number within (graph, group).

        Example:
            >>> await store.aappend(obs)  # doctest: +SKIP
            1
        """
        key, args = self._insert_args(obs)
        async with self._aconnection() as conn:
            with self._errors("append to"):
                async with conn.transaction():
                    await conn.execute(_LOCK_TIMEOUT, (self._lock_timeout,))
                    await conn.execute(_GROUP_LOCK, (obs["graph"], obs["group"]))
                    if key is not None:
                        cur = await conn.execute(_SEEN, (obs["graph"], obs["group"], key))
                        seen = await cur.fetchone()
                        if seen is not None:
                            return int(seen[0])
                    cur = await conn.execute(_INSERT, args)
                    (seq,) = _one(await cur.fetchone())
        return int(seq)

    def _query_args(self, graph: str, group: str, since: int) -> tuple[str, str, int]:
        check_name(graph, "graph")
        check_name(group, "group")
        check_since(since)
        _pg_text(graph, "graph id", "bad_store_query")
        _pg_text(group, "group name", "bad_store_query")
        return graph, group, since

    def _decode(self, graph: str, group: str, rows: list[tuple[Any, ...]]) -> list[Observation]:
        return [
            decode_observation(data, where=f"{self._shown!r} ({graph}/{group} #{seq})")
            for seq, data in rows
        ]

    def history(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        """Return a group's observations in order; see :meth:`ControllerStore.history`.

        Args:
            graph: The plan id of the capsule graph.
            group: The group name.
            since: Skip the first ``since`` records.

        Returns:
            The records numbered ``since + 1`` onwards, read in one snapshot (which never
            holds a record without every record numbered before it).

        Raises:
            CapsuleConfigError: ``bad_store_query`` for bad arguments; ``bad_store`` if a
                row is not an observation or the tables cannot be read.
            psycopg.OperationalError: The connection failed (transient).

        Example:
            >>> store.history("plan-1", "research", since=10)  # doctest: +SKIP
            []
        """
        args = self._query_args(graph, group, since)
        with self._connection() as conn, self._errors("read"):
            rows = conn.execute(_HISTORY, args).fetchall()
        return self._decode(graph, group, rows)

    async def ahistory(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        """Async twin of :meth:`history`, on a ``psycopg.AsyncConnection``.

        Args:
            graph: The plan id of the capsule graph.
            group: The group name.
            since: Skip the first ``since`` records.

        Returns:
            The records numbered ``since + 1`` onwards, oldest first.

        Example:
            >>> await store.ahistory("plan-1", "research")  # doctest: +SKIP
            []
        """
        args = self._query_args(graph, group, since)
        async with self._aconnection() as conn:
            with self._errors("read"):
                rows = await (await conn.execute(_HISTORY, args)).fetchall()
        return self._decode(graph, group, rows)

    def groups(self, graph: str) -> list[str]:
        """Return the sorted group names of ``graph``; see :meth:`ControllerStore.groups`.

        Args:
            graph: The plan id of the capsule graph.

        Returns:
            Sorted group names (sorted by Python, not by the database's collation).

        Raises:
            CapsuleConfigError: ``bad_store_query`` for an empty graph id; ``bad_store``
                if the tables cannot be read.
            psycopg.OperationalError: The connection failed (transient).

        Example:
            >>> store.groups("plan-1")  # doctest: +SKIP
            ['research']
        """
        _pg_text(check_name(graph, "graph"), "graph id", "bad_store_query")
        with self._connection() as conn, self._errors("read"):
            rows = conn.execute(_GROUPS, (graph,)).fetchall()
        return sorted(str(name) for (name,) in rows)

    async def agroups(self, graph: str) -> list[str]:
        """Async twin of :meth:`groups`, on a ``psycopg.AsyncConnection``.

        Args:
            graph: The plan id of the capsule graph.

        Returns:
            Sorted group names.

        Example:
            >>> await store.agroups("plan-1")  # doctest: +SKIP
            []
        """
        _pg_text(check_name(graph, "graph"), "graph id", "bad_store_query")
        async with self._aconnection() as conn:
            with self._errors("read"):
                rows = await (await conn.execute(_GROUPS, (graph,))).fetchall()
        return sorted(str(name) for (name,) in rows)

    def close(self) -> None:
        """Close the idle connections this store opened in this process.

        Connections in use by a running call are closed when that call ends. The next
        call opens a new connection.

        Example:
            >>> store.close()  # doctest: +SKIP
        """
        with self._lock:
            mine = self._pid == os.getpid()
            idle, aidle = (self._idle, self._aidle) if mine else ([], [])
            self._forget_after_fork()
            self._idle, self._aidle = [], []
            self._generation += 1
        for conn in idle:
            conn.close()
        for aconn in aidle:
            # closing an AsyncConnection needs a loop; an idle one holds no state that a
            # clean close would flush, so end its libpq connection directly
            aconn.pgconn.finish()


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The row a query that always returns one row returned."""
    if row is None:  # pragma: no cover - aggregates and SHOW always return a row
        raise CapsuleConfigError("the controller store query returned no row", code="bad_store")
    return row
