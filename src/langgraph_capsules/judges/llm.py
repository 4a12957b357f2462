"""``LLMJudge``: a versioned rubric scored by a chat model: against a reference in both
orders, or (``reference_free=True``) against the task alone."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config, merge_configs

from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.judges._text import strip_code_fences
from langgraph_capsules.judges.base import JudgeResult
from langgraph_capsules.prompts import message_text
from langgraph_capsules.telemetry import JUDGE_KEY

__all__ = [
    "DEFAULT_RUBRIC_VERSION",
    "DIMENSIONS",
    "JUDGE_METADATA_KEY",
    "JUDGE_TAG",
    "ORDERS",
    "RUBRICS",
    "TASK_ONLY",
    "TASK_RUBRIC_VERSION",
    "LLMJudge",
    "Rubric",
    "RubricReply",
    "parse_rubric_reply",
]

DIMENSIONS: tuple[str, ...] = ("completeness", "accuracy", "structure", "conciseness")
"""The rubric's four integer 0-10 dimensions, in the order the judge is asked for them."""

ORDERS: tuple[str, ...] = ("reference_first", "candidate_first")
"""The two presentation orders; ``reference_first`` alone when ``both_orders=False``."""

TASK_ONLY = "task_only"
"""The one presentation of a reference-free judgement: the task and the answer."""

JUDGE_METADATA_KEY = JUDGE_KEY
"""Run-metadata key (value ``True``) on every judge call, so telemetry can count them apart."""

JUDGE_TAG = "capsule:judge"
"""Run tag on every judge call."""

_MISSING_DIMENSION = 5.0
_REPLY_KEPT = 2000  # characters of each raw reply kept in the details


@dataclass(frozen=True, kw_only=True)
class Rubric:
    """One versioned wording of the judge prompt (our own, capsules-spec 5.1)."""

    version: str
    """Stable id, recorded in every judgement's details."""
    system: str
    """The system message: the grading instructions and the reply format."""
    closing: str
    """The line after the two answers in the user message."""
    reference_free: bool = False
    """Grades an answer against the task alone (no reference answer in the prompt)."""


_RUBRIC_V1 = Rubric(
    version="capsules-rubric-v1",
    system=(
        "You grade a CANDIDATE answer against a REFERENCE answer to the same task. The "
        "reference is the trusted baseline: judge how much of what it delivers the "
        "candidate keeps, and how faithfully.\n\n"
        "Grade four dimensions, each an integer from 0 (worst) to 10 (best):\n"
        "- completeness: does the candidate keep every fact, item and section that the "
        "reference provides?\n"
        "- accuracy: does the candidate agree with the reference and with the task? A "
        "number, name or claim that differs from the reference, or that the reference "
        "does not support, counts against it.\n"
        "- structure: are the sections, headings and format that the task asks for "
        "present and intact?\n"
        "- conciseness: is the candidate free of padding, repetition and filler?\n\n"
        "Length is not quality: never give a longer answer more credit for its length, "
        "and never mark down a shorter answer that keeps the content. Which answer is "
        "shown first means nothing.\n\n"
        "First explain your grading in two to four sentences, then give the grades. "
        "Reply with exactly one JSON object and nothing else, with the explanation "
        'first:\n{"reasoning": "<your explanation>", "completeness": <0-10>, '
        '"accuracy": <0-10>, "structure": <0-10>, "conciseness": <0-10>}'
    ),
    closing=("Grade the CANDIDATE against the REFERENCE now. Reply with the JSON object only."),
)

_RUBRIC_TASK_V1 = Rubric(
    version="capsules-rubric-task-v1",
    system=(
        "You grade an ANSWER to a TASK. There is no reference answer: judge the answer "
        "against what the task asks for and against the source material the task gives.\n\n"
        "Grade four dimensions, each an integer from 0 (worst) to 10 (best):\n"
        "- completeness: does the answer cover every part, item and section the task asks "
        "for, with the substance the source material supports?\n"
        "- accuracy: does the answer agree with the task and its source material? A number, "
        "name or claim that the source does not support counts against it.\n"
        "- structure: are the sections, headings and format that the task asks for present "
        "and intact?\n"
        "- conciseness: is the answer free of padding, repetition and filler?\n\n"
        "Length is not quality: never give a longer answer more credit for its length, and "
        "never mark down a short answer that covers what the task asks. An answer cut off "
        "mid-way, or one that keeps only a fraction of what the task asks, is incomplete.\n\n"
        "First explain your grading in two to four sentences, then give the grades. Reply "
        "with exactly one JSON object and nothing else, with the explanation first:\n"
        '{"reasoning": "<your explanation>", "completeness": <0-10>, "accuracy": <0-10>, '
        '"structure": <0-10>, "conciseness": <0-10>}'
    ),
    closing="Grade the ANSWER against the TASK now. Reply with the JSON object only.",
    reference_free=True,
)

RUBRICS: Mapping[str, Rubric] = MappingProxyType(
    {r.version: r for r in (_RUBRIC_V1, _RUBRIC_TASK_V1)}
)
"""Every rubric wording shipped, by version. Versions are never edited once released."""

DEFAULT_RUBRIC_VERSION = _RUBRIC_V1.version
TASK_RUBRIC_VERSION = _RUBRIC_TASK_V1.version
"""The default rubric of a reference-free :class:`LLMJudge`."""


@dataclass(frozen=True, kw_only=True)
class RubricReply:
    """A judge reply parsed by :func:`parse_rubric_reply`."""

    scores: Mapping[str, float] = field(default_factory=dict)
    """Each dimension's 0-10 grade (a missing dimension holds 5)."""
    missing: tuple[str, ...] = ()
    """Dimensions the reply did not grade (counted as 5)."""
    reasoning: str | None = None
    """The judge's explanation, when found."""
    error: str | None = None
    """Why the reply gives no score (unparsable or out of range), else None."""

    @property
    def score(self) -> float | None:
        """The mean grade divided by 10, or None when ``error`` is set."""
        if self.error is not None or not self.scores:
            return None
        return sum(self.scores.values()) / len(self.scores) / 10.0


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*", value)
        return float(m.group(1)) if m else None
    return None


def _first_graded_object(text: str, dimensions: Sequence[str]) -> dict[str, Any] | None:
    """The first JSON object in ``text`` that grades at least one dimension."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        flat = {str(k).strip().lower(): v for k, v in obj.items()}
        if any(d in flat for d in dimensions):
            return flat
        for value in obj.values():  # one level of nesting: {"scores": {...}}
            if isinstance(value, dict):
                inner = {str(k).strip().lower(): v for k, v in value.items()}
                if any(d in inner for d in dimensions):
                    return {**flat, **inner}
    return None


def _regex_grades(text: str, dimensions: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for dim in dimensions:
        m = re.search(
            rf"[\"']?\b{re.escape(dim)}\b[\"']?\s*[:=]\s*[\"']?(-?\d+(?:\.\d+)?)",
            text,
            re.IGNORECASE,
        )
        if m:
            found[dim] = m.group(1)
    m = re.search(r"\"reasoning\"\s*:\s*\"((?:[^\"\\]|\\.)*)\"", text, re.IGNORECASE | re.DOTALL)
    if m:
        found["reasoning"] = m.group(1)
    return found


def parse_rubric_reply(text: str, dimensions: Sequence[str] = DIMENSIONS) -> RubricReply:
    """Parse a judge reply robustly; never raises.

    Code fences are stripped, then the first JSON object that grades a dimension is
    used (one level of nesting allowed); failing that, each ``"dimension": number``
    pair is searched for with a regex. A missing dimension counts 5; a reply that
    grades none, or grades one with a non-number or outside 0-10, gives no score.
    Grades need not be integers (7.5 is kept as 7.5).

    Args:
        text: The model's reply.
        dimensions: The dimension names to look for.

    Returns:
        The parsed reply; its ``score`` is None when ``error`` is set.

    Example:
        >>> parse_rubric_reply('```json\\n{"completeness": 8, "accuracy": 6}\\n```').score
        0.6
    """
    graded: dict[str, Any] | None = None
    for body in dict.fromkeys((strip_code_fences(text), text)):
        graded = _first_graded_object(body, dimensions)
        if graded is None:
            fallback = _regex_grades(body, dimensions)
            graded = fallback if any(d in fallback for d in dimensions) else None
        if graded is not None:
            break
    if graded is None:
        return RubricReply(error="no rubric grades found in the reply")
    reasoning = graded.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, str) else None
    scores: dict[str, float] = {}
    missing: list[str] = []
    for dim in dimensions:
        if dim not in graded:
            missing.append(dim)
            scores[dim] = _MISSING_DIMENSION
            continue
        number = _as_number(graded[dim])
        if number is None:
            return RubricReply(reasoning=reasoning, error=f"{dim}={graded[dim]!r} is not a number")
        if not 0.0 <= number <= 10.0:
            return RubricReply(reasoning=reasoning, error=f"{dim}={number:g} is outside 0-10")
        scores[dim] = number
    return RubricReply(scores=scores, missing=tuple(missing), reasoning=reasoning)


def _reply_text(reply: object) -> str | None:
    if isinstance(reply, BaseMessage):
        return message_text(reply)
    return reply if isinstance(reply, str) else None


class LLMJudge:
    """A rubric judge run by a chat model: reference-based in both orders against position
    bias, or reference-free (``reference_free=True``: the answer against the task alone).

    The model grades the candidate against the reference on four integer 0-10
    dimensions (:data:`DIMENSIONS`: completeness, accuracy, structure, conciseness),
    told not to reward length and to explain before it grades, replying with one JSON
    object (the wording is ours and versioned: :data:`RUBRICS`). One order's score is
    the mean grade / 10. With ``both_orders=True`` the pair is judged twice, reference
    first and candidate first (two calls, run as one batch), and the order scores are
    averaged against position bias; ``details["position_bias"]`` is reference-first
    minus candidate-first.

    Failures never raise: a call that raises, or a reply that is unparsable or out of
    range, gives that order no score (see :func:`parse_rubric_reply`); when no order
    gives a score the result is ``score=None``. ``confidence`` is the configured
    confidence times the share of orders that gave a score.

    Every call carries run metadata ``{"capsule_judge": True, "capsule_judge_order":
    ..., "capsule_rubric": ...}`` and the tag ``"capsule:judge"`` (merged into the
    ambient run config), so usage telemetry can count judge calls apart.

    **Reference-free mode.** With ``reference_free=True`` the judge grades the candidate
    against the task alone (rubric :data:`TASK_RUBRIC_VERSION`, one call per judgement,
    the ``reference`` argument ignored). The quality gate then audits compound runs
    without running fine (see ``ControllerPolicy.audit_rate``): cheaper, but the score
    measures "is this a good answer to the task", not "does it keep what fine gives".

    Use a capable model at temperature 0 (set it on the model you pass), from another
    family than the judged model when you can, and measure its noise on your machine
    with :func:`measure_mdd` before trusting small differences. Do not pass a
    ``CapsuleChatModel`` that serves the judged group: pass the model it wraps.

    Example:
        >>> from langgraph_capsules.testing import ScriptedChatModel
        >>> reply = '{"reasoning": "ok", "completeness": 8, "accuracy": 9, '
        >>> reply += '"structure": 7, "conciseness": 8}'
        >>> judge = LLMJudge(ScriptedChatModel(respond=lambda prompt: reply))
        >>> judge("Summarise.", "Reference text.", "Candidate text.").score
        0.8
    """

    def __init__(
        self,
        model: Runnable[LanguageModelInput, Any],
        *,
        rubric_version: str | None = None,
        both_orders: bool = True,
        confidence: float = 0.85,
        max_concurrency: int | None = None,
        reference_free: bool = False,
    ) -> None:
        """Create the judge.

        Args:
            model: A LangChain chat model (any ``BaseChatModel``, or one bound with
                options such as ``model.bind(temperature=0)``).
            rubric_version: Which rubric wording to use; one of :data:`RUBRICS`
                (default: :data:`DEFAULT_RUBRIC_VERSION`, or
                :data:`TASK_RUBRIC_VERSION` when ``reference_free``).
            both_orders: Judge reference-first and candidate-first and average (two
                calls); False: reference first only (one call). Ignored when
                ``reference_free`` (one call).
            confidence: Confidence of a judgement where every order gave a score
                (0.85, as the reference implementation's judge).
            max_concurrency: Cap on simultaneous calls of one judgement (1 serialises
                the two orders, e.g. for a local server on few cores).
            reference_free: Grade the candidate against the task alone; the quality
                gate then judges compound runs without a fine reference run.

        Raises:
            CapsuleConfigError: ``bad_judge_model`` if ``model`` is not a LangChain
                runnable; ``bad_rubric_version`` for an unknown rubric;
                ``bad_judge_option`` for a confidence outside [0, 1], a
                ``max_concurrency`` below 1, or a rubric whose kind (reference-free
                or not) does not match ``reference_free``.
        """
        if not isinstance(model, Runnable):
            raise CapsuleConfigError(
                f"LLMJudge needs a LangChain chat model, got {type(model).__name__}; pass "
                "an instance such as ChatOpenAI(model='gpt-4o', temperature=0).",
                code="bad_judge_model",
            )
        if rubric_version is None:
            rubric_version = TASK_RUBRIC_VERSION if reference_free else DEFAULT_RUBRIC_VERSION
        if rubric_version not in RUBRICS:
            raise CapsuleConfigError(
                f"unknown rubric_version {rubric_version!r}; use one of "
                f"{sorted(RUBRICS)} (default {DEFAULT_RUBRIC_VERSION!r}).",
                code="bad_rubric_version",
            )
        if isinstance(confidence, bool) or not 0.0 <= confidence <= 1.0:
            raise CapsuleConfigError(
                f"LLMJudge confidence must lie in [0, 1], got {confidence!r}.",
                code="bad_judge_option",
            )
        if max_concurrency is not None and max_concurrency < 1:
            raise CapsuleConfigError(
                f"max_concurrency must be None or at least 1, got {max_concurrency!r}.",
                code="bad_judge_option",
            )
        if RUBRICS[rubric_version].reference_free != bool(reference_free):
            kind = "reference-free" if RUBRICS[rubric_version].reference_free else "reference"
            raise CapsuleConfigError(
                f"rubric {rubric_version!r} is a {kind} rubric but reference_free="
                f"{reference_free!r}; omit rubric_version to get the matching default.",
                code="bad_judge_option",
            )
        self.model = model
        self.reference_free = bool(reference_free)
        """Whether the judge grades against the task alone (the gate runs no fine)."""
        self.rubric: Rubric = RUBRICS[rubric_version]
        self.both_orders = both_orders
        self.confidence = float(confidence)
        self.max_concurrency = max_concurrency

    def __repr__(self) -> str:
        return (
            f"LLMJudge(model={type(self.model).__name__}, rubric_version="
            f"{self.rubric.version!r}, both_orders={self.both_orders}, "
            f"reference_free={self.reference_free})"
        )

    @property
    def orders(self) -> tuple[str, ...]:
        """The orders each judgement uses (:data:`TASK_ONLY` alone when reference-free)."""
        if self.reference_free:
            return (TASK_ONLY,)
        return ORDERS if self.both_orders else ORDERS[:1]

    def messages(
        self, task: str, reference: str, candidate: str, *, order: str = "reference_first"
    ) -> list[BaseMessage]:
        """The prompt of one order (for inspection and tests).

        Args:
            task: The task both outputs answer.
            reference: The trusted output.
            candidate: The output under test.
            order: ``"reference_first"`` or ``"candidate_first"`` (ignored when
                reference-free).

        Returns:
            A system message (the rubric) and a user message (task, answers, closing);
            reference-free: the task, the candidate as ``<answer>`` and the closing.

        Raises:
            CapsuleConfigError: ``bad_judge_option`` for an unknown order.
        """
        if self.reference_free:
            answer = f"<answer>\n{candidate.strip()}\n</answer>"
            text = "\n\n".join(
                (f"TASK:\n{task.strip() or '(not given)'}", answer, self.rubric.closing)
            )
            return [SystemMessage(self.rubric.system), HumanMessage(text)]
        if order not in ORDERS:
            raise CapsuleConfigError(
                f"unknown order {order!r}; use one of {list(ORDERS)}.", code="bad_judge_option"
            )
        ref = f"<reference>\n{reference.strip()}\n</reference>"
        cand = f"<candidate>\n{candidate.strip()}\n</candidate>"
        blocks = (ref, cand) if order == "reference_first" else (cand, ref)
        user = "\n\n".join(
            (f"TASK:\n{task.strip() or '(not given)'}", *blocks, self.rubric.closing)
        )
        return [SystemMessage(self.rubric.system), HumanMessage(user)]

    def _config(self, order: str) -> RunnableConfig:
        own: RunnableConfig = {
            "metadata": {
                JUDGE_METADATA_KEY: True,
                "capsule_judge_order": order,
                "capsule_rubric": self.rubric.version,
            },
            "tags": [JUDGE_TAG],
            "run_name": "capsule_judge",
        }
        if self.max_concurrency is not None:
            own["max_concurrency"] = self.max_concurrency
        ambient = ensure_config()
        ambient.pop("run_id", None)
        return merge_configs(ambient, own)

    def _combine(self, replies: Sequence[object], reference: str, candidate: str) -> JudgeResult:
        per_order: list[dict[str, Any]] = []
        scores: dict[str, float] = {}
        for order, reply in zip(self.orders, replies, strict=True):
            entry: dict[str, Any] = {"order": order}
            if isinstance(reply, BaseException):
                entry["error"] = f"the judge call raised {type(reply).__name__}: {reply}"
            else:
                text = _reply_text(reply)
                if text is None:
                    entry["error"] = f"the judge reply carries no text ({type(reply).__name__})"
                else:
                    parsed = parse_rubric_reply(text)
                    entry.update(
                        grades=dict(parsed.scores),
                        missing=list(parsed.missing),
                        reasoning=parsed.reasoning,
                        error=parsed.error,
                        reply=text[:_REPLY_KEPT],
                    )
                    if parsed.score is not None:
                        scores[order] = parsed.score
            entry["score"] = scores.get(order)
            per_order.append(entry)
        details: dict[str, Any] = {
            "judge": "llm",
            "rubric_version": self.rubric.version,
            "orders": per_order,
            "reference_chars": len(reference),
            "candidate_chars": len(candidate),
        }
        if len(scores) == len(ORDERS):
            details["position_bias"] = scores["reference_first"] - scores["candidate_first"]
        if not scores:
            errors = "; ".join(f"{e['order']}: {e['error']}" for e in per_order)
            return JudgeResult.no_score(f"no order gave a score ({errors})", **details)
        return JudgeResult(
            score=sum(scores.values()) / len(scores),
            confidence=self.confidence * len(scores) / len(self.orders),
            details=details,
        )

    def __call__(self, task: str, reference: str, candidate: str) -> JudgeResult:
        """Judge ``candidate`` against ``reference`` (one call per order, batched).

        Args:
            task: The task both outputs answer.
            reference: The trusted output (the fine output in the gate).
            candidate: The output under test.

        Returns:
            The mean of the orders' scores, or ``score=None`` if none gave one;
            details hold each order's grades, reasoning, error and raw reply.
        """
        prompts: list[LanguageModelInput] = [
            self.messages(task, reference, candidate, order=o) for o in self.orders
        ]
        try:
            replies: list[object] = list(
                self.model.batch(
                    prompts, [self._config(o) for o in self.orders], return_exceptions=True
                )
            )
        except Exception as exc:  # the batch machinery itself failed: still no crash
            replies = [exc] * len(prompts)
        return self._combine(replies, reference, candidate)

    async def acall(self, task: str, reference: str, candidate: str) -> JudgeResult:
        """Async twin of :meth:`__call__` (the orders run concurrently).

        Args:
            task: The task both outputs answer.
            reference: The trusted output.
            candidate: The output under test.

        Returns:
            The same judgement :meth:`__call__` gives.
        """
        prompts: list[LanguageModelInput] = [
            self.messages(task, reference, candidate, order=o) for o in self.orders
        ]
        try:
            replies: list[object] = list(
                await self.model.abatch(
                    prompts, [self._config(o) for o in self.orders], return_exceptions=True
                )
            )
        except Exception as exc:
            replies = [exc] * len(prompts)
        return self._combine(replies, reference, candidate)
