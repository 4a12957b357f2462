"""The competitive-intelligence benchmark end to end on the scripted model (seconds).

Only development companies are used here: held-out companies are never read by tests.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import langgraph_capsules as lc  # noqa: E402
from benchmarks.competitive_intelligence import runner  # noqa: E402
from benchmarks.competitive_intelligence.dataset import (  # noqa: E402
    KINDS,
    LENSES,
    company_ids,
    load_company,
)
from benchmarks.competitive_intelligence.judge import score_run  # noqa: E402
from benchmarks.competitive_intelligence.pipeline import (  # noqa: E402
    extractor_key,
    split_arm_reply,
)
from benchmarks.competitive_intelligence.report import HEADERS  # noqa: E402
from langgraph_capsules import cli  # noqa: E402

DEV = company_ids(held_out=False)[:2]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    runner.run_benchmark(
        model="scripted",
        companies=len(DEV),
        runs=4,
        arms=list(runner.ARMS),
        out=out,
        company_ids=DEV,
    )
    return out, json.loads((out / "results.json").read_text())


def test_records_are_complete_and_interleaved(results: tuple[Path, dict[str, Any]]) -> None:
    _out, data = results
    records = data["records"]
    assert len(records) == 4 * len(DEV) * len(runner.ARMS)
    required = {"arm", "company", "run", "calls", "input_tokens", "cached_tokens"}
    required |= {"output_tokens", "wall_s", "quality"}
    assert all(required <= set(r) and r["error"] is None for r in records)
    n = len(runner.ARMS)
    assert [r["arm"] for r in records[: 2 * n]] == list(runner.ARMS) * 2  # A B C ... A B C
    assert [r["company"] for r in records[: 2 * n]] == [DEV[0]] * n + [DEV[1]] * n
    assert data["meta"]["companies"] == DEV and data["meta"]["held_out"] == []


def test_calls_tokens_and_quality_per_arm(results: tuple[Path, dict[str, Any]]) -> None:
    _out, data = results
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for r in data["records"]:
        by_arm.setdefault(r["arm"], []).append(r)
    assert {r["calls"] for r in by_arm["lg14"]} == {14}
    assert {r["calls"] for r in by_arm["capsules_fine"]} == {14}
    assert {r["calls"] for r in by_arm["lg6"]} == {6}
    assert {r["calls"] for r in by_arm["capsules_compound"]} == {6}
    assert {r["calls"] for r in by_arm["declared_fine"]} == {14}
    assert {r["calls"] for r in by_arm["declared_compound"]} == {6}
    # declared agents share a byte-identical prefix per lens: more of their input is cached
    for lg, dec in zip(by_arm["lg14"], by_arm["declared_fine"], strict=True):
        assert dec["cached_tokens"] > 2 * lg["cached_tokens"]
    for a, b in zip(by_arm["lg14"], by_arm["capsules_fine"], strict=True):
        assert a["quality"] == b["quality"] and a["input_tokens"] == b["input_tokens"]
    for fine, comp in zip(by_arm["capsules_fine"], by_arm["capsules_compound"], strict=True):
        assert comp["input_tokens"] < 0.8 * fine["input_tokens"]
        assert comp["fallback_members"] == []
        assert comp["tokens_per_group"]["competitive"]["input"] > 0
    assert all(0.2 < r["quality"] < 1.0 for r in data["records"])
    summary = data["summary"]
    assert summary["mdd"] == 0.0  # deterministic model and judge: no run-to-run spread
    assert summary["arms"]["capsules_compound"]["calls_vs_lg14"] == pytest.approx(6 / 14)


def test_auto_arm_switches_after_its_shadow_run(results: tuple[Path, dict[str, Any]]) -> None:
    _out, data = results
    autos = [r for r in data["records"] if r["arm"] == "auto"]  # in run order
    assert len(autos) == 4 * len(DEV)
    # the controller learns per group across companies: two fine runs (run 1 of both
    # companies), the switch run with its shadow, then compound, each judged against
    # the same company's fine output
    for group in ("competitive", "product", "financial", "risk"):
        tiers = [r["group_tiers"][group] for r in autos]
        assert tiers == ["fine", "fine", "fine+shadow:standard"] + ["standard"] * 5
        gates = [r["gate_quality"][group] for r in autos]
        assert gates[:2] == [None, None] and all(q is not None for q in gates[2:])
        assert gates[2] >= 0.75  # the shadow reading that let the switch through
    assert [r["shadow_calls"] for r in autos] == [0, 0, 4, 0, 0, 0, 0, 0]
    fine, _f2, switch, compound = (r["input_tokens"] for r in autos[:4])
    assert switch > fine > compound  # the shadow run pays extra; compound saves
    traj = data["summary"]["auto_tiers"]
    assert set(traj) == set(DEV) and traj[DEV[0]]["runs"] == [1, 2, 3, 4]


def test_report_and_plots_written(results: tuple[Path, dict[str, Any]]) -> None:
    out, _data = results
    report = (out / "report.md").read_text()
    assert "| capsules compound |" in report and "MDD" in report and DEV[0] in report
    assert "Auto arm" in report and "fine+shadow:standard" in report
    for png in ("quality_vs_input.png", "tokens_per_group.png", "auto_tiers.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_cli_runs_the_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "ci", "--model", "scripted", "--company", DEV[0], "--arms", "lg14"]
    argv += ["capsules_compound", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["arm"] for r in data["records"]] == ["lg14", "capsules_compound"]


def test_llm_judge_option_scores_briefs(tmp_path: Path) -> None:
    runner.run_benchmark(
        model="scripted",
        companies=1,
        runs=1,
        arms=["lg14", "capsules_compound"],
        out=tmp_path,
        company_ids=DEV[:1],
        judge="scripted",
    )
    data = json.loads((tmp_path / "results.json").read_text())
    for rec in data["records"]:
        assert rec["llm_quality"] == pytest.approx(0.75)  # (7 + 8 + 8 + 7) / 40
        assert rec["judge_calls"] == 2  # both orders, counted apart from the arm's calls
        assert rec["calls"] in (6, 14) and "_brief" not in rec
    assert "LLM-judged quality" in (tmp_path / "report.md").read_text()


def test_judge_orders_good_truncated_and_bad_answers() -> None:
    company = load_company(DEV[0])
    good = {
        extractor_key(lens, k): company["lenses"][lens]["bundle"] for lens in LENSES for k in KINDS
    }
    good["scope"] = company["overview"]
    bundles = "\n\n".join(company["lenses"][lens]["bundle"] for lens in LENSES)
    good["brief"] = (
        "Executive summary\n" + bundles + "\nCompetitive landscape. Product portfolio. "
        "Financial signals. Risk and regulation.\nKey takeaways\n- a\n- b\n- c"
    )
    truncated = {k: v[: len(v) // 3] for k, v in good.items()}
    bad = {k: "The company operates in a competitive market." for k in good}
    q_good = score_run(company, good)["quality"]
    q_trunc = score_run(company, truncated)["quality"]
    q_bad = score_run(company, bad)["quality"]
    assert q_good > 0.9 and q_bad < 0.1 and q_bad < q_trunc < q_good
    assert score_run(company, good) == score_run(company, good)  # deterministic


def test_hand_merged_reply_splitter() -> None:
    text = "ENTITIES:\n1. a\n2. b\n\n**CLAIMS:**\n1. c\nSIGNALS:\n1. d (explicit)"
    assert split_arm_reply(text) == {
        "entities": "1. a\n2. b",
        "claims": "1. c",
        "signals": "1. d (explicit)",
    }
    assert split_arm_reply("no markers") == {"entities": "", "claims": "", "signals": ""}


def test_benchmark_uses_the_public_api_only() -> None:
    src = (ROOT / "benchmarks" / "competitive_intelligence" / "runner.py").read_text()
    imported = set(re.findall(r"from langgraph_capsules\.(\w+) import", src))
    assert imported <= {"testing"}, imported  # public modules only
    assert "import langgraph_capsules as lc" in src
    assert lc.capsulize is not None


def test_oracle_command_agrees_on_a_healthy_and_a_degraded_model(tmp_path: Path) -> None:
    argv = ["bench", "oracle", "--model", "scripted", "--model", "scripted-degraded"]
    argv += ["--company", DEV[0], "--runs", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    data = json.loads((tmp_path / "oracle.json").read_text())
    healthy, degraded = data["reports"]
    assert {r["oracle"] for r in healthy["rows"]} == {"standard"}
    # merges fail on the degraded model: the oracle never picks standard there
    assert "standard" not in {r["oracle"] for r in degraded["rows"]}
    assert healthy["agreement"] == 1.0
    # Where the oracle picks a compound tier the controller agrees. A known limit: the
    # controller's ladder does not weigh cost, so it can settle on sequential where
    # sequential passes the floor but costs a little more than fine (the oracle then
    # says fine). Every disagreement must be of that kind.
    for row in degraded["rows"]:
        if not row["agree"]:
            assert (row["oracle"], row["controller"]) == ("fine", "sequential"), row
    assert degraded["agreement"] >= 0.75


def test_oracle_command_on_the_tool_using_due_diligence_app(tmp_path: Path) -> None:
    argv = ["bench", "oracle", "--pipeline", "dd", "--model", "scripted", "--companies", "1"]
    argv += ["--runs", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    data = json.loads((tmp_path / "oracle.json").read_text())
    assert data["pipeline"] == "dd" and data["inputs"] == 1
    rows = {r["group"]: r for r in data["reports"][0]["rows"]}
    assert set(rows) == {"research", "analysis"}
    cells = {(c["group"], c["tier"]): c for c in data["reports"][0]["cells"]}
    # the research group loses its tools in standard: the oracle never routes it there
    assert (
        not cells[("research", "standard")]["passes"] and rows["research"]["oracle"] != "standard"
    )
    assert cells[("research", "two_phase")]["passes"]


def test_finish_reasons_recorded_per_run(results: tuple[Path, dict[str, Any]]) -> None:
    out, data = results
    # the scripted analyst writes within its budget: every billed call stops on its own
    for r in data["records"]:
        assert r["finish_reasons"] == {"stop": r["calls"]}, r["arm"]
        assert r["truncated_calls"] == 0 and r["finished_calls"] == r["calls"]
        assert r["truncated"] == []
    lg14 = data["summary"]["arms"]["lg14"]
    n = 4 * len(DEV) * 14
    assert (lg14["truncated_calls"], lg14["finished_calls"]) == (0, n)
    assert lg14["truncation_rate"] == 0.0
    report = (out / "report.md").read_text()
    header = next(ln for ln in report.splitlines() if ln.startswith("| arm |"))
    column = header.split(" | ").index("truncated")
    row = next(ln for ln in report.splitlines() if ln.startswith("| LG 14-node |"))
    assert row.split(" | ")[column] == f"0/{n}"


def test_truncation_counted_and_shown_per_arm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scripted model that cuts replies at max_tokens, with 5-token extractors: the
    twelve extractor calls end with "length", the frame and the brief do not."""
    import io

    from rich.console import Console

    from benchmarks.competitive_intelligence import pipeline, scripted
    from langgraph_capsules.strategies.standard import merged_max_tokens

    real = scripted.scripted_analyst
    monkeypatch.setattr(
        scripted, "scripted_analyst", lambda **kw: real(**{**kw, "honor_max_tokens": True})
    )
    monkeypatch.setitem(pipeline.BUDGETS, "extractor", 5)
    # the hand-merged arm gets the library's merged-call allowance: 3 x 5 + 16 per marker
    assert pipeline.arm_budget() == merged_max_tokens([5, 5, 5]) == 63
    sink = io.StringIO()
    console = Console(file=sink, width=80)  # not a terminal: a CI log or a pipe
    runner.run_benchmark(
        model="scripted",
        companies=1,
        runs=1,
        arms=["lg14", "lg6"],
        out=tmp_path,
        company_ids=DEV[:1],
        console=console,
    )
    data = json.loads((tmp_path / "results.json").read_text())
    lg14, lg6 = data["records"]
    assert lg14["finish_reasons"] == {"length": 12, "stop": 2}
    assert (lg14["truncated_calls"], lg14["finished_calls"]) == (12, 14)
    cut = {c["node"] for c in lg14["truncated"]}
    assert cut == {extractor_key(lens, k) for lens in LENSES for k in KINDS}
    assert {c["max_tokens"] for c in lg14["truncated"]} == {5}
    budgets = {c["node"]: c["max_tokens"] for c in lg14["call_finishes"]}
    assert len(lg14["call_finishes"]) == 14 and budgets["briefer"] == pipeline.BUDGETS["briefer"]
    assert budgets["scoping"] == pipeline.BUDGETS["scoping"]
    assert lg6["finished_calls"] == 6
    assert {c["max_tokens"] for c in lg6["truncated"]} == {63}
    assert {c["node"] for c in lg6["truncated"]} == {f"arm_{lens}" for lens in LENSES}
    assert data["summary"]["arms"]["lg14"]["truncation_rate"] == pytest.approx(12 / 14)
    report = (tmp_path / "report.md").read_text()
    assert "| LG 14-node |" in report and " 12/14 |" in report and " 4/6 |" in report
    # the non-TTY table is printed at the width it needs: every header whole, on one line
    printed = sink.getvalue()
    table = printed[printed.index("competitive-intelligence benchmark") :]
    for header in HEADERS:
        assert header in table, header
    row = next(ln for ln in table.splitlines() if ln.startswith("│ LG hand-merged"))
    assert "4/6" in row and "…" not in table
