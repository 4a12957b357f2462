"""The one-machine controller store: an append-only SQLite file in WAL mode."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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

__all__ = ["SQLITE_SCHEMA_VERSION", "SqliteControllerStore"]

SQLITE_SCHEMA_VERSION = 1
"""Version of the table layout written by this release (kept in the schema table).

The ``record_key`` column and its unique index were added to version 1 in place: they
are optional, so a file written before them is upgraded on open (one ``ALTER TABLE``)
and earlier releases still read and append to an upgraded file."""

_COMPONENT = "controller_store"
_SCHEMA_TABLE = "langgraph_capsules_schema"
_OBS_TABLE = "langgraph_capsules_observations"
_KEY_INDEX = "langgraph_capsules_observations_record_key"
# A record's idempotency key: unique per (graph, group); NULL (no key, or a row written
# before keys existed) is never equal to another NULL, so such rows never conflict.
_ADD_KEY = (
    f"ALTER TABLE {_OBS_TABLE} ADD COLUMN record_key TEXT",
    f"CREATE UNIQUE INDEX IF NOT EXISTS {_KEY_INDEX} ON {_OBS_TABLE} (graph, grp, record_key)",
)
_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {_SCHEMA_TABLE} ("
    " component TEXT PRIMARY KEY,"
    " version INTEGER NOT NULL)",
    # One row per observation; (graph, grp, seq) is the key, so a duplicate sequence
    # number is impossible even if a writer bypassed BEGIN IMMEDIATE.
    f"CREATE TABLE IF NOT EXISTS {_OBS_TABLE} ("
    " graph TEXT NOT NULL,"
    " grp TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " run_id TEXT NOT NULL,"
    " time REAL NOT NULL,"
    " data TEXT NOT NULL,"
    " record_key TEXT,"
    " PRIMARY KEY (graph, grp, seq)"
    ") WITHOUT ROWID",
    _ADD_KEY[1],
    f"INSERT OR IGNORE INTO {_SCHEMA_TABLE} (component, version) "
    f"VALUES ('{_COMPONENT}', {SQLITE_SCHEMA_VERSION})",
)
_FOREIGN_FIX = (
    "Give the controller store its own file (e.g. capsules.db next to your app), or "
    "delete this file if it is a leftover."
)

_T = TypeVar("_T")


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _reopen(path: str, timeout: float) -> SqliteControllerStore:
    """Unpickle helper: a store object travels to another process as (path, timeout)."""
    return SqliteControllerStore(path, timeout=timeout)


class SqliteControllerStore(ControllerStore):
    """Observations in one SQLite file, shared by every process on the machine.

    How it stays correct across processes:

    * **WAL mode**: readers never block the writer and see a consistent snapshot.
    * **``BEGIN IMMEDIATE`` per append**: the writer takes the file's write lock *before*
      reading ``MAX(seq)``, so two processes can never compute the same next number;
      sequence numbers per (graph, group) are dense from 1, and ``(graph, group, seq)``
      is the primary key besides.
    * **Busy timeout**: a writer that finds the lock taken waits up to ``timeout``
      seconds instead of failing; an append either commits or raises
      ``CapsuleConfigError(code="store_busy")``, never vanishes silently.
    * **``synchronous=FULL``**: a committed observation survives a power cut, not only
      a process crash.
    * **A connection per thread** (and per process: a forked child opens its own), so
      the store may be shared by threads and by ``asyncio.to_thread``.
    * **A schema version table** (``langgraph_capsules_schema``): a file written by a
      newer release, a foreign SQLite database or a non-database file is refused with
      ``CapsuleConfigError(code="bad_store")`` naming the path; the store never writes
      into a file it did not create.

    The file must live on a local filesystem (WAL needs shared memory; network
    filesystems are not supported by SQLite in WAL mode). Pickling a store sends only
    its path and timeout, so it can be passed to ``multiprocessing`` workers.

    Args:
        path: The database file; created (with its tables) if it does not exist. Its
            directory must exist.
        timeout: Seconds to wait for the write lock or for the schema to be created by
            another process.

    Raises:
        CapsuleConfigError: ``bad_store`` for ``":memory:"``, a directory, a missing
            parent directory, a corrupt or foreign file, or a schema written by another
            release; ``store_busy`` if the file stayed locked for ``timeout`` seconds.

    Example:
        >>> import tempfile, os
        >>> from langgraph_capsules.stores import SqliteControllerStore
        >>> path = os.path.join(tempfile.mkdtemp(), "capsules.db")
        >>> with SqliteControllerStore(path) as store:
        ...     store.groups("plan-1")
        []
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = self._check_path(path)
        """Absolute path of the database file."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise CapsuleConfigError(
                f"SqliteControllerStore(timeout=...) must be a number of seconds > 0, got "
                f"{timeout!r}; the default 30.0 suits most deployments.",
                code="bad_store",
            )
        self.timeout = float(timeout)
        """Seconds a writer waits for the file's write lock."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._generation = 0
        self._pid = os.getpid()
        try:
            self._prepare(self._conn())
        except BaseException:
            self.close()  # do not keep a handle on a file we refused
            raise

    def __repr__(self) -> str:
        return f"SqliteControllerStore({str(self.path)!r})"

    def __reduce__(self) -> tuple[Callable[[str, float], SqliteControllerStore], tuple[str, float]]:
        return (_reopen, (str(self.path), self.timeout))

    # ---------------------------------------------------------------- opening
    @staticmethod
    def _check_path(path: str | os.PathLike[str]) -> Path:
        try:
            text = os.fspath(path)
        except TypeError:
            text = None
        if not isinstance(text, str) or not text or text == ":memory:":
            raise CapsuleConfigError(
                f"SqliteControllerStore needs the path of a file that every process can "
                f"open, got {path!r}. Pass a file path such as 'capsules.db'; for a store "
                "that lives only in this process use InMemoryControllerStore().",
                code="bad_store",
            )
        resolved = Path(text).expanduser().absolute()
        if resolved.is_dir():
            raise CapsuleConfigError(
                f"SqliteControllerStore path {str(resolved)!r} is a directory; pass a file "
                f"path inside it, e.g. {str(resolved / 'capsules.db')!r}.",
                code="bad_store",
            )
        if not resolved.parent.is_dir():
            raise CapsuleConfigError(
                f"the directory of the SqliteControllerStore file {str(resolved)!r} does not "
                "exist; create it first (the store creates the file, not its directories).",
                code="bad_store",
            )
        return resolved

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again after fork or close)."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must not use (or close) its parent's connections.
                self._pid = os.getpid()
                self._conns = []
                self._generation += 1
            generation = self._generation
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", None) == generation:
            return conn
        with self._errors("open"):
            # isolation_level=None: no implicit transactions; append issues its own
            # BEGIN IMMEDIATE. check_same_thread=False only so close() may close
            # connections of other threads; each thread still uses its own.
            conn = sqlite3.connect(
                str(self.path),
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        try:
            with self._errors("open"):
                self._retry_busy(lambda: self._setup(conn))
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        self._local.generation = generation
        with self._lock:
            self._conns.append(conn)
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        try:
            # Durable commits: under WAL, NORMAL may drop the last commits on power loss.
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            if _is_busy(exc):
                raise  # _retry_busy waits for the lock
            raise self._unreadable(exc) from exc

    def _unreadable(self, exc: sqlite3.DatabaseError) -> CapsuleConfigError:
        return CapsuleConfigError(
            f"{str(self.path)!r} is not a readable SQLite database ({exc}); it is corrupt "
            f"or some other kind of file. {_FOREIGN_FIX}",
            code="bad_store",
        )

    def _tables(self, conn: sqlite3.Connection) -> set[str]:
        try:
            rows = conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            if _is_busy(exc):
                raise  # _retry_busy waits for the lock
            raise self._unreadable(exc) from exc
        return {str(name) for (name,) in rows if not str(name).startswith("sqlite_")}

    def _retry_busy(self, step: Callable[[], _T]) -> _T:
        """Run ``step``, retrying while another process holds a lock, up to ``timeout``."""
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                return step()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check (or create) the schema, then switch the file to WAL."""
        with self._errors("open"):
            tables = self._retry_busy(lambda: self._tables(conn))
            if _SCHEMA_TABLE not in tables:
                self._foreign_unless_empty(tables)
                self._retry_busy(lambda: self._create(conn))
                tables = self._tables(conn)
            if _SCHEMA_TABLE not in tables:
                self._foreign_unless_empty(tables)
            row = conn.execute(
                f"SELECT version FROM {_SCHEMA_TABLE} WHERE component = ?", (_COMPONENT,)
            ).fetchone()
            if row is None or _OBS_TABLE not in tables:
                raise CapsuleConfigError(
                    f"{str(self.path)!r} has a {_SCHEMA_TABLE} table but no controller store "
                    f"tables; it was written by another langgraph_capsules component or "
                    f"edited by hand. {_FOREIGN_FIX}",
                    code="bad_store",
                )
            version = row[0]
            if version != SQLITE_SCHEMA_VERSION:
                newer = isinstance(version, int) and version > SQLITE_SCHEMA_VERSION
                raise CapsuleConfigError(
                    f"{str(self.path)!r} holds controller store schema version {version!r}, "
                    f"but this release reads version {SQLITE_SCHEMA_VERSION}. "
                    + (
                        "Upgrade langgraph-capsules to the release that wrote it."
                        if newer
                        else _FOREIGN_FIX
                    ),
                    code="bad_store",
                )
            if not self._retry_busy(lambda: self._has_key_column(conn)):
                self._retry_busy(lambda: self._add_key(conn))
            mode = self._retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
        if mode is None or str(mode[0]).lower() != "wal":
            raise CapsuleConfigError(
                f"could not switch {str(self.path)!r} to WAL mode (got {mode!r}); WAL is what "
                "makes the store safe across processes. Put the file on a local, writable "
                "filesystem.",
                code="bad_store",
            )

    def _foreign_unless_empty(self, tables: set[str]) -> None:
        if tables:
            names = ", ".join(sorted(tables)[:5])
            raise CapsuleConfigError(
                f"{str(self.path)!r} is an SQLite database of another application "
                f"(tables: {names}) and has no {_SCHEMA_TABLE} table; the controller store "
                f"does not write into databases it did not create. {_FOREIGN_FIX}",
                code="bad_store",
            )

    @staticmethod
    def _has_key_column(conn: sqlite3.Connection) -> bool:
        rows = conn.execute(f"PRAGMA table_info({_OBS_TABLE})").fetchall()
        return any(str(row[1]) == "record_key" for row in rows)

    def _add_key(self, conn: sqlite3.Connection) -> None:
        """Upgrade a file written before ``record_key`` existed (its rows keep NULL)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not self._has_key_column(conn):  # another process may have upgraded it
                for statement in _ADD_KEY:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _create(self, conn: sqlite3.Connection) -> None:
        # Several processes may open a new file at once: the write lock makes the
        # check-and-create atomic, and the loser sees the winner's tables.
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = self._tables(conn)
            if not tables:
                for statement in _CREATE:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn sqlite3 errors into CapsuleConfigErrors that name the file and the fix."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise CapsuleConfigError(
                    f"could not {action} {str(self.path)!r}: another process held its lock "
                    f"for more than {self.timeout:g}s ({exc}). Raise "
                    "SqliteControllerStore(timeout=...) or stop the process that keeps a "
                    "transaction open.",
                    code="store_busy",
                ) from exc
            raise self._failed(action, exc) from exc
        except sqlite3.Error as exc:
            raise self._failed(action, exc) from exc

    def _failed(self, action: str, exc: sqlite3.Error) -> CapsuleConfigError:
        return CapsuleConfigError(
            f"could not {action} the controller store {str(self.path)!r}: {exc}. Check "
            "that the file is writable, the disk is not full and the file is not corrupt "
            "(if it is, move it aside; the store starts a new history).",
            code="bad_store",
        )

    # ---------------------------------------------------------------- the interface
    def append(self, obs: Observation) -> int:
        """Append one observation; see :meth:`ControllerStore.append`.

        The next sequence number is read and the row inserted inside one
        ``BEGIN IMMEDIATE`` transaction, so concurrent processes get distinct, dense
        numbers. A record whose ``record_key`` is already in its group's log is not
        inserted again (checked in the same transaction, and by a unique index).

        Args:
            obs: The record to append.

        Returns:
            Its sequence number within (graph, group), starting at 1; for a record whose
            ``record_key`` is already in the log, the first one's number.

        Raises:
            CapsuleConfigError: ``bad_observation`` for an invalid record;
                ``store_busy`` if the write lock stayed taken for ``timeout`` seconds;
                ``bad_store`` if the file cannot be written.

        Example:
            >>> store.append(obs)  # obs: a complete Observation  # doctest: +SKIP
            1
        """
        text = encode_observation(obs)
        key = record_key(obs)
        conn = self._conn()
        with self._errors("append to"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                seen = (
                    None
                    if key is None
                    else conn.execute(
                        f"SELECT seq FROM {_OBS_TABLE} "
                        "WHERE graph = ? AND grp = ? AND record_key = ?",
                        (obs["graph"], obs["group"], key),
                    ).fetchone()
                )
                if seen is not None:
                    conn.execute("COMMIT")
                    return int(seen[0])
                row = conn.execute(
                    f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {_OBS_TABLE} "
                    "WHERE graph = ? AND grp = ?",
                    (obs["graph"], obs["group"]),
                ).fetchone()
                seq = int(row[0])
                conn.execute(
                    f"INSERT INTO {_OBS_TABLE} (graph, grp, seq, run_id, time, data, "
                    "record_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        obs["graph"],
                        obs["group"],
                        seq,
                        obs["run_id"],
                        float(obs["time"]),
                        text,
                        key,
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return seq

    def history(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        """Return a group's observations in order; see :meth:`ControllerStore.history`.

        Args:
            graph: The plan id of the capsule graph.
            group: The group name.
            since: Skip the first ``since`` records.

        Returns:
            The records numbered ``since + 1`` onwards, read in one snapshot.

        Raises:
            CapsuleConfigError: ``bad_store_query`` for bad arguments; ``bad_store`` if a
                row is not an observation or the file cannot be read.

        Example:
            >>> store.history("plan-1", "research", since=10)  # doctest: +SKIP
            []
        """
        check_name(graph, "graph")
        check_name(group, "group")
        check_since(since)
        conn = self._conn()
        with self._errors("read"):
            rows: list[tuple[Any, Any]] = conn.execute(
                f"SELECT seq, data FROM {_OBS_TABLE} "
                "WHERE graph = ? AND grp = ? AND seq > ? ORDER BY seq",
                (graph, group, since),
            ).fetchall()
        return [
            decode_observation(data, where=f"{str(self.path)!r} ({graph}/{group} #{seq})")
            for seq, data in rows
        ]

    def groups(self, graph: str) -> list[str]:
        """Return the sorted group names of ``graph``; see :meth:`ControllerStore.groups`.

        Args:
            graph: The plan id of the capsule graph.

        Returns:
            Sorted group names.

        Raises:
            CapsuleConfigError: ``bad_store_query`` for an empty graph id; ``bad_store``
                if the file cannot be read.

        Example:
            >>> store.groups("plan-1")  # doctest: +SKIP
            ['research']
        """
        check_name(graph, "graph")
        conn = self._conn()
        with self._errors("read"):
            rows = conn.execute(
                f"SELECT DISTINCT grp FROM {_OBS_TABLE} WHERE graph = ?", (graph,)
            ).fetchall()
        return sorted(str(name) for (name,) in rows)

    def close(self) -> None:
        """Close every connection this store opened in this process.

        Call it when no other thread is using the store; the next call reopens.

        Example:
            >>> store.close()  # doctest: +SKIP
        """
        with self._lock:
            conns = self._conns if self._pid == os.getpid() else []
            self._conns = []
            self._generation += 1
        for conn in conns:
            conn.close()
