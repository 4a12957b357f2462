"""Judges of the quality gate (capsules-spec 5): deterministic, LLM-based, adapters, MDD."""

from __future__ import annotations

import json
import statistics
import time
from itertools import count
from typing import Any

import pytest
from langchain_core.tracers.context import collect_runs

from langgraph_capsules import judges
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.judges import (
    DIMENSIONS,
    JUDGE_METADATA_KEY,
    JUDGE_TAG,
    MDD_FACTOR,
    PUBLISHED_MDD,
    CallableJudge,
    ConsistencyJudge,
    EvaluatorJudge,
    FactRecallJudge,
    JudgeResult,
    LLMJudge,
    SchemaComplianceJudge,
    as_judge,
    measure_mdd,
    parse_rubric_reply,
)
from langgraph_capsules.judges._quantities import find_quantities, same_quantity
from langgraph_capsules.judges._text import proper_names
from langgraph_capsules.testing import ScriptedChatModel

# --------------------------------------------------------------------------- material
# A fictional company news item (the reference, as a fine-mode output would state it) and
# candidates of known quality, after judging-offline.md: a paraphrase, the same facts in
# terse analyst style, about a third of the facts with one wrong number, a vague text
# with one fact, and the reference with every number changed.

REFERENCE = """Brekke Hydraulics ASA, the Bergen-based maker of subsea valves, reported
third-quarter revenue of NOK 1.26 billion, up 14.5% from a year earlier. Operating profit
rose to NOK 187 million, giving a margin of 14.8%. The order backlog reached NOK 4.9
billion, the highest since the company listed on Euronext Oslo in 2017.

Chief executive Solveig Dahl said demand from Equinor and Aker BP drove the growth, with
62% of new orders coming from the Norwegian continental shelf. The group signed a
five-year framework agreement with Petrobras worth about USD 85 million, its first
contract in Brazil.

The company will invest NOK 340 million in a new assembly plant in Haugesund, scheduled
to open in 2026 and to employ 120 people. Net debt fell to NOK 410 million from NOK 530
million in June.

Risks include a 9% rise in steel costs and new EU methane rules, which Dahl said could
delay two Brekke projects in the North Sea. Management kept its 2025 revenue guidance of
NOK 5.1 billion to NOK 5.4 billion."""

GOOD = """Bergen's Brekke Hydraulics ASA, which builds subsea valves, grew its
third-quarter revenue by 14.5 percent year on year to NOK 1.26 billion. Operating profit
climbed to NOK 187 million, a margin of 14.8 percent, and the order book hit NOK 4.9
billion, a record since its 2017 listing on Euronext Oslo.

According to chief executive Solveig Dahl, Equinor and Aker BP were behind the growth,
and the Norwegian continental shelf supplied 62 percent of new orders. A five-year frame
deal with Petrobras, valued at roughly USD 85 million, is the group's first contract in
Brazil.

Brekke plans to spend NOK 340 million on an assembly plant in Haugesund that opens in
2026 with 120 staff. Net debt dropped from NOK 530 million to NOK 410 million.

Steel costs up 9% and new EU methane regulation are the main risks; Dahl warned that two
North Sea projects may slip. Guidance for 2025 revenue stays at NOK 5.1-5.4 billion."""

TERSE = """Brekke Hydraulics ASA (Bergen; subsea valves)
- Q3 rev NOK 1.26bn, +14.5% y/y; op. profit NOK 187m, margin 14.8%
- Backlog NOK 4.9bn, highest since 2017 Euronext Oslo listing
- CEO Solveig Dahl: growth from Equinor, Aker BP; Norwegian shelf 62% of new orders
- Petrobras five-year framework, ~USD 85m, first Brazil contract
- Capex NOK 340m: Haugesund assembly plant, opens 2026, 120 jobs
- Net debt NOK 410m (June: NOK 530m)
- Risks: steel +9%, EU methane rules may delay two North Sea projects
- FY2025 revenue guidance NOK 5.1-5.4bn kept"""

MEDIUM = """Brekke Hydraulics grew third-quarter revenue by 14.5% to NOK 1.26 billion and
its order backlog reached NOK 4.9 billion. Chief executive Solveig Dahl credited Equinor
and Aker BP. The company will build an assembly plant in Haugesund for NOK 360 million and
signed a deal with Petrobras. Net debt fell to NOK 410 million. Higher steel costs and
EU methane rules are risks."""

BAD = """The company had a solid quarter, with healthy demand from Equinor and some
pressure on costs. Management remains upbeat about next year and plans to keep
investing in new capacity."""

WRONG_NUMBERS = """Brekke Hydraulics ASA, the Bergen-based maker of subsea valves, reported
third-quarter revenue of NOK 1.31 billion, up 11.5% from a year earlier. Operating profit
rose to NOK 203 million, giving a margin of 15.5%. The order backlog reached NOK 5.3
billion, the highest since the company listed on Euronext Oslo in 2015.

Chief executive Solveig Dahl said demand from Equinor and Aker BP drove the growth, with
57% of new orders coming from the Norwegian continental shelf. The group signed a
five-year framework agreement with Petrobras worth about USD 95 million, its first
contract in Brazil.

The company will invest NOK 380 million in a new assembly plant in Haugesund, scheduled
to open in 2027 and to employ 150 people. Net debt fell to NOK 450 million from NOK 590
million in June.

Risks include a 6% rise in steel costs and new EU methane rules, which Dahl said could
delay two Brekke projects in the North Sea. Management kept its 2024 revenue guidance of
NOK 5.6 billion to NOK 5.9 billion."""

TASK = "Summarise Brekke Hydraulics' third-quarter report for an investor."


def _values(text: str) -> list[tuple[float, bool]]:
    return [(q.value, q.percent) for q in find_quantities(text)]


# --------------------------------------------------------------------------- JudgeResult


def test_judge_result_accepts_unit_interval_and_none() -> None:
    assert JudgeResult(score=1, confidence=0.5).score == 1.0
    assert isinstance(JudgeResult(score=1, confidence=0.5).score, float)
    assert JudgeResult(score=None, confidence=0.0).scored is False
    failed = JudgeResult.no_score("unparsable", raw="x")
    assert failed.score is None and failed.confidence == 0.0
    assert failed.details == {"raw": "x", "error": "unparsable"}


@pytest.mark.parametrize(
    ("score", "confidence"),
    [(1.2, 0.5), (-0.1, 0.5), (float("nan"), 0.5), (True, 0.5), ("0.5", 0.5), (0.5, 2.0)],
)
def test_judge_result_rejects_out_of_range(score: Any, confidence: Any) -> None:
    with pytest.raises(CapsuleConfigError) as err:
        JudgeResult(score=score, confidence=confidence)
    assert err.value.code == "bad_judge_result"
    assert "[0, 1]" in str(err.value)


def test_judge_result_is_frozen() -> None:
    result = JudgeResult(score=0.5)
    with pytest.raises(AttributeError):
        result.score = 0.6  # type: ignore[misc]


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "text",
    ["482m", "482 million", "482,000,000", "NOK 482 million", "NOK482m", "0.482bn", "482 mn"],
)
def test_quantity_spellings_are_one_value(text: str) -> None:
    assert _values(text) == [(482e6, False)]


def test_percentages_differ_from_plain_numbers() -> None:
    assert _values("12.5%") == _values("12.5 percent") == _values("12.5 per cent")
    assert _values("12.5%") == [(12.5, True)]
    assert _values("12.5") == [(12.5, False)]
    pct, plain = find_quantities("12.5%")[0], find_quantities("12.5")[0]
    assert not same_quantity(plain, pct) and not same_quantity(pct, plain)


def test_numbers_glued_to_letters_and_list_numbering_are_not_read() -> None:
    assert _values("Q3 results, a 3x rise, B2B sales") == []
    assert _values("1. Revenue grew\n2) Costs fell 4%") == [(4.0, True)]
    assert _values("FY2025 guidance") == [(2025.0, False)]


def test_ranges_share_their_unit() -> None:
    assert _values("NOK 5.1-5.4 billion") == [(5.1e9, False), (5.4e9, False)]
    assert _values("NOK 5.1 to NOK 5.4bn") == [(5.1e9, False), (5.4e9, False)]
    assert _values("10-12%") == [(10.0, True), (12.0, True)]


def test_scale_word_across_a_line_break() -> None:
    assert _values("reached NOK 4.9\nbillion") == [(4.9e9, False)]


def test_rounding_may_drop_precision_but_not_add_it() -> None:
    rounded, exact = find_quantities("482m")[0], find_quantities("482.4 million")[0]
    assert same_quantity(rounded, exact)  # "482m" restates 482.4 million
    assert not same_quantity(exact, rounded)  # "482.4m" claims more than "482m" said
    assert not same_quantity(find_quantities("497m")[0], exact)


# --------------------------------------------------------------------------- names


def test_proper_names_skip_sentence_initial_common_words() -> None:
    names = proper_names(
        "Revenue rose at Kvitfjell Mining. Analysts liked it.\n"
        "- Growth came from the EU and Q3 orders placed by Kvitfjell."
    )
    assert set(names) == {"kvitfjell", "mining", "eu", "q3"}


def test_proper_names_skip_heading_lines() -> None:
    names = proper_names("## Executive Summary\nKEY RISKS:\nDemand from Lysaker Foods fell.")
    assert set(names) == {"lysaker", "foods"}


# --------------------------------------------------------------------------- FactRecallJudge


def test_fact_recall_reproduces_the_offline_ranking() -> None:
    judge = FactRecallJudge()
    scores = {
        name: judge(TASK, REFERENCE, text).score
        for name, text in {
            "good": GOOD,
            "terse": TERSE,
            "medium": MEDIUM,
            "bad": BAD,
            "wrong_numbers": WRONG_NUMBERS,
        }.items()
    }
    assert scores["good"] is not None and scores["good"] >= 0.9
    assert scores["terse"] is not None and scores["terse"] >= 0.9
    assert scores["medium"] is not None and 0.25 <= scores["medium"] <= 0.40
    assert scores["bad"] is not None and scores["bad"] <= 0.05
    assert scores["wrong_numbers"] == 0.0
    assert scores["good"] > scores["medium"] > scores["bad"]


def test_fact_recall_details_explain_the_score() -> None:
    result = FactRecallJudge()(TASK, REFERENCE, MEDIUM)
    d = result.details
    assert d["numbers_total"] == 17 and d["names_total"] == 21
    assert d["unsupported_numbers"] == ["360 million"]  # the one wrong number
    assert d["precision"] == pytest.approx(4 / 5)
    assert result.score == pytest.approx(d["recall"] * d["precision"])
    assert "340 million" in d["missing"]
    assert d["reference_chars"] == len(REFERENCE) and d["candidate_chars"] == len(MEDIUM)


def test_fact_recall_wrong_numbers_keep_names_but_lose_precision() -> None:
    d = FactRecallJudge()(TASK, REFERENCE, WRONG_NUMBERS).details
    assert d["names_found"] == d["names_total"]
    assert d["numbers_found"] == 0 and d["precision"] == 0.0


def test_fact_recall_an_invented_number_costs() -> None:
    judge = FactRecallJudge()
    reference = "Sales at Kvitfjell Mining rose 8% to NOK 120 million."
    clean = judge("", reference, "Kvitfjell Mining: sales +8%, NOK 120m.")
    padded = judge("", reference, "Kvitfjell Mining: sales +8%, NOK 120m, 300 new hires.")
    assert clean.score == 1.0
    assert padded.score == pytest.approx(2 / 3)
    assert padded.details["unsupported_numbers"] == ["300"]


def test_fact_recall_self_is_perfect_and_empty_is_zero() -> None:
    judge = FactRecallJudge()
    assert judge(TASK, REFERENCE, REFERENCE).score == 1.0
    assert judge(TASK, REFERENCE, "").score == 0.0


def test_fact_recall_without_facts_gives_no_score() -> None:
    result = FactRecallJudge()("", "the plan looks sound and the team is able.", "fine")
    assert result.score is None and result.confidence == 0.0
    assert "no numbers or names" in result.details["error"]


def test_fact_recall_confidence_grows_with_facts() -> None:
    judge = FactRecallJudge()
    few = judge("", "Sales rose 8% at Kvitfjell.", "Kvitfjell sales +8%")
    many = judge(TASK, REFERENCE, GOOD)
    assert few.confidence == pytest.approx(2 / 7)
    assert many.confidence == pytest.approx(38 / 43)


def test_fact_recall_is_deterministic_and_fast() -> None:
    judge = FactRecallJudge()
    first = judge(TASK, REFERENCE, MEDIUM)
    assert all(judge(TASK, REFERENCE, MEDIUM) == first for _ in range(5))
    n = 100
    start = time.perf_counter()
    for i in range(n):  # fresh texts every call, so the reference cache cannot help
        judge(TASK, f"{REFERENCE} (rev {i})", f"{GOOD} (rev {i})")
    per_call = (time.perf_counter() - start) / n
    assert per_call < 0.02, f"{per_call * 1000:.1f} ms per call; expected about 1 ms"


# --------------------------------------------------------------------------- schema / consistency


def test_schema_compliance_self_scores_one() -> None:
    result = SchemaComplianceJudge()(TASK, REFERENCE, REFERENCE)
    assert result.score == 1.0 and result.confidence == 0.70


def test_schema_compliance_formula() -> None:
    reference = "turbine gearbox bearing housing about " + "x " * 15  # 20 words, 4 key terms
    candidate = "turbine gearbox x x x x"  # 6 words: ratio 0.3, coverage 2/4
    result = SchemaComplianceJudge()("", reference, candidate)
    d = result.details
    assert d["key_terms"] == 4  # "about" is a stop-word, "x" too short
    assert d["coverage"] == 0.5 and d["completeness"] == pytest.approx(0.5)
    assert d["format"] == 1.0 and d["missing_terms"] == ["bearing", "housing"]
    assert result.score == pytest.approx(0.5 * 0.5 + 0.3 * 0.5 + 0.2 * 1.0)


def test_schema_compliance_requires_json_when_the_reference_was_json() -> None:
    reference = json.dumps({"company": "Kvitfjell", "sector": "mining"})
    judge = SchemaComplianceJudge()
    as_json = judge("", reference, '```json\n{"company": "Kvitfjell", "sector": "mining"}\n```')
    as_prose = judge("", reference, "company Kvitfjell sector mining")
    assert as_json.details["format"] == 1.0 and as_prose.details["format"] == 0.0
    assert as_json.score is not None and as_prose.score is not None
    assert as_json.score - as_prose.score == pytest.approx(0.2)


def test_schema_compliance_ranks_the_material() -> None:
    judge = SchemaComplianceJudge()
    good, medium, bad = (judge(TASK, REFERENCE, t).score for t in (GOOD, MEDIUM, BAD))
    assert good is not None and medium is not None and bad is not None
    assert good > medium > bad


def test_consistency_is_word_jaccard() -> None:
    result = ConsistencyJudge()("", "Wind turbine sensors, 12 of them", "turbine SENSORS sold")
    # {wind, turbine, sensors, them} vs {turbine, sensors, sold}: 2 shared of 5
    assert result.score == pytest.approx(2 / 5) and result.confidence == 0.60
    assert ConsistencyJudge()("", "", "").score == 1.0
    assert ConsistencyJudge()("", "wind", "").score == 0.0


def test_consistency_is_blind_to_numbers() -> None:
    assert ConsistencyJudge()(TASK, REFERENCE, WRONG_NUMBERS).score == 1.0
    assert FactRecallJudge()(TASK, REFERENCE, WRONG_NUMBERS).score == 0.0


# --------------------------------------------------------------------------- rubric parsing

WELL_FORMED = json.dumps(
    {"reasoning": "Close.", "completeness": 8, "accuracy": 9, "structure": 7, "conciseness": 8}
)


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        (WELL_FORMED, 0.8),
        (f"```json\n{WELL_FORMED}\n```", 0.8),
        (f"Here is my grading.\n```\n{WELL_FORMED}", 0.8),  # unclosed fence
        (f"I compared both. {WELL_FORMED} Hope this helps.", 0.8),
        (
            '{"note": "x"} then {"completeness": 6, "accuracy": 6, "structure": 6, '
            '"conciseness": 6}',
            0.6,
        ),
        (
            '{"reasoning": "ok", "scores": {"Completeness": 10, "accuracy": 10, '
            '"structure": 10, "conciseness": 10}}',
            1.0,
        ),
        ('completeness: 4, accuracy = 6, \'structure\': 8, "conciseness": "2" (no JSON)', 0.5),
        ('{"completeness": "7/10", "accuracy": 7.0, "structure": 7, "conciseness": 7}', 0.7),
    ],
)
def test_parse_rubric_reply_accepts(reply: str, score: float) -> None:
    parsed = parse_rubric_reply(reply)
    assert parsed.error is None
    assert parsed.score == pytest.approx(score)


def test_parse_rubric_reply_counts_a_missing_dimension_as_five() -> None:
    parsed = parse_rubric_reply('{"completeness": 9, "accuracy": 9, "structure": 9}')
    assert parsed.missing == ("conciseness",)
    assert parsed.scores["conciseness"] == 5.0
    assert parsed.score == pytest.approx((9 + 9 + 9 + 5) / 40)


def test_parse_rubric_reply_keeps_the_reasoning() -> None:
    assert parse_rubric_reply(WELL_FORMED).reasoning == "Close."


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("The candidate is pretty good overall.", "no rubric grades"),
        ("", "no rubric grades"),
        ('{"verdict": "good"}', "no rubric grades"),
        ('{"completeness": 12, "accuracy": 9, "structure": 9, "conciseness": 9}', "outside 0-10"),
        ('{"completeness": -1, "accuracy": 9, "structure": 9, "conciseness": 9}', "outside 0-10"),
        ('{"completeness": "high", "accuracy": 9, "structure": 9, "conciseness": 9}', "not a num"),
        ('{"completeness": true, "accuracy": 9, "structure": 9, "conciseness": 9}', "not a num"),
    ],
)
def test_parse_rubric_reply_rejects(reply: str, error: str) -> None:
    parsed = parse_rubric_reply(reply)
    assert parsed.score is None
    assert parsed.error is not None and error in parsed.error


# --------------------------------------------------------------------------- LLMJudge


def _grades(c: int, a: int, s: int, k: int) -> str:
    return json.dumps(
        {
            "reasoning": "Compared.",
            "completeness": c,
            "accuracy": a,
            "structure": s,
            "conciseness": k,
        }
    )


def _reference_first(prompt: str) -> bool:
    return prompt.index("<reference>") < prompt.index("<candidate>")


def test_llm_judge_well_formed_both_orders() -> None:
    model = ScriptedChatModel(respond=lambda prompt: _grades(8, 9, 7, 8))
    result = LLMJudge(model)(TASK, REFERENCE, GOOD)
    assert result.score == pytest.approx(0.8)
    assert result.confidence == pytest.approx(0.85)
    assert len(model.calls) == 2
    assert [o["order"] for o in result.details["orders"]] == ["reference_first", "candidate_first"]
    assert result.details["position_bias"] == pytest.approx(0.0)
    assert result.details["rubric_version"] == judges.DEFAULT_RUBRIC_VERSION
    assert result.details["candidate_chars"] == len(GOOD)


def test_llm_judge_averages_out_position_bias() -> None:
    def biased(prompt: str) -> str:
        return _grades(9, 9, 9, 9) if _reference_first(prompt) else _grades(5, 5, 5, 5)

    model = ScriptedChatModel(respond=biased)
    result = LLMJudge(model)(TASK, REFERENCE, MEDIUM)
    assert result.score == pytest.approx(0.7)
    assert result.details["position_bias"] == pytest.approx(0.4)
    orders = {o["order"]: o["score"] for o in result.details["orders"]}
    assert orders == {"reference_first": pytest.approx(0.9), "candidate_first": pytest.approx(0.5)}
    one_order = LLMJudge(ScriptedChatModel(respond=biased), both_orders=False)
    assert one_order(TASK, REFERENCE, MEDIUM).score == pytest.approx(0.9)


def test_llm_judge_prompts_present_both_orders() -> None:
    model = ScriptedChatModel(respond=lambda prompt: _grades(8, 8, 8, 8))
    LLMJudge(model)(TASK, REFERENCE, GOOD)
    prompts = ["\n".join(str(m.content) for m in call.messages) for call in model.calls]
    assert sorted(_reference_first(p) for p in prompts) == [False, True]
    system = str(model.calls[0].messages[0].content)
    assert "Length is not quality" in system
    assert "First explain" in system
    assert all(dim in system for dim in DIMENSIONS)
    assert all(TASK in p and "Brekke" in p for p in prompts)


def test_llm_judge_parses_fenced_replies() -> None:
    model = ScriptedChatModel(respond=lambda prompt: f"```json\n{_grades(6, 6, 6, 6)}\n```")
    assert LLMJudge(model)(TASK, REFERENCE, MEDIUM).score == pytest.approx(0.6)


@pytest.mark.parametrize(
    "reply", ["I think it is fine.", _grades(11, 9, 9, 9), '{"completeness": "n/a"}']
)
def test_llm_judge_unusable_replies_give_no_score(reply: str) -> None:
    model = ScriptedChatModel(respond=lambda prompt: reply)
    result = LLMJudge(model)(TASK, REFERENCE, GOOD)
    assert result.score is None and result.confidence == 0.0
    assert "no order gave a score" in result.details["error"]
    assert all(o["score"] is None for o in result.details["orders"])


def test_llm_judge_keeps_the_order_that_parsed() -> None:
    def half(prompt: str) -> str:
        return _grades(7, 7, 7, 7) if _reference_first(prompt) else "no idea"

    result = LLMJudge(ScriptedChatModel(respond=half))(TASK, REFERENCE, GOOD)
    assert result.score == pytest.approx(0.7)
    assert result.confidence == pytest.approx(0.85 / 2)
    assert "position_bias" not in result.details


def test_llm_judge_model_errors_never_raise() -> None:
    model = ScriptedChatModel(respond=lambda prompt: _grades(8, 8, 8, 8), fail_calls={0, 1})
    result = LLMJudge(model)(TASK, REFERENCE, GOOD)
    assert result.score is None
    assert "ScriptedError" in result.details["error"]


def test_llm_judge_calls_are_tagged_for_telemetry() -> None:
    model = ScriptedChatModel(respond=lambda prompt: _grades(8, 8, 8, 8))
    with collect_runs() as runs:
        LLMJudge(model)(TASK, REFERENCE, GOOD)
    llm_runs = [r for r in runs.traced_runs if r.run_type == "llm"]
    assert len(llm_runs) == 2
    for run in llm_runs:
        assert JUDGE_TAG in (run.tags or [])
        metadata = (run.extra or {}).get("metadata", {})
        assert metadata[JUDGE_METADATA_KEY] is True
        assert metadata["capsule_rubric"] == judges.DEFAULT_RUBRIC_VERSION
    orders = {(r.extra or {})["metadata"]["capsule_judge_order"] for r in llm_runs}
    assert orders == {"reference_first", "candidate_first"}


async def test_llm_judge_async_matches_sync() -> None:
    def biased(prompt: str) -> str:
        return _grades(10, 8, 8, 8) if _reference_first(prompt) else _grades(6, 6, 6, 6)

    judge = LLMJudge(ScriptedChatModel(respond=biased))
    sync = judge(TASK, REFERENCE, GOOD)
    async_ = await judge.acall(TASK, REFERENCE, GOOD)
    assert async_.score == sync.score == pytest.approx((0.85 + 0.6) / 2)


def test_llm_judge_rejects_bad_configuration() -> None:
    model = ScriptedChatModel()
    with pytest.raises(CapsuleConfigError) as err:
        LLMJudge(model, rubric_version="v0")
    assert err.value.code == "bad_rubric_version"
    assert judges.DEFAULT_RUBRIC_VERSION in str(err.value)
    with pytest.raises(CapsuleConfigError) as err:
        LLMJudge("openai:gpt-4o")  # type: ignore[arg-type]
    assert err.value.code == "bad_judge_model" and "ChatOpenAI" in str(err.value)
    with pytest.raises(CapsuleConfigError) as err:
        LLMJudge(model, confidence=1.5)
    assert err.value.code == "bad_judge_option"


# --------------------------------------------------------------------------- as_judge


def test_as_judge_returns_built_in_judges_unchanged() -> None:
    judge = FactRecallJudge()
    assert as_judge(judge) is judge


def test_as_judge_adapts_an_openevals_evaluator() -> None:
    seen: dict[str, Any] = {}

    def correctness(*, inputs: Any, outputs: Any, reference_outputs: Any, **kw: Any) -> Any:
        seen.update(inputs=inputs, outputs=outputs, reference_outputs=reference_outputs)
        return {"key": "correctness", "score": False, "comment": "numbers differ"}

    judge = as_judge(correctness)
    assert isinstance(judge, EvaluatorJudge)
    result = judge(TASK, REFERENCE, WRONG_NUMBERS)
    assert seen == {"inputs": TASK, "outputs": WRONG_NUMBERS, "reference_outputs": REFERENCE}
    assert result.score == 0.0 and result.confidence == 0.85
    assert result.details["key"] == "correctness"
    assert result.details["comment"] == "numbers differ"


def test_evaluator_scores_are_normalised() -> None:
    def continuous(*, inputs: Any, outputs: Any, reference_outputs: Any) -> Any:
        return {"key": "q", "score": 0.6}

    def several(*, inputs: Any = None, outputs: Any = None, **kw: Any) -> Any:
        return [{"key": "a", "score": 1.0}, {"key": "b", "score": 0.5}]

    def out_of_range(*, inputs: Any, outputs: Any, reference_outputs: Any) -> Any:
        return {"key": "q", "score": 7}

    def broken(*, inputs: Any, outputs: Any, reference_outputs: Any) -> Any:
        raise TimeoutError("judge model timed out")

    assert as_judge(continuous)("t", "r", "c").score == 0.6
    assert as_judge(several)("t", "r", "c").score == pytest.approx(0.75)
    bad = as_judge(out_of_range)("t", "r", "c")
    assert bad.score is None and "no score in [0, 1]" in bad.details["error"]
    failed = as_judge(broken)("t", "r", "c")
    assert failed.score is None and "TimeoutError" in failed.details["error"]


def test_as_judge_wraps_plain_three_argument_functions() -> None:
    judge = as_judge(lambda task, reference, candidate: reference == candidate)
    assert isinstance(judge, CallableJudge)
    assert judge("t", "a", "a").score == 1.0 and judge("t", "a", "b").score == 0.0
    assert as_judge(lambda t, r, c: None)("t", "r", "c").score is None
    junk = as_judge(lambda t, r, c: "great")("t", "r", "c")
    assert junk.score is None and "return a JudgeResult" in junk.details["error"]
    crash = as_judge(lambda t, r, c: 1 / 0)("t", "r", "c")
    assert crash.score is None and "ZeroDivisionError" in crash.details["error"]


def test_as_judge_rejects_what_cannot_judge() -> None:
    async def async_evaluator(*, inputs: Any, outputs: Any, reference_outputs: Any) -> Any:
        return {"score": 1.0}

    for bad, hint in [
        ("FactRecallJudge", "must be callable"),
        (lambda candidate: 1.0, "matches neither"),
        (async_evaluator, "async"),
    ]:
        with pytest.raises(CapsuleConfigError) as err:
            as_judge(bad)
        assert err.value.code == "bad_judge"
        assert hint in str(err.value)


# --------------------------------------------------------------------------- measure_mdd


def test_deterministic_judges_have_zero_mdd() -> None:
    cases = [(TASK, REFERENCE, BAD), (TASK, REFERENCE, MEDIUM), (TASK, REFERENCE, GOOD)]
    report = measure_mdd(FactRecallJudge(), cases)
    assert report.reps == 7 and report.judgements == 21 and report.no_score == 0
    assert report.sigma_bar == 0.0 and report.mdd == 0.0
    assert report.case_means[2] == pytest.approx(37 / 38)
    low, mid, _ = report.case_means
    assert low is not None and mid is not None and low < mid
    assert report.is_null(0.0) and not report.is_null(0.001)


def test_mdd_is_two_and_a_half_times_mean_case_std() -> None:
    series = {"low": [0.2, 0.3, 0.4], "high": [0.8, 0.8, 0.8]}
    step = count()

    def noisy(task: str, reference: str, candidate: str) -> JudgeResult:
        return JudgeResult(score=series[candidate][next(step) % 3], confidence=0.9)

    report = measure_mdd(noisy, [("", "ref", "low"), ("", "ref", "high")], reps=3)
    assert report.case_means == pytest.approx((0.3, 0.8))
    assert report.case_stds == pytest.approx((0.1, 0.0))
    assert report.sigma_bar == pytest.approx(0.05)
    assert report.mdd == pytest.approx(MDD_FACTOR * 0.05) == pytest.approx(0.125)
    assert report.is_null(0.1) and not report.is_null(0.2)


def test_mdd_counts_judgements_without_score() -> None:
    replies = iter(["garbage", _grades(8, 8, 8, 8), _grades(6, 6, 6, 6), "no", _grades(7, 7, 7, 7)])
    model = ScriptedChatModel(respond=lambda prompt: next(replies))
    report = measure_mdd(LLMJudge(model, both_orders=False), [("t", "ref", "cand")], reps=5)
    assert report.scores == ((None, 0.8, 0.6, None, 0.7),)
    assert report.no_score == 2
    assert report.case_means[0] == pytest.approx(0.7)
    assert report.case_stds[0] == pytest.approx(statistics.stdev([0.8, 0.6, 0.7]))
    assert report.mdd == pytest.approx(2.5 * 0.1)


def test_mdd_without_any_score_has_no_mdd() -> None:
    report = measure_mdd(lambda t, r, c: None, [("", "r", "c")], reps=3)
    assert report.sigma_bar is None and report.mdd is None and report.no_score == 3
    with pytest.raises(CapsuleConfigError) as err:
        report.is_null(0.1)
    assert err.value.code == "no_mdd"


def test_published_mdds() -> None:
    assert PUBLISHED_MDD == {"claude-opus-4-6": 0.030, "gpt-4o": 0.065}
    assert MDD_FACTOR * 0.012 == pytest.approx(PUBLISHED_MDD["claude-opus-4-6"])


@pytest.mark.parametrize(
    ("cases", "reps", "code"),
    [
        ([], 7, "bad_mdd_cases"),
        ("task", 7, "bad_mdd_cases"),
        ([("task", "reference")], 7, "bad_mdd_cases"),
        ([("task", "reference", 3)], 7, "bad_mdd_cases"),
        ([("t", "r", "c")], 1, "bad_mdd_reps"),
        ([("t", "r", "c")], 2.5, "bad_mdd_reps"),
    ],
)
def test_measure_mdd_rejects_bad_input(cases: Any, reps: Any, code: str) -> None:
    with pytest.raises(CapsuleConfigError) as err:
        measure_mdd(FactRecallJudge(), cases, reps=reps)
    assert err.value.code == code


# --------------------------------------------------------------------------- surface


def test_judges_all_is_exported() -> None:
    for name in judges.__all__:
        assert hasattr(judges, name), name
    assert {"Judge", "JudgeResult", "FactRecallJudge", "LLMJudge", "measure_mdd"} <= set(
        judges.__all__
    )
