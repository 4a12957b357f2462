"""The due-diligence benchmark's figures: the competitive-intelligence report's summary
(medians, truncation, cost per price sheet, MDD, per-company rows) plus what the DSPy
head-to-head needs: total tokens, ratios to both DSPy arms and to the hand-written
LangGraph app, paired quality deltas with a bootstrap interval, and the issue 13 goals.
Everything is computed from the records alone (``results.json`` can be re-reported).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.competitive_intelligence import report as ci_report
from benchmarks.competitive_intelligence.report import (
    _cost_cell,
    _fmt,
    _mdd_text,
    _median,
    _signed,
    _truncated,
    _with_range,
    paired_study,
    print_table,
)

__all__ = [
    "ARMS",
    "BUCKETS",
    "CAPSULE_ARMS",
    "REFERENCES",
    "columns",
    "render_report",
    "rows",
    "summarize",
    "write_outputs",
]

ARMS = {
    "lg": "LG hand-written",
    "capsules_fine": "capsules fine",
    "capsules_compound": "capsules compound",
    "auto": "capsules auto",
    "declared_fine": "declared fine",
    "declared_compound": "declared compound",
    "dspy": "DSPy uncompiled",
    "dspy_compiled": "DSPy compiled",
}
"""Arm id -> label, in the table's order."""
CAPSULE_ARMS = ("capsules_fine", "capsules_compound", "auto", "declared_fine", "declared_compound")
"""The arms the goals are about."""
REFERENCES = ("dspy", "dspy_compiled", "lg")
"""Arms the others are compared with (ratios and paired deltas), where they ran."""
BUCKETS = ("scoping", "research", "analysis", "writer")
"""Stages for the tokens-per-stage plot."""
GOALS = {"dspy": 0.75, "dspy_compiled": 0.30}
"""Issue 13: capsules' total tokens at most this share of the DSPy arm's, at quality
within the MDD."""


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The competitive-intelligence summary of these records, plus per arm the total
    tokens (input + output) and, per reference arm, the ratio of medians and the paired
    quality delta (bootstrap interval); and the goals."""
    arms = [a for a in ARMS if any(r["arm"] == a for r in records)]
    summary = ci_report.summarize(records, arms)
    summary.pop("paired_vs_lg14", None)  # no LG 14-node here: the references are below
    per = summary["arms"]
    for arm in arms:
        ok = [r for r in records if r["arm"] == arm and r["error"] is None]
        total = [float(r["input_tokens"] + r["output_tokens"]) for r in ok]
        per[arm]["total_tokens"] = {
            "median": _median(total),
            "min": min(total, default=math.nan),
            "max": max(total, default=math.nan),
        }
    refs = [r for r in REFERENCES if r in per]
    summary["references"] = refs
    summary["versus"] = {
        ref: {
            arm: {
                "total_ratio": _ratio(per[arm]["total_tokens"], per[ref]["total_tokens"]),
                "input_ratio": _ratio(per[arm]["input_tokens"], per[ref]["input_tokens"]),
                "paired": paired_study(records, arm, ref),
            }
            for arm in arms
            if arm != ref
        }
        for ref in refs
    }
    summary["goals"] = _goals(summary)
    summary["auto_tiers"] = ci_report.auto_trajectory(records)
    return summary


def _ratio(mine: dict[str, float], base: dict[str, float]) -> float | None:
    a, b = mine["median"], base["median"]
    return None if not b or math.isnan(a) or math.isnan(b) else a / b


def _goals(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each capsules arm against each DSPy arm: total tokens at most the goal's share,
    and quality not below the DSPy arm's by more than the MDD: the mean paired delta
    and the lower end of its 95% bootstrap interval both at or above -MDD (a mean
    inside the MDD whose interval reaches further down does not establish parity)."""
    mdd = summary["mdd"]
    out = []
    for ref, share in GOALS.items():
        for arm, v in summary["versus"].get(ref, {}).items():
            if arm not in CAPSULE_ARMS:
                continue
            ratio, delta, ci = v["total_ratio"], v["paired"]["mean"], v["paired"]["ci95"]
            quality_ok = ci_report.quality_within_mdd(delta, ci, mdd)
            tokens_ok = None if ratio is None else ratio <= share
            met = None if quality_ok is None or tokens_ok is None else quality_ok and tokens_ok
            out.append(
                {
                    "goal": f"{ARMS[arm]} vs {ARMS[ref]}: total tokens <= {share:.2f}x at "
                    "quality within the MDD",
                    "total_ratio": ratio,
                    "delta": delta,
                    "ci95": ci,
                    "met": met,
                }
            )
    return out


def columns(summary: dict[str, Any]) -> list[str]:
    """The main table's columns (one cost column per price sheet)."""
    refs = " / ".join(ARMS[r] for r in summary["references"])
    return [
        "arm",
        "input tok",
        "cached tok",
        "output tok",
        "total tok",
        "calls",
        "wall s (min-max)",
        "quality (min-max)",
        "truncated",
        *(f"{p['label']} $/run" for p in summary["price_sheets"]),
        f"total vs {refs}",
        f"Δquality vs {refs}",
    ]


_COUNTS = ("input_tokens", "cached_tokens", "output_tokens", "total_tokens", "calls")


def rows(summary: dict[str, Any]) -> list[list[str]]:
    """The main table's rows, one per arm."""
    out = []
    for arm, s in summary["arms"].items():
        vs = [summary["versus"][ref].get(arm) for ref in summary["references"]]
        out.append(
            [
                ARMS[arm],
                *(_fmt(s[k]["median"]) for k in _COUNTS),
                _with_range(s["wall_s"], 1),
                _with_range(s["quality"], 3),
                _truncated(s),
                *(_cost_cell(s, p["id"]) for p in summary["price_sheets"]),
                " / ".join("—" if v is None else _times(v["total_ratio"]) for v in vs),
                " / ".join("—" if v is None else _signed(v["paired"]["mean"]) for v in vs),
            ]
        )
    return out


def _times(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in body),
    ]


def _runs_text(records: Sequence[dict[str, Any]], last: int) -> str:
    """Runs per arm and company; a study built over sittings numbers each sitting's runs
    after the company's last, so the highest run number is not a count."""
    counts = sorted(set(Counter((r["arm"], r["company"]) for r in records).values()))
    if not counts:
        return f"runs per company: {last}"
    if len(counts) == 1:
        return f"runs per arm and company: {counts[0]}"
    return f"runs per arm and company: {counts[0]} to {counts[-1]} (see the per-company table)"


def render_report(
    meta: dict[str, Any], summary: dict[str, Any], records: Sequence[dict[str, Any]] = ()
) -> str:
    """``report.md``: what ran (model, machine, companies, sittings, the DSPy compile
    budget), the table, paired deltas, goals, per-company rows and how to read them."""
    mdd = summary["mdd"]
    lines = [
        "# Due-diligence benchmark: capsules, LangGraph and DSPy",
        "",
        f"- model: {meta['model']}",
        f"- machine: {meta['machine']}",
        f"- companies: {', '.join(meta['companies'])} (held out: "
        f"{', '.join(meta['held_out']) or 'none'}); {_runs_text(records, meta['runs'])}",
    ]
    lines += [
        f"- sitting {s['date']}: `{s['command'] or 'capsules bench dd'}`, {s['records']} "
        f"records, {s['elapsed_s']} s"
        for s in meta.get("sittings") or []
    ]
    compiled = meta.get("dspy_compile")
    if compiled:
        scored = ", ".join(f"{x['company']} {x['quality']:.3f}" for x in compiled.get("scored", []))
        lines.append(
            f"- DSPy compiled: {compiled.get('budget_text', '?')}; {compiled.get('source', '')}"
            f" ({compiled.get('calls', '?')} calls, {_fmt(compiled.get('input_tokens'))} input "
            f"and {_fmt(compiled.get('output_tokens'))} output tokens, "
            f"{compiled.get('wall_s', '?')} s; teacher runs scored: {scored or 'none'}; "
            f"demos per predictor: "
            f"{', '.join(f'{k} {v}' for k, v in (compiled.get('demos') or {}).items())})"
        )
    lines += [
        "- judge: deterministic gold-fact recall against the SQLite table "
        f"(benchmarks/due_diligence/judge.py); MDD = {_mdd_text(mdd)} ({summary['mdd_basis']})",
        "",
        *_table(columns(summary), rows(summary)),
    ]
    for ref in summary["references"]:
        body = []
        for arm, v in summary["versus"][ref].items():
            p = v["paired"]
            if p["mean"] is None:
                continue
            lo, hi = p["ci95"]
            body.append(
                [
                    ARMS[arm],
                    str(p["companies"]),
                    str(p["pairs"]),
                    _signed(p["mean"]),
                    f"[{_signed(lo)}, {_signed(hi)}]",
                    _times(v["total_ratio"]),
                    _times(v["input_ratio"]),
                    ci_report._reading(p, mdd),
                ]
            )
        if body:
            lines += [
                "",
                f"Against {ARMS[ref]}, paired by (company, run): mean of the per-company mean "
                "quality deltas with a 95% bootstrap interval (companies, then runs within "
                f"each resampled; {ci_report.BOOTSTRAP_RESAMPLES:,} resamples, seed 0), and "
                "the ratios of median tokens.",
                "",
                *_table(
                    [
                        "arm",
                        "companies",
                        "pairs",
                        "mean Δquality",
                        "95% CI",
                        "total tok ratio",
                        "input tok ratio",
                        "reading",
                    ],
                    body,
                ),
            ]
    failed = {
        ARMS[a]: sum(len(r.get("failed_stages") or []) for r in records if r["arm"] == a)
        for a in summary["arms"]
    }
    if any(failed.values()):
        lines += [
            "",
            "Stages whose reply no DSPy adapter could parse (left empty, the run judged as "
            "it stands), over all runs: "
            + ", ".join(f"{arm} {n}" for arm, n in failed.items() if n),
        ]
    if summary["goals"]:
        lines += [
            "",
            "Goals (issue 13). Met when the total-token ratio is at most the share and both "
            "the mean paired Δquality and the low end of its 95% interval are at or above "
            "-MDD:",
            "",
        ]
        lines += _table(
            ["goal", "total ratio", "mean Δquality", "95% CI", "met"],
            [
                [
                    g["goal"],
                    _times(g["total_ratio"]),
                    _signed(g["delta"]),
                    "n/a"
                    if not g.get("ci95")
                    else f"[{_signed(g['ci95'][0])}, {_signed(g['ci95'][1])}]",
                    "n/a" if g["met"] is None else ("yes" if g["met"] else "NO"),
                ]
                for g in summary["goals"]
            ],
        )
    company_rows = [
        [
            r["company"] + (" (held out)" if r["held_out"] else ""),
            ARMS[r["arm"]],
            str(r["runs"]),
            "n/a" if r["quality"] is None else f"{r['quality']:.3f}",
            _fmt(r["calls"]),
            _fmt(r["input_tokens"]),
            _fmt(r["output_tokens"]),
            str(r["truncated"]),
        ]
        for r in summary["per_company"]
    ]
    lines += [
        "",
        "Per company (quality: mean over runs; calls and tokens: medians):",
        "",
        *_table(
            ["company", "arm", "runs", "quality", "calls", "input tok", "output tok", "truncated"],
            company_rows,
        ),
    ]
    if summary.get("auto_tiers"):
        lines += [
            "",
            "The auto arm (the controller on, one controller for the whole sitting, so it "
            "carries what it learnt from company to company):",
            *ci_report.auto_lines(summary["auto_tiers"]),
        ]
    lines += [
        "",
        "Token and call figures are medians over (company, run) cells and count every "
        "billed call: for the LangGraph and capsules arms through lc.track_usage, for the "
        "DSPy arms from each LiteLLM response's usage (prompt, cached prompt and completion "
        "tokens), the same counts the endpoint reports to both. Cost: median USD per run, "
        "each call priced from its tokens under the provider's caching rules "
        "(benchmarks/pricing.py; sheets in benchmarks/price_sheets.json):",
        *(f"  - {p['label']}: {p['date']}, {p['source']}" for p in summary["price_sheets"]),
        "",
        "Every arm runs the three researchers, then the three analysts, concurrently "
        "(LangGraph's fan-out; the DSPy program in threads, one pipeline step at a time), "
        "so wall times compare like with like; within one agent, tool-loop turns and ReAct "
        "steps run one after the other. A |Δquality| within the MDD is indistinguishable "
        "from noise; one run gives no MDD.",
        "",
        "![quality vs total tokens](quality_vs_tokens.png)",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(
    out: Path,
    meta: dict[str, Any],
    records: Sequence[dict[str, Any]],
    *,
    console: Any = None,
    final: bool = True,
) -> dict[str, Any] | None:
    """Write ``results.json`` (between runs: the records, as ``capsules bench ci`` does);
    with ``final`` also the summary in it, ``report.md`` and the plot, and print the
    table to ``console``."""
    if not final:
        return ci_report.write_outputs(out, meta, records, final=False)
    summary = summarize(records)
    out.mkdir(parents=True, exist_ok=True)
    saved = json.dumps({"meta": meta, "summary": summary, "records": list(records)}, indent=2)
    (out / "results.json.tmp").write_text(saved)
    (out / "results.json.tmp").replace(out / "results.json")
    (out / "report.md").write_text(render_report(meta, summary, records))
    plot(records, out)
    if console is not None:
        from rich.table import Table

        table = Table(
            title="due-diligence benchmark",
            caption=f"medians over runs and companies; MDD = {_mdd_text(summary['mdd'])}",
        )
        for h in columns(summary):
            table.add_column(h, justify="left" if h == "arm" else "right")
        for r in rows(summary):
            table.add_row(*r)
        print_table(console, table)
    return summary


def plot(records: Sequence[dict[str, Any]], out: Path) -> None:
    """quality_vs_tokens.png: each run's quality against its total tokens, and the
    median input tokens per stage, per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ARMS if any(r["arm"] == a for r in records)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        ok = [r for r in records if r["arm"] == arm and r["error"] is None]
        left.scatter(
            [r["input_tokens"] + r["output_tokens"] for r in ok],
            [r["quality"] for r in ok],
            label=ARMS[arm],
            alpha=0.8,
        )
        per_stage = [
            _median([r["tokens_per_group"].get(b, {}).get("input", 0) for r in ok]) for b in BUCKETS
        ]
        right.bar([j + i * width for j in range(len(BUCKETS))], per_stage, width, label=ARMS[arm])
    left.set(xlabel="total tokens per run", ylabel="quality (gold judge)", title="Quality")
    left.legend(fontsize=7)
    right.set_xticks([j + width * (len(arms) - 1) / 2 for j in range(len(BUCKETS))], BUCKETS)
    right.set(ylabel="median input tokens per run", title="Input tokens per stage")
    fig.tight_layout()
    fig.savefig(out / "quality_vs_tokens.png", dpi=110)
    plt.close(fig)
