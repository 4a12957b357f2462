"""Controller stores: one contract for every backend, plus what each backend adds."""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import pickle
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langgraph.store.memory import InMemoryStore

from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.stores import (
    SQLITE_SCHEMA_VERSION,
    BaseStoreControllerStore,
    ControllerStore,
    InMemoryControllerStore,
    SqliteControllerStore,
)
from langgraph_capsules.types import Observation


def make_obs(
    run: int | str, *, graph: str = "plan-1", group: str = "research", **over: Any
) -> Observation:
    """A full observation whose values exercise exact JSON round-tripping."""
    obs: dict[str, Any] = {
        "graph": graph,
        "group": group,
        "run_id": f"run-{run}",
        "time": 1_700_000_000.123456 + (run if isinstance(run, int) else 0),
        "tier": "fine",
        "members": {
            "entities": {
                "input_tokens": 812,
                "cached_tokens": 0,
                "output_tokens": 95,
                "calls": 1,
                "tool_calls": 2,
                "latency_s": 0.1 + 0.2,  # 0.30000000000000004 must come back bit for bit
            },
            "claims — “quoted” ü": {
                "input_tokens": 790,
                "cached_tokens": 512,
                "output_tokens": 120,
                "calls": 1,
                "tool_calls": 0,
                "latency_s": 1,  # an int stays an int
            },
        },
        "calls": 2,
        "input_tokens": 1602,
        "cached_tokens": 512,
        "output_tokens": 215,
        "latency_s": 1.0,  # a float stays a float
        "tool_calls": 2,
        "coordination_tokens": 0,
        "errors": 0,
        "quality": None,
        "shadow": False,
    }
    obs.update(over)
    return obs  # type: ignore[return-value]


# ------------------------------------------------------------------ fixtures
def _memory(tmp_path: Path) -> ControllerStore:
    return InMemoryControllerStore()


def _sqlite(tmp_path: Path) -> ControllerStore:
    return SqliteControllerStore(tmp_path / "capsules.db")


def _basestore(tmp_path: Path) -> ControllerStore:
    return BaseStoreControllerStore(InMemoryStore())


FACTORIES: dict[str, Callable[[Path], ControllerStore]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "basestore": _basestore,
}


@pytest.fixture(params=sorted(FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ControllerStore]:
    s = FACTORIES[request.param](tmp_path)
    yield s
    s.close()


# ------------------------------------------------------------------ the shared contract
def test_append_is_idempotent_on_record_key(store: ControllerStore) -> None:
    """A record whose record_key is already in its log is not appended again (a gate
    re-run on resume); the first record's number comes back and the first record stays."""
    first = make_obs(1, record_key="run-1")
    assert store.append(first) == 1
    assert store.append(make_obs(2)) == 2
    assert store.append(make_obs(1, record_key="run-1", time=5.0, calls=9)) == 1
    # the shadow record of the same run has its own key
    assert store.append(make_obs(1, shadow=True, record_key="run-1/shadow/standard")) == 3
    assert store.append(make_obs(1, shadow=True, record_key="run-1/shadow/standard")) == 3
    # the key is per (graph, group)
    assert store.append(make_obs(1, group="synthesis", record_key="run-1")) == 1
    assert store.append(make_obs(1, graph="plan-2", record_key="run-1")) == 1
    history = store.history("plan-1", "research")
    assert [o["run_id"] for o in history] == ["run-1", "run-2", "run-1"]
    assert history[0] == first
    # records without a key are always appended (hand-built, or from earlier releases)
    assert store.append(make_obs(2)) == 4


async def test_async_append_is_idempotent_on_record_key(store: ControllerStore) -> None:
    obs = make_obs(1, record_key="k")
    assert await store.aappend(obs) == 1
    assert await store.aappend(obs) == 1
    assert store.append(obs) == 1
    assert await store.aappend(make_obs(2, record_key="k2")) == 2
    assert len(await store.ahistory("plan-1", "research")) == 2


def test_concurrent_appends_of_one_record_key_write_it_once(store: ControllerStore) -> None:
    barrier = threading.Barrier(6)
    numbers: list[int] = []

    def work(i: int) -> None:
        barrier.wait()
        numbers.append(store.append(make_obs(i, record_key="same")))
        store.append(make_obs(i))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = store.history("plan-1", "research")
    assert len(history) == 7
    assert sum(1 for o in history if o.get("record_key") == "same") == 1
    assert len(set(numbers)) == 1


@pytest.mark.parametrize("key", ["", 7, None])
def test_bad_record_key_is_refused(store: ControllerStore, key: Any) -> None:
    with pytest.raises(CapsuleConfigError, match="record_key") as err:
        store.append(make_obs(1, record_key=key))
    assert err.value.code == "bad_observation"
    assert store.history("plan-1", "research") == []


def test_append_numbers_are_dense_per_graph_and_group(store: ControllerStore) -> None:
    assert [store.append(make_obs(i)) for i in range(1, 5)] == [1, 2, 3, 4]
    # Every (graph, group) has its own counter starting at 1.
    assert store.append(make_obs(1, group="synthesis")) == 1
    assert store.append(make_obs(1, graph="plan-2")) == 1
    assert store.append(make_obs(5)) == 5
    assert store.append(make_obs(2, group="synthesis")) == 2


def test_history_round_trips_exactly_in_order(store: ControllerStore) -> None:
    sent = [make_obs(i, quality=[None, 0.8125, 1][i % 3], shadow=i == 2) for i in range(6)]
    sent[3]["tier"] = "standard"
    for obs in sent:
        store.append(obs)
    got = store.history("plan-1", "research")
    assert got == sent
    # Exact: same key order, same int/float types, same float bits.
    assert [json.dumps(o) for o in got] == [json.dumps(o) for o in sent]
    assert [list(o["members"]) for o in got] == [list(o["members"]) for o in sent]
    assert type(got[0]["members"]["claims — “quoted” ü"]["latency_s"]) is int
    assert type(got[0]["latency_s"]) is float
    assert got[0]["members"]["entities"]["latency_s"] == 0.30000000000000004


def test_history_since_skips_what_was_read(store: ControllerStore) -> None:
    for i in range(1, 6):
        store.append(make_obs(i))
    assert [o["run_id"] for o in store.history("plan-1", "research", since=3)] == [
        "run-4",
        "run-5",
    ]
    assert store.history("plan-1", "research", since=5) == []
    assert store.history("plan-1", "research", since=99) == []
    assert len(store.history("plan-1", "research", since=0)) == 5


def test_unknown_graph_or_group_is_empty(store: ControllerStore) -> None:
    store.append(make_obs(1))
    assert store.history("plan-1", "nope") == []
    assert store.history("plan-9", "research") == []
    assert store.groups("plan-9") == []


def test_groups_are_sorted_distinct_and_per_graph(store: ControllerStore) -> None:
    # Names with '.', '%', '/', spaces and non-ASCII must survive every backend's keys.
    names = ["synthesis", "a.b", "100%", "x/y z", "gather", "ünï"]
    for name in names + names:
        store.append(make_obs(1, group=name))
    store.append(make_obs(1, graph="plan.2", group="other"))
    assert store.groups("plan-1") == sorted(names)
    assert store.groups("plan.2") == ["other"]
    assert len(store.history("plan-1", "a.b")) == 2
    assert store.history("plan-1", "100%")[0]["group"] == "100%"


def test_records_are_copies(store: ControllerStore) -> None:
    obs = make_obs(1)
    store.append(obs)
    obs["calls"] = 999
    obs["members"]["entities"]["calls"] = 999
    first = store.history("plan-1", "research")[0]
    assert first["calls"] == 2
    assert first["members"]["entities"]["calls"] == 1
    first["tier"] = "changed"
    assert store.history("plan-1", "research")[0]["tier"] == "fine"


def test_concurrent_threads_get_distinct_dense_numbers(store: ControllerStore) -> None:
    threads, per_thread = 8, 25
    seqs: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            n = store.append(make_obs(f"{t}-{i}"))
            with lock:
                seqs.append(n)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total = threads * per_thread
    assert sorted(seqs) == list(range(1, total + 1))
    history = store.history("plan-1", "research")
    assert len(history) == total
    assert {o["run_id"] for o in history} == {
        f"run-{t}-{i}" for t in range(threads) for i in range(per_thread)
    }


async def test_async_twins_match_sync(store: ControllerStore) -> None:
    assert await store.aappend(make_obs(1)) == 1
    assert store.append(make_obs(2)) == 2
    results = await asyncio.gather(*(store.aappend(make_obs(i)) for i in range(3, 13)))
    assert sorted(results) == list(range(3, 13))
    assert await store.ahistory("plan-1", "research") == store.history("plan-1", "research")
    tail = await store.ahistory("plan-1", "research", since=10)
    assert [o["run_id"] for o in tail] == [
        o["run_id"] for o in store.history("plan-1", "research")[10:]
    ]
    store.append(make_obs(1, group="gather"))
    assert await store.agroups("plan-1") == ["gather", "research"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda o: o.pop("shadow"), "missing the field(s) shadow"),
        (lambda o: o.update(graph=""), "'graph' must be a non-empty str"),
        (lambda o: o.update(group=None), "'group' must be a non-empty str"),
        (lambda o: o.update(calls="2"), "'calls' must be an int"),
        (lambda o: o.update(errors=True), "'errors' must be an int"),
        (lambda o: o.update(shadow=0), "'shadow' must be a bool"),
        (lambda o: o.update(latency_s=math.nan), "NaN or infinity"),
        (lambda o: o.update(quality=math.inf), "NaN or infinity"),
        (lambda o: o.update(extra=(1, 2)), "tuple"),
        (lambda o: o.update(extra={1: "a"}), "key 1 of type int"),
        (lambda o: o.update(input_tokens=np.int64(5)), "'input_tokens' must be an int"),
        (lambda o: o["members"]["entities"].update(calls=np.int64(1)), "int64"),
        (lambda o: o["members"].update(bad=3), "members['bad'] must be a MemberUsage dict"),
    ],
)
def test_bad_observations_are_refused_with_the_fix(
    store: ControllerStore, change: Callable[[dict[str, Any]], object], needle: str
) -> None:
    obs: dict[str, Any] = dict(make_obs(1))
    obs["members"] = {k: dict(v) for k, v in obs["members"].items()}
    change(obs)
    with pytest.raises(CapsuleConfigError) as err:
        store.append(obs)  # type: ignore[arg-type]
    assert err.value.code == "bad_observation"
    assert needle in str(err.value)
    # Nothing was written.
    assert store.history("plan-1", "research") == []


def test_non_dict_observation_is_refused(store: ControllerStore) -> None:
    with pytest.raises(CapsuleConfigError, match="must be a dict, got list") as err:
        store.append([("graph", "g")])  # type: ignore[arg-type]
    assert err.value.code == "bad_observation"


def test_bad_queries_are_refused(store: ControllerStore) -> None:
    for call in (
        lambda: store.history("", "research"),
        lambda: store.history("plan-1", 3),  # type: ignore[arg-type]
        lambda: store.history("plan-1", "research", since=-1),
        lambda: store.history("plan-1", "research", since="2"),  # type: ignore[arg-type]
        lambda: store.history("plan-1", "research", since=True),
        lambda: store.groups(""),
    ):
        with pytest.raises(CapsuleConfigError) as err:
            call()
        assert err.value.code == "bad_store_query"


def test_context_manager_closes_and_store_stays_usable(store: ControllerStore) -> None:
    with store as s:
        s.append(make_obs(1))
    # close() released resources; the next call reopens what it needs.
    assert store.append(make_obs(2)) == 2
    assert len(store.history("plan-1", "research")) == 2


# ------------------------------------------------------------------ SQLite
def _sqlite_worker(
    store: SqliteControllerStore,
    worker: int,
    appends: int,
    barrier: Any,
    results: Any,
) -> None:
    barrier.wait()  # all processes start appending at once: maximum contention
    seqs = [store.append(make_obs(f"p{worker}-{i}")) for i in range(appends)]
    barrier.wait()  # every process has finished writing
    history = [o["run_id"] for o in store.history("plan-1", "research")]
    results.put((worker, os.getpid(), seqs, history))


def test_sqlite_four_processes_share_one_dense_history(tmp_path: Path) -> None:
    procs, appends = 4, 25
    store = SqliteControllerStore(tmp_path / "shared.db")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    # The store itself is passed: it pickles as (path, timeout) and reopens in the child.
    workers = [
        ctx.Process(target=_sqlite_worker, args=(store, w, appends, barrier, results))
        for w in range(procs)
    ]
    for p in workers:
        p.start()
    got = [results.get(timeout=120) for _ in range(procs)]
    for p in workers:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len({pid for _, pid, _, _ in got}) == procs
    all_seqs = sorted(n for _, _, seqs, _ in got for n in seqs)
    assert all_seqs == list(range(1, procs * appends + 1))  # no gap, no duplicate
    for _, _, seqs, _ in got:
        assert seqs == sorted(seqs)  # one process's appends are numbered in its order
    histories = [h for _, _, _, h in got]
    assert all(h == histories[0] for h in histories)  # every process reads one order
    assert len(histories[0]) == procs * appends
    assert set(histories[0]) == {f"run-p{w}-{i}" for w in range(procs) for i in range(appends)}
    # The parent, a fresh store object, and the numbering all agree.
    assert [o["run_id"] for o in store.history("plan-1", "research")] == histories[0]
    # The number append() returned is the observation's position in the shared history.
    for w, _, seqs, _ in got:
        for i, seq in enumerate(seqs):
            assert histories[0][seq - 1] == f"run-p{w}-{i}"


def test_sqlite_reopen_reads_the_same_history(tmp_path: Path) -> None:
    path = tmp_path / "capsules.db"
    first = SqliteControllerStore(str(path))
    sent = [make_obs(i) for i in range(1, 4)] + [make_obs(1, group="gather")]
    for obs in sent:
        first.append(obs)
    first.close()
    second = SqliteControllerStore(path)
    assert second.history("plan-1", "research") == sent[:3]
    assert second.groups("plan-1") == ["gather", "research"]
    assert second.append(make_obs(4)) == 4  # numbering continues, not restarts
    clone = pickle.loads(pickle.dumps(second))
    assert isinstance(clone, SqliteControllerStore)
    assert clone.path == second.path
    assert clone.history("plan-1", "research")[-1]["run_id"] == "run-4"
    second.close()
    clone.close()


def test_sqlite_file_is_wal_with_a_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "capsules.db"
    SqliteControllerStore(path).close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = raw.execute("SELECT component, version FROM langgraph_capsules_schema").fetchall()
    raw.close()
    assert rows == [("controller_store", SQLITE_SCHEMA_VERSION)]


_OLD_LAYOUT = (
    "CREATE TABLE langgraph_capsules_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    "CREATE TABLE langgraph_capsules_observations (graph TEXT NOT NULL, grp TEXT NOT NULL,"
    " seq INTEGER NOT NULL, run_id TEXT NOT NULL, time REAL NOT NULL, data TEXT NOT NULL,"
    " PRIMARY KEY (graph, grp, seq)) WITHOUT ROWID",
    "INSERT INTO langgraph_capsules_schema VALUES ('controller_store', 1)",
)
_OLD_INSERT = (
    "INSERT INTO langgraph_capsules_observations (graph, grp, seq, run_id, time, data) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def test_sqlite_file_without_record_keys_loads_and_upgrades(tmp_path: Path) -> None:
    """A file written before record keys existed: its rows load, it gains the column on
    open, and an earlier release's plain insert still works on the upgraded file."""
    path = tmp_path / "old.db"
    old = [make_obs(1), make_obs(2)]
    with sqlite3.connect(path) as raw:
        for statement in _OLD_LAYOUT:
            raw.execute(statement)
        for i, obs in enumerate(old, 1):
            raw.execute(_OLD_INSERT, ("plan-1", "research", i, obs["run_id"], 0.0, json.dumps(obs)))
    raw.close()
    store = SqliteControllerStore(path)
    assert store.history("plan-1", "research") == old
    assert store.append(make_obs(3, record_key="run-3")) == 3
    assert store.append(make_obs(3, record_key="run-3")) == 3
    assert store.append(make_obs(4)) == 4
    store.close()
    with sqlite3.connect(path) as raw:
        cols = [r[1] for r in raw.execute("PRAGMA table_info(langgraph_capsules_observations)")]
        raw.execute(_OLD_INSERT, ("plan-1", "research", 5, "run-5", 0.0, json.dumps(make_obs(5))))
        version = raw.execute("SELECT version FROM langgraph_capsules_schema").fetchone()[0]
    raw.close()
    assert "record_key" in cols and version == SQLITE_SCHEMA_VERSION
    again = SqliteControllerStore(path)  # reopening an upgraded file changes nothing
    assert [o["run_id"] for o in again.history("plan-1", "research")] == [
        f"run-{i}" for i in range(1, 6)
    ]
    again.close()


def test_sqlite_record_key_is_unique_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "capsules.db"
    store = SqliteControllerStore(path)
    store.append(make_obs(1, record_key="k"))
    store.close()
    with sqlite3.connect(path) as raw, pytest.raises(sqlite3.IntegrityError):
        raw.execute(
            "INSERT INTO langgraph_capsules_observations "
            "(graph, grp, seq, run_id, time, data, record_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("plan-1", "research", 2, "run-1", 0.0, json.dumps(make_obs(1)), "k"),
        )
    raw.close()


def test_sqlite_connection_per_thread(tmp_path: Path) -> None:
    store = SqliteControllerStore(tmp_path / "capsules.db")
    seen: list[int] = []

    def work() -> None:
        seen.append(id(store._conn()))
        store.append(make_obs(len(seen)))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
        t.join()
    seen.append(id(store._conn()))
    assert len(store._conns) == 4  # main thread + three workers, each its own connection
    assert len(store.history("plan-1", "research")) == 3
    store.close()
    assert store._conns == []


def test_sqlite_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "capsules.db"
    garbage = b"this is not a database, just some text\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(CapsuleConfigError) as err:
        SqliteControllerStore(path)
    assert err.value.code == "bad_store"
    msg = str(err.value)
    assert str(path) in msg
    assert "not a readable SQLite database" in msg
    assert "its own file" in msg  # the fix
    assert path.read_bytes() == garbage  # never touched


def test_sqlite_foreign_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        raw.execute("INSERT INTO users (name) VALUES ('ada')")
    raw.close()
    before = path.read_bytes()
    with pytest.raises(CapsuleConfigError) as err:
        SqliteControllerStore(path)
    assert err.value.code == "bad_store"
    msg = str(err.value)
    assert str(path) in msg and "another application" in msg and "users" in msg
    assert "its own file" in msg
    assert path.read_bytes() == before
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    raw.close()


def test_sqlite_newer_schema_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "capsules.db"
    SqliteControllerStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE langgraph_capsules_schema SET version = 99")
    raw.close()
    with pytest.raises(CapsuleConfigError, match="Upgrade langgraph-capsules") as err:
        SqliteControllerStore(path)
    assert err.value.code == "bad_store"
    assert "version 99" in str(err.value)


def test_sqlite_tampered_row_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "capsules.db"
    store = SqliteControllerStore(path)
    store.append(make_obs(1))
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE langgraph_capsules_observations SET data = '{\"x\": 1}'")
    raw.close()
    with pytest.raises(CapsuleConfigError, match="not a langgraph_capsules observation") as err:
        store.history("plan-1", "research")
    assert err.value.code == "bad_store"
    assert "research #1" in str(err.value)
    store.close()


@pytest.mark.parametrize("kind", ["memory", "empty", "dir", "no-parent", "not-a-path"])
def test_sqlite_bad_paths_name_the_fix(tmp_path: Path, kind: str) -> None:
    arg: Any = {
        "memory": ":memory:",
        "empty": "",
        "dir": tmp_path,
        "no-parent": tmp_path / "missing" / "capsules.db",
        "not-a-path": 42,
    }[kind]
    fix = {
        "memory": "InMemoryControllerStore()",
        "empty": "capsules.db",
        "dir": "capsules.db",
        "no-parent": "create it first",
        "not-a-path": "capsules.db",
    }[kind]
    with pytest.raises(CapsuleConfigError) as err:
        SqliteControllerStore(arg)
    assert err.value.code == "bad_store"
    assert fix in str(err.value)
    assert not (tmp_path / "missing").exists()


def test_sqlite_bad_timeout(tmp_path: Path) -> None:
    with pytest.raises(CapsuleConfigError, match="timeout") as err:
        SqliteControllerStore(tmp_path / "x.db", timeout=0)
    assert err.value.code == "bad_store"


def test_sqlite_lock_held_too_long_raises_store_busy(tmp_path: Path) -> None:
    path = tmp_path / "capsules.db"
    store = SqliteControllerStore(path, timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process keeps the write lock
    try:
        with pytest.raises(CapsuleConfigError) as err:
            store.append(make_obs(1))
        assert err.value.code == "store_busy"
        assert "timeout" in str(err.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.append(make_obs(1)) == 1  # nothing half-written, numbering intact
    store.close()


# ------------------------------------------------------------------ LangGraph BaseStore
def test_basestore_layout_and_item_format() -> None:
    backing = InMemoryStore()
    store = BaseStoreControllerStore(backing, namespace=("acme", "capsules"))
    store.append(make_obs(1, graph="plan.1", group="a.b"))
    ns = ("acme", "capsules", "observations", "plan%2E1", "a%2Eb")
    items = backing.search(ns)
    assert len(items) == 1
    value = items[0].value
    assert value["format"] == 1 and value["clock"] == 1 and value["run_id"] == "run-1"
    assert json.loads(value["observation"]) == make_obs(1, graph="plan.1", group="a.b")
    assert items[0].key.startswith("000000000001:run-1:")


def test_basestore_workers_sharing_a_store_agree() -> None:
    backing = InMemoryStore()
    a = BaseStoreControllerStore(backing)
    b = BaseStoreControllerStore(backing)
    seqs = []
    for i in range(1, 7):
        seqs.append((a if i % 2 else b).append(make_obs(i)))
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert a.history("plan-1", "research") == b.history("plan-1", "research")
    assert [o["run_id"] for o in a.history("plan-1", "research")] == [
        f"run-{i}" for i in range(1, 7)
    ]
    # A different namespace is a different controller.
    assert BaseStoreControllerStore(backing, ("other",)).history("plan-1", "research") == []


def test_basestore_overlapping_appends_converge_on_one_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backing = InMemoryStore()
    a = BaseStoreControllerStore(backing)
    b = BaseStoreControllerStore(backing)
    a.append(make_obs(1))
    # Worker b read the log before a's second append became visible (a stale read):
    # both stamp clock 2, the race BaseStore cannot prevent without a counter.
    stale = b._read(b._group_ns("plan-1", "research"))
    assert a.append(make_obs("a2")) == 2
    monkeypatch.setattr(b, "_read", lambda ns: stale)
    assert b.append(make_obs("b2")) == 2  # provisional: it did not see a's item
    monkeypatch.undo()
    # Nothing was lost, the numbering is dense, and both workers compute one order,
    # tie broken by key (clock, run id, nonce).
    ha = [o["run_id"] for o in a.history("plan-1", "research")]
    hb = [o["run_id"] for o in b.history("plan-1", "research")]
    assert ha == hb == ["run-1", "run-a2", "run-b2"]
    # The next append, from either worker, sorts after both.
    assert b.append(make_obs(4)) == 4
    assert a.history("plan-1", "research", since=3)[0]["run_id"] == "run-4"


def test_basestore_keyed_records_have_one_item_per_key() -> None:
    """Two adapters over one BaseStore (two workers) append the same keyed record: the
    item key is derived from the record key, so there is still one item."""
    backend = InMemoryStore()
    a = BaseStoreControllerStore(backend)
    b = BaseStoreControllerStore(backend)
    a.append(make_obs(1, record_key="run-1"))
    b.append(make_obs(1, record_key="run-1"))
    b.append(make_obs(2))
    ns = ("langgraph_capsules", "observations", "plan-1", "research")
    items = backend.search(ns, limit=10)
    keyed = [i for i in items if i.key.startswith("rk-")]
    assert len(items) == 2 and len(keyed) == 1
    assert keyed[0].value["record_key"] == "run-1"
    assert [o["run_id"] for o in a.history("plan-1", "research")] == ["run-1", "run-2"]


def test_basestore_never_embeds_observations() -> None:
    calls: list[int] = []

    def embed(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return [[1.0, 0.0] for _ in texts]

    store = BaseStoreControllerStore(InMemoryStore(index={"dims": 2, "embed": embed}))
    store.append(make_obs(1))
    assert store.history("plan-1", "research")[0]["run_id"] == "run-1"
    assert calls == []


def test_basestore_pages_through_long_logs() -> None:
    store = BaseStoreControllerStore(InMemoryStore(), page_size=3)
    for i in range(1, 11):
        assert store.append(make_obs(i)) == i
    for g in range(7):
        store.append(make_obs(1, group=f"g{g}"))
    assert [o["run_id"] for o in store.history("plan-1", "research")] == [
        f"run-{i}" for i in range(1, 11)
    ]
    assert store.groups("plan-1") == [f"g{g}" for g in range(7)] + ["research"]


def test_basestore_foreign_item_is_reported() -> None:
    backing = InMemoryStore()
    store = BaseStoreControllerStore(backing)
    store.append(make_obs(1))
    backing.put(store._group_ns("plan-1", "research"), "intruder", {"hello": "world"})
    with pytest.raises(CapsuleConfigError, match="namespace of its own") as err:
        store.history("plan-1", "research")
    assert err.value.code == "bad_store"
    assert "'intruder'" in str(err.value)


@pytest.mark.parametrize(
    ("namespace", "needle"),
    [
        ((), "is empty"),
        ("capsules", "must be a tuple"),
        (("a.b",), "'.'"),
        (("ok", ""), "not a non-empty str"),
        (("langgraph",), "reserves"),
    ],
)
def test_basestore_bad_namespace(namespace: Any, needle: str) -> None:
    with pytest.raises(CapsuleConfigError) as err:
        BaseStoreControllerStore(InMemoryStore(), namespace)
    assert err.value.code == "bad_store"
    assert needle in str(err.value)
    assert "('langgraph_capsules',)" in str(err.value)


def test_basestore_needs_a_basestore() -> None:
    with pytest.raises(CapsuleConfigError, match=r"needs a langgraph\.store\.base\.BaseStore") as e:
        BaseStoreControllerStore({})  # type: ignore[arg-type]
    assert e.value.code == "bad_store"
    with pytest.raises(CapsuleConfigError, match="page_size") as e:
        BaseStoreControllerStore(InMemoryStore(), page_size=0)
    assert e.value.code == "bad_store"


def test_validation_covers_every_observation_field() -> None:
    # If types.Observation gains or loses a field, the store's validation must follow.
    from langgraph_capsules.stores import _codec

    # (types.py has string annotations, so NotRequired shows only in the annotation text)
    fields = Observation.__annotations__
    required = {k for k, v in fields.items() if "NotRequired[" not in str(v)}
    assert set(_codec._FIELDS) == required
    assert set(make_obs(1)) == required
    assert _codec.RECORD_KEY in set(fields) - required
