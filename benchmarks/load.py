"""Throughput under load: many concurrent ``ainvoke`` runs on a 50 ms async model.

The 14-node graph of ``benchmarks/overhead.py`` (scoping -> 12 extractors in four
fan-out groups of 3 -> briefer), with async nodes, runs N times concurrently
(``asyncio.gather`` of N ``ainvoke``) per arm and round:

* plain LangGraph (the builder compiled as is);
* capsules ``fine``, locked (14 calls per run, like plain LangGraph);
* capsules ``compound``, locked (standard tier: 6 calls per run);
* capsules ``auto`` over a store pre-filled with ``--seeded`` observations per group
  (the balanced policy, no judge, so the controller keeps the groups fine), against
  locked ``fine`` on the same graph.

The model awaits ``--latency`` seconds and costs almost no CPU itself, so the figures
measure LangGraph and this library. Arms are interleaved round by round (the order
rotates each round) in one process, so machine drift hits every arm alike. Per arm: the
median throughput (runs/s) over the rounds with its spread (min-max) and ratio to plain
LangGraph, CPU (process time, collector on) per run and its ratio, calls per run and
the share of wall time spent in the garbage collector (``gc.callbacks``).
Then the zero-latency measurement of ``benchmarks/overhead.py`` (sync ``invoke``, run
by run) and the issue's goals, each marked met or NO.

    python benchmarks/load.py [--runs 200] [--rounds 7] [--latency 0.05]
                              [--seeded 10000] [--overhead-runs 200] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import StateGraph
from pydantic import PrivateAttr
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import BUNDLE, KINDS, LENSES, State, measure, wire

import langgraph_capsules as lc

__all__ = ["SleepyChatModel", "build_async", "main"]

FINE = {"configurable": {"capsules": {"mode": "fine"}}}
COMPOUND = {"configurable": {"capsules": {"mode": "compound"}}}
INPUTS = {"overview": "Nordvik Sensors is an Oslo maker of vibration sensors. " * 5}
_ANSWER = "Nordvik reported steady growth in vibration sensors across three regions."
_USAGE = {"input_tokens": 400, "output_tokens": 12, "total_tokens": 412}


class SleepyChatModel(BaseChatModel):
    """A chat model that awaits ``latency`` seconds and answers at almost no CPU cost.

    A merged prompt (its reply skeleton of ``### SECTION i <nonce>`` lines) gets one
    short, distinct section per marker; any other prompt a fixed sentence."""

    latency: float = 0.05
    _calls: list[int] = PrivateAttr(default_factory=lambda: [0])

    @property
    def _llm_type(self) -> str:
        return "sleepy"

    @property
    def calls(self) -> int:
        return self._calls[0]

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        self._calls[0] += 1
        text = messages[-1].content
        if isinstance(text, str) and "\n### SECTION 1 " in text:
            skeleton = text.rpartition("Reply in exactly this format")[2]
            marks = [ln for ln in skeleton.splitlines() if ln.startswith("### SECTION ")]
            text = "\n\n".join(f"{m}\nTask {i}: {_ANSWER}" for i, m in enumerate(marks, 1))
        else:
            text = _ANSWER
        meta = {"finish_reason": "stop"}
        return AIMessage(content=text, usage_metadata=dict(_USAGE), response_metadata=meta)  # type: ignore[arg-type]

    def _generate(self, messages: list[BaseMessage], *a: Any, **kw: Any) -> ChatResult:
        time.sleep(self.latency)
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    async def _agenerate(self, messages: list[BaseMessage], *a: Any, **kw: Any) -> ChatResult:
        await asyncio.sleep(self.latency)
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])


def build_async(llm: Any) -> StateGraph[Any, Any, Any, Any]:
    """The 14-node graph of ``overhead.py`` with async nodes (``await llm.ainvoke``)."""

    async def scoping(state: State) -> dict[str, Any]:
        r = await llm.ainvoke(
            [SystemMessage("Frame the company."), HumanMessage(state["overview"])]
        )
        return {"scope": r.content}

    def extractor(lens: str, kind: str) -> Callable[[State], Coroutine[Any, Any, dict[str, Any]]]:
        async def node(state: State) -> dict[str, Any]:
            r = await llm.ainvoke(
                [
                    SystemMessage(f"You extract {kind} from the {lens} bundle."),
                    HumanMessage(
                        f"Frame:\n{state['scope']}\n\nBundle:\n\n{BUNDLE}\n\nList {kind}."
                    ),
                ]
            )
            return {"outputs": [f"{lens}/{kind}: {r.content}"]}

        return node

    async def briefer(state: State) -> dict[str, Any]:
        r = await llm.ainvoke(
            [SystemMessage("Write the brief."), HumanMessage("\n".join(state["outputs"]))]
        )
        return {"brief": r.content}

    return wire(scoping, extractor, briefer)


@dataclass
class Arm:
    name: str
    graph: Any
    config: dict[str, Any]
    model: SleepyChatModel
    throughput: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    gc_share: list[float] = field(default_factory=list)


class _GcClock:
    """Wall time spent in the cyclic garbage collector (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start


_GC = _GcClock()


async def _round(arm: Arm, n: int) -> None:
    """N concurrent runs of one arm: throughput, CPU per run and calls per run."""
    before = arm.model.calls
    g0 = _GC.total
    c0, t0 = time.process_time(), time.perf_counter()
    outs = await asyncio.gather(*(arm.graph.ainvoke(INPUTS, arm.config) for _ in range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    arm.gc_share.append((_GC.total - g0) / wall)
    if any(not o.get("brief") or len(o.get("outputs", ())) != 12 for o in outs):
        raise AssertionError(f"{arm.name}: a run lost outputs")
    arm.throughput.append(n / wall)
    arm.cpu.append(cpu / n)
    arm.calls.append((arm.model.calls - before) / n)


async def _seed(capsules: lc.CapsuleGraph, app: Any, n: int) -> None:
    """Give every group ``n`` observations: copies of one real fine run's record."""
    await app.ainvoke(INPUTS)  # auto, fresh store: each group records one fine run
    assert capsules.store is not None
    for group in LENSES:
        (obs,) = capsules.observations(group)
        for i in range(n - 1):
            rec: Any = dict(obs, run_id=f"seed-{i}", record_key=f"seed-{i}")
            await capsules.store.aappend(rec)


def make_arms(latency: float, seeded: int) -> list[Arm]:
    groups = {lens: [f"{lens}_{k}" for k in KINDS] for lens in LENSES}

    def model() -> tuple[SleepyChatModel, Any]:
        inner = SleepyChatModel(latency=latency)
        return inner, lc.CapsuleChatModel(inner)

    arms: list[Arm] = []
    inner, llm = model()
    arms.append(Arm("langgraph", build_async(llm).compile(), {}, inner))
    inner, llm = model()
    app = lc.capsulize(build_async(llm), groups=groups).compile()
    arms.append(Arm("capsules fine (locked)", app, FINE, inner))
    arms.append(Arm("capsules compound (locked)", app, COMPOUND, inner))
    inner, llm = model()
    auto = lc.capsulize(build_async(llm), groups=groups, policy="balanced")
    auto_app = auto.compile()
    asyncio.run(_seed(auto, auto_app, seeded))
    arms.append(Arm(f"capsules auto, {seeded:,} obs/group", auto_app, {}, inner))
    return arms


def _spread(xs: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    med = statistics.median(xs) * scale
    return f"{med:.{digits}f} ({min(xs) * scale:.{digits}f}-{max(xs) * scale:.{digits}f})"


def run_load(arms: list[Arm], n: int, rounds: int, warmup: int) -> None:
    """Interleaved rounds: every arm once per round, the order rotating."""

    async def all_rounds() -> None:
        for _ in range(warmup):
            for arm in arms:
                await _round(arm, n)
        for arm in arms:
            arm.throughput.clear()
            arm.cpu.clear()
            arm.calls.clear()
            arm.gc_share.clear()
        for r in range(rounds):
            gc.collect()
            for k in range(len(arms)):
                await _round(arms[(r + k) % len(arms)], n)

    gc.callbacks.append(_GC)
    try:
        asyncio.run(all_rounds())
    finally:
        gc.callbacks.remove(_GC)


def load_table(arms: list[Arm], n: int, rounds: int, latency: float) -> Table:
    plain = arms[0]
    tp0 = statistics.median(plain.throughput)
    cpu0 = statistics.median(plain.cpu)
    table = Table(
        title=f"{n} concurrent ainvoke runs x {rounds} interleaved rounds, "
        f"model awaits {latency * 1e3:.0f} ms: median (min-max)"
    )
    for col in ("arm", "runs/s", "ratio", "CPU ms/run", "ratio", "calls/run", "GC share"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for arm in arms:
        tp, cpu = statistics.median(arm.throughput), statistics.median(arm.cpu)
        table.add_row(
            arm.name,
            _spread(arm.throughput),
            f"{tp / tp0:.2f}x",
            _spread(arm.cpu, 1e3, 2),
            f"{cpu / cpu0:.2f}x",
            f"{statistics.median(arm.calls):.1f}",
            f"{statistics.median(arm.gc_share):.0%}",
        )
    return table


def _ratios(arms: list[Arm]) -> dict[str, float]:
    """Per arm: median throughput and CPU ratios of the per-round ratios."""
    plain, fine, compound, auto = arms
    out: dict[str, float] = {}
    for key, arm, base in (("fine", fine, plain), ("compound", compound, plain)):
        out[f"{key} tp"] = statistics.median(arm.throughput) / statistics.median(base.throughput)
        out[f"{key} cpu"] = statistics.median(arm.cpu) / statistics.median(base.cpu)
    out["auto cpu"] = statistics.median(auto.cpu) / statistics.median(fine.cpu)
    return out


def goals_table(ratios: dict[str, float], over: dict[str, float] | None) -> Table:
    goals: list[tuple[str, float, float, bool]] = [
        ("compound throughput / plain", ratios["compound tp"], 1.5, True),
        ("fine throughput / plain", ratios["fine tp"], 0.95, True),
        ("compound CPU per run / plain", ratios["compound cpu"], 1.0, False),
        ("fine CPU per run / plain", ratios["fine cpu"], 1.10, False),
        ("auto CPU per run / locked fine", ratios["auto cpu"], 1.10, False),
    ]
    if over is not None:
        goals += [
            ("overhead.py fine wall / plain", over["fine"], 1.10, False),
            ("overhead.py standard wall / plain", over["standard"], 1.5, False),
        ]
    table = Table(title="Goals (issue 12 item 4)")
    for col in ("goal", "measured", "target", "met"):
        table.add_column(col, justify="left" if col == "goal" else "right")
    for name, value, target, at_least in goals:
        met = value >= target if at_least else value <= target
        sign = ">=" if at_least else "<="
        table.add_row(name, f"{value:.2f}x", f"{sign} {target:.2f}x", "met" if met else "NO")
    return table


def overhead_table(times: dict[str, list[float]], runs: int) -> tuple[Table, dict[str, float]]:
    base = statistics.median(times["langgraph"])
    table = Table(
        title=f"benchmarks/overhead.py: zero-latency model, {runs} interleaved invoke runs, "
        "median ms/run (IQR)"
    )
    for col in ("arm", "ms/run", "ratio"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        med = statistics.median(ts)
        table.add_row(
            name, f"{med * 1e3:.2f} ({q[0] * 1e3:.2f}-{q[2] * 1e3:.2f})", f"{med / base:.2f}x"
        )
    ratios = {
        "fine": statistics.median(times["capsules fine"]) / base,
        "standard": statistics.median(times["capsules standard"]) / base,
    }
    return table, ratios


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="concurrent runs per round")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds per arm")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up rounds per arm")
    ap.add_argument("--latency", type=float, default=0.05, help="model latency, seconds")
    ap.add_argument("--seeded", type=int, default=10_000, help="observations per group")
    ap.add_argument(
        "--overhead-runs", type=int, default=200, help="overhead.py runs per arm (0: skip)"
    )
    ap.add_argument("--quick", action="store_true", help="a few small rounds (a smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.rounds, args.warmup = 4, 2, 0
        args.latency, args.seeded, args.overhead_runs = 0.001, 20, 3
    console = Console(width=140)
    arms = make_arms(args.latency, args.seeded)
    run_load(arms, args.runs, args.rounds, args.warmup)
    console.print(load_table(arms, args.runs, args.rounds, args.latency))
    over = None
    if args.overhead_runs > 0:
        times = measure(args.overhead_runs, warmup=min(10, args.overhead_runs))
        table, over = overhead_table(times, args.overhead_runs)
        console.print(table)
    else:
        console.print("overhead.py skipped: python benchmarks/overhead.py --runs 200")
    console.print(goals_table(_ratios(arms), over))


if __name__ == "__main__":
    main()
