"""The tool-using due-diligence pipeline (benchmarks/due_diligence) on the scripted model.

Researchers query a real SQLite table built from a committed CSV through LangChain tools;
the tests check the tools, the standalone app, the capsule tiers (two_phase keeps the
tools, standard loses them), the gold judge and the oracle ablation. Only the development
companies of the competitive-intelligence data are read (the held-out ones are not in
the table).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import langgraph_capsules as lc  # noqa: E402
from benchmarks.competitive_intelligence import dataset as ci  # noqa: E402
from benchmarks.due_diligence import dataset, tools  # noqa: E402
from benchmarks.due_diligence.judge import reference_texts, score_run  # noqa: E402
from benchmarks.due_diligence.pipeline import (  # noqa: E402
    ANALYSTS,
    DD_GROUPS,
    RESEARCHERS,
    build_due_diligence,
    initial_state,
    output_key,
)
from benchmarks.due_diligence.scripted import scripted_due_diligence  # noqa: E402
from benchmarks.due_diligence.tools import list_metrics, query_financials  # noqa: E402
from langgraph_capsules.agents import ANSWER_PROMPT, GATHER_INSTRUCTION  # noqa: E402
from langgraph_capsules.testing import ScriptedCall, ScriptedChatModel  # noqa: E402

OUTPUT_KEYS = [output_key(n) for n in (*RESEARCHERS, *ANALYSTS, "investment_writer")]


def _text(call: ScriptedCall) -> str:
    return "\n\n".join(str(m.content) for m in call.messages)


def _tool_bound(llm: ScriptedChatModel) -> list[ScriptedCall]:
    return [c for c in llm.calls if c.kwargs.get("tools")]


def _emitted(llm: ScriptedChatModel) -> list[str]:
    """Names of the tool calls the model emitted (each once, though loops re-send them)."""
    by_id: dict[str, str] = {}
    for call in llm.calls:
        for m in call.messages:
            if isinstance(m, AIMessage):
                by_id.update({str(c["id"]): c["name"] for c in m.tool_calls})
    return list(by_id.values())


def _tool_results(llm: ScriptedChatModel) -> list[str]:
    """Every distinct tool result the model was shown."""
    seen: dict[str, None] = {}
    for call in llm.calls:
        for m in call.messages:
            if isinstance(m, ToolMessage):
                seen[f"{m.tool_call_id}|{m.content}"] = None
    return [k.split("|", 1)[1] for k in seen]


def _fine(company: str = "corvanta") -> tuple[dict[str, Any], ScriptedChatModel]:
    llm = scripted_due_diligence()
    return build_due_diligence(llm).compile().invoke(initial_state(company)), llm


def _capsules(
    capsules_config: dict[str, Any], company: str = "corvanta"
) -> tuple[dict[str, Any], ScriptedChatModel, lc.CapsuleGraph]:
    llm = scripted_due_diligence()
    capsules = lc.capsulize(build_due_diligence(llm), groups=DD_GROUPS)
    out = capsules.compile().invoke(
        initial_state(company), {"configurable": {"capsules": capsules_config}}
    )
    return out, llm, capsules


# ------------------------------------------------------------------------ data and tools
def test_the_csv_becomes_a_read_only_sqlite_table() -> None:
    # the CI development companies, plus the benchmark's own held-out companies
    assert dataset.company_ids() == sorted([*ci.company_ids(held_out=False), *dataset.HELD_OUT])
    assert dataset.database_path().parent != dataset.DATA_DIR  # built outside the repo
    con = dataset.connect()
    try:
        (rows,) = con.execute("SELECT count(*) FROM financials").fetchone()
        assert rows == 8 * len(dataset.YEARS) * len(dataset.METRICS)
        names = dict(con.execute("SELECT id, name FROM companies").fetchall())
        ci_names = {c["id"]: c["name"] for c in ci.load_companies(include_held_out=False)}
        assert {k: names[k] for k in ci_names} == ci_names
        with pytest.raises(sqlite3.OperationalError):
            con.execute("DELETE FROM financials")
    finally:
        con.close()


@pytest.mark.parametrize("company_id", ci.company_ids(held_out=False))
def test_figures_agree_with_the_competitive_intelligence_data(company_id: str) -> None:
    """Figures the CI overview or financial bundle states are copied exactly."""
    company = ci.load_company(company_id)
    bundle = company["lenses"]["financial"]["bundle"]
    s = dataset.series(company_id)
    for year in (2022, 2023):
        stated = {"id": "revenue", "text": "", "match": [[f"{s['revenue'][year]:g} million"]]}
        assert ci.fact_found(stated, bundle), (company_id, year)
    assert f"about {int(s['headcount'][2023])} people" in company["overview"]
    stated_cash = {"harbourline": 31, "kelvara": 386, "lumenfold": 58, "payloom": 143}
    if company_id in stated_cash:
        assert s["cash"][2023] == stated_cash[company_id]
    if company_id == "corvanta":
        assert s["debt"][2023] - s["cash"][2023] == 205  # "Net debt was PLN 205 million"
    if company_id == "harbourline":
        assert s["debt"][2023] == 210  # the EUR 210 million term loan
    if company_id == "tillwright":
        assert (s["cash"][2023], s["debt"][2023]) == (4.1, 6.3)


def test_tools_read_the_table_and_return_errors_as_text() -> None:
    assert query_financials.invoke({"company": "Corvanta", "metric": "revenue"}) == (
        "Corvanta Materials S.A. revenue 2022: PLN 662 million\n"
        "Corvanta Materials S.A. revenue 2023: PLN 742 million\n"
        "Corvanta Materials S.A. revenue 2024: PLN 810 million"
    )
    one = query_financials.invoke({"company": "kelvara", "metric": "margin", "year": 2023})
    assert one == "Kelvara Sensing AB operating_margin 2023: -6.7%"
    listing = list_metrics.invoke({"company": "Payloom Technologies Ltd"})
    assert "years 2022-2024" in listing and "EUR million" in listing
    assert all(f"- {m} (" in listing for m in dataset.METRICS)
    # bad input never raises: the model gets one line of error text naming the choices
    errors = {
        "company": query_financials.invoke({"company": "Acme Fintech", "metric": "revenue"}),
        "metric": query_financials.invoke({"company": "kelvara", "metric": "ebitda"}),
        "year": query_financials.invoke({"company": "kelvara", "metric": "cash", "year": 2019}),
        "type": query_financials.invoke({"company": "kelvara", "metric": "cash", "year": "x"}),
        "listing": list_metrics.invoke({"company": "Acme Fintech"}),
        "sql": query_financials.invoke(
            {"company": "kelvara'; DROP TABLE financials; --", "metric": "cash"}
        ),
    }
    assert all(e.startswith("error: ") and "\n" not in e for e in errors.values())
    assert "unknown company 'Acme Fintech'; known companies: corvanta," in errors["company"]
    assert "metrics: revenue, operating_margin, headcount, cash, debt" in errors["metric"]
    assert "years: 2022, 2023, 2024" in errors["year"]
    assert "invalid arguments: year" in errors["type"]
    assert errors["listing"] == errors["company"]
    assert query_financials.invoke({"company": "kelvara", "metric": "cash", "year": 2024})


# ------------------------------------------------------------------------ standalone app
@pytest.mark.parametrize("use_async", [False, True])
async def test_the_app_runs_standalone_and_really_queries_sqlite(
    use_async: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[sqlite3.Connection] = []

    def counting_connect() -> sqlite3.Connection:
        opened.append(dataset.connect())
        return opened[-1]

    monkeypatch.setattr(tools, "connect", counting_connect)
    llm = scripted_due_diligence()
    app = build_due_diligence(llm).compile()
    state = initial_state("kelvara")
    out = await app.ainvoke(state) if use_async else app.invoke(state)

    # each researcher (tool_choice="required"): list_metrics, then query_financials per
    # metric, a turn with nothing new, then the answer with tool use off
    looped = _tool_bound(llm)
    assert len(looped) == 3 * 4 and len(llm.calls) == 1 + 12 + 3 + 1
    assert [c.kwargs.get("tool_choice") for c in looped].count("none") == 3
    emitted = _emitted(llm)
    assert sorted(emitted) == ["list_metrics"] * 3 + ["query_financials"] * 6
    assert len(opened) == 3 + 6  # every tool call opened the SQLite file
    results = _tool_results(llm)
    assert "Kelvara Sensing AB revenue 2023: SEK 612 million" in "\n".join(results)
    # the tool results reach the answers, then the analyses and the memo
    assert "- Kelvara Sensing AB cash 2023: SEK 386 million" in out["balance_sheet_findings"]
    assert "- revenue growth 2023: 21.9%" in out["profitability_analysis"]
    assert out["memo"].startswith("Investment memo: Kelvara Sensing AB\n")
    assert score_run("kelvara", out)["quality"] == 1.0


@pytest.mark.parametrize("mode", ["plain", "two_phase"])
def test_unknown_company_errors_reach_the_model_as_text(mode: str) -> None:
    """A tool error is a tool result the model reads, never an exception: standalone
    and in two_phase's phase A."""
    llm = scripted_due_diligence()
    tasks = {k: v for k, v in initial_state("kelvara").items() if k.endswith("_task")}
    acme: dict[str, Any] = {**tasks, "company": "Acme Fintech Inc.", "mandate": "Assess Acme."}
    if mode == "plain":
        out = build_due_diligence(llm).compile().invoke(acme)
    else:
        capsules = lc.capsulize(build_due_diligence(llm), groups=DD_GROUPS)
        config: RunnableConfig = {"configurable": {"capsules": {"mode": "two_phase"}}}
        out = capsules.compile().invoke(acme, config)
        assert {h["group"]: h["fallback"] for h in capsules.history()}["research"] == []
    known = ", ".join(dataset.company_ids())
    expected = f"error: unknown company 'Acme Fintech Inc.'; known companies: {known}"
    assert [r for r in _tool_results(llm) if r.startswith("error: ")] == [expected] * 3
    # each researcher's loop: list_metrics -> the error as a ToolMessage -> a turn with
    # nothing new -> the answer, asked with tool use off right after the error
    answers = [c for c in _tool_bound(llm) if c.kwargs.get("tool_choice") == "none"]
    assert len(answers) == 3
    assert all(isinstance(c.messages[-2], ToolMessage) for c in answers)
    assert all(c.messages[-1].content == ANSWER_PROMPT for c in answers)
    assert _emitted(llm) == ["list_metrics"] * 3
    for name in RESEARCHERS:
        assert f"- {expected}" in out[output_key(name)]
    assert all("data is insufficient" in out[output_key(n)] for n in ANALYSTS)
    assert "Recommendation: No recommendation" in out["memo"]


def test_initial_state_names_the_known_companies() -> None:
    assert initial_state("Payloom")["company"] == "Payloom Technologies Ltd"
    with pytest.raises(KeyError, match="unknown company 'acme'; ids: \\['corvanta'"):
        initial_state("acme")


# ------------------------------------------------------------------------ capsule tiers
def test_the_plan_offers_two_phase_to_the_research_group_only() -> None:
    capsules = lc.capsulize(build_due_diligence(scripted_due_diligence()), groups=DD_GROUPS)
    groups = {g.name: g for g in capsules.plan.groups}
    assert groups["research"].tiers == ("fine", "standard", "two_phase", "sequential")
    assert groups["analysis"].tiers == ("fine", "standard", "sequential")
    assert capsules.runtimes["research"].has_tools
    assert not capsules.runtimes["analysis"].has_tools
    assert set(capsules.plan.untouched) == {"scoping", "investment_writer"}


def test_two_phase_gathers_with_tools_then_makes_one_merged_call_per_group() -> None:
    fine, _ = _fine()
    out, llm, capsules = _capsules({"groups": {"research": "two_phase", "analysis": "standard"}})
    # phase A: every researcher's own tool loop, under the gather-only instruction
    gather = _tool_bound(llm)
    assert len(gather) == 3 * 4  # list, query, nothing new, the summary (tool use off)
    for call in gather:
        system = "\n".join(str(m.content) for m in call.messages if isinstance(m, SystemMessage))
        assert GATHER_INSTRUCTION in system
    # then one merged call per group, without tools
    merged = llm.merged_calls
    assert [c.tasks for c in merged] == [3, 3]
    assert not any(c.kwargs.get("tools") for c in merged)
    calls = llm.calls
    assert calls.index(merged[0]) > max(calls.index(c) for c in gather)
    research_prompt = _text(merged[0])
    assert research_prompt.count("## gathered data") == 3
    assert "Corvanta Materials S.A. debt 2023: PLN 372 million" in research_prompt
    assert len(calls) == 1 + 12 + 1 + 1 + 1  # scoping, phase A, two merged calls, writer
    history = {h["group"]: h for h in capsules.history()}
    assert history["research"]["tier"] == "two_phase" and history["research"]["fallback"] == []
    assert history["analysis"]["tier"] == "standard" and history["analysis"]["fallback"] == []
    # the scripted analyst answers a merged task as it answers alone: nothing is lost
    assert {k: out[k] for k in OUTPUT_KEYS} == {k: fine[k] for k in OUTPUT_KEYS}
    assert score_run("corvanta", out)["quality"] == 1.0


def test_standard_drops_the_tools_and_scores_lower_than_fine() -> None:
    fine, fine_llm = _fine()
    out, llm, _ = _capsules({"mode": "standard"})
    assert len(_tool_bound(fine_llm)) == 3 * 4
    assert _tool_bound(llm) == [] and _tool_results(llm) == []  # tool loss: no tool call
    assert [c.tasks for c in llm.merged_calls] == [3, 3] and len(llm.calls) == 4
    for name in RESEARCHERS:
        assert "no figures were retrieved" in out[output_key(name)]
    fine_score, standard = score_run("corvanta", fine), score_run("corvanta", out)
    assert fine_score["quality"] == 1.0
    assert standard["research"] < 0.2 and standard["analysis"] == 0.0
    assert standard["quality"] < 0.2 < fine_score["quality"]


def test_the_gold_judge_reads_its_references_from_sqlite() -> None:
    refs = reference_texts("lumenfold")
    assert "Lumenfold SAS revenue 2023: EUR 27.8 million" in refs["financial_findings"]
    assert "- net cash 2023: EUR 58 million" in refs["risk_analysis"]
    assert refs["memo"].splitlines()[0] == "Investment memo: Lumenfold SAS"
    fine, _ = _fine("lumenfold")
    altered = dict(fine)
    altered["financial_findings"] = fine["financial_findings"].replace("27.8", "28.7")
    assert score_run("lumenfold", altered)["research"] < score_run("lumenfold", fine)["research"]


# ------------------------------------------------------------------------ oracle ablation
def test_oracle_ablation_never_routes_the_tool_group_to_standard() -> None:
    """What the ablation finds on this app (runs=1, two companies, no simulated cache so
    the token counts are deterministic):

    * research/standard fails the floor: without tools the researchers report no
      figures (FactRecall against the same input's fine output ~0.12);
    * research/two_phase keeps every figure (1.0) but costs more than fine: phase A is
      the fine tool loop itself, plus one merged call on top;
    * research/sequential equals fine: tool-bound calls pass through unmerged, so it
      makes exactly the fine calls;

    so the oracle keeps research on fine, while the replayed controller, which does not
    weigh cost, settles on two_phase (quality 1.0 >= floor).

    The analysis group is varied while research runs fine, so its compound runs see the
    inputs of its fine runs and are judged against them: standard holds (1.0) at less
    cost than fine, and the controller agrees with the oracle there.
    """
    llm = scripted_due_diligence(cache_min_tokens=10**9)
    lines: list[str] = []
    report = lc.oracle_ablation(
        build_due_diligence(llm),
        [initial_state("corvanta"), initial_state("payloom")],
        judge=lc.FactRecallJudge(),
        groups=DD_GROUPS,
        runs=1,
        label="scripted due diligence",
        progress=lines.append,
    )
    # inputs x (all fine; research at standard, two_phase, sequential; analysis at
    # standard and sequential), one group varied at a time
    assert len(lines) == 2 * 6
    cells = {(c.group, c.tier): c for c in report.cells}
    rows = {r.group: r for r in report.rows}
    research = {t: cells[("research", t)] for t in ("fine", "standard", "two_phase", "sequential")}

    assert rows["research"].oracle != "standard"
    assert not research["standard"].passes
    assert research["standard"].quality_mean is not None
    assert research["standard"].quality_mean < 0.2
    assert research["two_phase"].quality_mean == 1.0 and research["two_phase"].passes
    assert research["two_phase"].tokens_median > research["fine"].tokens_median
    assert research["sequential"].passes
    assert research["sequential"].tokens_median == research["fine"].tokens_median
    assert rows["research"].oracle == "fine"
    assert rows["research"].controller == "two_phase"

    assert cells[("analysis", "standard")].judged == 2  # same inputs as its fine runs
    assert rows["analysis"].oracle == rows["analysis"].controller == "standard"
    assert "research" in str(report) and report.to_dict()["rows"]
