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
``results.json`` (one record per arm, company and run), ``report.md`` with the
side-by-side table, and two PNG plots.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import platform
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

import langgraph_capsules as lc
from benchmarks.competitive_intelligence.dataset import Company, load_companies, load_company
from benchmarks.competitive_intelligence.judge import score_run
from benchmarks.competitive_intelligence.pipeline import (
    ARM_GROUPS,
    build_declared,
    build_lg6,
    build_lg14,
    initial_state,
)

__all__ = ["ARMS", "Arm", "add_cli", "build_arms", "main", "run_benchmark", "summarize"]

ARMS = {
    "lg14": "LG 14-node",
    "lg6": "LG hand-merged",
    "capsules_fine": "capsules fine",
    "capsules_compound": "capsules compound",
    "auto": "capsules auto",
    "declared_fine": "declared fine",
    "declared_compound": "declared compound",
}
DEFAULT_ARMS = tuple(a for a in ARMS if a != "auto")
"""Arms of a default run: the auto arm runs fine until its third run, so it is asked
for explicitly with enough runs (``--runs 4 --arms lg14 auto``)."""
AUTO_POLICY = lc.ControllerPolicy.aggressive(quality_floor=0.75)
"""The auto arm's policy: three tool-free agents score 0.1875, above the aggressive
preset's compose_at (0.18) and below balanced (0.23); 0.75 is the paper's floor."""
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
BUCKETS = ("scoping", "competitive", "product", "financial", "risk", "briefer")


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
def open_model(spec: str, *, progress: Any = None) -> Iterator[Model]:
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
    with local.server(spec, host_prompt_cache=False) as srv:
        llm = srv.chat_model(max_tokens=512, temperature=0.0, extra_body=LOCAL_SAMPLING)
        label = (
            f"{spec} (llama.cpp via xllamacpp, repeat_penalty {LOCAL_SAMPLING['repeat_penalty']})"
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
) -> list[dict[str, Any]]:
    """Run the arms interleaved and write results.json, report.md and the plots."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True, width=max(Console(stderr=True).width, 120))
    chosen = [load_company(c) for c in company_ids] if company_ids else _choose_companies(companies)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    started = time.time()

    def install_progress(stage: str, done: int, total: int) -> None:
        if done == 0 or done == total:
            console.log(f"local model: {stage} {done}/{total}")

    with open_model(model, progress=install_progress) as opened:
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
            for run in range(1, runs + 1):
                for company in chosen:
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
    meta = {
        "model": model_label,
        "model_spec": model,
        "companies": [c["id"] for c in chosen],
        "held_out": [c["id"] for c in chosen if c["held_out"]],
        "runs": runs,
        "arms": list(arms),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {_cores()} cores, Python {platform.python_version()}",
        "elapsed_s": round(time.time() - started, 1),
        "command": "capsules " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "",
    }
    summary = summarize(records, list(arms))
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "records": records}, indent=2)
    )
    report = render_report(meta, summary)
    (out / "report.md").write_text(report)
    plot(records, list(arms), out)
    plot_auto(records, out)
    print_table(console, _rich_table(summary))
    if summary["auto_tiers"]:
        console.print("\n".join(_auto_lines(summary["auto_tiers"])))
    console.print(f"wrote {out / 'results.json'}, {out / 'report.md'}, plots in {out}")
    return records


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


def auto_trajectory(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The auto arm per company: each group's tier and gate reading run by run, and the
    arm's input tokens per run (shadow and judge calls included)."""
    out: dict[str, Any] = {}
    for r in records:
        if r["arm"] != "auto":
            continue
        row = out.setdefault(r["company"], {"runs": [], "input_tokens": [], "groups": {}})
        row["runs"].append(r["run"])
        row["input_tokens"].append(r["input_tokens"])
        for g, tier in r["group_tiers"].items():
            q = r["gate_quality"].get(g)
            shadows = (r.get("shadow_quality") or {}).get(g) or {}
            row["groups"].setdefault(g, []).append({"tier": tier, "quality": q, "shadows": shadows})
    return out


def _cell_text(cell: dict[str, Any]) -> str:
    """``standard (0.82)``, or for a switch run each shadow tier with its reading."""
    shadows = cell.get("shadows") or {}
    if shadows:
        parts = [f"shadow:{t} ({'-' if q is None else f'{q:.2f}'})" for t, q in shadows.items()]
        return "fine+" + "+".join(parts)
    q = cell["quality"]
    return cell["tier"] + ("" if q is None else f" ({q:.2f})")


def _auto_lines(traj: dict[str, Any]) -> list[str]:
    lines = []
    for company, row in traj.items():
        runs = row["runs"]
        lines += [
            "",
            f"Auto arm, {company}: tier per group over runs (gate quality in brackets)",
            "",
            "| group | " + " | ".join(f"run {n}" for n in runs) + " |",
            "|---|" + "---|" * len(runs),
        ]
        for g, cells in row["groups"].items():
            txt = [_cell_text(c) for c in cells]
            lines.append(f"| {g} | " + " | ".join(txt) + " |")
        tokens = " | ".join(f"{t:,}" for t in row["input_tokens"])
        lines.append(f"| input tokens | {tokens} |")
    return lines


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


LENGTH_REASONS = frozenset({"length", "max_tokens", "max_output_tokens", "MAX_TOKENS"})
"""Stop reasons that mean the reply hit its ``max_tokens`` (OpenAI, Anthropic, Gemini)."""


class FinishReasons(BaseCallbackHandler):
    """Each billed chat-model call's ``finish_reason``, read from the reply's
    ``response_metadata`` (or the generation info), in completion order. Calls answered
    from a merged call (``capsule_served``) are not model calls and are left out, so the
    count matches :func:`lc.track_usage`'s ``calls``."""

    run_inline = True
    raise_error = False

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._open: dict[Any, dict[str, Any]] = {}

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: Any,
        *,
        run_id: Any,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        md = metadata or {}
        name = md.get("capsule_group") if md.get("capsule_merged") else None
        name = name or md.get("capsule_member") or md.get("langgraph_node")
        limit = (invocation_params or {}).get("max_tokens")
        with self._lock:
            self._open[run_id] = {"node": name, "max_tokens": limit}

    def on_llm_end(self, response: LLMResult, *, run_id: Any, **kwargs: Any) -> None:
        with self._lock:
            call = self._open.pop(run_id, {"node": None, "max_tokens": None})
        gen = (
            response.generations[0][0] if response.generations and response.generations[0] else None
        )
        message = getattr(gen, "message", None)
        rmeta = getattr(message, "response_metadata", None) or {}
        if rmeta.get("capsule_served"):
            return
        info = getattr(gen, "generation_info", None) or {}
        reason = rmeta.get("finish_reason") or rmeta.get("stop_reason")
        reason = reason or info.get("finish_reason") or info.get("stop_reason")
        usage = getattr(message, "usage_metadata", None) or {}
        call.update(finish_reason=reason, output_tokens=usage.get("output_tokens"))
        with self._lock:
            self.calls.append(call)

    def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        with self._lock:
            self._open.pop(run_id, None)

    def summary(self) -> dict[str, Any]:
        """``finish_reasons`` (count per reason; ``unknown`` when the model gives none),
        ``truncated_calls`` (ended at ``max_tokens``), ``finished_calls`` (all),
        ``truncated`` (the node or group and budget of each cut call) and
        ``call_finishes`` (every call: node or group, reason, output tokens, budget)."""
        with self._lock:
            calls = list(self.calls)
        counts: dict[str, int] = {}
        for c in calls:
            key = str(c["finish_reason"] or "unknown")
            counts[key] = counts.get(key, 0) + 1
        cut = [c for c in calls if str(c["finish_reason"]) in LENGTH_REASONS]
        return {
            "call_finishes": [
                {k: c[k] for k in ("node", "finish_reason", "output_tokens", "max_tokens")}
                for c in calls
            ],
            "finish_reasons": counts,
            "truncated_calls": len(cut),
            "finished_calls": len(calls),
            "truncated": [
                {
                    "node": c["node"],
                    "max_tokens": c["max_tokens"],
                    "output_tokens": c["output_tokens"],
                }
                for c in cut
            ],
        }


_FINISH: ContextVar[FinishReasons | None] = ContextVar("ci_bench_finish_reasons", default=None)
register_configure_hook(_FINISH, inheritable=True)


@contextlib.contextmanager
def track_finish_reasons() -> Iterator[FinishReasons]:
    """Record the ``finish_reason`` of every chat-model call made inside the block (in
    any graph or thread LangChain's callback context reaches, like :func:`lc.track_usage`)."""
    handler = FinishReasons()
    token = _FINISH.set(handler)
    try:
        yield handler
    finally:
        _FINISH.reset(token)


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
    for rec in usage.calls:
        if rec["kind"] == "served":
            continue
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


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def _spread(xs: Sequence[float]) -> tuple[float, float]:
    return (min(xs), max(xs)) if xs else (math.nan, math.nan)


def summarize(records: Sequence[dict[str, Any]], arms: Sequence[str]) -> dict[str, Any]:
    """Per arm: medians with spread, ratios to both LangGraph arms, MDD and quality deltas."""
    keys = ("input_tokens", "cached_tokens", "output_tokens", "calls", "wall_s", "quality")
    per: dict[str, dict[str, Any]] = {}
    for arm in arms:
        rows = [r for r in records if r["arm"] == arm and r["error"] is None]
        stats: dict[str, Any] = {
            "runs_ok": len(rows),
            "errors": sum(1 for r in records if r["arm"] == arm and r["error"]),
        }
        for k in keys:
            vals = [float(r[k]) for r in rows if r[k] is not None]
            stats[k] = {"median": _median(vals), "min": _spread(vals)[0], "max": _spread(vals)[1]}
        llm = [float(r["llm_quality"]) for r in rows if r.get("llm_quality") is not None]
        if llm:
            stats["llm_quality"] = {"median": _median(llm), "min": min(llm), "max": max(llm)}
        everyone = [r for r in records if r["arm"] == arm]
        stats["truncated_calls"] = sum(int(r.get("truncated_calls") or 0) for r in everyone)
        stats["finished_calls"] = sum(int(r.get("finished_calls") or 0) for r in everyone)
        stats["truncation_rate"] = (
            stats["truncated_calls"] / stats["finished_calls"]
            if stats["finished_calls"]
            else math.nan
        )
        inputs = stats["input_tokens"]["median"]
        stats["cached_share"] = stats["cached_tokens"]["median"] / inputs if inputs else math.nan
        per[arm] = stats
    # MDD: 2.5 x pooled run-to-run standard deviation within (arm, company) cells. The
    # auto arm is left out: its quality moves with its tier by design, which is not noise.
    variances = []
    for arm in (a for a in arms if a != "auto"):
        for company in {r["company"] for r in records}:
            q = [
                r["quality"]
                for r in records
                if r["arm"] == arm and r["company"] == company and r["quality"] is not None
            ]
            if len(q) >= 2:
                variances.append(statistics.variance(q))
    mdd = 2.5 * math.sqrt(statistics.mean(variances)) if variances else None
    for arm in arms:
        for ref in ("lg14", "lg6"):
            if ref not in per:
                continue
            for k in ("input_tokens", "output_tokens", "wall_s", "calls"):
                base = per[ref][k]["median"]
                per[arm][f"{k}_vs_{ref}"] = per[arm][k]["median"] / base if base else math.nan
            per[arm][f"quality_delta_vs_{ref}"] = _paired_delta(records, arm, ref)
    return {
        "arms": per,
        "mdd": mdd,
        "mdd_basis": "2.5 x pooled run-to-run std within (arm, company), auto arm excluded",
        "auto_tiers": auto_trajectory(records),
    }


def _paired_delta(records: Sequence[dict[str, Any]], arm: str, ref: str) -> float:
    """Median over (company, run) pairs of quality(arm) - quality(ref)."""
    by_key = {(r["company"], r["run"]): r["quality"] for r in records if r["arm"] == ref}
    deltas = [
        r["quality"] - by_key[(r["company"], r["run"])]
        for r in records
        if r["arm"] == arm
        and r["quality"] is not None
        and by_key.get((r["company"], r["run"])) is not None
    ]
    return _median(deltas)


def _fmt(x: float, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def _with_range(stat: dict[str, float], digits: int) -> str:
    lo, hi = _fmt(stat["min"], digits), _fmt(stat["max"], digits)
    return f"{_fmt(stat['median'], digits)} ({lo}-{hi})"


def _mdd_text(mdd: float | None) -> str:
    return _fmt(mdd, 3) if mdd is not None else "n/a (needs --runs >= 2)"


def _rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for arm, s in summary["arms"].items():
        q = s["quality"]
        rows.append(
            [
                ARMS[arm],
                _fmt(s["input_tokens"]["median"]),
                _fmt(s["cached_tokens"]["median"]),
                _fmt(s["output_tokens"]["median"]),
                _fmt(s["calls"]["median"]),
                _with_range(s["wall_s"], 1),
                _with_range(q, 3),
                _truncated(s),
                _ratio(s, "input_tokens", "lg14") + " / " + _ratio(s, "input_tokens", "lg6"),
                _ratio(s, "output_tokens", "lg14") + " / " + _ratio(s, "output_tokens", "lg6"),
                _ratio(s, "wall_s", "lg14") + " / " + _ratio(s, "wall_s", "lg6"),
                _delta(s, "lg14") + " / " + _delta(s, "lg6"),
            ]
        )
    return rows


_HEADERS = [
    "arm",
    "input tok",
    "cached tok",
    "output tok",
    "calls",
    "wall s (min-max)",
    "quality (min-max)",
    "truncated",
    "input vs LG14 / LG6",
    "output vs LG14 / LG6",
    "wall vs LG14 / LG6",
    "Δquality vs LG14 / LG6",
]


def _truncated(s: dict[str, Any]) -> str:
    """Calls cut at ``max_tokens`` over all calls of the arm (every company and run)."""
    return f"{s.get('truncated_calls', 0)}/{s.get('finished_calls', 0)}"


def _ratio(s: dict[str, Any], key: str, ref: str) -> str:
    v = s.get(f"{key}_vs_{ref}")
    return "-" if v is None else f"{_fmt(v, 2)}x"


def _delta(s: dict[str, Any], ref: str) -> str:
    v = s.get(f"quality_delta_vs_{ref}")
    if v is None:
        return "-"
    sign = "+" if v >= 0 else ""
    return f"{sign}{_fmt(v, 3)}"


def _rich_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    mdd = summary["mdd"]
    caption = f"medians over runs and companies; MDD = {_mdd_text(mdd)}"
    table = Table(title="competitive-intelligence benchmark", caption=caption)
    for h in _HEADERS:
        table.add_column(h, justify="left" if h == "arm" else "right")
    for row in _rows(summary):
        table.add_row(*row)
    return table


def print_table(console: Any, table: Any) -> None:
    """Print ``table`` whole: on a terminal at the terminal's width; elsewhere (a CI log,
    a pipe, a file) at the width the table needs, so no column is squeezed or cut."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.console import Console

    need = Console(width=10_000).measure(table).maximum
    width = console.width
    console.width = max(width, need)
    try:
        console.print(table)
    finally:
        console.width = width


def render_report(meta: dict[str, Any], summary: dict[str, Any]) -> str:
    """The markdown report: what ran, the side-by-side table, and how to read it."""
    mdd = summary["mdd"]
    lines = [
        "# Competitive-intelligence benchmark",
        "",
        f"- command: `{meta['command'] or 'capsules bench ci'}`",
        f"- model: {meta['model']}",
        f"- date: {meta['date']}; machine: {meta['machine']}; elapsed {meta['elapsed_s']} s",
        f"- companies: {', '.join(meta['companies'])} "
        f"(held out: {', '.join(meta['held_out']) or 'none'}); runs: {meta['runs']}",
        "- judge: deterministic gold-fact recall (benchmarks/competitive_intelligence/judge.py); "
        f"MDD = {_mdd_text(mdd)} "
        f"({summary['mdd_basis']})",
        "",
        "| " + " | ".join(_HEADERS) + " |",
        "|" + "---|" * len(_HEADERS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(summary)]
    judged = {a: s["llm_quality"] for a, s in summary["arms"].items() if "llm_quality" in s}
    if judged:
        lines += [
            "",
            "LLM judge (`--judge`): the brief scored against a reference listing the facts a "
            "good brief states; rubric of four dimensions, both orders averaged.",
            "",
            "| arm | LLM-judged quality (min-max) |",
            "|---|---|",
        ]
        lines += [f"| {ARMS[a]} | {_with_range(q, 3)} |" for a, q in judged.items()]
    if summary.get("auto_tiers"):
        lines += _auto_lines(summary["auto_tiers"])
        lines += [
            "",
            "The auto arm's totals include its shadow evaluation (the compound tier run "
            "beside fine on the switch run) and the gate judge's calls. Policy: aggressive "
            f"preset, quality_floor {AUTO_POLICY.quality_floor}.",
        ]
    lines += [
        "",
        'Truncated: calls that ended at their max_tokens (finish_reason "length") over '
        "all calls of the arm, every company and run; a cut extractor loses the facts "
        "after the cut.",
        "",
        "Token and call figures are medians over (company, run) cells; ratios are of medians. "
        "Δquality is the median paired difference per (company, run); a |Δ| below the MDD "
        "is indistinguishable from noise.",
        "",
        "![quality vs input tokens](quality_vs_input.png)",
        "",
        "![tokens per group](tokens_per_group.png)",
    ]
    if summary.get("auto_tiers"):
        lines += ["", "![auto arm over runs](auto_tiers.png)"]
    return "\n".join(lines) + "\n"


def plot(records: Sequence[dict[str, Any]], arms: Sequence[str], out: Path) -> None:
    """quality_vs_input.png (per arm) and tokens_per_group.png (input tokens per group)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in arms:
        rows = [r for r in records if r["arm"] == arm and r["quality"] is not None]
        ax.scatter(
            [r["input_tokens"] for r in rows],
            [r["quality"] for r in rows],
            label=ARMS[arm],
            alpha=0.8,
        )
    ax.set_xlabel("input tokens per run")
    ax.set_ylabel("quality (gold-fact judge)")
    ax.set_title("Quality against input tokens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "quality_vs_input.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        rows = [r for r in records if r["arm"] == arm and r["error"] is None]
        meds = [
            _median([r["tokens_per_group"].get(b, {}).get("input", 0) for r in rows])
            for b in BUCKETS
        ]
        ax.bar([j + i * width for j in range(len(BUCKETS))], meds, width, label=ARMS[arm])
    ax.set_xticks([j + width * (len(arms) - 1) / 2 for j in range(len(BUCKETS))], BUCKETS)
    ax.set_ylabel("median input tokens per run")
    ax.set_title("Input tokens per group")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "tokens_per_group.png", dpi=120)
    plt.close(fig)


_TIER_LEVEL = {"fine": 0, "shadow": 1, "standard": 2, "two_phase": 3, "sequential": 4}


def _tier_level(tier: str) -> int:
    return _TIER_LEVEL["shadow"] if "+shadow" in tier else _TIER_LEVEL.get(tier, 0)


def plot_auto(records: Sequence[dict[str, Any]], out: Path) -> None:
    """auto_tiers.png: the auto arm's input tokens per run beside LG 14-node, and each
    group's tier over the runs (first company)."""
    traj = auto_trajectory(records)
    if not traj:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    company, row = next(iter(traj.items()))
    runs = row["runs"]
    if not row["groups"]:  # every auto run failed: nothing to draw
        return
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(runs, row["input_tokens"], marker="o", label="capsules auto")
    lg14 = [r["input_tokens"] for r in records if r["arm"] == "lg14" and r["company"] == company]
    if lg14:
        top.axhline(_median(lg14), linestyle="--", color="grey", label="LG 14-node (median)")
    top.set_ylabel("input tokens per run")
    top.set_title(f"Auto arm over runs ({company})")
    top.legend()
    groups = list(row["groups"])
    grid = [[_tier_level(c["tier"]) for c in row["groups"][g]] for g in groups]
    bottom.imshow(
        grid,
        aspect="auto",
        cmap="viridis",
        vmin=0,
        vmax=4,
        extent=(runs[0] - 0.5, runs[-1] + 0.5, len(groups) - 0.5, -0.5),
    )
    for y, g in enumerate(groups):
        for x, c in zip(runs, row["groups"][g], strict=True):
            label = "shadow" if "+shadow" in c["tier"] else c["tier"]
            ink = "black" if _tier_level(c["tier"]) >= 3 else "white"  # light cells
            bottom.text(x, y, label, ha="center", va="center", fontsize=7, color=ink)
    bottom.set_yticks(range(len(groups)), groups)
    bottom.set_xlabel("run")
    bottom.set_xticks(runs)
    fig.tight_layout()
    fig.savefig(out / "auto_tiers.png", dpi=120)
    plt.close(fig)


def add_cli(sub: Any) -> None:
    """Register ``ci`` under the ``bench`` command."""
    ci = sub.add_parser("ci", help="the competitive-intelligence benchmark, all arms side by side")
    ci.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="scripted | local model name | GGUF path | URL | openai:MODEL",
    )
    ci.add_argument(
        "--companies", type=int, default=1, help="how many (held-out companies come first)"
    )
    ci.add_argument(
        "--company", action="append", dest="company_ids", help="run this company id (repeatable)"
    )
    ci.add_argument("--runs", type=int, default=1)
    ci.add_argument(
        "--arms",
        nargs="+",
        default=list(DEFAULT_ARMS),
        choices=list(ARMS),
        help="default: every arm but auto, which needs --runs 4 or more to leave fine",
    )
    ci.add_argument("--out", type=Path, default=Path("bench-out/ci"))
    ci.add_argument(
        "--judge",
        default=None,
        help="also score each brief with the LLM judge on this endpoint: openai:MODEL | URL",
    )
    ci.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``capsules bench ci``."""
    records = run_benchmark(
        model=args.model,
        companies=args.companies,
        runs=args.runs,
        arms=args.arms,
        out=args.out,
        company_ids=args.company_ids,
        judge=args.judge,
    )
    return 1 if all(r["error"] for r in records) else 0
