"""What the controller costs per run as a group's history grows.

1. ``decide()`` at 100, 1,000 and 10,000 observations per group: the full replay
   (``decide(history, ...)``, what every ``auto`` run did before) against the
   incremental path (``IncrementalDecider``: fold the new run, decide), each measured
   alone and with the read from an ``InMemoryControllerStore`` (the full replay reads
   and decodes the whole history, the incremental path only the new records). The
   history is written by the controller's own decisions (switches, shadow runs, quality
   readings, reverts), so the replay does real work.
2. ``auto`` against locked ``fine`` on the zero-latency 14-node graph of
   ``benchmarks/overhead.py`` (4 groups of 3), interleaved run by run, with an empty
   store and with 10,000 observations per group already in it.

    python benchmarks/controller_cost.py [--runs 200] [--repeats 30] [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import KINDS, LENSES, build

import langgraph_capsules as lc
from langgraph_capsules.controller.decide import IncrementalDecider, decide
from langgraph_capsules.stores import InMemoryControllerStore
from langgraph_capsules.testing import ScriptedChatModel
from langgraph_capsules.types import Observation

POLICY = lc.ControllerPolicy.aggressive(quality_floor=0.7, min_observations=3, window_size=10)
KW: dict[str, Any] = {"n_agents": 3, "judge_active": True}


def _record(rng: random.Random, run_id: str, tier: str, *, shadow: bool = False) -> Observation:
    fine = tier == "fine"
    quality = None if fine and not shadow else rng.choice([None, 0.55, 0.75, 0.8, 0.9, 0.95])
    return {
        "graph": "bench",
        "group": "G",
        "run_id": run_id,
        "time": 0.0,
        "tier": tier,
        "members": {},
        "calls": 3 if fine else 1,
        "input_tokens": rng.randint(2000, 5000),
        "cached_tokens": 0,
        "output_tokens": rng.randint(300, 2400),
        "latency_s": rng.uniform(0.5, 3.0),
        "tool_calls": rng.randint(0, 8),
        "coordination_tokens": 0 if fine else rng.randint(50, 300),
        "errors": rng.choice([0, 0, 0, 0, 1]),
        "quality": quality,
        "shadow": shadow,
    }


def history_of(n: int, seed: int = 0) -> list[Observation]:
    """``n`` observations written by following the controller's own decisions."""
    rng = random.Random(seed)
    history: list[Observation] = []
    decider = IncrementalDecider(POLICY, **KW)

    def read(since: int) -> list[Observation]:
        return history[since:]

    k = 0
    while len(history) < n:
        decider.update(read)
        d = decider.decide()
        k += 1
        if d.shadow:
            history.append(_record(rng, f"r{k}", "fine"))
            history += [_record(rng, f"r{k}", t, shadow=True) for t in d.shadow_tiers[:1]]
        else:
            history.append(_record(rng, f"r{k}", d.tier))
    return history[:n]


def _stats(times_s: Sequence[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(times_s, n=4) if len(times_s) > 1 else [times_s[0]] * 3
    return statistics.median(times_s) * 1e3, q[0] * 1e3, q[2] * 1e3


def _ms(times_s: Sequence[float]) -> str:
    med, lo, hi = _stats(times_s)
    digits = 3 if med < 1 else 2 if med < 100 else 0
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def decide_cost(sizes: Sequence[int], repeats: int) -> Table:
    """Per-run decide() cost at each history size: full replay vs incremental."""
    table = Table(title="decide() per run, ms: median (IQR)")
    for col in ("observations", "full replay", "incremental", "speedup"):
        table.add_column(col, justify="right")
    table.add_column("with store read: full", justify="right")
    table.add_column("incremental", justify="right")
    for n in sizes:
        reps = max(5, min(repeats, 200_000 // max(n, 1)))
        full, inc, full_io, inc_io = _measure(n, reps)
        ratio = statistics.median(full) / statistics.median(inc)
        table.add_row(f"{n:,}", _ms(full), _ms(inc), f"{ratio:,.0f}x", _ms(full_io), _ms(inc_io))
    return table


def _measure(n: int, reps: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """Time ``reps`` runs, each adding one observation to a history of about ``n``."""
    history = history_of(n + reps)
    upto: list[Observation] = history[: n - 1]
    store = InMemoryControllerStore()
    for obs in upto:
        store.append(obs)

    def read(since: int) -> list[Observation]:
        return upto[since:]

    def read_store(since: int) -> list[Observation]:
        return store.history("bench", "G", since=since)

    decider = IncrementalDecider(POLICY, **KW)
    decider.update(read)
    io_decider = IncrementalDecider(POLICY, **KW)
    io_decider.update(read_store)
    full: list[float] = []
    inc: list[float] = []
    full_io: list[float] = []
    inc_io: list[float] = []
    gc.collect()
    for r in range(reps):
        upto = history[: n + r]  # one more observation each repeat
        store.append(upto[-1])
        t0 = time.perf_counter()
        expected = decide(upto, POLICY, mode="auto", **KW)
        t1 = time.perf_counter()
        decider.update(read)
        got = decider.decide()
        t2 = time.perf_counter()
        decide(store.history("bench", "G"), POLICY, mode="auto", **KW)
        t3 = time.perf_counter()
        io_decider.update(read_store)
        io_decider.decide()
        t4 = time.perf_counter()
        if got != expected:
            raise AssertionError(f"incremental decision differs at {n + r} observations")
        full.append(t1 - t0)
        inc.append(t2 - t1)
        full_io.append(t3 - t2)
        inc_io.append(t4 - t3)
    return full, inc, full_io, inc_io


def _seed(capsules: lc.CapsuleGraph, app: Any, inputs: dict[str, Any], n: int) -> None:
    """Give every group ``n`` observations: copies of one real fine run's record."""
    app.invoke(inputs)  # auto, fresh store: each group records one fine run
    for group in LENSES:
        (obs,) = capsules.observations(group)
        for i in range(n - 1):
            capsules.store.append(dict(obs, run_id=f"seed-{i}", record_key=f"seed-{i}"))  # type: ignore[arg-type]


def auto_overhead(runs: int, warmup: int, seeded: int) -> Table:
    """``auto`` vs locked ``fine`` on the 14-node graph, interleaved run by run."""
    llm = lc.CapsuleChatModel(ScriptedChatModel(answer_words=12, cache_min_tokens=10**9))
    builder = build(llm)
    groups = {lens: [f"{lens}_{k}" for k in KINDS] for lens in LENSES}
    inputs = {"overview": "Nordvik Sensors is an Oslo maker of vibration sensors. " * 5}
    fresh = lc.capsulize(builder, groups=groups, policy="balanced")
    full = lc.capsulize(builder, groups=groups, policy="balanced")
    fresh_app, full_app = fresh.compile(), full.compile()
    _seed(full, full_app, inputs, seeded)
    fine_cfg = {"configurable": {"capsules": {"mode": "fine"}}}
    arms: dict[str, tuple[Any, dict[str, Any]]] = {
        "capsules fine (locked)": (fresh_app, fine_cfg),
        "capsules auto, empty store": (fresh_app, {}),
        f"capsules auto, {seeded:,} obs/group": (full_app, {}),
    }
    times: dict[str, list[float]] = {k: [] for k in arms}

    def once(graph: Any, cfg: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        graph.invoke(inputs, cfg)
        return time.perf_counter() - t0

    for _ in range(warmup):
        for graph, cfg in arms.values():
            once(graph, cfg)
    gc.collect()
    for _ in range(runs):  # interleaved: A B C A B C ...
        for name, (graph, cfg) in arms.items():
            times[name].append(once(graph, cfg))
    tiers = {o["tier"] for c in (fresh, full) for g in LENSES for o in c.observations(g)}
    base = statistics.median(times["capsules fine (locked)"])
    table = Table(
        title=f"14-node graph, zero-latency model, {runs} interleaved runs "
        f"(auto ran tiers: {', '.join(sorted(tiers))})"
    )
    for col in ("arm", "median ms/run (IQR)", "ratio"):
        table.add_column(col, justify="right" if col != "arm" else "left")
    for name, ts in times.items():
        table.add_row(name, _ms(ts), f"{statistics.median(ts) / base:.2f}x")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000", help="observations per group")
    ap.add_argument("--repeats", type=int, default=30, help="decide() timings per size")
    ap.add_argument("--runs", type=int, default=200, help="graph runs per arm")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seeded", type=int, default=10_000, help="observations per group")
    args = ap.parse_args()
    console = Console(width=140)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    console.print(decide_cost(sizes, args.repeats))
    console.print(auto_overhead(args.runs, args.warmup, args.seeded))


if __name__ == "__main__":
    main()
