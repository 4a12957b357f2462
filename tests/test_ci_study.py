"""The benchmark as a study: runs appended over sittings, per-company rows, paired deltas
with a bootstrap interval, goals, and cost from price sheets (scripted model, seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import pricing  # noqa: E402
from benchmarks.competitive_intelligence import report, runner  # noqa: E402
from benchmarks.competitive_intelligence.dataset import company_ids  # noqa: E402
from langgraph_capsules import cli  # noqa: E402

DEV = company_ids(held_out=False)[:2]


def _sheet(**kw: Any) -> pricing.PriceSheet:
    base: dict[str, Any] = dict(
        id="t",
        provider="p",
        model="m",
        input=1.0,
        cached_input=0.1,
        cache_write=None,
        output=4.0,
        mode="automatic",
        min_prompt_tokens=1024,
        increment_tokens=128,
        date="2026-12-02",
        source="test",
    )
    return pricing.PriceSheet(**{**base, **kw})


def test_price_sheets_are_complete_and_dated() -> None:
    sheets = pricing.load_sheets()
    providers = {s.provider for s in sheets}
    assert {"openai", "anthropic"} <= providers
    for s in sheets:
        assert s.date[:4] == "2026" and s.source.startswith("https://")
        assert 0 < s.cached_input < s.input < s.output
    anthropic = next(s for s in sheets if s.provider == "anthropic")
    assert anthropic.mode == "opt-in" and anthropic.cache_write is not None
    assert anthropic.cache_write > anthropic.input


def test_price_sheet_missing_a_price_is_refused(tmp_path: Path) -> None:
    bad = {"sheets": [{"id": "x", "provider": "p", "model": "m", "input": 1.0}]}
    path = tmp_path / "sheets.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"'x'.*incomplete"):
        pricing.load_sheets(path)


def test_cache_rules_minimum_and_increments() -> None:
    sheet = _sheet()
    # below the provider's minimum prompt: no hit at all, whatever the local cache did
    assert pricing.call_cost(sheet, (900, 800, 0), caching=True) == pytest.approx(900e-6)
    # 2,000-token prompt with 1,300 cached: hits count in 128-token steps (1,280)
    expect = (1280 * 0.1 + 720 * 1.0 + 10 * 4.0) / 1e6
    assert pricing.call_cost(sheet, (2000, 1300, 10), caching=True) == pytest.approx(expect)
    # a cached prefix shorter than the minimum is no cache entry
    assert pricing.call_cost(sheet, (2000, 1000, 0), caching=True) == pytest.approx(2000e-6)
    assert pricing.call_cost(sheet, (2000, 1300, 10), caching=False) == pytest.approx(2040e-6)


def test_opt_in_cache_is_priced_both_ways_and_the_cheaper_kept() -> None:
    sheet = _sheet(mode="opt-in", cache_write=1.25, increment_tokens=1)
    hits = [[(2000, 1500, 0), (2000, 1500, 0)]]  # reuse pays for the writes
    misses = [[(2000, 0, 0), (2000, 0, 0)]]  # writes that are never read only cost
    on = pricing.arm_cost(sheet, hits)
    assert on["caching"] is True
    assert on["median"] == pytest.approx(2 * (1500 * 0.1 + 500 * 1.25) / 1e6)
    off = pricing.arm_cost(sheet, misses)
    assert off["caching"] is False and off["median"] == pytest.approx(4000e-6)
    assert pricing.arm_cost(sheet, []) == {
        "median": None,
        "min": None,
        "max": None,
        "caching": None,
    }


def _rec(arm: str, company: str, run: int, quality: float) -> dict[str, Any]:
    return {
        "arm": arm,
        "label": report.ARMS[arm],
        "company": company,
        "held_out": False,
        "run": run,
        "calls": 14,
        "input_tokens": 1000,
        "cached_tokens": 0,
        "output_tokens": 100,
        "wall_s": 1.0,
        "quality": quality,
        "error": None,
        "call_tokens": [[1000, 0, 100]],
        "tokens_per_group": {},
    }


def test_paired_study_mean_interval_and_per_company() -> None:
    records = []
    for c, delta in (("a", 0.10), ("b", 0.20), ("c", 0.30)):
        for run, noise in ((1, 0.0), (2, 0.02)):
            records.append(_rec("lg14", c, run, 0.5 + noise))
            records.append(_rec("declared_fine", c, run, 0.5 + noise + delta))
    p = report.paired_study(records, "declared_fine")
    assert p["per_company"] == pytest.approx({"a": 0.10, "b": 0.20, "c": 0.30})
    assert p["mean"] == pytest.approx(0.20) and (p["companies"], p["pairs"]) == (3, 6)
    lo, hi = p["ci95"]
    assert 0.10 - 1e-9 <= lo < 0.20 < hi <= 0.30 + 1e-9  # within the per-company extremes
    assert report.paired_study(records, "declared_fine")["ci95"] == [lo, hi]  # seeded
    same = [r for r in records if r["company"] == "a"]
    p1 = report.paired_study(same, "declared_fine")
    assert p1["ci95"] == pytest.approx([0.10, 0.10])  # one constant delta: no width
    assert report.paired_study(records, "lg6")["mean"] is None  # no such arm


def test_summary_goals_and_per_company_rows() -> None:
    records = []
    for c in ("a", "b"):
        for run in (1, 2):
            records.append(_rec("lg14", c, run, 0.60 + 0.01 * run))
            lg6 = _rec("lg6", c, run, 0.60)
            lg6.update(calls=6, input_tokens=500, call_tokens=[[500, 0, 100]])
            records.append(lg6)
            comp = _rec("capsules_compound", c, run, 0.55 + 0.01 * run)
            comp.update(calls=6, input_tokens=540, output_tokens=90, call_tokens=[[540, 0, 90]])
            records.append(comp)
    summary = report.summarize(records)
    # pooled over the six (arm, company) cells: four with variance 0.01**2 / 2, lg6's none
    assert summary["mdd"] == pytest.approx(2.5 * (4 / 6 * 0.01**2 / 2) ** 0.5, rel=1e-6)
    goals = {ln.split(" | ")[0].lstrip("| "): ln for ln in report.goal_lines(summary)}
    assert goals["capsules compound: 6 calls per run"].endswith("| yes |")
    assert "1.080x" in goals["capsules compound: input at most 1.05x LG hand-merged"]
    assert goals["capsules compound: input at most 1.05x LG hand-merged"].endswith("| NO |")
    assert goals["capsules compound: output at most 1.0x LG 14-node"].endswith("| yes |")
    # compound is 0.05 below LG 14-node, more than the MDD (0.014)
    quality = goals["capsules compound: quality at least LG 14-node's minus the MDD"]
    assert "-0.050" in quality and quality.endswith("| NO |")
    assert goals["MDD at most 0.05"].endswith("| yes |")
    rows = {(r["company"], r["arm"]): r for r in summary["per_company"]}
    assert len(rows) == 6 and rows[("a", "capsules_compound")]["delta_vs_lg14"] == pytest.approx(
        -0.05
    )
    cost = summary["arms"]["lg6"]["cost"]["openai-gpt-4.1-mini"]
    assert cost["median"] == pytest.approx((500 * 0.40 + 100 * 1.60) / 1e6)
    assert cost["vs_lg14"] == pytest.approx((500 * 0.40 + 160) / (1000 * 0.40 + 160))


def test_input_by_stage_separates_the_merge_framing_from_the_briefer() -> None:
    """The stage table sums the lens groups per run, takes medians, and gives ratios
    against LG hand-merged, so a reader sees which stage an input excess comes from."""

    def groups(lens: int, brief: int) -> dict[str, dict[str, int]]:
        g = {b: {"input": lens, "output": 1} for b in report.STAGES["lens calls"]}
        return {**g, "scoping": {"input": 50, "output": 1}, "briefer": {"input": brief}}

    records = []
    for run, (lens6, lens_c, brief_c) in enumerate(((100, 120, 300), (100, 130, 500)), 1):
        lg6 = _rec("lg6", "a", run, 0.6)
        lg6["tokens_per_group"] = groups(lens6, 200)
        comp = _rec("capsules_compound", "a", run, 0.6)
        comp["tokens_per_group"] = groups(lens_c, brief_c)
        records += [lg6, comp]
    broken = _rec("capsules_compound", "a", 3, 0.6)
    broken.update(error="ConnectionError: refused", tokens_per_group=groups(9999, 9999))
    summary = report.summarize([*records, broken])
    assert summary["stages"]["capsules_compound"] == {
        "scoping": 50,
        "lens calls": 4 * 125,  # four lens groups, median of 120 and 130 each
        "briefer": 400,
    }
    row = next(ln for ln in report._stage_lines(summary) if ln.startswith("| capsules compound"))
    assert row.endswith("| 1.00x | 1.25x | 2.00x |")


def test_study_is_extended_over_sittings(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(
        model="scripted", companies=1, arms=["lg14", "lg6"], out=tmp_path, company_ids=DEV[:1]
    )
    runner.run_benchmark(runs=1, **kw)
    first = json.loads((tmp_path / "results.json").read_text())
    assert first["summary"]["mdd"] is None  # one run: no MDD yet
    runner.run_benchmark(runs=1, **kw)
    data = json.loads((tmp_path / "results.json").read_text())
    assert [(r["arm"], r["run"]) for r in data["records"]] == [
        ("lg14", 1),
        ("lg6", 1),
        ("lg14", 2),
        ("lg6", 2),
    ]
    assert data["meta"]["runs"] == 2 and len(data["meta"]["sittings"]) == 2
    assert data["summary"]["mdd"] == 0.0  # recomputed over both sittings
    report_md = (tmp_path / "report.md").read_text()
    assert report_md.count("- sitting ") == 2 and "runs per company: 2" in report_md
    # each sitting names the code it ran (this checkout's commit)
    code = runner.code_version()
    assert {s["code"] for s in data["meta"]["sittings"]} == {code}
    assert report_md.count(f", code {code}") == 2
    # every record carries its billed calls' tokens, and the table prices them
    assert all(len(r["call_tokens"]) == r["calls"] for r in data["records"])
    assert "openai gpt-4.1-mini $/run (vs LG14)" in report_md
    # a study of another model is refused; --fresh starts over
    with pytest.raises(SystemExit, match="--fresh"):
        runner.run_benchmark(runs=1, **{**kw, "model": "scripted-degraded"})
    runner.run_benchmark(runs=1, fresh=True, **{**kw, "model": "scripted-degraded"})
    data = json.loads((tmp_path / "results.json").read_text())
    assert {r["run"] for r in data["records"]} == {1} and len(data["records"]) == 2


def test_a_study_run_at_other_budgets_is_not_extended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw: dict[str, Any] = dict(
        model="scripted", companies=1, arms=["lg6"], out=tmp_path, company_ids=DEV[:1]
    )
    runner.run_benchmark(runs=1, **kw)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["budgets"] == {**runner.BUDGETS, "marker": 16}
    budgets = ", ".join(f"{k} {v}" for k, v in runner.BUDGETS.items())
    assert (
        f"- max_tokens per call: {budgets}; a merged call gets"
        in (tmp_path / "report.md").read_text()
    )
    # the app's budgets change: the old runs cannot be compared with new ones
    monkeypatch.setitem(runner.BUDGETS, "briefer", runner.BUDGETS["briefer"] + 1)
    new = runner.BUDGETS["briefer"]
    with pytest.raises(SystemExit, match=rf"max_tokens .*, not .*'briefer': {new}.*--fresh"):
        runner.run_benchmark(runs=1, **kw)
    assert len(json.loads((tmp_path / "results.json").read_text())["records"]) == 1
    # a study that recorded no budgets (written before they were) is refused too
    data["meta"].pop("budgets")
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit, match=r"\(not recorded\)"):
        runner.run_benchmark(runs=1, **kw)


def test_a_stopped_sitting_keeps_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runner._run_one
    done: list[int] = []

    def stop_on_third(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_run_one", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        runner.run_benchmark(
            model="scripted",
            companies=1,
            runs=2,
            arms=["lg14", "lg6"],
            out=tmp_path,
            company_ids=DEV[:1],
        )
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["records"]) == 2 and data["summary"] is None
    assert not (tmp_path / "report.md").exists()
    # the report is recomputed from the saved records
    assert cli.main(["bench", "ci", "--report", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["summary"]["arms"]["lg6"]["calls"]["median"] == 6
    assert "| LG hand-merged |" in (tmp_path / "report.md").read_text()


def test_cli_defaults_main_job_and_study() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    runner.add_cli(sub)
    ci = parser.parse_args(["ci"])
    assert ci.model == "qwen2.5-coder-1.5b" and ci.companies == 1 and ci.runs == 1
    assert ci.arms == ["lg14", "lg6", "capsules_compound", "declared_compound"]
    study = parser.parse_args(["study"])
    assert (study.companies, study.runs) == (4, 2)
    assert set(study.arms) == {*ci.arms, "declared_fine"}


def test_quality_goal_needs_the_interval_low_end_inside_the_mdd_too() -> None:
    """A mean delta inside the MDD band over an interval reaching far below it is not
    parity: the goal is met only when both are at or above -MDD."""

    def summary(low: float) -> dict:
        compound = {"calls": {"median": 6}, "output_tokens_vs_lg14": 0.9}
        return {
            "arms": {"lg14": {}, "capsules_compound": compound},
            "mdd": 0.10,
            "paired_vs_lg14": {"capsules_compound": {"mean": -0.05, "ci95": [low, 0.02]}},
            "price_sheets": [],
        }

    def quality(low: float) -> str:
        lines = report.goal_lines(summary(low))
        return next(ln for ln in lines if "quality at least" in ln)

    assert quality(-0.09).endswith("| yes |") and "CI low -0.090" in quality(-0.09)
    assert quality(-0.15).endswith("| NO |")
    assert "0.900x" in next(ln for ln in report.goal_lines(summary(-0.09)) if "output" in ln)


def test_a_study_printed_to_a_log_keeps_each_goal_row_on_one_line(tmp_path: Path) -> None:
    """Recomputing the committed v2 study for a non-terminal console 80 columns wide (a CI
    log): the goal rows are markdown longer than 80 columns and are printed unwrapped."""
    import io

    from rich.console import Console

    data = json.loads((ROOT / "docs/results/ci-study-1.5b-v2/results.json").read_text())
    sink = io.StringIO()
    report.write_outputs(
        tmp_path, data["meta"], data["records"], console=Console(file=sink, width=80)
    )
    rows = [ln for ln in sink.getvalue().splitlines() if ln.startswith("| ")]
    goals = [ln for ln in rows if ln.endswith(("| yes |", "| NO |"))]
    assert len(goals) == 7 and sum(len(ln) > 80 for ln in goals) >= 3
    assert any(ln.endswith("95% CI low -0.071, MDD 0.151 | yes |") for ln in goals)
    assert "| capsules compound: input at most 1.05x LG hand-merged | 1.051x | NO |" in goals
