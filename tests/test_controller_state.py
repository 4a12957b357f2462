"""Controller state: idempotent observations, store failures, incremental decisions.

* A gate that LangGraph re-runs on resume writes nothing new (its records are keyed by
  the gate's task id).
* A controller store that fails does not fail the user's run: appends are retried,
  then dropped and counted; a failed read falls back to the last known decision.
* ``IncrementalDecider`` (what ``GroupRuntime.decide`` uses) decides exactly what a
  full replay of the history decides, after every record.
"""

from __future__ import annotations

import logging
import operator
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from conftest import DOC, KINDS, build_app, extractor_messages
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

import langgraph_capsules as lc
from langgraph_capsules.controller._fold import Fold, Recent, clone, compact
from langgraph_capsules.controller._replay import Work, make_context, replay
from langgraph_capsules.controller.decide import IncrementalDecider, decide
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.stores import ControllerStore, InMemoryControllerStore
from langgraph_capsules.stores._guard import gate_run_id
from langgraph_capsules.testing import ScriptedChatModel, ScriptedError
from langgraph_capsules.types import COMPOUND_TIERS, Observation


# ------------------------------------------------------------ a graph whose gate can re-run
class SideState(TypedDict, total=False):
    doc: str
    scope: str
    entities: str
    claims: str
    signals: str
    side: str
    note: str
    brief: str
    log: Annotated[list[str], operator.add]


class SlowStore(InMemoryControllerStore):
    """A store whose appends take a while (a network round trip)."""

    def __init__(self, delay_s: float, *, race: Race | None = None) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.race = race

    def append(self, obs: Observation) -> int:
        if self.race is not None:  # say the write began, then hold it until note failed
            self.race.writing.set()
            self.race.failed.wait(timeout=5)
        time.sleep(self.delay_s)
        return super().append(obs)


@dataclass
class Race:
    """Orders a gate's store write and a sibling's failure: the sibling fails while the
    write is under way, whatever the machine's load."""

    writing: threading.Event = field(default_factory=threading.Event)
    failed: threading.Event = field(default_factory=threading.Event)


def side_app(
    llm: Any, *, side_fails: list[bool] | None = None, race: Race | None = None
) -> StateGraph[Any, Any, Any, Any]:
    """scoping -> (extractors | side -> note) -> briefer.

    ``note`` runs in the same superstep as the group's gate. When ``note`` fails while
    the gate is still writing to the store, LangGraph (``durability="exit"``) discards
    the gate's result and re-runs the gate on resume. ``side_fails`` pops one flag per
    ``note`` call: True raises (with a ``race``, once the gate's write has begun)."""

    def scoping(state: SideState) -> dict[str, Any]:
        r = llm.invoke([SystemMessage("Frame the company."), HumanMessage(state["doc"])])
        return {"scope": r.content, "log": ["scoping"]}

    def make(kind: str) -> Any:
        def node(state: SideState) -> dict[str, Any]:
            r = llm.invoke(extractor_messages(kind, dict(state)))
            return {kind: r.content, "log": [kind]}

        return node

    def side(state: SideState) -> dict[str, Any]:
        r = llm.invoke([SystemMessage("Name one risk."), HumanMessage(state["scope"])])
        return {"side": r.content, "log": ["side"]}

    def note(state: SideState) -> dict[str, Any]:
        if side_fails and side_fails.pop(0):
            if race is not None:
                race.writing.wait(timeout=5)
                race.failed.set()
            raise ScriptedError("note failed")
        r = llm.invoke([SystemMessage("Restate the risk."), HumanMessage(state["side"])])
        return {"note": r.content, "log": ["note"]}

    def briefer(state: SideState) -> dict[str, Any]:
        body = "\n".join(str(state.get(k, "")) for k in (*KINDS, "note"))
        r = llm.invoke([SystemMessage("Write a one-paragraph brief."), HumanMessage(body)])
        return {"brief": r.content, "log": ["briefer"]}

    b = StateGraph(SideState)
    for name, fn in [("scoping", scoping), ("side", side), ("note", note), ("briefer", briefer)]:
        b.add_node(name, fn)
    for k in KINDS:
        b.add_node(k, make(k))
        b.add_edge("scoping", k)
        b.add_edge(k, "briefer")
    b.add_edge(START, "scoping")
    b.add_edge("scoping", "side")
    b.add_edge("side", "note")
    b.add_edge("note", "briefer")
    b.add_edge("briefer", END)
    return b


def _keys(obs: Sequence[Observation]) -> list[tuple[str, bool, str]]:
    return [(o["run_id"], o["shadow"], o["tier"]) for o in obs]


# ------------------------------------------------------------------ (a) crash and resume
def test_crash_and_resume_under_provider_faults_records_each_run_once() -> None:
    """200 threads, 20% of model calls fail; each failed thread is resumed from its
    checkpoint with ``invoke(None, config)`` until it completes. ``durability="exit"``
    re-runs every task of a failed superstep on resume, the gate included."""
    rng = random.Random(7)
    failing = {i for i in range(20_000) if rng.random() < 0.2}
    scripted = ScriptedChatModel(fail_calls=failing, answer_words=8)
    capsules = lc.capsulize(
        side_app(lc.CapsuleChatModel(scripted)),
        groups={"arm": list(KINDS)},
        policy="aggressive",
        store=SlowStore(0.003),
    )
    app = capsules.compile(checkpointer=InMemorySaver())
    runtime = capsules.runtimes["arm"]
    closes: list[str] = []
    keep = runtime.record
    runtime.record = lambda rec: (closes.append(rec["run_key"]), keep(rec))[1]
    completed = resumes = 0
    for t in range(200):
        cfg: dict[str, Any] = {"configurable": {"thread_id": f"t{t}"}}
        payload: dict[str, Any] | None = {"doc": DOC}
        for _attempt in range(50):
            try:
                out = app.invoke(payload, cfg, durability="exit")
            except ScriptedError:
                payload, resumes = None, resumes + 1
                continue
            assert out["brief"] and out["note"]
            completed += 1
            break
    observations = capsules.observations("arm")
    gate_runs = capsules.history("arm")
    assert completed == 200 and resumes > 40  # the faults really hit
    assert len(closes) > completed  # gates really re-ran on resume ...
    assert len(gate_runs) == completed  # ... and history keeps one record per run
    assert len(observations) == completed  # ... and each group-run is recorded once
    assert len({o["run_id"] for o in observations}) == completed
    assert {o["tier"] for o in observations} >= {"fine", "standard"}  # auto switched
    assert {r["run_key"] for r in gate_runs} == {o["run_id"] for o in observations}


# ------------------------------------------------------------- (b) a gate re-run on resume
def test_gate_rerun_on_resume_appends_nothing_new() -> None:
    # note fails while the gate is writing, on any machine (a 20 ms write alone lost
    # that race under load)
    race = Race()
    capsules = lc.capsulize(
        side_app(lc.CapsuleChatModel(ScriptedChatModel()), side_fails=[True], race=race),
        groups={"arm": list(KINDS)},
        store=SlowStore(0.02, race=race),
    )
    app = capsules.compile(checkpointer=InMemorySaver())
    runtime = capsules.runtimes["arm"]
    closes: list[str] = []
    keep = runtime.record
    runtime.record = lambda rec: (closes.append(rec["run_key"]), keep(rec))[1]
    cfg: dict[str, Any] = {"configurable": {"thread_id": "resume"}}
    with pytest.raises(ScriptedError):
        app.invoke({"doc": DOC}, cfg, durability="exit")
    assert len(capsules.observations("arm")) == 1  # the gate ran and appended
    out = app.invoke(None, cfg, durability="exit")
    assert out["note"] and out["brief"]
    assert len(closes) == 2 and closes[0] == closes[1]  # the gate ran twice ...
    (first,) = capsules.history("arm")  # ... and one run record is kept
    (obs,) = capsules.observations("arm")  # ... and appended once
    assert obs["run_id"] == first["run_key"] == obs["record_key"]
    # a new run on the same thread is a new task: a new record
    app.invoke({"doc": DOC}, cfg)
    assert len(capsules.observations("arm")) == 2


def test_switch_run_records_are_keyed_apart_and_written_once() -> None:
    """A switch run's fine record and its shadow records share a run_id; each has its own
    record_key, and a second close of the same gate task writes none of them again."""
    capsules = lc.capsulize(
        build_app(lc.CapsuleChatModel(ScriptedChatModel())),
        groups={"arm": list(KINDS)},
        policy=lc.ControllerPolicy.aggressive(quality_floor=0.99),
        judge=lambda task, ref, cand: 0.5,  # below the floor: every shadow tier is tried
    )
    app = capsules.compile()
    for _ in range(3):
        app.invoke({"doc": DOC})
    records = capsules.observations("arm")
    switch = [o for o in records if o["run_id"] == records[-1]["run_id"]]
    assert [o["shadow"] for o in switch] == [False, True, True]
    assert len({o["record_key"] for o in switch}) == 3
    runtime = capsules.runtimes["arm"]
    store = capsules.store
    for o in switch:  # the gate re-runs and appends the same records
        store.append(dict(o, time=o["time"] + 1.0))  # type: ignore[arg-type]
    assert capsules.observations("arm") == records
    assert runtime.decide() == runtime.decide_over(records)


def test_gate_run_id_is_the_task_id() -> None:
    cfg = {
        "metadata": {"langgraph_checkpoint_ns": "gate__arm:1f0e-aa"},
        "configurable": {"thread_id": "t"},
    }
    other_task = {**cfg, "metadata": {"langgraph_checkpoint_ns": "gate__arm:1f0e-ab"}}
    other_thread = {**cfg, "configurable": {"thread_id": "u"}}
    assert gate_run_id(cfg) == gate_run_id(dict(cfg))
    assert len({gate_run_id(cfg), gate_run_id(other_task), gate_run_id(other_thread)}) == 3
    assert gate_run_id({}) is None and gate_run_id({"metadata": {}}) is None


# -------------------------------------------------------------- (c) a store that fails
LOCKED = sqlite3.OperationalError("database is locked")


def _sqlite_capsules(tmp_path: Path, **kw: Any) -> lc.CapsuleGraph:
    return lc.capsulize(
        build_app(lc.CapsuleChatModel(ScriptedChatModel())),
        groups={"arm": list(KINDS)},
        policy="aggressive",
        store=lc.SqliteControllerStore(tmp_path / "controller.db"),
        **kw,
    )


def _fail(times: int, real: Any) -> Any:
    """A store method that raises ``database is locked`` ``times`` times, then works."""
    left = [times]

    def method(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise LOCKED
        return real(*args, **kwargs)

    return method


def test_locked_store_append_is_retried_then_dropped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    capsules = _sqlite_capsules(tmp_path)
    app = capsules.compile()
    store, guard = capsules.store, capsules.runtimes["arm"].store_guard
    monkeypatch.setattr(guard, "sleep", lambda s: None)
    # briefly locked: the retries get it in
    monkeypatch.setattr(store, "append", _fail(2, store.append))
    assert app.invoke({"doc": DOC})["brief"]
    assert len(capsules.observations("arm")) == 1
    assert guard.failed_appends == 0 and capsules.history("arm")[-1]["store_errors"] == 0
    # locked for longer than the retries: the run still completes, the record is dropped
    monkeypatch.setattr(store, "append", _fail(10**6, store.append))
    with caplog.at_level(logging.WARNING, logger="langgraph_capsules.stores"):
        out = app.invoke({"doc": DOC})
    assert out["brief"] and all(out[k] for k in KINDS)
    assert len(capsules.observations("arm")) == 1
    assert guard.failed_appends == 1
    assert capsules.history("arm")[-1]["store_errors"] == 1
    assert "database is locked" in caplog.text and "dropped" in caplog.text
    report = capsules.report(print_=False)
    assert report.data["groups"]["arm"]["runs"][-1]["store_errors"] == 1


def test_locked_store_read_falls_back_to_the_last_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capsules = _sqlite_capsules(tmp_path)
    app = capsules.compile()
    store, runtime = capsules.store, capsules.runtimes["arm"]
    # no decision yet and the store is unreadable: the run is fine, and counted
    real_history = store.history
    monkeypatch.setattr(store, "history", _fail(10**6, real_history))
    assert app.invoke({"doc": DOC})["brief"]
    assert runtime.store_guard.failed_reads >= 1
    assert capsules.history("arm")[-1]["tier"] == "fine"
    assert capsules.history("arm")[-1]["store_errors"] >= 1
    monkeypatch.setattr(store, "history", real_history)
    app.invoke({"doc": DOC})  # two fine observations: aggressive now merges
    assert runtime.decide().tier == "standard"
    reads = runtime.store_guard.failed_reads
    monkeypatch.setattr(store, "history", _fail(10**6, real_history))
    assert app.invoke({"doc": DOC})["brief"]
    assert capsules.history("arm")[-1]["tier"] == "standard"  # the last known decision
    assert runtime.store_guard.failed_reads > reads
    assert "could not be read" in runtime.decide().reasons[0]
    monkeypatch.setattr(store, "history", real_history)
    assert [o["tier"] for o in capsules.observations("arm")] == ["fine", "fine", "standard"]


# ---------------------------------------------------------- (d) incremental == full replay
def _random_setup(rng: random.Random) -> tuple[ControllerPolicy, dict[str, Any]]:
    preset = rng.choice(["aggressive", "balanced", "conservative"])
    over: dict[str, Any] = {
        "min_observations": rng.choice([1, 2, 3]),
        "window_size": rng.choice([2, 3, 5]),
    }
    if rng.random() < 0.7:
        over["quality_floor"] = rng.choice([0.5, 0.7, 0.8])
    if rng.random() < 0.3:
        over["latency_threshold_ms"] = rng.choice([500.0, 2000.0])
    if rng.random() < 0.3:
        over["compose_at"], over["decompose_at"] = 0.16, 0.08
    has_tools = rng.random() < 0.3
    kw = {
        "n_agents": rng.choice([1, 2, 3, 3, 4]),
        "depth": rng.choice([0, 0, 1]),
        "has_tools": has_tools,
        "built_tiers": frozenset(
            {"fine", "standard", "sequential"} | ({"two_phase"} if has_tools else set())
        ),
        "judge_active": rng.random() < 0.7,
    }
    return getattr(ControllerPolicy, preset)(**over), kw


def _record(
    rng: random.Random, run_id: str, tier: str, *, shadow: bool = False, quality: Any = None
) -> Observation:
    fine = tier == "fine"
    members = {
        f"m{i}": {
            "input_tokens": 100,
            "cached_tokens": 0,
            "output_tokens": 50,
            "calls": 1,
            "tool_calls": 0,
            "latency_s": 0.1,
        }
        for i in range(rng.choice([0, 2, 3]))
    }
    obs: dict[str, Any] = {
        "graph": "g",
        "group": "G",
        "run_id": run_id,
        "time": 0.0,
        "tier": tier,
        "members": members,
        "calls": rng.randint(1, 8),
        "input_tokens": rng.randint(200, 5000),
        "cached_tokens": 0,
        "output_tokens": rng.randint(50, 6000),
        "latency_s": rng.uniform(0.1, 4.0),
        "tool_calls": rng.randint(0, 10),
        "coordination_tokens": 0 if fine else rng.randint(0, 400),
        "errors": rng.choice([0, 0, 0, 1, 2]),
        "quality": quality,
        "shadow": shadow,
    }
    if rng.random() < 0.1:
        obs["judge_error"], obs["quality"] = True, None
    if not fine and not shadow and rng.random() < 0.2:
        obs["audit"], obs["audit_input_tokens"] = True, rng.randint(0, 3000)
    return obs  # type: ignore[return-value]


def _quality(rng: random.Random) -> float | None:
    return rng.choice([None, round(rng.uniform(0.0, 1.0), 3), round(rng.uniform(0.6, 1.0), 3)])


def _random_history(
    rng: random.Random, n_records: int, policy: ControllerPolicy, kw: dict[str, Any]
) -> Iterator[list[Observation]]:
    """Yield the history after each append. Runs follow the controller's own decisions
    (so switches, shadow runs, quality readings, escalations and reverts happen), with
    noise: locked-mode and unknown-tier runs, stray shadow records, records for an
    earlier run id, and a run's later records delayed past other runs' records."""
    history: list[Observation] = []
    pending: list[tuple[int, Observation]] = []
    k = 0
    while len(history) < n_records:
        d = decide(history, policy, mode="auto", **kw)
        k += 1
        run_id = f"r{k}"
        if k > 2 and rng.random() < 0.03:
            run_id = f"r{rng.randint(max(1, k - 4), k - 1)}"
        u = rng.random()
        if u < 0.05:
            tier = rng.choice(["fine", *COMPOUND_TIERS, "bogus"])
            recs = [_record(rng, run_id, tier, quality=_quality(rng))]
        elif d.shadow:
            recs = [_record(rng, run_id, "fine")]
            tried = d.shadow_tiers[: rng.randint(1, len(d.shadow_tiers))]
            recs += [_record(rng, run_id, t, shadow=True, quality=_quality(rng)) for t in tried]
        elif d.tier == "fine":
            recs = [_record(rng, run_id, "fine")]
        else:
            recs = [_record(rng, run_id, d.tier, quality=_quality(rng))]
        if rng.random() < 0.05:
            tier = rng.choice(COMPOUND_TIERS)
            recs.append(_record(rng, run_id, tier, shadow=True, quality=_quality(rng)))
        pending.append((0, recs[0]))
        pending += [(rng.choice([0, 0, 1, 2, 5]), r) for r in recs[1:]]
        waiting: list[tuple[int, Observation]] = []
        for delay, r in pending:
            if delay == 0:
                history.append(r)
                yield history
            else:
                waiting.append((delay - 1, r))
        pending = waiting


@pytest.mark.parametrize("seed", range(12))
def test_incremental_decisions_equal_the_full_replay(seed: int) -> None:
    rng = random.Random(seed)
    policy, kw = _random_setup(rng)
    every = IncrementalDecider(policy, undo_runs=rng.choice([1, 2, 16]), **kw)
    sometimes = IncrementalDecider(policy, **kw)
    checked = 0
    for history in _random_history(rng, 90, policy, kw):
        full = decide(history, policy, mode="auto", **kw)
        assert every.update(lambda since, h=history: h[since:])
        assert every.decide() == full, (seed, len(history))
        assert every.decide("observe") == decide(history, policy, mode="observe", **kw)
        if rng.random() < 0.3:  # reads that straddle runs
            assert sometimes.update(lambda since, h=history: h[since:])
            assert sometimes.decide() == full, (seed, len(history))
        checked += 1
    assert checked >= 90


@pytest.mark.parametrize("seed", range(6))
async def test_async_updates_equal_the_full_replay(seed: int) -> None:
    """``aupdate`` (what async runs use) decides as the full replay does, also when the
    store's order shifts under it or a sync update moves the fold between its read and
    its fold."""
    rng = random.Random(100 + seed)
    policy, kw = _random_setup(rng)
    decider = IncrementalDecider(policy, **kw)
    reads: list[int] = []
    for history in _random_history(rng, 60, policy, kw):
        view = list(history)
        if rng.random() < 0.1 and len(view) > 3:  # the last append sorted in earlier
            view[-2], view[-1] = view[-1], view[-2]

        async def read(since: int, h: list[Observation] = view) -> list[Observation]:
            reads.append(since)
            if rng.random() < 0.15:  # another worker folds first, by the sync path
                decider.update(lambda n: h[n:])
            return h[since:]

        assert await decider.aupdate(read)
        assert decider.decide() == decide(view, policy, mode="auto", **kw), (seed, len(view))
    assert 0 in reads[1:]  # some updates had to read the whole history again


async def test_async_update_reports_an_unreadable_store() -> None:
    decider = IncrementalDecider(ControllerPolicy(), n_agents=2)

    async def broken(since: int) -> None:
        return None

    assert await decider.aupdate(broken) is False
    assert decider.consumed == 0 and decider.decide().tier == "fine"


def test_random_histories_exercise_switches_reverts_and_late_records() -> None:
    """The generator behind the equality test reaches what it must cover."""
    switched = reverted = shadowed = late = 0
    for seed in range(12):
        rng = random.Random(seed)
        policy, kw = _random_setup(rng)
        *_, history = _random_history(rng, 90, policy, kw)
        state = decide(history, policy, mode="auto", **kw).state
        switched += state.switches > 0
        reverted += state.revert_count > 0
        shadowed += any(o["shadow"] for o in history)
        ids = [o["run_id"] for o in history]
        late += any(ids[i] != ids[i - 1] and ids[i] in ids[: i - 1] for i in range(1, len(ids)))
    assert min(switched, reverted, shadowed, late) >= 3


def test_incremental_reads_only_the_new_records() -> None:
    """Constant work per run: each update reads the new records plus one of overlap."""
    rng = random.Random(3)
    policy = ControllerPolicy.aggressive(quality_floor=0.7)
    kw: dict[str, Any] = {"n_agents": 3, "judge_active": True}
    decider = IncrementalDecider(policy, **kw)
    reads: list[int] = []
    history: list[Observation] = []

    def read(since: int) -> list[Observation]:
        got = history[since:]
        reads.append(len(got))
        return got

    for history in _random_history(rng, 400, policy, kw):  # noqa: B007 (read() uses it)
        decider.update(read)
    assert decider.consumed == len(history) >= 400 and decider.rebuilds == 0
    assert max(reads) <= 2
    assert decider.decide() == decide(history, policy, mode="auto", **kw)


def test_incremental_rebuilds_when_the_store_order_shifts() -> None:
    policy, kw = ControllerPolicy.aggressive(), {"n_agents": 3}
    rng = random.Random(5)
    history = [_record(rng, f"r{i}", "fine") for i in range(6)]
    decider = IncrementalDecider(policy, **kw)
    decider.update(lambda since: history[since:])
    # a record that another worker appended concurrently sorts before the last one read
    history.insert(3, _record(rng, "x", "standard"))
    history.append(_record(rng, "r9", "fine"))
    decider.update(lambda since: history[since:])
    assert decider.rebuilds == 1
    assert decider.decide() == decide(history, policy, mode="auto", **kw)
    # an unreadable store leaves the state as it was
    assert decider.update(lambda since: None) is False
    assert decider.consumed == len(history)


def test_runtime_decide_reads_since_the_last_record(monkeypatch: pytest.MonkeyPatch) -> None:
    capsules = lc.capsulize(
        build_app(lc.CapsuleChatModel(ScriptedChatModel())),
        groups={"arm": list(KINDS)},
        policy="aggressive",
    )
    app = capsules.compile()
    store: ControllerStore = capsules.store
    assert isinstance(store, InMemoryControllerStore)
    seen: list[int] = []
    real = store.history

    def history(graph: str, group: str, *, since: int = 0) -> list[Observation]:
        seen.append(since)
        return real(graph, group, since=since)

    monkeypatch.setattr(store, "history", history)
    for _ in range(6):
        app.invoke({"doc": DOC})
    assert sorted(set(seen)) == [0, 1, 2, 3, 4]  # never the whole history again
    runtime = capsules.runtimes["arm"]
    assert runtime.decide() == runtime.decide_over(real(capsules.plan.plan_id, "arm"))


def test_compacted_state_replays_like_the_full_lists() -> None:
    """Bounding the state's lists changes nothing the controller reads."""
    rng = random.Random(11)
    policy = ControllerPolicy.balanced(window_size=3)
    history = [_record(rng, f"r{i}", "fine") for i in range(200)]
    ctx = make_context(policy, 3, 0, False, frozenset({"fine", "standard"}), False)
    fold = Fold(ctx)
    assert fold.extend(history)
    assert isinstance(fold.work.fresh_fine, Recent)
    assert list.__len__(fold.work.fresh_fine) <= 6 and len(fold.work.fresh_fine) == 200
    assert len(fold.work.fine_outputs) <= 6
    assert fold.work.fresh_fine[-3:] == replay(history, ctx).fresh_fine[-3:]
    with pytest.raises(IndexError):
        fold.work.fresh_fine[0]
    snapshot = clone(fold.work)
    assert isinstance(snapshot, Work) and snapshot.fresh_fine is not fold.work.fresh_fine
    snapshot.fresh_fine.append(1.0)
    snapshot.quality.setdefault("standard", []).append(0.5)
    assert len(fold.work.fresh_fine) == 200 and "standard" not in fold.work.quality
    compact(snapshot, 3)
    assert len(snapshot.fresh_fine) == 201
