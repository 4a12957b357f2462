"""The ``capsules`` command.

Subcommands:

* ``capsules demo``: a small LangGraph app run fine and compound on the scripted
  model, with the telemetry table (no network, a few seconds).
* ``capsules bench ci``: the competitive-intelligence benchmark (from a checkout);
  ``capsules bench study``: the same over several companies and runs;
  ``capsules bench oracle``: the oracle ablation;
  ``capsules bench dd``: the due-diligence pipeline against DSPy.
* ``capsules local install|path|list``: the embedded local model (see
  :mod:`langgraph_capsules.local`).
"""

from __future__ import annotations

import argparse
import operator
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

__all__ = ["main"]

_DEMO_DOC = (
    "Kelvara Systems of Gothenburg sells wireless vibration sensors to paper mills and "
    "mines. It was founded in 2011 and employs 310 people.\n\n"
    "Revenue reached SEK 640 million in 2024, up 18 percent, with an EBITDA margin of "
    "14 percent. Its largest rival, Ostrand Instruments, cut prices by 10 percent in "
    "Finland.\n\n"
    "Kelvara plans a US sales office in 2026 and is hiring 45 engineers. Analysts call it "
    "the reliability leader in Nordic condition monitoring."
)


class _DemoState(TypedDict, total=False):
    doc: str
    entities: str
    claims: str
    signals: str
    brief: str
    log: Annotated[list[str], operator.add]


def _demo(args: argparse.Namespace) -> int:
    from langchain_core.messages import HumanMessage, SystemMessage
    from langgraph.graph import END, START, StateGraph

    import langgraph_capsules as lc
    from langgraph_capsules.testing import ScriptedChatModel

    llm = lc.CapsuleChatModel(ScriptedChatModel())
    kinds = ("entities", "claims", "signals")

    def extractor(kind: str) -> Any:
        def node(state: _DemoState) -> dict[str, Any]:
            msgs = [
                SystemMessage(f"You list every {kind} stated in the source, numbered."),
                HumanMessage(f"Source:\n\n{state['doc']}\n\nList the {kind}."),
            ]
            return {kind: llm.invoke(msgs).content, "log": [kind]}

        return node

    def briefer(state: _DemoState) -> dict[str, Any]:
        body = "\n\n".join(str(state.get(k, "")) for k in kinds)
        r = llm.invoke([SystemMessage("Write a short brief."), HumanMessage(body)])
        return {"brief": r.content, "log": ["briefer"]}

    builder = StateGraph(_DemoState)
    for k in kinds:
        builder.add_node(k, extractor(k))
        builder.add_edge(START, k)
        builder.add_edge(k, "briefer")
    builder.add_node("briefer", briefer)
    builder.add_edge("briefer", END)

    capsules = lc.capsulize(builder)
    print(capsules.plan)
    app = capsules.compile()
    for mode in ("fine", "compound"):
        with lc.track_usage() as usage:
            app.invoke({"doc": _DEMO_DOC}, {"configurable": {"capsules": {"mode": mode}}})
        print(f"\n== mode={mode}")
        print(usage.table())
    print()
    capsules.report()
    return 0


def _benchmarks_root() -> Path | None:
    """The checkout holding ``benchmarks/competitive_intelligence`` (they ship with the
    repository, not the wheel): searched from the working directory up, then from an
    editable install's source tree."""
    marker = Path("benchmarks") / "competitive_intelligence" / "runner.py"
    here = Path.cwd().resolve()
    for root in (here, *here.parents, *Path(__file__).resolve().parents):
        if (root / marker).is_file():
            return root
    return None


def _add_bench(sub: Any) -> None:
    bench = sub.add_parser("bench", help="side-by-side benchmarks (from a repository checkout)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    root = _benchmarks_root()
    if root is None:

        def missing(args: argparse.Namespace) -> int:
            print(
                "error: benchmarks/competitive_intelligence not found; run `capsules bench` "
                "from a checkout of the langgraph-capsules repository",
                file=sys.stderr,
            )
            return 2

        ci = bench_sub.add_parser("ci", help="(needs a repository checkout)")
        ci.set_defaults(func=missing)
        return
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.competitive_intelligence import oracle, runner
    from benchmarks.due_diligence import runner as dd_runner

    runner.add_cli(bench_sub)
    oracle.add_cli(bench_sub)
    dd_runner.add_cli(bench_sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``capsules`` command."""
    parser = argparse.ArgumentParser(prog="capsules", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a small app fine and compound on the scripted model")
    demo.set_defaults(func=_demo)
    _add_bench(sub)
    from langgraph_capsules import local

    local.add_cli(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
