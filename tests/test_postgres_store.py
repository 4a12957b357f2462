"""PostgresControllerStore: the shared store contract, one total order across threads and
processes, and what the backend adds (schema, locks, connections), on a PostgreSQL
server the tests start themselves (``pg_server.py``)."""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import os
import pickle
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import test_stores
from conftest import DOC, KINDS, build_app
from pg_server import PgServer, start_server

# The shared contract (tests/test_stores.py), collected again here where the `store`
# fixture below is a PostgresControllerStore. test_every_contract_test_runs_here keeps
# this list complete.
from test_stores import (
    make_obs,
    test_append_is_idempotent_on_record_key,
    test_append_numbers_are_dense_per_graph_and_group,
    test_async_append_is_idempotent_on_record_key,
    test_async_twins_match_sync,
    test_bad_observations_are_refused_with_the_fix,
    test_bad_queries_are_refused,
    test_bad_record_key_is_refused,
    test_concurrent_appends_of_one_record_key_write_it_once,
    test_concurrent_threads_get_distinct_dense_numbers,
    test_context_manager_closes_and_store_stays_usable,
    test_groups_are_sorted_distinct_and_per_graph,
    test_history_round_trips_exactly_in_order,
    test_history_since_skips_what_was_read,
    test_non_dict_observation_is_refused,
    test_records_are_copies,
    test_unknown_graph_or_group_is_empty,
)

import langgraph_capsules as lc
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.stores import (
    POSTGRES_SCHEMA_VERSION,
    ControllerStore,
    PostgresControllerStore,
)
from langgraph_capsules.testing import ScriptedChatModel

CONTRACT = (
    test_append_is_idempotent_on_record_key,
    test_append_numbers_are_dense_per_graph_and_group,
    test_async_append_is_idempotent_on_record_key,
    test_async_twins_match_sync,
    test_bad_observations_are_refused_with_the_fix,
    test_bad_queries_are_refused,
    test_bad_record_key_is_refused,
    test_concurrent_appends_of_one_record_key_write_it_once,
    test_concurrent_threads_get_distinct_dense_numbers,
    test_context_manager_closes_and_store_stays_usable,
    test_groups_are_sorted_distinct_and_per_graph,
    test_history_round_trips_exactly_in_order,
    test_history_since_skips_what_was_read,
    test_non_dict_observation_is_refused,
    test_records_are_copies,
    test_unknown_graph_or_group_is_empty,
)
OBS_TABLE = "langgraph_capsules_observations"
SCHEMA_TABLE = "langgraph_capsules_schema"


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """A PostgreSQL server of this test session (started here; never skipped)."""
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


_databases = iter(range(1, 1_000_000))


@pytest.fixture
def fresh_db(pg: PgServer) -> str:
    """The conninfo of a new, empty database."""
    return pg.create_database(f"capsules_{os.getpid()}_{next(_databases)}")


@pytest.fixture(scope="module")
def contract_db(pg: PgServer) -> str:
    return pg.create_database("contract")


@pytest.fixture
def store(contract_db: str) -> Iterator[ControllerStore]:
    """A PostgresControllerStore over emptied tables (the name the contract tests use)."""
    s = PostgresControllerStore(contract_db)
    s.setup()
    with psycopg.connect(contract_db, autocommit=True) as raw:
        raw.execute(f"TRUNCATE {OBS_TABLE}")
    yield s
    s.close()


def _seqs(conninfo: str, graph: str = "plan-1", group: str = "research") -> list[int]:
    with psycopg.connect(conninfo, autocommit=True) as raw:
        rows = raw.execute(
            f"SELECT seq FROM {OBS_TABLE} WHERE graph = %s AND grp = %s ORDER BY seq",
            (graph, group),
        ).fetchall()
    return [int(seq) for (seq,) in rows]


def test_every_contract_test_runs_here() -> None:
    """Every test of tests/test_stores.py that takes the `store` fixture is collected in
    this module too, so a new contract test cannot silently skip PostgreSQL."""
    shared = {
        name
        for name, fn in vars(test_stores).items()
        if name.startswith("test_") and callable(fn) and "store" in inspect.signature(fn).parameters
    }
    here = {fn.__name__ for fn in CONTRACT}
    assert shared == here
    assert all(globals()[name] is getattr(test_stores, name) for name in here)


# ------------------------------------------------------------------ one total order
def test_threads_append_dense_numbers_while_a_reader_never_sees_a_gap(store: Any) -> None:
    """Many threads append to one (graph, group) at once: the numbers are 1..N with no
    gap and no duplicate, each thread's numbers rise, and a reader polling meanwhile
    only ever sees a gapless prefix, which it extends with history(since=...)."""
    conninfo = store.conninfo
    threads, per_thread = 8, 40
    total = threads * per_thread
    got: dict[int, list[int]] = {}
    start = threading.Barrier(threads + 1)
    done = threading.Event()
    polls: list[int] = []
    problems: list[str] = []
    read: list[str] = []

    def writer(t: int) -> None:
        start.wait()
        got[t] = [store.append(make_obs(f"{t}-{i}")) for i in range(per_thread)]

    def reader() -> None:
        start.wait()
        while True:
            finished = done.is_set()
            seqs = _seqs(conninfo)  # the raw numbers in one snapshot
            if seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"gap in {seqs}")
            batch = store.history("plan-1", "research", since=len(read))
            read.extend(o["run_id"] for o in batch)
            polls.append(len(seqs))
            if finished:
                return

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    poller = threading.Thread(target=reader)
    for w in [*workers, poller]:
        w.start()
    for w in workers:
        w.join()
    done.set()
    poller.join()
    assert problems == []
    assert sorted(n for seqs in got.values() for n in seqs) == list(range(1, total + 1))
    assert all(seqs == sorted(seqs) for seqs in got.values())
    final = [o["run_id"] for o in store.history("plan-1", "research")]
    assert len(final) == total == len(set(final))
    assert read == final  # the reader's increments concatenate to the final history
    for t, seqs in got.items():  # append's number is the record's place in the history
        assert [final[n - 1] for n in seqs] == [f"run-{t}-{i}" for i in range(per_thread)]
    assert len(polls) > 3 and polls[0] < total  # it did read while the writers wrote


async def test_async_tasks_append_dense_numbers_while_a_reader_polls(store: Any) -> None:
    tasks, per_task = 12, 10
    total = tasks * per_task
    read: list[str] = []
    done = asyncio.Event()
    problems: list[str] = []

    async def writer(t: int) -> list[int]:
        return [await store.aappend(make_obs(f"{t}-{i}")) for i in range(per_task)]

    async def reader() -> None:
        while True:
            finished = done.is_set()
            before = len(read)
            batch = await store.ahistory("plan-1", "research", since=before)
            read.extend(o["run_id"] for o in batch)
            raw = _seqs(store.conninfo)
            if raw != list(range(1, len(raw) + 1)):
                problems.append(f"gap in {raw}")
            if finished:
                return
            await asyncio.sleep(0)

    poll = asyncio.create_task(reader())
    results = await asyncio.gather(*(writer(t) for t in range(tasks)))
    done.set()
    await poll
    assert problems == []
    assert sorted(n for seqs in results for n in seqs) == list(range(1, total + 1))
    final = [o["run_id"] for o in await store.ahistory("plan-1", "research")]
    assert read == final and len(set(final)) == total


# ------------------------------------------------------------------ four processes, auto
PROCS, RUNS = 4, 50
POLICY = lc.ControllerPolicy.aggressive(quality_floor=0.75)


def _judge(seed: int) -> Callable[[str, str, str], float]:
    """A judge that scores a quarter of the runs below the floor, so the controller keeps
    moving (reverts, shadow runs, audits, escalations) and its decisions depend on the
    exact history all along, not only on the first few runs."""
    rng = random.Random(seed)

    def judge(task: str, reference: str, candidate: str) -> float:
        return 0.3 if rng.random() < 0.25 else 1.0

    return judge


def _graph(conninfo: str, seed: int = 0) -> lc.CapsuleGraph:
    return lc.capsulize(
        build_app(lc.CapsuleChatModel(ScriptedChatModel())),
        groups={"arm": list(KINDS)},
        policy=POLICY,
        judge=_judge(seed),
        store=PostgresControllerStore(conninfo),
    )


def _worker(conninfo: str, worker: int, barrier: Any, results: Any) -> None:
    capsules = _graph(conninfo, seed=worker)
    app = capsules.compile()
    use_async = worker % 2 == 1
    seen: list[tuple[int, int, str, bool]] = []
    barrier.wait()  # all workers run at once
    for _ in range(RUNS):
        # another worker may append between the two reads: the decision must equal the
        # pure function of some prefix the worker could have read in that window
        n = len(capsules.observations("arm"))
        d = capsules.explain("arm")
        m = len(capsules.observations("arm"))
        seen.append((n, m, d.tier, d.shadow))
        if use_async:  # a new event loop per run: the store's async connections too
            asyncio.run(app.ainvoke({"doc": DOC}))
        else:
            app.invoke({"doc": DOC})
    barrier.wait()  # every worker has finished
    final = capsules.explain("arm").to_dict()
    runs = [
        (r["run_key"], r["tier"], bool(r["shadow"]), r.get("audit") is not None)
        for r in capsules.history("arm")
    ]
    results.put((os.getpid(), capsules.plan.plan_id, seen, runs, final))


def test_four_processes_auto_runs_decide_on_prefixes_of_one_history(fresh_db: str) -> None:
    """4 processes x 50 auto runs of one capsule graph (two workers sync, two async, one
    event loop per run) share one PostgreSQL store: every observation is stored once,
    and every decision any worker made, both the one each run acted on and the ones
    explain() showed, is decide() over a prefix of the final history."""
    PostgresControllerStore(fresh_db).setup()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(fresh_db, w, barrier, results)) for w in range(PROCS)
    ]
    began = time.monotonic()
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in range(PROCS)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    elapsed = time.monotonic() - began
    assert len({pid for pid, *_ in got}) == PROCS
    assert len({plan for _, plan, *_ in got}) == 1

    parent = _graph(fresh_db)
    history = parent.observations("arm")
    runs = [r for *_, worker_runs, _ in got for r in worker_runs]
    assert len(runs) == PROCS * RUNS
    # every observation is there exactly once: one main record per run, each shadow
    # record of a run once, and nothing from anywhere else
    main = [o["run_id"] for o in history if not o["shadow"]]
    assert sorted(main) == sorted(run_key for run_key, *_ in runs)
    assert len(set(main)) == len(main) == PROCS * RUNS
    shadows = [(o["run_id"], o["tier"]) for o in history if o["shadow"]]
    assert len(set(shadows)) == len(shadows)
    assert {run_id for run_id, _ in shadows} <= set(main)
    assert all(o["graph"] == parent.plan.plan_id for o in history)
    assert [o.get("record_key") for o in history if not o["shadow"]] == main
    assert _seqs(fresh_db, parent.plan.plan_id, "arm") == list(range(1, len(history) + 1))
    # the controller kept moving: shadow runs, audits, compound runs and reverts to fine
    kinds = {(tier, shadow, audit) for _, tier, shadow, audit in runs}
    assert ("fine", True, False) in kinds
    assert any(audit for *_, audit in kinds)
    assert ("fine", False, False) in kinds and any(t != "fine" for t, *_ in kinds)

    tiers = parent.plan.group("arm").tiers
    built = frozenset(tiers)

    def decisions(lo: int, hi: int) -> set[tuple[str, bool, bool]]:
        """What decide() gives over each prefix history[:k], lo <= k <= hi."""
        return {
            (d.tier, d.shadow, d.audit)
            for d in (
                lc.decide(
                    history[:k],
                    POLICY,
                    mode="auto",
                    n_agents=len(KINDS),
                    has_tools="two_phase" in built,
                    built_tiers=built,
                    judge_active=True,
                )
                for k in range(lo, hi + 1)
            )
        }

    first: dict[str, int] = {}
    for i, o in enumerate(history):
        first.setdefault(o["run_id"], i)
    last = {o["run_id"]: i for i, o in enumerate(history)}
    for pid, _, seen, worker_runs, _ in got:
        # the decision each run acted on: decide() over a prefix that holds all of this
        # worker's earlier runs (their appends had committed) and nothing of this run
        floor = 0
        for run_key, tier, shadow, audit in worker_runs:
            assert (tier, shadow, audit) in decisions(floor, first[run_key]), (pid, run_key)
            floor = last[run_key] + 1
        # what explain() showed between two reads of n and m records
        for n, m, tier, shadow in seen:
            assert (tier, shadow) in {(t, s) for t, s, _ in decisions(n, m)}, (pid, n, m)
    # after the last run all workers (and the parent) agree
    finals = [final for *_, final in got]
    assert all(f == finals[0] for f in finals)
    assert parent.explain("arm").to_dict() == finals[0]
    print(f"\n{PROCS} processes x {RUNS} runs: {len(history)} observations, {elapsed:.1f} s")


# ------------------------------------------------------------------ schema and setup
def test_setup_is_idempotent_and_writes_a_schema_version(fresh_db: str) -> None:
    store = PostgresControllerStore(fresh_db)
    store.setup()
    store.setup()
    assert store.append(make_obs(1)) == 1
    PostgresControllerStore(fresh_db).setup()  # another worker: nothing changes
    with psycopg.connect(fresh_db) as raw:
        rows = raw.execute(f"SELECT component, version FROM {SCHEMA_TABLE}").fetchall()
    assert rows == [("controller_store", POSTGRES_SCHEMA_VERSION)]
    assert len(store.history("plan-1", "research")) == 1
    store.close()


def test_first_call_creates_the_tables_and_concurrent_setups_agree(fresh_db: str) -> None:
    stores = [PostgresControllerStore(fresh_db) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def first_use(i: int) -> None:
        barrier.wait()  # six workers open an empty database at once
        try:
            stores[i].append(make_obs(i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _seqs(fresh_db) == list(range(1, 7))
    for s in stores:
        s.close()


async def test_async_first_call_creates_the_tables(fresh_db: str) -> None:
    store = PostgresControllerStore(fresh_db)
    assert await store.agroups("plan-1") == []
    await store.asetup()
    assert await store.aappend(make_obs(1)) == 1
    store.close()


def test_newer_schema_asks_for_an_upgrade(fresh_db: str) -> None:
    PostgresControllerStore(fresh_db).setup()
    with psycopg.connect(fresh_db) as raw:
        raw.execute(f"UPDATE {SCHEMA_TABLE} SET version = 99")
    with pytest.raises(CapsuleConfigError, match="Upgrade langgraph-capsules") as err:
        PostgresControllerStore(fresh_db).history("plan-1", "research")
    assert err.value.code == "bad_store"
    assert "version 99" in str(err.value)


def test_foreign_table_of_the_same_name_is_refused(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as raw:
        raw.execute(f"CREATE TABLE {OBS_TABLE} (id INTEGER PRIMARY KEY, payload TEXT)")
    with pytest.raises(CapsuleConfigError, match="did not write") as err:
        PostgresControllerStore(fresh_db).setup()
    assert err.value.code == "bad_store"
    assert "payload" in str(err.value)


def test_record_key_is_unique_in_the_table(store: Any) -> None:
    store.append(make_obs(1, record_key="k"))
    store.append(make_obs(2))
    with psycopg.connect(store.conninfo) as raw, pytest.raises(psycopg.errors.UniqueViolation):
        raw.execute(
            f"INSERT INTO {OBS_TABLE} (graph, grp, seq, run_id, time, data, record_key) "
            "VALUES ('plan-1', 'research', 3, 'run-1', 0, '{}', 'k')"
        )
    # rows without a key may repeat (NULLs never conflict)
    assert store.append(make_obs(2)) == 3


def test_tampered_row_is_reported(store: Any) -> None:
    store.append(make_obs(1))
    with psycopg.connect(store.conninfo) as raw:
        raw.execute(f"UPDATE {OBS_TABLE} SET data = '{{\"x\": 1}}'")
    with pytest.raises(CapsuleConfigError, match="not a langgraph_capsules observation") as err:
        store.history("plan-1", "research")
    assert err.value.code == "bad_store"
    assert "research #1" in str(err.value)


# ------------------------------------------------------------------ locks and connections
def _group_lock(conn: psycopg.Connection[Any], graph: str, group: str) -> None:
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s || chr(31) || %s, 0))", (graph, group)
    )


def test_append_waits_for_the_group_lock_then_reports_store_busy(contract_db: str) -> None:
    store = PostgresControllerStore(contract_db, timeout=0.3)
    store.setup()
    with psycopg.connect(contract_db, autocommit=True) as raw:
        raw.execute(f"TRUNCATE {OBS_TABLE}")
    holder = psycopg.connect(contract_db)  # another client holds the group's lock
    try:
        _group_lock(holder, "plan-1", "research")
        began = time.monotonic()
        with pytest.raises(CapsuleConfigError) as err:
            store.append(make_obs(1))
        assert err.value.code == "store_busy"
        assert time.monotonic() - began >= 0.25
        assert "timeout" in str(err.value)
        assert store.append(make_obs(1, group="other")) == 1  # other groups are free
    finally:
        holder.rollback()
        holder.close()
    assert store.append(make_obs(1)) == 1  # nothing half-written, numbering intact
    store.close()


async def test_async_append_waits_without_blocking_the_loop(store: Any) -> None:
    """While another client holds the group's lock, an aappend waits in the database,
    and the event loop goes on running other tasks."""
    holder = await psycopg.AsyncConnection.connect(store.conninfo)
    await holder.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s || chr(31) || %s, 0))",
        ("plan-1", "research"),
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    tick = asyncio.create_task(ticker())
    append = asyncio.create_task(store.aappend(make_obs(1)))
    await asyncio.sleep(0.3)
    assert not append.done()
    assert ticks >= 10
    await holder.rollback()
    assert await append == 1
    tick.cancel()
    await holder.close()


async def test_async_twins_use_no_threads(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the async twins must not run in a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    assert await store.aappend(make_obs(1, record_key="k")) == 1
    assert await store.aappend(make_obs(1, record_key="k")) == 1
    assert [o["run_id"] for o in await store.ahistory("plan-1", "research")] == ["run-1"]
    assert await store.agroups("plan-1") == ["research"]


def test_lost_connections_raise_then_the_store_reconnects(store: Any) -> None:
    assert store.append(make_obs(1)) == 1
    store.history("plan-1", "research")  # an idle connection is kept
    with psycopg.connect(store.conninfo, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    time.sleep(0.1)
    # the server dropped the idle connection: the error propagates unchanged (the
    # controller's StoreGuard retries it) ...
    with pytest.raises(psycopg.OperationalError):
        store.append(make_obs(2))
    # ... and the next call opens a new connection; nothing was half-written
    assert store.append(make_obs(2)) == 2
    assert [o["run_id"] for o in store.history("plan-1", "research")] == ["run-1", "run-2"]


def test_unreachable_server_raises_a_connection_error(pg: PgServer) -> None:
    store = PostgresControllerStore(
        f"host=127.0.0.1 port={pg.port} dbname=no_such_database user={pg.superuser}"
    )
    with pytest.raises(psycopg.OperationalError):
        store.history("plan-1", "research")
    with pytest.raises(psycopg.OperationalError):
        asyncio.run(store.aappend(make_obs(1)))


def test_idle_connections_are_reused_and_closed(store: Any) -> None:
    for i in range(1, 6):
        store.append(make_obs(i))
        store.history("plan-1", "research")
    assert len(store._idle) == 1
    conn = store._idle[0]
    store.close()
    assert conn.closed and store._idle == []
    asyncio.run(store.ahistory("plan-1", "research"))
    assert len(store._aidle) == 1
    aconn = store._aidle[0]
    store.close()
    assert aconn.closed and store._aidle == []
    assert store.append(make_obs(6)) == 6  # reopens


def test_pickles_as_its_conninfo_and_hides_the_password(contract_db: str) -> None:
    store = PostgresControllerStore(contract_db + " password=s3cret", timeout=5)
    clone = pickle.loads(pickle.dumps(store))
    assert isinstance(clone, PostgresControllerStore)
    assert (clone.conninfo, clone.timeout) == (store.conninfo, 5.0)
    assert "s3cret" not in repr(store) and "dbname=contract" in repr(store)


@pytest.mark.parametrize(
    ("conninfo", "timeout", "needle"),
    [
        (42, 30.0, "needs a libpq connection string"),
        ("host=localhost dbname", 30.0, "could not parse"),
        ("dbname=x", 0, "timeout"),
        ("dbname=x", True, "timeout"),
    ],
)
def test_bad_arguments_name_the_fix(conninfo: Any, timeout: Any, needle: str) -> None:
    with pytest.raises(CapsuleConfigError, match=needle) as err:
        PostgresControllerStore(conninfo, timeout=timeout)
    assert err.value.code == "bad_store"


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(CapsuleConfigError) as err:
        PostgresControllerStore("dbname=x")
    assert err.value.code == "bad_store"
    assert "pip install 'langgraph-capsules[postgres]'" in str(err.value)


@pytest.mark.parametrize("field", ["graph", "group", "run_id", "record_key"])
def test_nul_characters_are_refused_before_the_database(store: Any, field: str) -> None:
    with pytest.raises(CapsuleConfigError, match="NUL") as err:
        store.append(make_obs(1, **{field: "a\x00b"}))
    assert err.value.code == "bad_observation"
    with pytest.raises(CapsuleConfigError) as err:
        store.history("plan-1", "re\x00search")
    assert err.value.code == "bad_store_query"
    # NUL inside the record's JSON text is fine (it is escaped)
    assert store.append(make_obs(1, tier="x\x00y")) == 1
    assert store.history("plan-1", "research")[0]["tier"] == "x\x00y"
