"""Async runs use the controller store's async interface and never block the event loop.

A store that refuses sync I/O on a thread running an event loop (as LangGraph's
``AsyncPostgresStore`` does, and as ``langgraph dev`` refuses blocking calls) must see
only async reads and appends from ``ainvoke`` runs in ``auto`` mode, at every step of the
controller: fine runs, the switch run with its shadow, compound runs, unique inputs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import build_app

import langgraph_capsules as lc
from langgraph_capsules.stores import InMemoryControllerStore
from langgraph_capsules.stores._guard import StoreGuard
from langgraph_capsules.testing import ScriptedChatModel
from langgraph_capsules.types import Observation

KINDS = ("entities", "claims", "signals")


class LoopWatchStore(InMemoryControllerStore):
    """Records every sync call made from a thread that runs an event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.blocking: list[str] = []
        self.async_ops = 0

    def _watch(self, op: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.blocking.append(op)

    def append(self, obs: Observation) -> int:
        self._watch("append")
        return super().append(obs)

    def history(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        self._watch("history")
        return super().history(graph, group, since=since)

    def groups(self, graph: str) -> list[str]:
        self._watch("groups")
        return super().groups(graph)

    async def aappend(self, obs: Observation) -> int:
        self.async_ops += 1
        return InMemoryControllerStore.append(self, obs)

    async def ahistory(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        self.async_ops += 1
        return InMemoryControllerStore.history(self, graph, group, since=since)


def _overlap(task: str, reference: str, candidate: str) -> float:
    ref = set(reference.split())
    return len(ref & set(candidate.split())) / len(ref) if ref else 0.0


def _capsules(store: Any, *, async_nodes: bool) -> lc.CapsuleGraph:
    llm = lc.CapsuleChatModel(ScriptedChatModel())
    return lc.capsulize(
        build_app(llm, async_nodes=async_nodes, kinds=KINDS),
        groups={"arm": list(KINDS)},
        policy=lc.ControllerPolicy.aggressive(quality_floor=0.5),
        judge=_overlap,
        store=store,
    )


def _doc(i: int) -> str:  # every input is new, as on production traffic
    lines = [
        f"Company {i} sells sensors in {10 + i} countries.",
        f"Revenue grew {i}% in 2026 while margins held at {20 + i % 7}%.",
        f"Its largest rival, Rival {i}, cut prices twice this year.",
        f"The board plans {i % 5 + 1} new plants and a listing in {2027 + i % 3}.",
    ]
    return " ".join(lines * 4)  # a shared source long enough for a merge to save input


async def test_auto_async_runs_never_block_and_decide_as_sync_runs() -> None:
    store = LoopWatchStore()
    capsules = _capsules(store, async_nodes=True)
    app = capsules.compile()
    for i in range(8):
        out = await app.ainvoke({"doc": _doc(i)})
        assert out["brief"] and all(out[k] for k in KINDS)
    assert store.blocking == []  # not one sync store call on the loop
    assert store.async_ops >= 16  # a read per router and an append per gate
    guard = capsules.runtimes["arm"].store_guard
    assert guard.store_errors == 0
    tiers = [
        o["tier"] + ("+shadow" if o["shadow"] else "")
        for o in store.history(capsules.plan.plan_id, "arm")
    ]
    assert "standard" in tiers and "standard+shadow" in tiers  # the controller switched
    # the same inputs through sync invoke decide the same tiers, run by run
    sync_store = InMemoryControllerStore()
    sync = _capsules(sync_store, async_nodes=False)
    sync_app = sync.compile()
    for i in range(8):
        sync_app.invoke({"doc": _doc(i)})
    sync_tiers = [
        o["tier"] + ("+shadow" if o["shadow"] else "")
        for o in sync_store.history(sync.plan.plan_id, "arm")
    ]
    assert sync_tiers == tiers


async def test_concurrent_async_runs_record_every_run_once() -> None:
    store = LoopWatchStore()
    capsules = _capsules(store, async_nodes=True)
    app = capsules.compile()
    outs = await asyncio.gather(*(app.ainvoke({"doc": _doc(100 + i)}) for i in range(12)))
    assert all(o["brief"] for o in outs)
    assert store.blocking == []
    records = [o for o in store.history(capsules.plan.plan_id, "arm") if not o["shadow"]]
    assert len(records) == 12 and len({o["run_id"] for o in records}) == 12


class FlakyAsyncStore(InMemoryControllerStore):
    """Async appends fail ``fails`` times, then succeed; reads fail while ``down``."""

    def __init__(self, fails: int) -> None:
        super().__init__()
        self.fails = fails
        self.down = False

    async def aappend(self, obs: Observation) -> int:
        if self.fails:
            self.fails -= 1
            raise ConnectionError("store unavailable")
        return InMemoryControllerStore.append(self, obs)

    async def ahistory(self, graph: str, group: str, *, since: int = 0) -> list[Observation]:
        if self.down:
            raise ConnectionError("store unavailable")
        return InMemoryControllerStore.history(self, graph, group, since=since)


async def test_async_guard_retries_without_blocking_then_drops_and_counts() -> None:
    pauses: list[float] = []

    async def asleep(s: float) -> None:
        pauses.append(s)

    obs = _observation()
    guard = StoreGuard(asleep=asleep, sleep=lambda s: (_ for _ in ()).throw(AssertionError))
    store = FlakyAsyncStore(fails=2)
    assert await guard.aappend(store, obs) is True
    assert len(pauses) == 2 and store.history("g", "arm") == [obs]
    assert guard.store_errors == 0
    dead = FlakyAsyncStore(fails=99)
    assert await guard.aappend(dead, obs) is False
    assert guard.failed_appends == 1 and guard.take_unreported() == 1
    dead.down = True
    assert await guard.ahistory(dead, "g", "arm") is None
    assert guard.failed_reads == 1


async def test_an_unreadable_async_store_keeps_runs_going_on_fine() -> None:
    store = FlakyAsyncStore(fails=0)
    store.down = True
    capsules = _capsules(store, async_nodes=True)
    app = capsules.compile()
    for i in range(3):
        out = await app.ainvoke({"doc": _doc(200 + i)})
        assert out["brief"]
    runs = capsules.history("arm")
    assert [r["tier"] for r in runs] == ["fine"] * 3
    assert capsules.runtimes["arm"].store_guard.failed_reads >= 3


def _observation() -> Observation:
    return {  # type: ignore[typeddict-item]
        "graph": "g",
        "group": "arm",
        "run_id": "r1",
        "time": 0.0,
        "tier": "fine",
        "members": {},
        "calls": 3,
        "input_tokens": 900,
        "cached_tokens": 0,
        "output_tokens": 300,
        "latency_s": 1.5,
        "tool_calls": 0,
        "coordination_tokens": 0,
        "errors": 0,
        "quality": None,
        "shadow": False,
    }


def test_a_graph_factory_keeps_its_history_with_the_process_store() -> None:
    """``langgraph dev`` may call a graph factory per run: with ``store="process"`` every
    graph of the plan built in this process shares one history, so ``auto`` learns; with
    the default per-object store each new graph starts from nothing and stays fine."""

    def factory(store: Any) -> Any:
        llm = lc.CapsuleChatModel(ScriptedChatModel())
        return lc.capsulize(
            build_app(llm, kinds=KINDS),
            groups={"arm": list(KINDS)},
            policy=lc.ControllerPolicy.aggressive(quality_floor=0.5),
            judge=_overlap,
            store=store,
        )

    shared_tiers, fresh_tiers = [], []
    for i in range(7):
        shared = factory("process")
        shared.compile().invoke({"doc": _doc(300 + i)})
        shared_tiers.append(shared.history("arm")[-1]["tier"])
        fresh = factory(None)
        fresh.compile().invoke({"doc": _doc(300 + i)})
        fresh_tiers.append(fresh.history("arm")[-1]["tier"])
    assert shared_tiers[-1] == "standard" and fresh_tiers == ["fine"] * 7
    assert factory("process").runtimes["arm"].store is shared.runtimes["arm"].store


def test_an_unknown_store_names_the_choices() -> None:
    import pytest

    with pytest.raises(lc.CapsuleConfigError, match='"process"') as err:
        lc.capsulize(build_app(lc.CapsuleChatModel(ScriptedChatModel())), store="shared")
    assert err.value.code == "bad_store"
