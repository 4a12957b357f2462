"""What draft-free speculative decoding buys on the embedded model, per call kind.

llama.cpp can draft tokens without a draft model, from n-grams already in the prompt and
the reply (``ngram-simple``, ``ngram-mod``), and verify a draft in one batch. Extraction
copies facts from its source, so drafts from the prompt may hit often; a rejected draft
costs a batch evaluation, which on a CPU is not free. This script measures it on the
competitive-intelligence app's own prompts: the twelve extractor calls of one company
sent concurrently like the app sends them, then the briefer's call over their replies.
For each round and each mode (the order rotates each round), a fresh server with an
empty prefix cache serves the same prompts. Per mode: median wall time with its spread,
output tokens, calls cut at ``max_tokens``, replies identical to the first mode's, and
the wall-time ratio against the first mode.

    python benchmarks/speculative.py [--model qwen2.5-coder-1.5b] [--company veridane]
                                     [--modes none ngram-simple ngram-mod] [--rounds 2]
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

from langchain_core.messages import BaseMessage

import langgraph_capsules as lc
from benchmarks.competitive_intelligence.dataset import KINDS, LENSES
from benchmarks.competitive_intelligence.finishes import LENGTH_REASONS
from benchmarks.competitive_intelligence.pipeline import BUDGETS, extractor_messages
from benchmarks.competitive_intelligence.runner import LOCAL_SAMPLING
from benchmarks.slots import company_frame


def _serve(
    model: str, mode: str | None, prompts: list[list[BaseMessage]], slots: int, workers: int
) -> dict[str, Any]:
    with lc.local.server(model, n_parallel=slots, host_prompt_cache=False, speculative=mode) as srv:
        llm = srv.chat_model(max_tokens=BUDGETS["extractor"], extra_body=LOCAL_SAMPLING)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            replies = list(pool.map(llm.invoke, prompts))
        wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "out": sum((r.usage_metadata or {}).get("output_tokens", 0) for r in replies),
        "cut": sum(r.response_metadata.get("finish_reason") in LENGTH_REASONS for r in replies),
        "texts": [str(r.content) for r in replies],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print its table."""
    from rich.console import Console
    from rich.table import Table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-1.5b")
    p.add_argument("--company", default="veridane")
    p.add_argument("--modes", nargs="+", default=["none", "ngram-simple", "ngram-mod"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--workers", type=int, default=6)
    a = p.parse_args(argv)
    console = Console(width=200 if not sys.stdout.isatty() else None)
    if a.model in lc.local.MODELS:
        lc.local.install(a.model)
    state = company_frame(a.model, a.company)
    prompts = [extractor_messages(state, lens, kind) for lens in LENSES for kind in KINDS]  # type: ignore[arg-type]
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in a.modes}
    for r in range(a.rounds):
        order = a.modes[r % len(a.modes) :] + a.modes[: r % len(a.modes)]
        for m in order:
            res = _serve(a.model, None if m == "none" else m, prompts, a.slots, a.workers)
            results[m].append(res)
            console.print(
                f"round {r + 1}/{a.rounds}, {m}: {res['wall']:.1f} s, "
                f"{res['out']} output tokens, {res['cut']} of {len(prompts)} cut"
            )
    first = a.modes[0]
    base = statistics.median(x["wall"] for x in results[first])
    ref = results[first][0]["texts"]
    t = Table(title=f"{len(prompts)} extractor calls of {a.company} on {a.model}, {a.slots} slots")
    for col in (
        "mode",
        "wall s median (min-max)",
        "output tok",
        "output tok/s",
        "cut",
        f"replies same as {first}",
        f"wall vs {first}",
    ):
        t.add_column(col, justify="right")
    for m in a.modes:
        walls = [x["wall"] for x in results[m]]
        med = statistics.median(walls)
        out = statistics.median(x["out"] for x in results[m])
        same = min(
            sum(x == y for x, y in zip(ref, run["texts"], strict=True)) for run in results[m]
        )
        t.add_row(
            m,
            f"{med:.1f} ({min(walls):.1f}-{max(walls):.1f})",
            f"{out:.0f}",
            f"{out / med:.1f}",
            "/".join(str(x["cut"]) for x in results[m]),
            f"{same}/{len(prompts)}",
            f"{med / base:.2f}x",
        )
    console.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
