"""``capsules bench ci``: the arms side by side on the same inputs and model.

Arms (``--arms``):

* ``lg14``: the hand-written 14-node LangGraph app;
* ``lg6``: its hand-merged 6-node variant;
* ``capsules_fine``: ``capsulize()`` over the same 14-node builder, fine tier;
* ``capsules_compound``: the same capsule graph, standard tier (one merged call per arm);
* ``declared_fine`` / ``declared_compound``: the same pipeline written with declared
  agents (:func:`lc.agent`, same instructions and budgets), capsulized, fine and
  standard tier;
* ``auto``: the same builder capsulized with the controller on (aggressive preset,
  quality floor 0.75) and the quality gate judged by :class:`lc.FactRecallJudge` against
  each company's fine output (or by the LLM judge of ``--judge``). Its tier per group
  moves over the runs: fine until enough evidence, a shadow evaluation on the switch run
  (its extra calls counted in the arm's totals), then compound while quality holds.

Runs are interleaved (run 1: company 1: A B C D, company 2: A B C D, ...; then run 2),
so machine drift hits every arm alike. Every run is measured with
:func:`langgraph_capsules.track_usage` (calls; input, cached and output tokens) and a
wall clock, and scored by the gold-fact judge (``judge.py``). The runner writes
``results.json`` (one record per arm, company and run) after every run, then
``report.md`` with the side-by-side table and the PNG plots (``report.py``). An ``--out``
that already holds a study of the same model is extended: each company's new runs are
numbered after its last, and the report is recomputed from every record.

Default (``scripts/bench`` with no arguments): the 1.5B embedded model, one held-out
company, four arms (LG 14-node, LG hand-merged, capsules compound, declared compound).
``capsules bench study`` runs those plus declared fine over four companies x two runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

import langgraph_capsules as lc
from benchmarks.competitive_intelligence.dataset import Company, load_companies, load_company
from benchmarks.competitive_intelligence.finishes import track_finish_reasons
from benchmarks.competitive_intelligence.judge import score_run
from benchmarks.competitive_intelligence.pipeline import (
    ARM_GROUPS,
    BUDGETS,
    MARKER_TOKENS,
    build_declared,
    build_lg6,
    build_lg14,
    initial_state,
)
from benchmarks.competitive_intelligence.report import ARMS, BUCKETS, write_outputs

__all__ = ["ARMS", "Arm", "add_cli", "build_arms", "main", "run_benchmark"]

DEFAULT_ARMS = ("lg14", "lg6", "capsules_compound", "declared_compound")
"""Arms of a default run. ``--arms all`` adds capsules fine and declared fine; the auto
arm runs fine until its third run, so it is asked for with enough runs
(``--runs 4 --arms lg14 auto``)."""
STUDY_ARMS = (*DEFAULT_ARMS, "declared_fine")
"""Arms of ``capsules bench study``."""
AUTO_POLICY = lc.ControllerPolicy.aggressive(quality_floor=0.75)
"""The auto arm's policy: three tool-free agents score 0.1875, above the aggressive
preset's compose_at (0.18) and below balanced (0.23); 0.75 is the paper's floor."""
DEFAULT_MODEL = "qwen2.5-coder-1.5b"
"""The model of quoted results: the 1.5B model holds a merged call's format, the 0.5B
model (``--model qwen2.5-coder-0.5b``, what the tests use) does not."""
DEFAULT_SLOTS = 2
"""Server slots (requests decoded together) of the embedded model."""


@dataclass
class Arm:
    """One arm: a compiled app and the config of its runs."""

    name: str
    label: str
    app: Any
    config: dict[str, Any]
    capsules: lc.CapsuleGraph | None = None


def build_arms(llm: BaseChatModel, names: Sequence[str], *, gate_judge: Any = None) -> list[Arm]:
    """Build the requested arms over one model object (``gate_judge``: the auto arm's
    quality-gate judge; default the offline :class:`lc.FactRecallJudge`)."""
    wrapped = lc.CapsuleChatModel(llm)
    b14 = build_lg14(wrapped)  # the very same builder serves lg14 and both capsules arms
    capsules = lc.capsulize(b14, groups=ARM_GROUPS)
    app = capsules.compile()
    declared: lc.CapsuleGraph | None = None
    declared_app: Any = None
    out = []
    for name in names:
        if name == "lg14":
            out.append(Arm(name, ARMS[name], b14.compile(), {}))
        elif name == "lg6":
            out.append(Arm(name, ARMS[name], build_lg6(llm).compile(), {}))
        elif name in ("capsules_fine", "capsules_compound"):
            mode = "fine" if name == "capsules_fine" else "compound"
            cfg = {"configurable": {"capsules": {"mode": mode}}}
            out.append(Arm(name, ARMS[name], app, cfg, capsules))
        elif name in ("declared_fine", "declared_compound"):
            if declared is None:
                declared = lc.capsulize(build_declared(wrapped), groups=ARM_GROUPS)
                declared_app = declared.compile()
            mode = "fine" if name == "declared_fine" else "compound"
            cfg = {"configurable": {"capsules": {"mode": mode}}}
            out.append(Arm(name, ARMS[name], declared_app, cfg, declared))
        elif name == "auto":
            judge = gate_judge if gate_judge is not None else lc.FactRecallJudge()
            auto = lc.capsulize(b14, groups=ARM_GROUPS, policy=AUTO_POLICY, judge=judge)
            out.append(Arm(name, ARMS[name], auto.compile(), {}, auto))
        else:
            raise SystemExit(f"unknown arm {name!r}; arms: {', '.join(ARMS)}")
    return out


def _bucket(rec: lc.CallRecord) -> str:
    node = str(rec.get("group") or rec.get("node") or "")
    for lens in BUCKETS:
        if lens in node:
            return lens
    return node or "other"


LOCAL_SAMPLING = {"repeat_penalty": 1.1}
"""llama.cpp sampling for the embedded models: at temperature 0 without a repeat penalty
the 0.5B model loops ("Insight, Insight, ..."); 1.1 is llama.cpp's classic default."""


@dataclass
class Model:
    """The model under test, and how to reset its prefix cache between arm runs."""

    llm: BaseChatModel
    label: str
    reset: Any


@contextlib.contextmanager
def open_model(spec: str, *, progress: Any = None, slots: int = DEFAULT_SLOTS) -> Iterator[Model]:
    """The chat model for ``--model``: ``scripted``, a local registry name or GGUF path,
    an OpenAI-compatible base URL, or ``openai:MODEL`` (uses ``OPENAI_*`` variables)."""
    if spec in ("scripted", "scripted-degraded"):
        from benchmarks.competitive_intelligence.scripted import scripted_analyst

        if spec == "scripted":
            scripted = scripted_analyst()
            label = "scripted-analyst (ScriptedChatModel)"
        else:  # merged sections keep 30% of their words: a model that cannot merge
            scripted = scripted_analyst(compress=0.3)
            label = "scripted-analyst, degraded merges (ScriptedChatModel compress=0.3)"
        yield Model(scripted, label, scripted.reset)
        return
    if spec.startswith("openai:") or spec.startswith(("http://", "https://")):
        from langchain_openai import ChatOpenAI

        if spec.startswith("openai:"):
            llm = ChatOpenAI(model=spec.split(":", 1)[1], temperature=0, stream_usage=True)
        else:
            llm = ChatOpenAI(base_url=spec, temperature=0, stream_usage=True)
        yield Model(llm, spec, lambda: None)  # a remote cache cannot be reset
        return
    local = lc.local
    if spec in local.MODELS:
        local.install(spec, progress=progress)
    with local.server(spec, n_parallel=slots, host_prompt_cache=False) as srv:
        llm = srv.chat_model(max_tokens=512, temperature=0.0, extra_body=LOCAL_SAMPLING)
        label = (
            f"{spec} (llama.cpp via xllamacpp, {slots} slots, "
            f"repeat_penalty {LOCAL_SAMPLING['repeat_penalty']})"
        )
        yield Model(llm, label, srv.erase_prefix_cache)


def run_benchmark(
    *,
    model: str,
    companies: int,
    runs: int,
    arms: Sequence[str],
    out: Path,
    company_ids: Sequence[str] | None = None,
    judge: str | None = None,
    console: Any = None,
    slots: int = DEFAULT_SLOTS,
    fresh: bool = False,
) -> list[dict[str, Any]]:
    """Run the arms interleaved and write results.json (after every run), then report.md
    and the plots. An ``out`` holding an earlier study of the same model is extended
    (unless ``fresh``): its records are kept, each company's new runs are numbered after
    its last, and the report covers every record. Returns this sitting's records."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True, width=max(Console(stderr=True).width, 120))
    chosen = [load_company(c) for c in company_ids] if company_ids else _choose_companies(companies)
    earlier, sittings = ([], []) if fresh else load_study(out, model, study_budgets())
    if earlier:
        console.log(
            f"extending the study in {out}: {len(earlier)} earlier records (--fresh starts over)"
        )
    done_runs: dict[str, int] = {}  # per company: new runs are numbered after its last
    for r in earlier:
        done_runs[r["company"]] = max(done_runs.get(r["company"], 0), int(r["run"]))
    records: list[dict[str, Any]] = []
    started = time.time()
    sitting = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "capsules " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "",
        "slots": slots,
        "code": code_version(),
        "records": 0,
        "elapsed_s": 0.0,
    }

    def meta(label: str) -> dict[str, Any]:
        every = [*earlier, *records]
        sitting.update(records=len(records), elapsed_s=round(time.time() - started, 1))
        return {
            "model": label,
            "model_spec": model,
            "companies": list(dict.fromkeys(r["company"] for r in every)),
            "held_out": list(dict.fromkeys(r["company"] for r in every if r["held_out"])),
            "runs": max((int(r["run"]) for r in every), default=0),
            "arms": [a for a in ARMS if any(r["arm"] == a for r in every)],
            "date": sitting["date"],
            "machine": f"{platform.machine()}, {_cores()} cores, "
            f"Python {platform.python_version()}",
            "elapsed_s": round(sum(s["elapsed_s"] for s in sittings) + sitting["elapsed_s"], 1),
            "command": sitting["command"],
            "auto_floor": AUTO_POLICY.quality_floor,
            "budgets": study_budgets(),
            "sittings": [*sittings, dict(sitting)],
        }

    def install_progress(stage: str, done: int, total: int) -> None:
        if done == 0 or done == total:
            console.log(f"local model: {stage} {done}/{total}")

    with open_model(model, progress=install_progress, slots=slots) as opened:
        model_label = opened.label
        llm_judge = _open_judge(judge) if judge else None
        built = build_arms(opened.llm, arms, gate_judge=llm_judge)
        total = runs * len(chosen) * len(built)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("benchmark", total=total)
            for i in range(1, runs + 1):
                for company in chosen:
                    run = done_runs.get(company["id"], 0) + i
                    for arm in built:
                        bar.update(task, description=f"run {run} {company['id']} {arm.label}")
                        opened.reset()  # every arm run starts with a cold prefix cache
                        rec = _run_one(arm, company, run, model_label)
                        if llm_judge is not None:
                            rec.update(_llm_judge(llm_judge, company, rec.pop("_brief", "")))
                        rec.pop("_brief", None)
                        records.append(rec)
                        bar.advance(task)
                        console.log(_one_line(rec))
                        write_outputs(out, meta(model_label), [*earlier, *records], final=False)
    write_outputs(out, meta(model_label), [*earlier, *records], console=console)
    console.print(f"wrote {out / 'results.json'}, {out / 'report.md'}, plots in {out}")
    return records


def code_version() -> str:
    """The commit the benchmark runs (``-dirty`` when the library or the benchmarks have
    uncommitted changes), so a study built over sittings shows which code made each
    sitting; ``unknown`` outside a git checkout."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--", "src", "benchmarks").stdout.strip()
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty else "")


def study_budgets() -> dict[str, int]:
    """The ``max_tokens`` the app's calls get (recorded in a study's meta)."""
    return {**BUDGETS, "marker": MARKER_TOKENS}


def load_study(
    out: Path, model: str, budgets: Mapping[str, int] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records and sittings of the study in ``out`` (none if there is none). A study
    of another model, or (when ``budgets`` is given) one run at other ``max_tokens``, is
    refused: its runs could not be compared with the new ones."""
    path = out / "results.json"
    if not path.is_file():
        return [], []
    try:
        data = json.loads(path.read_text())
        records, meta = list(data["records"]), dict(data["meta"])
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(
            f"{path} is not a benchmark results file ({e!r}); point --out at a new "
            "directory, or pass --fresh to overwrite it"
        ) from e
    if meta.get("model_spec") != model:
        raise SystemExit(
            f"{path} holds a study of --model {meta.get('model_spec')!r}, not {model!r}: "
            "point --out at a new directory, or pass --fresh to overwrite it"
        )
    if budgets is not None and meta.get("budgets") != dict(budgets):
        had = meta.get("budgets")
        raise SystemExit(
            f"{path} holds a study run with max_tokens "
            f"{had if had else '(not recorded)'}, not {dict(budgets)}: its runs could not "
            "be compared with the new ones; point --out at a new directory, or pass --fresh "
            "to overwrite it"
        )
    sittings = list(meta.get("sittings") or [])
    if not sittings:  # a study written before sittings were recorded
        sittings = [
            {
                "date": meta.get("date"),
                "command": meta.get("command", ""),
                "records": len(records),
                "elapsed_s": meta.get("elapsed_s", 0.0),
            }
        ]
    return records, sittings


def rewrite_report(out: Path, console: Any = None) -> dict[str, Any] | None:
    """Recompute the summary, report and plots of the study in ``out`` from its records
    (after a stopped sitting, or a change to the report)."""
    data = json.loads((out / "results.json").read_text())
    return write_outputs(out, data["meta"], data["records"], console=console)


def _one_line(rec: dict[str, Any]) -> str:
    q = "error: " + str(rec["error"]) if rec["error"] else f"quality {rec['quality']:.3f}"
    line = (
        f"run {rec['run']} {rec['company']} {rec['label']}: {rec['calls']} calls, "
        f"{rec['input_tokens']} in ({rec['cached_tokens']} cached), {rec['output_tokens']} out, "
        f"{rec['wall_s']:.1f} s, {q}"
    )
    if rec["arm"] == "auto":
        line += "; tiers " + ", ".join(f"{g} {t}" for g, t in rec["group_tiers"].items())
    return line


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _choose_companies(n: int) -> list[Company]:
    """Held-out companies first (never used to tune prompts), then the others."""
    every = load_companies()
    ordered = [c for c in every if c["held_out"]] + [c for c in every if not c["held_out"]]
    if not 1 <= n <= len(ordered):
        raise SystemExit(f"--companies must be between 1 and {len(ordered)}")
    return ordered[:n]


def _open_judge(spec: str) -> lc.LLMJudge:
    """The reference-based LLM judge (capsules-spec.md section 5) on a capable endpoint:
    ``openai:MODEL`` or an OpenAI-compatible URL (``OPENAI_API_KEY``), or ``scripted``
    for dry runs. The embedded small models cannot judge (docs: judging-offline.md)."""
    if spec == "scripted":
        from langgraph_capsules.testing import ScriptedChatModel

        reply = (
            '{"reasoning": "scripted", "completeness": 7, "accuracy": 8, '
            '"structure": 8, "conciseness": 7}'
        )
        return lc.LLMJudge(ScriptedChatModel(respond=lambda _text: reply))
    from langchain_openai import ChatOpenAI

    if spec.startswith("openai:"):
        model = ChatOpenAI(model=spec.split(":", 1)[1], temperature=0)
    else:
        model = ChatOpenAI(base_url=spec, temperature=0)
    return lc.LLMJudge(model)


def _llm_judge(judge: lc.LLMJudge, company: Company, brief: str) -> dict[str, Any]:
    """Score the brief against a reference listing the facts a good brief states."""
    facts = "\n".join(f"- {f['text']}" for f in company["gold"]["brief"])
    reference = f"A good brief on {company['name']} states these facts:\n{facts}"
    task = f"Write a one-page competitive-intelligence brief on {company['name']}."
    with lc.track_usage() as usage:
        result = judge(task, reference, brief)
    totals = usage.totals()
    return {
        "llm_quality": result.score,
        "judge_calls": totals["calls"],
        "judge_tokens": totals["input_tokens"] + totals["output_tokens"],
    }


def _run_one(arm: Arm, company: Company, run: int, model_label: str) -> dict[str, Any]:
    error = None
    outputs: dict[str, Any] = {}
    fallbacks: list[str] = []
    t0 = time.perf_counter()
    with lc.track_usage() as usage, track_finish_reasons() as finishes:
        try:
            outputs = arm.app.invoke(initial_state(company), arm.config)
        except Exception as e:  # a failed run is recorded, never hidden
            error = f"{type(e).__name__}: {e}"
    wall = time.perf_counter() - t0
    reasons: dict[str, str] = {}
    tiers: dict[str, str] = {}
    gate_quality: dict[str, float | None] = {}
    shadow_quality: dict[str, dict[str, float | None]] = {}
    if arm.capsules is not None:
        recent = arm.capsules.history()[-len(ARM_GROUPS) :]
        fallbacks = sorted(m for r in recent for m in r["fallback"])
        reasons = {m: why for r in recent for m, why in r["fallback_reasons"].items()}
        for r in recent:
            shadow = "".join(f"+shadow:{s['tier']}" for s in r["shadow"])
            tiers[r["group"]] = r["tier"] + shadow
            readings = [r["quality"], *(s["quality"] for s in r["shadow"])]
            gate_quality[r["group"]] = next((q for q in readings if q is not None), None)
            shadow_quality[r["group"]] = {s["tier"]: s["quality"] for s in r["shadow"]}
    totals = usage.totals()
    overhead = usage.by_purpose()
    groups: dict[str, dict[str, int]] = {b: {"input": 0, "output": 0} for b in BUCKETS}
    billed: list[list[int]] = []
    for rec in usage.calls:
        if rec["kind"] == "served":
            continue
        billed.append([rec["input_tokens"], rec["cached_tokens"], rec["output_tokens"]])
        slot = groups.setdefault(_bucket(rec), {"input": 0, "output": 0})
        slot["input"] += rec["input_tokens"]
        slot["output"] += rec["output_tokens"]
    score = score_run(company, outputs) if error is None else None
    return {
        "arm": arm.name,
        "label": arm.label,
        "company": company["id"],
        "held_out": company["held_out"],
        "run": run,
        "model": model_label,
        "calls": totals["calls"],
        "input_tokens": totals["input_tokens"],
        "cached_tokens": totals["cached_tokens"],
        "output_tokens": totals["output_tokens"],
        **finishes.summary(),
        "wall_s": round(wall, 3),
        "quality": None if score is None else round(score["quality"], 4),
        "quality_parts": None
        if score is None
        else {k: v for k, v in score.items() if k != "quality"},
        "tokens_per_group": groups,
        "call_tokens": billed,
        "fallback_members": fallbacks,
        "fallback_reasons": reasons,
        "group_tiers": tiers,
        "gate_quality": gate_quality,
        "shadow_quality": shadow_quality,
        "shadow_calls": overhead["shadow"]["calls"],
        "shadow_input_tokens": overhead["shadow"]["input_tokens"],
        "gate_judge_calls": overhead["judge"]["calls"],
        "_brief": str(outputs.get("brief") or ""),
        "error": error,
    }


def add_cli(sub: Any) -> None:
    """Register ``ci`` and ``study`` under the ``bench`` command."""
    ci = sub.add_parser("ci", help="the competitive-intelligence benchmark, arms side by side")
    _add_options(ci, companies=1, runs=1, arms=DEFAULT_ARMS, out=Path("bench-out/ci"))
    ci.set_defaults(func=main)
    study = sub.add_parser(
        "study",
        help="the competitive-intelligence study: five arms, four companies x two runs",
    )
    _add_options(study, companies=4, runs=2, arms=STUDY_ARMS, out=Path("bench-out/study"))
    study.set_defaults(func=main)


def _add_options(parser: Any, *, companies: int, runs: int, arms: Sequence[str], out: Path) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="scripted | local model name | GGUF path | URL | openai:MODEL "
        f"(default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--companies",
        type=int,
        default=companies,
        help=f"how many, held-out companies first (default {companies})",
    )
    parser.add_argument(
        "--company", action="append", dest="company_ids", help="run this company id (repeatable)"
    )
    parser.add_argument("--runs", type=int, default=runs, help=f"default {runs}")
    parser.add_argument(
        "--arms",
        nargs="+",
        default=list(arms),
        choices=[*ARMS, "all"],
        help=f"default: {' '.join(arms)}; 'all': every arm but auto, which needs --runs 4 or "
        "more to leave fine",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=out,
        help=f"default {out}; an existing study of the same model is extended",
    )
    parser.add_argument("--fresh", action="store_true", help="overwrite the study in --out")
    parser.add_argument(
        "--report",
        action="store_true",
        help="run nothing: recompute the report of the study in --out from its records",
    )
    parser.add_argument(
        "--judge",
        default=None,
        help="also score each brief with the LLM judge on this endpoint: openai:MODEL | URL",
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=DEFAULT_SLOTS,
        help=f"embedded model: server slots decoding requests together (default {DEFAULT_SLOTS})",
    )


def main(args: argparse.Namespace) -> int:
    """Entry point of ``capsules bench ci`` and ``capsules bench study``."""
    if args.report:
        from rich.console import Console

        if not (args.out / "results.json").is_file():
            raise SystemExit(f"--report: no results.json in {args.out}")
        rewrite_report(args.out, console=Console(stderr=True))
        return 0
    arms = [a for a in ARMS if a != "auto"] if "all" in args.arms else args.arms
    records = run_benchmark(
        model=args.model,
        companies=args.companies,
        runs=args.runs,
        arms=arms,
        out=args.out,
        company_ids=args.company_ids,
        judge=args.judge,
        slots=args.slots,
        fresh=args.fresh,
    )
    return 1 if all(r["error"] for r in records) else 0
