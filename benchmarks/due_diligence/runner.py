"""``capsules bench dd``: the due-diligence pipeline against DSPy, arms side by side.

Arms (``--arms``), on the same companies, tools (the SQLite financials), model and judge:

* ``lg``: the hand-written LangGraph app (:mod:`.handwritten`: one node per agent, a
  ``ToolNode`` tool loop in each researcher);
* ``capsules_fine`` / ``capsules_compound``: ``capsulize()`` over that very builder with
  the groups :data:`.pipeline.DD_GROUPS`, fine and compound tier;
* ``auto``: the same builder with the controller on (the competitive-intelligence
  benchmark's aggressive policy, floor 0.75, gate judged by :class:`lc.FactRecallJudge`);
  it stays fine until enough evidence, so ask for it with ``--runs 4`` or more;
* ``declared_fine`` / ``declared_compound``: the pipeline written with declared agents
  (:func:`.pipeline.build_due_diligence`), fine and compound;
* ``dspy``: the DSPy program, uncompiled (:mod:`.dspy_arm`: ``ReAct`` for the
  researchers, ``ChainOfThought`` for the rest, the same instructions), on the same
  endpoint through LiteLLM;
* ``dspy_compiled``: that program compiled with ``BootstrapFewShot`` on development
  companies (:class:`.dspy_arm.CompileBudget`). The program saved for the ``--model``
  under ``data/dspy/`` is loaded; without one, or with ``--compile``, it is compiled
  first and saved (the report states the budget and what compiling cost).

Conventions of ``capsules bench ci`` (:mod:`benchmarks.competitive_intelligence.runner`,
whose model opening, study extension and finish-reason tracking are reused): arms
interleaved run by run, each arm run starting with an empty prefix cache, a progress
bar, ``results.json`` after every run (per-call ``call_tokens`` [input, cached, output]
and finish reasons), then ``report.md``, the table and a plot. DSPy is imported only
when a DSPy arm runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import langgraph_capsules as lc
from benchmarks.competitive_intelligence.finishes import FinishReasons, track_finish_reasons
from benchmarks.competitive_intelligence.runner import (
    AUTO_POLICY,
    DEFAULT_MODEL,
    DEFAULT_SLOTS,
    _cores,
    _one_line,
    load_study,
    open_model,
)
from benchmarks.due_diligence.dataset import HELD_OUT, development_ids
from benchmarks.due_diligence.handwritten import build_handwritten
from benchmarks.due_diligence.judge import score_run
from benchmarks.due_diligence.pipeline import (
    ANALYSTS,
    DD_GROUPS,
    RESEARCHERS,
    build_due_diligence,
    initial_state,
)
from benchmarks.due_diligence.report import ARMS, write_outputs

__all__ = ["ARMS", "DEFAULT_ARMS", "add_cli", "main", "run_benchmark"]

DEFAULT_ARMS = tuple(a for a in ARMS if a != "auto")
"""Every arm but auto, which needs ``--runs 4`` or more to leave fine."""
DSPY_ARMS = ("dspy", "dspy_compiled")


@dataclass
class Opened:
    """The model under test, as a LangChain chat model and (lazily) a DSPy LM."""

    llm: Any
    label: str
    reset: Callable[[], Any]
    dspy_lm: Callable[[], Any]


@contextlib.contextmanager
def open_dd_model(
    spec: str, *, slots: int = DEFAULT_SLOTS, console: Any = None
) -> Iterator[Opened]:
    """``scripted`` (the scripted due-diligence model, and a DSPy LM answering from a
    twin of it: no network, no model), else what ``capsules bench ci --model`` opens,
    with a DSPy LM on the same endpoint and settings."""
    if spec == "scripted":
        from benchmarks.due_diligence.scripted import scripted_due_diligence

        chat = scripted_due_diligence()
        made: list[Any] = []

        def scripted_lm() -> Any:
            if not made:
                from benchmarks.due_diligence.dspy_arm import ScriptedDSPyLM

                made.append(ScriptedDSPyLM(scripted_due_diligence()))
            return made[0]

        def reset() -> None:
            chat.reset()
            for lm in made:
                lm.chat.reset()

        yield Opened(chat, "scripted-due-diligence (ScriptedChatModel)", reset, scripted_lm)
        return

    def progress(stage: str, done: int, total: int) -> None:
        if console is not None and done in (0, total):
            console.log(f"local model: {stage} {done}/{total}")

    with open_model(spec, progress=progress, slots=slots) as opened:
        lms: list[Any] = []

        def real_lm() -> Any:
            if not lms:
                from benchmarks.due_diligence.dspy_arm import endpoint_lm

                lms.append(endpoint_lm(opened.llm))
            return lms[0]

        yield Opened(opened.llm, opened.label, opened.reset, real_lm)


@dataclass
class Measured:
    """One arm run: the outputs, every billed call (node, input, cached and output
    tokens) and the finish-reason summary; ``error`` when the run raised."""

    outputs: dict[str, Any]
    billed: list[dict[str, Any]]
    finishes: dict[str, Any]
    error: str | None = None


@dataclass
class Arm:
    """One arm: how to run it on one company."""

    name: str
    run: Callable[[str], Measured]
    capsules: lc.CapsuleGraph | None = None


def _failed(e: Exception) -> str:  # a failed run is recorded, never hidden
    return f"{type(e).__name__}: {e}"


def _langgraph_arm(
    name: str, app: Any, config: dict[str, Any], capsules: lc.CapsuleGraph | None = None
) -> Arm:
    def run(company: str) -> Measured:
        outputs: dict[str, Any] = {}
        error = None
        with lc.track_usage() as usage, track_finish_reasons() as finishes:
            try:
                outputs = app.invoke(initial_state(company), config)
            except Exception as e:
                error = _failed(e)
        billed = [
            {
                "node": rec.get("group") or rec.get("node"),
                "input_tokens": rec["input_tokens"],
                "cached_tokens": rec["cached_tokens"],
                "output_tokens": rec["output_tokens"],
            }
            for rec in usage.calls
            if rec["kind"] != "served"
        ]
        return Measured(outputs, billed, finishes.summary(), error)

    return Arm(name, run, capsules)


def _dspy_arm(name: str, lm: Any, program: Any) -> Arm:
    import dspy

    def run(company: str) -> Measured:
        outputs: dict[str, Any] = {}
        error = None
        start = len(lm.calls)
        try:
            with dspy.context(lm=lm):
                outputs = dict(program(**initial_state(company)).items())
        except Exception as e:
            error = _failed(e)
        calls = lm.calls[start:]
        finishes = FinishReasons()  # the LangGraph arms' summary, fed DSPy's calls
        finishes.calls.extend(
            {k: c[k] for k in ("node", "finish_reason", "output_tokens", "max_tokens")}
            for c in calls
        )
        return Measured(outputs, calls, finishes.summary(), error)

    return Arm(name, run)


def build_arms(
    opened: Opened,
    names: Sequence[str],
    *,
    model_spec: str,
    recompile: bool = False,
    budget: Any = None,
    programs_dir: Path | None = None,
    console: Any = None,
) -> tuple[list[Arm], dict[str, Any] | None]:
    """The requested arms over one model, and the compiled program's record (budget,
    source, cost) when ``dspy_compiled`` is among them."""
    wrapped = lc.CapsuleChatModel(opened.llm)
    hand = build_handwritten(wrapped)  # one builder serves lg and the capsules arms
    capsules = lc.capsulize(hand, groups=DD_GROUPS)
    capsules_app = capsules.compile()
    declared = lc.capsulize(build_due_diligence(wrapped), groups=DD_GROUPS)
    declared_app = declared.compile()
    compile_info: dict[str, Any] | None = None
    out = []
    for name in names:
        mode = "fine" if name.endswith("_fine") else "compound"
        cfg = {"configurable": {"capsules": {"mode": mode}}}
        if name == "lg":
            out.append(_langgraph_arm(name, hand.compile(), {}))
        elif name in ("capsules_fine", "capsules_compound"):
            out.append(_langgraph_arm(name, capsules_app, cfg, capsules))
        elif name in ("declared_fine", "declared_compound"):
            out.append(_langgraph_arm(name, declared_app, cfg, declared))
        elif name == "auto":
            auto = lc.capsulize(
                hand, groups=DD_GROUPS, policy=AUTO_POLICY, judge=lc.FactRecallJudge()
            )
            out.append(_langgraph_arm(name, auto.compile(), {}, auto))
        elif name == "dspy":
            from benchmarks.due_diligence.dspy_arm import DueDiligenceProgram

            out.append(_dspy_arm(name, opened.dspy_lm(), DueDiligenceProgram()))
        elif name == "dspy_compiled":
            program, compile_info = compiled_program(
                opened.dspy_lm(),
                model_spec,
                recompile=recompile,
                budget=budget,
                programs_dir=programs_dir,
                console=console,
            )
            out.append(_dspy_arm(name, opened.dspy_lm(), program))
        else:
            raise SystemExit(f"unknown arm {name!r}; arms: {', '.join(ARMS)}")
    return out, compile_info


def compiled_program(
    lm: Any,
    model_spec: str,
    *,
    recompile: bool = False,
    budget: Any = None,
    programs_dir: Path | None = None,
    console: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """The saved compiled program of ``model_spec``, or (none saved, or ``recompile``)
    a new one compiled on development companies and saved."""
    from benchmarks.due_diligence import dspy_arm

    path = dspy_arm.program_path(model_spec, programs_dir or dspy_arm.PROGRAMS_DIR)
    found = None if recompile else dspy_arm.load_compiled(path)
    if found is not None:
        program, info = found
        return program, {**info, "source": f"loaded from {_shown(path)}"}
    if console is not None:
        console.log(f"compiling the DSPy program for {model_spec} (saved to {_shown(path)})")
    program, info = dspy_arm.compile_program(lm, budget)
    if not any(info["demos"].values()):
        # no teacher run passed: the "compiled" program is the uncompiled one, and an arm
        # labelled compiled would measure nothing new
        record = path.with_suffix(".no-demos.json")
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(info, indent=2) + "\n")
        scores = ", ".join(f"{x['company']} {x['quality']:.3f}" for x in info["scored"])
        raise SystemExit(
            f"compiling gave no demos: no teacher run reached the gold-judge threshold "
            f"{info['budget']['metric_threshold']} ({scores}), so the compiled program "
            "would be the uncompiled one; nothing saved (the compile record is in "
            f"{_shown(record)}). Lower --compile-threshold or add --compile-company"
        )
    dspy_arm.save_compiled(program, info, path)
    return program, {**info, "source": f"compiled in this sitting, saved to {_shown(path)}"}


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _stage(node: str | None) -> str:
    if node in RESEARCHERS or node == "research":
        return "research"
    if node in ANALYSTS or node == "analysis":
        return "analysis"
    return "writer" if node == "investment_writer" else str(node or "other")


def run_one(arm: Arm, company: str, run: int, model_label: str) -> dict[str, Any]:
    """One arm on one company: measured, scored and recorded (an error is recorded)."""
    t0 = time.perf_counter()
    m = arm.run(company)
    wall = time.perf_counter() - t0
    billed, error = m.billed, m.error
    stages: dict[str, dict[str, int]] = {}
    for c in billed:
        slot = stages.setdefault(_stage(c["node"]), {"input": 0, "output": 0})
        slot["input"] += c["input_tokens"]
        slot["output"] += c["output_tokens"]
    tiers: dict[str, str] = {}
    gate: dict[str, float | None] = {}
    fallbacks: list[str] = []
    if arm.capsules is not None and error is None:
        for r in arm.capsules.history()[-len(DD_GROUPS) :]:
            tiers[r["group"]] = r["tier"] + "".join(f"+shadow:{s['tier']}" for s in r["shadow"])
            gate[r["group"]] = r["quality"]
            fallbacks += r["fallback"]
    score = score_run(company, m.outputs) if error is None else None
    return {
        "arm": arm.name,
        "label": ARMS[arm.name],
        "company": company,
        "held_out": company in HELD_OUT,
        "run": run,
        "model": model_label,
        "calls": len(billed),
        "input_tokens": sum(c["input_tokens"] for c in billed),
        "cached_tokens": sum(c["cached_tokens"] for c in billed),
        "output_tokens": sum(c["output_tokens"] for c in billed),
        **m.finishes,
        "wall_s": round(wall, 3),
        "quality": None if score is None else round(score["quality"], 4),
        "quality_parts": None
        if score is None
        else {k: v for k, v in score.items() if k != "quality"},
        "tokens_per_group": stages,
        "call_tokens": [
            [c["input_tokens"], c["cached_tokens"], c["output_tokens"]] for c in billed
        ],
        "call_nodes": [c["node"] for c in billed],
        "group_tiers": tiers,
        "gate_quality": gate,
        "fallback_members": sorted(fallbacks),
        "failed_stages": list(m.outputs.get("failed_stages") or []),
        "error": error,
    }


def choose_companies(n: int) -> list[str]:
    """Held-out companies first (never compiled or tuned on), then development ones."""
    ordered = [*HELD_OUT, *development_ids()]
    if not 1 <= n <= len(ordered):
        raise SystemExit(f"--companies must be between 1 and {len(ordered)}")
    return ordered[:n]


def run_benchmark(
    *,
    model: str,
    companies: int,
    runs: int,
    arms: Sequence[str],
    out: Path,
    company_ids: Sequence[str] | None = None,
    slots: int = DEFAULT_SLOTS,
    fresh: bool = False,
    recompile: bool = False,
    budget: Any = None,
    programs_dir: Path | None = None,
    console: Any = None,
) -> list[dict[str, Any]]:
    """Run the arms interleaved; write ``results.json`` after every run, then
    ``report.md``, the table and the plot. An ``out`` holding a study of the same model
    is extended (unless ``fresh``). Returns this sitting's records."""
    from rich.console import Console
    from rich.progress import Progress, TimeElapsedColumn

    console = console or Console(stderr=True, width=max(Console(stderr=True).width, 120))
    chosen = list(company_ids) if company_ids else choose_companies(companies)
    earlier, sittings = ([], []) if fresh else load_study(out, model)  # ci's study rules
    last_run = {  # per company: new runs are numbered after its last
        c: max(int(r["run"]) for r in earlier if r["company"] == c)
        for c in {r["company"] for r in earlier}
    }
    records: list[dict[str, Any]] = []
    started = time.time()
    argv = sys.argv[1:]
    sitting = dict(
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command="capsules " + " ".join(argv) if argv[:1] == ["bench"] else "",
        slots=slots,
        records=0,
        elapsed_s=0.0,
    )
    with open_dd_model(model, slots=slots, console=console) as opened:
        built, compile_info = build_arms(
            opened,
            arms,
            model_spec=model,
            recompile=recompile,
            budget=budget,
            programs_dir=programs_dir,
            console=console,
        )

        def meta() -> dict[str, Any]:
            every = [*earlier, *records]
            sitting.update(records=len(records), elapsed_s=round(time.time() - started, 1))
            return {
                "model": opened.label,
                "model_spec": model,
                "companies": list(dict.fromkeys(r["company"] for r in every)),
                "held_out": list(dict.fromkeys(r["company"] for r in every if r["held_out"])),
                "runs": max((int(r["run"]) for r in every), default=0),
                "arms": [a for a in ARMS if any(r["arm"] == a for r in every)],
                "date": sitting["date"],
                "machine": f"{platform.machine()}, {_cores()} cores, "
                f"Python {platform.python_version()}",
                "command": sitting["command"],
                "auto_floor": AUTO_POLICY.quality_floor,
                "dspy_compile": compile_info,
                "sittings": [*sittings, dict(sitting)],
            }

        with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("benchmark", total=runs * len(chosen) * len(built))
            for i in range(1, runs + 1):
                for company in chosen:
                    run = last_run.get(company, 0) + i
                    for arm in built:
                        bar.update(task, description=f"run {run} {company} {ARMS[arm.name]}")
                        opened.reset()  # every arm run starts with a cold prefix cache
                        rec = run_one(arm, company, run, opened.label)
                        records.append(rec)
                        bar.advance(task)
                        console.log(_one_line(rec))
                        write_outputs(out, meta(), [*earlier, *records], final=False)
        write_outputs(out, meta(), [*earlier, *records], console=console)
    console.print(f"wrote {out / 'results.json'}, {out / 'report.md'}, a plot in {out}")
    return records


def add_cli(sub: Any) -> None:
    """Register ``dd`` under the ``bench`` command."""
    p = sub.add_parser(
        "dd", help="the due-diligence benchmark: LangGraph, capsules and DSPy side by side"
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"scripted | local model name | GGUF path | URL | openai:MODEL (default "
        f"{DEFAULT_MODEL})",
    )
    p.add_argument(
        "--companies", type=int, default=2, help="how many, held-out companies first (default 2)"
    )
    p.add_argument("--company", action="append", dest="company_ids", help="a company id")
    p.add_argument("--runs", type=int, default=1, help="default 1")
    p.add_argument(
        "--arms",
        nargs="+",
        default=list(DEFAULT_ARMS),
        choices=[*ARMS, "all"],
        help=f"default: {' '.join(DEFAULT_ARMS)}; 'all' adds auto (needs --runs 4 or more)",
    )
    p.add_argument("--out", type=Path, default=Path("bench-out/dd"), help="default bench-out/dd")
    p.add_argument("--fresh", action="store_true", help="overwrite the study in --out")
    p.add_argument(
        "--report", action="store_true", help="run nothing: recompute the report in --out"
    )
    p.add_argument("--slots", type=int, default=DEFAULT_SLOTS, help="embedded model: server slots")
    p.add_argument(
        "--compile",
        action="store_true",
        help="(re)compile the DSPy program on development companies and save it, even if "
        "a saved one exists",
    )
    p.add_argument(
        "--compile-demos",
        type=int,
        default=None,
        help="BootstrapFewShot: bootstrapped demos per predictor (default 2)",
    )
    p.add_argument(
        "--compile-company",
        action="append",
        dest="compile_companies",
        help="a development company to compile on (repeatable; default all of them)",
    )
    p.add_argument(
        "--compile-threshold",
        type=float,
        default=None,
        help="BootstrapFewShot: gold-judge quality a teacher run must reach to give demos "
        "(default 0.75)",
    )
    p.add_argument(
        "--programs-dir",
        type=Path,
        default=None,
        help="where compiled programs are saved (default benchmarks/due_diligence/data/dspy)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``capsules bench dd``."""
    from rich.console import Console

    if args.report:
        import json

        if not (args.out / "results.json").is_file():
            raise SystemExit(f"--report: no results.json in {args.out}")
        data = json.loads((args.out / "results.json").read_text())
        write_outputs(args.out, data["meta"], data["records"], console=Console(stderr=True))
        return 0
    arms = list(ARMS) if "all" in args.arms else args.arms
    budget = None
    chosen: dict[str, Any] = {
        "max_bootstrapped_demos": args.compile_demos,
        "metric_threshold": args.compile_threshold,
        "companies": tuple(args.compile_companies or ()) or None,
    }
    if any(v is not None for v in chosen.values()):
        from benchmarks.due_diligence.dspy_arm import CompileBudget

        budget = CompileBudget(**{k: v for k, v in chosen.items() if v is not None})
    same = ("model", "companies", "runs", "out", "company_ids", "slots", "fresh", "programs_dir")
    records = run_benchmark(
        **{k: getattr(args, k) for k in same}, arms=arms, recompile=args.compile, budget=budget
    )
    return 1 if all(r["error"] for r in records) else 0
