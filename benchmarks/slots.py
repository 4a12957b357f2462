"""What server slots buy on the embedded model: the extractor fan-out timed per slot count.

The LG 14-node app spends most of its wall time in one step: twelve extractor calls sent
at once (LangGraph's sync executor runs up to ``min(32, cores + 4)`` nodes together).
llama.cpp decodes the requests of its busy slots in one batch, so on a memory-bound CPU
more slots can turn the same work into fewer seconds. This script measures it: for each
round and each slot count (the order rotates each round), a fresh server with that many
slots and an empty prefix cache serves the twelve extractor prompts of one company,
sent concurrently like the app sends them. Per slot count: median wall time with its
spread, output tokens per second, calls cut at ``max_tokens`` and the ratio against the
first slot count. The company frame (the scoping output the prompts include) is
written once, by the first server, so every slot count serves the same prompts.

    python benchmarks/slots.py [--model qwen2.5-coder-1.5b] [--company veridane]
                               [--slots 2 4] [--rounds 2] [--workers 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.messages import HumanMessage, SystemMessage

import langgraph_capsules as lc
from benchmarks.competitive_intelligence.dataset import KINDS, LENSES, load_company
from benchmarks.competitive_intelligence.finishes import LENGTH_REASONS
from benchmarks.competitive_intelligence.pipeline import (
    BUDGETS,
    SCOPING_INSTRUCTIONS,
    extractor_messages,
    initial_state,
)
from benchmarks.competitive_intelligence.runner import LOCAL_SAMPLING


def company_frame(model: str, company: str) -> dict[str, Any]:
    """The app state the extractor prompts need: the company and its scoping output,
    written once by a one-slot server so every measured server serves the same prompts."""
    state: dict[str, Any] = dict(initial_state(load_company(company)))
    with lc.local.server(model, n_parallel=1, host_prompt_cache=False) as srv:
        llm = srv.chat_model(max_tokens=BUDGETS["scoping"], extra_body=LOCAL_SAMPLING)
        msgs = [SystemMessage(SCOPING_INSTRUCTIONS), HumanMessage(state["overview"])]
        state["scope"] = str(llm.invoke(msgs).content)
    return state


def _fan_out(model: str, slots: int, state: dict[str, Any], workers: int) -> dict[str, Any]:
    prompts = [extractor_messages(state, lens, kind) for lens in LENSES for kind in KINDS]  # type: ignore[arg-type]
    with lc.local.server(model, n_parallel=slots, host_prompt_cache=False) as srv:
        llm = srv.chat_model(max_tokens=BUDGETS["extractor"], extra_body=LOCAL_SAMPLING)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            replies = list(pool.map(llm.invoke, prompts))
        wall = time.perf_counter() - t0
    out_tokens = sum((r.usage_metadata or {}).get("output_tokens", 0) for r in replies)
    in_tokens = sum((r.usage_metadata or {}).get("input_tokens", 0) for r in replies)
    cut = sum(r.response_metadata.get("finish_reason") in LENGTH_REASONS for r in replies)
    return {"wall": wall, "out": out_tokens, "in": in_tokens, "cut": cut}


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print its table."""
    from rich.console import Console
    from rich.table import Table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-1.5b")
    p.add_argument("--company", default="veridane")
    p.add_argument("--slots", type=int, nargs="+", default=[2, 4])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--workers", type=int, default=6, help="concurrent requests (LangGraph: 6 on 2 cores)"
    )
    a = p.parse_args(argv)
    console = Console(width=200 if not sys.stdout.isatty() else None)
    if a.model in lc.local.MODELS:
        lc.local.install(a.model)
    state = company_frame(a.model, a.company)
    results: dict[int, list[dict[str, Any]]] = {s: [] for s in a.slots}
    for r in range(a.rounds):
        order = a.slots[r % len(a.slots) :] + a.slots[: r % len(a.slots)]
        for s in order:
            res = _fan_out(a.model, s, state, a.workers)
            results[s].append(res)
            console.print(
                f"round {r + 1}/{a.rounds}, {s} slots: {res['wall']:.1f} s, "
                f"{res['out']} output tokens, {res['cut']} of 12 cut"
            )
    base = statistics.median(x["wall"] for x in results[a.slots[0]])
    t = Table(title=f"12 extractor calls of {a.company} on {a.model}, {a.workers} in flight")
    for col in (
        "slots",
        "wall s median (min-max)",
        "output tok",
        "output tok/s",
        "cut",
        f"wall vs {a.slots[0]} slots",
    ):
        t.add_column(col, justify="right")
    for s in a.slots:
        walls = [x["wall"] for x in results[s]]
        med = statistics.median(walls)
        out = statistics.median(x["out"] for x in results[s])
        t.add_row(
            str(s),
            f"{med:.1f} ({min(walls):.1f}-{max(walls):.1f})",
            f"{out:.0f}",
            f"{out / med:.1f}",
            "/".join(str(x["cut"]) for x in results[s]),
            f"{med / base:.2f}x",
        )
    console.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
