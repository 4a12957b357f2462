"""Overhead of the capsule pass itself, on a zero-latency scripted model.

A 14-node graph (scoping -> 12 extractors in four fan-out groups of 3 -> briefer) runs
as plain LangGraph, as capsules fine and as capsules standard, interleaved run by run
in one process so machine drift hits every arm alike. Prints the median wall time per
run with its spread (IQR) and the ratios to plain LangGraph.

    python benchmarks/overhead.py [--runs 200] [--async]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import operator
import statistics
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel

LENSES = ("competitive", "product", "financial", "risk")
KINDS = ("entities", "claims", "signals")
BUNDLE = " ".join(
    f"Fact {i}: the company reported figure {i * 7} in region {i % 5}." for i in range(40)
)


class State(TypedDict, total=False):
    overview: str
    scope: str
    outputs: Annotated[list[str], operator.add]
    brief: str


def wire(
    scoping: Any, extractor: Callable[[str, str], Any], briefer: Any
) -> StateGraph[Any, Any, Any, Any]:
    """The 14-node graph: scoping -> 12 extractors (one per lens and kind) -> briefer."""
    b = StateGraph(State)
    b.add_node("scoping", scoping)
    b.add_node("briefer", briefer)
    b.add_edge(START, "scoping")
    for lens in LENSES:
        for kind in KINDS:
            name = f"{lens}_{kind}"
            b.add_node(name, extractor(lens, kind))
            b.add_edge("scoping", name)
            b.add_edge(name, "briefer")
    b.add_edge("briefer", END)
    return b


def build(llm: Any) -> StateGraph[Any, Any, Any, Any]:
    def scoping(state: State) -> dict[str, Any]:
        r = llm.invoke([SystemMessage("Frame the company."), HumanMessage(state["overview"])])
        return {"scope": r.content}

    def extractor(lens: str, kind: str) -> Callable[[State], dict[str, Any]]:
        def node(state: State) -> dict[str, Any]:
            r = llm.invoke(
                [
                    SystemMessage(f"You extract {kind} from the {lens} bundle."),
                    HumanMessage(
                        f"Frame:\n{state['scope']}\n\nBundle:\n\n{BUNDLE}\n\nList {kind}."
                    ),
                ]
            )
            return {"outputs": [f"{lens}/{kind}: {r.content}"]}

        return node

    def briefer(state: State) -> dict[str, Any]:
        r = llm.invoke(
            [SystemMessage("Write the brief."), HumanMessage("\n".join(state["outputs"]))]
        )
        return {"brief": r.content}

    return wire(scoping, extractor, briefer)


def measure(runs: int, warmup: int = 10, *, use_async: bool = False) -> dict[str, list[float]]:
    """Wall seconds per run of each arm, ``runs`` interleaved runs after ``warmup``."""
    llm = lc.CapsuleChatModel(ScriptedChatModel(answer_words=12, cache_min_tokens=10**9))
    builder = build(llm)
    groups = {lens: [f"{lens}_{k}" for k in KINDS] for lens in LENSES}
    capsules = lc.capsulize(builder, groups=groups)
    plain = builder.compile()
    app = capsules.compile()
    arms: dict[str, tuple[Any, dict[str, Any]]] = {
        "langgraph": (plain, {}),
        "capsules fine": (app, {"configurable": {"capsules": {"mode": "fine"}}}),
        "capsules standard": (app, {"configurable": {"capsules": {"mode": "compound"}}}),
    }
    inputs = {"overview": "Nordvik Sensors is an Oslo maker of vibration sensors. " * 5}
    times: dict[str, list[float]] = {k: [] for k in arms}
    loop = asyncio.new_event_loop() if use_async else None

    def once(graph: Any, cfg: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        if loop is not None:
            loop.run_until_complete(graph.ainvoke(inputs, cfg))
        else:
            graph.invoke(inputs, cfg)
        return time.perf_counter() - t0

    try:
        for _ in range(warmup):
            for graph, cfg in arms.values():
                once(graph, cfg)
        gc.collect()
        for _ in range(runs):  # interleaved: A B C A B C ...
            for name, (graph, cfg) in arms.items():
                times[name].append(once(graph, cfg))
    finally:
        if loop is not None:
            loop.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--async", dest="use_async", action="store_true", help="use ainvoke")
    args = ap.parse_args()
    times = measure(args.runs, args.warmup, use_async=args.use_async)
    base = statistics.median(times["langgraph"])
    how = "ainvoke" if args.use_async else "invoke"
    print(f"14-node graph, zero-latency scripted model, {args.runs} interleaved runs ({how})")
    print(f"{'arm':<20} {'median ms':>10} {'IQR ms':>14} {'ratio':>7}")
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4)
        med = statistics.median(ts)
        iqr = f"{q[0] * 1e3:.2f}-{q[2] * 1e3:.2f}"
        print(f"{name:<20} {med * 1e3:>10.2f} {iqr:>14} {med / base:>7.2f}x")
    fine = statistics.median(times["capsules fine"]) / base
    standard = statistics.median(times["capsules standard"]) / base
    print(f"capsules fine / langgraph = {fine:.2f}x (goal <= 1.10x)")
    print(f"capsules standard / langgraph = {standard:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
