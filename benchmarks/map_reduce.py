"""Send map-reduce on the embedded local model: plain LangGraph vs capsules compound.

A map-reduce graph classifies N = 8 short news snippets (one ``Send`` per snippet to a
``classify`` node, an ``operator.add`` list reduced by ``tally``), the shape of the
LangGraph map-reduce how-to. Capsules compound answers the N calls with
``ceil(N / max_batch)`` merged calls (one, at the default ``max_batch=8``). The two
arms run interleaved (alternating which goes first) in one process against the same
llama.cpp server. Prints calls, input tokens, wall time and accuracy of the labels
against the gold labels, per arm, as a rich table.

    python benchmarks/map_reduce.py [--model qwen2.5-coder-1.5b] [--runs 2]
"""

from __future__ import annotations

import argparse
import operator
import re
import statistics
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from rich.console import Console
from rich.table import Table

import langgraph_capsules as lc
from langgraph_capsules import local
from langgraph_capsules.telemetry import track_usage

LABELS = ("sports", "business", "science", "weather")
DOCS: list[tuple[str, str]] = [
    ("The striker scored twice in the second half as the home team won the cup final.", "sports"),
    (
        "Shares of the retailer fell 8% after quarterly profits missed analyst forecasts.",
        "business",
    ),
    ("Astronomers detected water vapour in the atmosphere of a distant exoplanet.", "science"),
    ("Heavy snow and strong winds are expected across the north on Friday night.", "weather"),
    ("The tennis champion withdrew from the tournament with a wrist injury.", "sports"),
    ("The central bank raised interest rates by a quarter point to curb inflation.", "business"),
    ("Researchers sequenced the genome of a rare deep-sea jellyfish.", "science"),
    ("A heatwave will push temperatures above 38 degrees in the south this weekend.", "weather"),
]
INSTRUCTIONS = (
    "Classify the news snippet below into exactly one topic: sports, business, science "
    "or weather. Reply with the topic word only, in lower case, nothing else."
)


class State(TypedDict, total=False):
    docs: list[str]
    labels: Annotated[list[tuple[int, str]], operator.add]
    tally: dict[str, int]


class Item(TypedDict):
    index: int
    text: str


def build(llm: Any) -> StateGraph[Any, Any, Any, Any]:
    """``load -> N x Send(classify) -> tally``."""

    def load(state: State) -> dict[str, Any]:
        return {"docs": [d.strip() for d in state["docs"]]}

    def fan_out(state: State) -> list[Send]:
        return [Send("classify", {"index": i, "text": d}) for i, d in enumerate(state["docs"])]

    def classify(item: Item) -> dict[str, Any]:
        reply = llm.invoke(f"{INSTRUCTIONS}\n\nSnippet: {item['text']}")
        return {"labels": [(item["index"], _label(str(reply.content)))]}

    def tally(state: State) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for _i, label in state.get("labels", []):
            counts[label] = counts.get(label, 0) + 1
        return {"tally": counts}

    b = StateGraph(State)
    b.add_node("load", load)
    b.add_node("classify", classify)
    b.add_node("tally", tally)
    b.add_edge(START, "load")
    b.add_conditional_edges("load", fan_out, ["classify"])
    b.add_edge("classify", "tally")
    b.add_edge("tally", END)
    return b


def _label(text: str) -> str:
    words = re.findall(r"[a-z]+", text.lower())
    return next((w for w in words if w in LABELS), "?")


def _run(app: Any, cfg: Any) -> dict[str, Any]:
    with track_usage() as usage:
        start = time.perf_counter()
        out = app.invoke({"docs": [d for d, _gold in DOCS]}, cfg)
        wall = time.perf_counter() - start
    totals = usage.totals()
    got = dict(out["labels"])
    correct = sum(got.get(i) == gold for i, (_d, gold) in enumerate(DOCS))
    return {
        "calls": totals["calls"],
        "input": totals["input_tokens"],
        "output": totals["output_tokens"],
        "wall": wall,
        "correct": correct,
        "items": len(out["labels"]),
    }


def main() -> None:
    """Run both arms interleaved and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=16, help="per classify call")
    args = ap.parse_args()
    console = Console()
    with local.serve(args.model, max_tokens=args.max_tokens, n_parallel=1) as chat:
        llm = lc.CapsuleChatModel(chat)
        builder = build(llm)
        arms = {
            "plain LangGraph": (builder.compile(), None),
            "capsules compound": (
                lc.capsulize(builder).compile(),
                {"configurable": {"capsules": {"mode": "compound"}}},
            ),
        }
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
        _run(*arms["plain LangGraph"])  # warm-up (server start, first prefill)
        names = list(arms)
        for r in range(args.runs):
            for name in names if r % 2 == 0 else names[::-1]:
                rows[name].append(_run(*arms[name]))
                console.print(f"run {r + 1} {name}: {rows[name][-1]}")
    table = Table(title=f"Send map-reduce, N={len(DOCS)} snippets, {args.model}, {args.runs} runs")
    for col in ("arm", "calls/run", "input tok/run", "output tok/run", "wall s (median)"):
        table.add_column(col, justify="right" if col != "arm" else "left")
    table.add_column("labels correct (of 8, per run)", justify="right")
    for name, rs in rows.items():
        table.add_row(
            name,
            f"{statistics.mean(x['calls'] for x in rs):g}",
            f"{statistics.mean(x['input'] for x in rs):g}",
            f"{statistics.mean(x['output'] for x in rs):g}",
            f"{statistics.median(x['wall'] for x in rs):.2f}",
            ", ".join(f"{x['correct']}/{x['items']}" for x in rs),
        )
    console.print(table)


if __name__ == "__main__":
    main()
