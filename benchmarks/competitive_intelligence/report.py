"""The benchmark's figures: per-arm summary, per-company rows, paired deltas with a
bootstrap interval, cost per provider, the side-by-side table, ``report.md`` and plots.

Everything here is computed from the records alone, so a study that grows over several
sittings (``--out`` pointed at an existing study) is summarised from all its records.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import pricing

__all__ = [
    "ARMS",
    "BUCKETS",
    "HEADERS",
    "arms_in",
    "auto_lines",
    "auto_trajectory",
    "paired_study",
    "print_table",
    "render_report",
    "rich_table",
    "summarize",
    "write_outputs",
]

ARMS = {
    "lg14": "LG 14-node",
    "lg6": "LG hand-merged",
    "capsules_fine": "capsules fine",
    "capsules_compound": "capsules compound",
    "auto": "capsules auto",
    "declared_fine": "declared fine",
    "declared_compound": "declared compound",
}
BUCKETS = ("scoping", "competitive", "product", "financial", "risk", "briefer")
BOOTSTRAP_RESAMPLES = 10_000


def arms_in(records: Sequence[dict[str, Any]]) -> list[str]:
    """The arms that have records, in the table's order."""
    present = {r["arm"] for r in records}
    return [a for a in ARMS if a in present]


def summarize(
    records: Sequence[dict[str, Any]],
    arms: Sequence[str] | None = None,
    *,
    sheets: Sequence[pricing.PriceSheet] | None = None,
) -> dict[str, Any]:
    """Per arm: medians with spread, truncation, cost per price sheet, ratios to both
    LangGraph arms and median quality deltas; the MDD; per-company rows; and each arm's
    paired per-company quality delta against LG 14-node with a bootstrap interval."""
    arms = list(arms) if arms is not None else arms_in(records)
    sheets = list(sheets) if sheets is not None else pricing.load_sheets()
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
        priced = [r["call_tokens"] for r in rows if r.get("call_tokens") is not None]
        stats["cost"] = {s.id: pricing.arm_cost(s, priced) for s in sheets}
        per[arm] = stats
    mdd = _mdd(records, arms)
    for arm in arms:
        for ref in ("lg14", "lg6"):
            if ref not in per:
                continue
            for k in ("input_tokens", "output_tokens", "wall_s", "calls"):
                base = per[ref][k]["median"]
                per[arm][f"{k}_vs_{ref}"] = per[arm][k]["median"] / base if base else math.nan
            for s in sheets:
                mine, base = per[arm]["cost"][s.id]["median"], per[ref]["cost"][s.id]["median"]
                per[arm]["cost"][s.id][f"vs_{ref}"] = mine / base if mine and base else None
            per[arm][f"quality_delta_vs_{ref}"] = _paired_delta(records, arm, ref)
    paired = (
        {a: paired_study(records, a, "lg14") for a in arms if a != "lg14"} if "lg14" in per else {}
    )
    return {
        "arms": per,
        "stages": _stage_inputs(records, arms),
        "mdd": mdd,
        "mdd_basis": "2.5 x pooled run-to-run std within (arm, company), auto arm excluded",
        "per_company": _per_company(records, arms),
        "paired_vs_lg14": paired,
        "price_sheets": [
            {"id": s.id, "label": s.label, "date": s.date, "source": s.source} for s in sheets
        ],
        "auto_tiers": auto_trajectory(records),
    }


def _mdd(records: Sequence[dict[str, Any]], arms: Sequence[str]) -> float | None:
    """2.5 x the pooled run-to-run standard deviation within (arm, company) cells. The
    auto arm is left out: its quality moves with its tier by design, which is not noise."""
    variances = []
    for arm in (a for a in arms if a != "auto"):
        for company in sorted({r["company"] for r in records}):
            q = [
                r["quality"]
                for r in records
                if r["arm"] == arm and r["company"] == company and r["quality"] is not None
            ]
            if len(q) >= 2:
                variances.append(statistics.variance(q))
    return 2.5 * math.sqrt(statistics.mean(variances)) if variances else None


def _paired_delta(records: Sequence[dict[str, Any]], arm: str, ref: str) -> float:
    """Median over (company, run) pairs of quality(arm) - quality(ref)."""
    return _median([d for ds in _pairs(records, arm, ref).values() for d in ds])


def _pairs(records: Sequence[dict[str, Any]], arm: str, ref: str) -> dict[str, list[float]]:
    """Per company, quality(arm) - quality(ref) for each run both arms scored."""
    base = {(r["company"], r["run"]): r["quality"] for r in records if r["arm"] == ref}
    out: dict[str, list[float]] = {}
    for r in records:
        other = base.get((r["company"], r["run"]))
        if r["arm"] == arm and r["quality"] is not None and other is not None:
            out.setdefault(r["company"], []).append(r["quality"] - other)
    return out


def paired_study(
    records: Sequence[dict[str, Any]],
    arm: str,
    ref: str = "lg14",
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """``arm``'s quality minus ``ref``'s, paired by (company, run): the mean per company,
    their mean, and a 95% percentile bootstrap interval of that mean (companies resampled,
    then runs within each company; fixed seed, so the report is reproducible)."""
    import numpy as np

    pairs = _pairs(records, arm, ref)
    per_company = {c: float(np.mean(ds)) for c, ds in pairs.items()}
    if not pairs:
        return {"per_company": {}, "mean": None, "ci95": None, "companies": 0, "pairs": 0}
    rng = np.random.default_rng(seed)
    groups = [np.asarray(ds, dtype=float) for ds in pairs.values()]
    # each company's mean over its runs, resampled: shape (companies, resamples)
    boot = np.stack([g[rng.integers(0, len(g), size=(resamples, len(g)))].mean(1) for g in groups])
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    means = boot[picks, np.arange(resamples)[:, None]].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "per_company": per_company,
        "mean": float(np.mean(list(per_company.values()))),
        "ci95": [float(lo), float(hi)],
        "companies": len(groups),
        "pairs": sum(len(g) for g in groups),
    }


def _per_company(records: Sequence[dict[str, Any]], arms: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (company, arm): runs, mean quality with its range, median calls and
    tokens, and the mean paired quality delta against LG 14-node."""
    rows = []
    for company in dict.fromkeys(r["company"] for r in records):
        for arm in arms:
            mine = [
                r for r in records if r["arm"] == arm and r["company"] == company and not r["error"]
            ]
            if not mine:
                continue
            q = [float(r["quality"]) for r in mine if r["quality"] is not None]
            deltas = _pairs(records, arm, "lg14").get(company, []) if arm != "lg14" else []
            rows.append(
                {
                    "company": company,
                    "held_out": bool(mine[0].get("held_out")),
                    "arm": arm,
                    "runs": len(mine),
                    "quality": statistics.mean(q) if q else None,
                    "quality_min": min(q) if q else None,
                    "quality_max": max(q) if q else None,
                    "calls": _median([r["calls"] for r in mine]),
                    "input_tokens": _median([r["input_tokens"] for r in mine]),
                    "output_tokens": _median([r["output_tokens"] for r in mine]),
                    "truncated": sum(int(r.get("truncated_calls") or 0) for r in mine),
                    "delta_vs_lg14": statistics.mean(deltas) if deltas else None,
                }
            )
    return rows


STAGES: dict[str, tuple[str, ...]] = {
    "scoping": ("scoping",),
    "lens calls": ("competitive", "product", "financial", "risk"),
    "briefer": ("briefer",),
}
"""The pipeline's three stages and the call groups (``tokens_per_group``) each sums."""


def _stage_inputs(
    records: Sequence[dict[str, Any]], arms: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per arm, the median input tokens of each stage over its (company, run) cells: the
    lens calls carry a merge's framing; the briefer's input is what the extractors wrote."""
    out: dict[str, dict[str, float]] = {}
    for arm in arms:
        rows = [r for r in records if r["arm"] == arm and not r["error"]]
        groups = [r.get("tokens_per_group") or {} for r in rows]
        if not any(groups):
            continue
        out[arm] = {
            stage: _median([sum(g.get(b, {}).get("input", 0) for b in buckets) for g in groups])
            for stage, buckets in STAGES.items()
        }
    return out


def _stage_lines(summary: dict[str, Any]) -> list[str]:
    stages = summary.get("stages") or {}
    if not stages:
        return []
    ref = "lg6" if "lg6" in stages else None
    head = "| arm | " + " | ".join(f"{s} input" for s in STAGES)
    rule = "|---|" + "---|" * len(STAGES)
    if ref:
        head += " | " + " | ".join(f"{s} vs LG6" for s in STAGES)
        rule += "---|" * len(STAGES)
    lines = [
        "",
        "Input tokens by stage (medians over (company, run) cells): the lens calls carry a "
        "merged call's framing (its preamble, task headers and reply skeleton); the "
        "briefer's input is the twelve extractions, so it grows with what the extractors "
        "wrote.",
        "",
        head + " |",
        rule,
    ]
    for arm, by_stage in stages.items():
        cells = [_fmt(by_stage[s]) for s in STAGES]
        if ref:
            base = stages[ref]
            cells += [f"{by_stage[s] / base[s]:.2f}x" if base[s] else "n/a" for s in STAGES]
        lines.append(f"| {ARMS[arm]} | " + " | ".join(cells) + " |")
    return lines


def _cost_cell(s: dict[str, Any], sheet_id: str) -> str:
    """``0.0461 (0.93x)``: median USD per run and its ratio to LG 14-node; opt-in cache
    sheets also say whether the arm was priced with caching on or off."""
    c = s.get("cost", {}).get(sheet_id)
    if not c or c["median"] is None:
        return "n/a"
    ratio = c.get("vs_lg14")
    text = f"{c['median']:.4f}"
    notes = [] if ratio is None else [f"{ratio:.2f}x"]
    sheet_modes = {sh.id: sh.mode for sh in pricing.load_sheets()}
    if sheet_modes.get(sheet_id) == "opt-in":
        notes.append("cache on" if c["caching"] else "cache off")
    return text + (f" ({', '.join(notes)})" if notes else "")


def _headers(summary: dict[str, Any]) -> list[str]:
    costs = [f"{p['label']} $/run (vs LG14)" for p in summary.get("price_sheets", [])]
    return [*HEADERS[:8], *costs, *HEADERS[8:]]


HEADERS = [
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
"""The table's columns without the cost columns (one per price sheet, after
"truncated")."""


def _rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    sheet_ids = [p["id"] for p in summary.get("price_sheets", [])]
    for arm, s in summary["arms"].items():
        rows.append(
            [
                ARMS[arm],
                _fmt(s["input_tokens"]["median"]),
                _fmt(s["cached_tokens"]["median"]),
                _fmt(s["output_tokens"]["median"]),
                _fmt(s["calls"]["median"]),
                _with_range(s["wall_s"], 1),
                _with_range(s["quality"], 3),
                _truncated(s),
                *(_cost_cell(s, sid) for sid in sheet_ids),
                _ratio(s, "input_tokens", "lg14") + " / " + _ratio(s, "input_tokens", "lg6"),
                _ratio(s, "output_tokens", "lg14") + " / " + _ratio(s, "output_tokens", "lg6"),
                _ratio(s, "wall_s", "lg14") + " / " + _ratio(s, "wall_s", "lg6"),
                _delta(s, "lg14") + " / " + _delta(s, "lg6"),
            ]
        )
    return rows


def rich_table(summary: dict[str, Any]) -> Any:
    """The side-by-side table as a rich ``Table``."""
    from rich.table import Table

    caption = f"medians over runs and companies; MDD = {_mdd_text(summary['mdd'])}"
    table = Table(title="competitive-intelligence benchmark", caption=caption)
    for h in _headers(summary):
        table.add_column(h, justify="left" if h == "arm" else "right")
    for row in _rows(summary):
        table.add_row(*row)
    return table


def _signed(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.3f}"


def _paired_lines(summary: dict[str, Any]) -> list[str]:
    paired = summary.get("paired_vs_lg14") or {}
    if not paired:
        return []
    mdd = summary["mdd"]
    lines = [
        "",
        "Quality against LG 14-node, paired by (company, run): the mean of the per-company "
        "mean deltas, with a 95% bootstrap interval (companies resampled, then runs within "
        f"each; {BOOTSTRAP_RESAMPLES:,} resamples, seed 0), beside the MDD.",
        "",
        "| arm | companies | pairs | mean Δquality | 95% CI | MDD | reading |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, p in paired.items():
        if p["mean"] is None:
            continue
        lo, hi = p["ci95"]
        lines.append(
            f"| {ARMS[arm]} | {p['companies']} | {p['pairs']} | {_signed(p['mean'])} | "
            f"[{_signed(lo)}, {_signed(hi)}] | {_mdd_text(mdd)} | {_reading(p, mdd)} |"
        )
    return lines


def _reading(p: dict[str, Any], mdd: float | None) -> str:
    """What the delta says: within the MDD (noise), or above / below by more."""
    if mdd is None:
        return "no MDD (one run)"
    if abs(p["mean"]) <= mdd:
        return "within the MDD"
    return "better by more than the MDD" if p["mean"] > 0 else "worse by more than the MDD"


def _company_lines(summary: dict[str, Any]) -> list[str]:
    rows = summary.get("per_company") or []
    if not rows:
        return []
    lines = [
        "",
        "Per company (quality: mean over runs, range in brackets; tokens and calls: medians; "
        "Δ: mean paired delta against LG 14-node):",
        "",
        "| company | arm | runs | quality | calls | input tok | output tok | truncated "
        "| Δ vs LG14 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["company"] + (" (held out)" if r["held_out"] else "")
        q = (
            "n/a"
            if r["quality"] is None
            else f"{r['quality']:.3f} ({r['quality_min']:.3f}-{r['quality_max']:.3f})"
        )
        delta = "—" if r["arm"] == "lg14" else _signed(r["delta_vs_lg14"])
        lines.append(
            f"| {name} | {ARMS[r['arm']]} | {r['runs']} | {q} | {_fmt(r['calls'])} | "
            f"{_fmt(r['input_tokens'])} | {_fmt(r['output_tokens'])} | {r['truncated']} | "
            f"{delta} |"
        )
    return lines


def quality_within_mdd(
    mean: float | None, ci95: Sequence[float] | None, mdd: float | None
) -> bool | None:
    """Whether a paired quality delta is not below the reference by more than the MDD:
    the mean and the low end of its 95% interval both at or above -MDD (a mean inside
    the band over an interval reaching far below it is not parity). ``None`` when the
    mean or the MDD is unknown."""
    if mean is None or mdd is None:
        return None
    return mean >= -mdd and (not ci95 or ci95[0] >= -mdd)


def goal_lines(summary: dict[str, Any]) -> list[str]:
    """The study's goals (capsules compound and declared fine against the LangGraph apps;
    MDD at most 0.05), each marked met or missed with its figure, where the arms ran."""
    arms, mdd = summary["arms"], summary["mdd"]
    paired = summary.get("paired_vs_lg14") or {}
    anthropic = next((p["id"] for p in summary["price_sheets"] if "anthropic" in p["id"]), None)
    goals: list[tuple[str, bool | None, str]] = []

    def quality_goal(arm: str) -> None:
        p = paired.get(arm)
        if p and p["mean"] is not None and mdd is not None:
            low = p["ci95"][0] if p.get("ci95") else None
            ci = "" if low is None else f", 95% CI low {_signed(low)}"
            goals.append(
                (
                    f"{ARMS[arm]}: quality at least LG 14-node's minus the MDD",
                    quality_within_mdd(p["mean"], p.get("ci95"), mdd),
                    f"mean Δ {_signed(p['mean'])}{ci}, MDD {mdd:.3f}",
                )
            )

    if "capsules_compound" in arms and "lg14" in arms:
        c = arms["capsules_compound"]
        calls = c["calls"]["median"]
        goals.append(("capsules compound: 6 calls per run", calls == 6, f"median {calls:g}"))
        if "lg6" in arms:
            r = c["input_tokens_vs_lg6"]
            text = "capsules compound: input at most 1.05x LG hand-merged"
            goals.append((text, r <= 1.05, f"{r:.3f}x"))
        r = c["output_tokens_vs_lg14"]
        goals.append(("capsules compound: output at most 1.0x LG 14-node", r <= 1.0, f"{r:.3f}x"))
        quality_goal("capsules_compound")
    if "declared_fine" in arms and "lg14" in arms and anthropic:
        cost = arms["declared_fine"]["cost"][anthropic]
        r = cost.get("vs_lg14")
        goals.append(
            (
                "declared fine: cost at most 0.8x LG 14-node's at the Anthropic price",
                None if r is None else r <= 0.8,
                "n/a" if r is None else f"{r:.3f}x",
            )
        )
        quality_goal("declared_fine")
    goals.append(("MDD at most 0.05", None if mdd is None else mdd <= 0.05, _mdd_text(mdd)))
    lines = ["", "Goals:", "", "| goal | figure | met |", "|---|---|---|"]
    for text, ok, figure in goals:
        lines.append(f"| {text} | {figure} | {'n/a' if ok is None else ('yes' if ok else 'NO')} |")
    return lines


def render_report(meta: dict[str, Any], summary: dict[str, Any]) -> str:
    """The markdown report: what ran, the side-by-side table, per-company rows, paired
    deltas, goals, cost sources and how to read it."""
    mdd = summary["mdd"]
    headers = _headers(summary)
    sittings = meta.get("sittings") or []
    lines = [
        "# Competitive-intelligence benchmark",
        "",
        f"- model: {meta['model']}",
        f"- machine: {meta['machine']}",
        f"- companies: {', '.join(meta['companies'])} "
        f"(held out: {', '.join(meta['held_out']) or 'none'}); runs per company: "
        f"{meta['runs']}",
    ]
    for s in sittings:
        lines.append(
            f"- sitting {s['date']}: `{s['command'] or 'capsules bench ci'}`, {s['records']} "
            f"records, {s['elapsed_s']} s, {s.get('slots', '?')} server slots"
            + (f", code {s['code']}" if s.get("code") else "")
        )
    budgets = meta.get("budgets")
    if budgets:
        lines.append(
            "- max_tokens per call: "
            + ", ".join(f"{k} {v}" for k, v in budgets.items() if k != "marker")
            + f"; a merged call gets its members' sum plus {budgets.get('marker', '?')} "
            "per marker line"
        )
    lines += [
        "- judge: deterministic gold-fact recall (benchmarks/competitive_intelligence/judge.py); "
        f"MDD = {_mdd_text(mdd)} ({summary['mdd_basis']})",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(summary)]
    lines += _paired_lines(summary)
    if "lg14" in summary["arms"]:
        lines += goal_lines(summary)
    lines += _stage_lines(summary)
    lines += _company_lines(summary)
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
        lines += auto_lines(summary["auto_tiers"])
        lines += [
            "",
            "The auto arm's totals include its shadow evaluation (the compound tier run "
            "beside fine on the switch run) and the gate judge's calls. Policy: aggressive "
            f"preset, quality_floor {meta.get('auto_floor', 'n/a')}.",
        ]
    lines += [
        "",
        'Truncated: calls that ended at their max_tokens (finish_reason "length") over '
        "all calls of the arm, every company and run; a cut extractor loses the facts "
        "after the cut.",
        "",
        "Cost: median USD per run, each billed call priced from its measured input, cached "
        "and output tokens (the embedded model's tokenizer and prefix cache stand in for "
        "the provider's) under the provider's caching rules: no hit on a prompt or prefix "
        "below its minimum length, hits in its increments; Anthropic's opt-in cache bills "
        "cache writes, so each arm is priced with caching on or off, whichever is cheaper "
        "for it. Price sheets (benchmarks/price_sheets.json):",
    ]
    lines += [f"  - {p['label']}: {p['date']}, {p['source']}" for p in summary["price_sheets"]]
    lines += [
        "",
        "Token and call figures are medians over (company, run) cells; ratios are of medians. "
        "Δquality in the main table is the median paired difference per (company, run); a "
        "|Δ| below the MDD is indistinguishable from noise.",
        "",
        "![quality vs input tokens](quality_vs_input.png)",
        "",
        "![tokens per group](tokens_per_group.png)",
    ]
    if summary.get("auto_tiers"):
        lines += ["", "![auto arm over runs](auto_tiers.png)"]
    return "\n".join(lines) + "\n"


def write_outputs(
    out: Path,
    meta: dict[str, Any],
    records: Sequence[dict[str, Any]],
    *,
    final: bool = True,
    console: Any = None,
) -> dict[str, Any] | None:
    """Write ``results.json`` (meta, summary and records). ``final``: also the summary,
    ``report.md`` and the plots, and print the table to ``console``. Between runs
    (``final=False``) only the records are saved, so a stopped study loses nothing."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(records) if final else None
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "summary": summary, "records": records}, indent=2))
    tmp.replace(out / "results.json")
    if summary is None:
        return None
    arms = arms_in(records)
    (out / "report.md").write_text(render_report(meta, summary))
    plot(records, arms, out)
    plot_auto(records, out)
    if console is not None:
        print_table(console, rich_table(summary))
        # markdown rows are printed unwrapped and literal, like the table, so a log shows
        # each goal on one line
        if summary["auto_tiers"]:
            console.print(
                "\n".join(auto_lines(summary["auto_tiers"])), soft_wrap=True, markup=False
            )
        if "lg14" in summary["arms"]:
            console.print("\n".join(goal_lines(summary)), soft_wrap=True, markup=False)
    return summary


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


def auto_lines(traj: dict[str, Any]) -> list[str]:
    """Markdown tables of :func:`auto_trajectory`: per company, each group's tier (gate
    reading in brackets) run by run, and the arm's input tokens per run."""
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


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def _spread(xs: Sequence[float]) -> tuple[float, float]:
    return (min(xs), max(xs)) if xs else (math.nan, math.nan)


def _fmt(x: float, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def _with_range(stat: dict[str, float], digits: int) -> str:
    lo, hi = _fmt(stat["min"], digits), _fmt(stat["max"], digits)
    return f"{_fmt(stat['median'], digits)} ({lo}-{hi})"


def _mdd_text(mdd: float | None) -> str:
    return _fmt(mdd, 3) if mdd is not None else "n/a (needs --runs >= 2)"


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
