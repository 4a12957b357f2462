"""Judges for the quality gate and for benchmark quality (capsules-spec 5).

A judge scores a candidate output against a reference output for the same task:
``judge(task, reference, candidate) -> JudgeResult``, with ``score=None`` (never 0.0)
when the judgement failed.

* :class:`FactRecallJudge`: deterministic fact recall x number precision; the offline
  default.
* :class:`SchemaComplianceJudge`, :class:`ConsistencyJudge`: the reference
  implementation's non-LLM evaluators.
* :class:`LLMJudge`: a versioned rubric scored by any chat model in both orders, or
  against the task alone (``reference_free=True``).
* :func:`is_reference_free`: whether a judge needs no reference (the gate then audits
  compound runs without running fine).
* :func:`as_judge`: accept plain functions and openevals evaluators.
* :func:`measure_mdd`: a judge's noise and minimum detectable difference.
"""

from __future__ import annotations

from langgraph_capsules.judges.adapter import CallableJudge, EvaluatorJudge, as_judge
from langgraph_capsules.judges.base import Judge, JudgeResult, is_reference_free
from langgraph_capsules.judges.consistency import ConsistencyJudge
from langgraph_capsules.judges.facts import FactRecallJudge
from langgraph_capsules.judges.llm import (
    DEFAULT_RUBRIC_VERSION,
    DIMENSIONS,
    JUDGE_METADATA_KEY,
    JUDGE_TAG,
    ORDERS,
    RUBRICS,
    TASK_ONLY,
    TASK_RUBRIC_VERSION,
    LLMJudge,
    Rubric,
    RubricReply,
    parse_rubric_reply,
)
from langgraph_capsules.judges.mdd import MDD_FACTOR, PUBLISHED_MDD, MddReport, measure_mdd
from langgraph_capsules.judges.schema import STOP_WORDS, SchemaComplianceJudge

__all__ = [
    "DEFAULT_RUBRIC_VERSION",
    "DIMENSIONS",
    "JUDGE_METADATA_KEY",
    "JUDGE_TAG",
    "MDD_FACTOR",
    "ORDERS",
    "PUBLISHED_MDD",
    "RUBRICS",
    "STOP_WORDS",
    "TASK_ONLY",
    "TASK_RUBRIC_VERSION",
    "CallableJudge",
    "ConsistencyJudge",
    "EvaluatorJudge",
    "FactRecallJudge",
    "Judge",
    "JudgeResult",
    "LLMJudge",
    "MddReport",
    "Rubric",
    "RubricReply",
    "SchemaComplianceJudge",
    "as_judge",
    "is_reference_free",
    "measure_mdd",
    "parse_rubric_reply",
]
