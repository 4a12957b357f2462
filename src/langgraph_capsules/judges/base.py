"""The judge contract: :class:`Judge` (what users plug in) and :class:`JudgeResult`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from langgraph_capsules.errors import CapsuleConfigError

__all__ = ["Judge", "JudgeResult", "is_reference_free"]


def _unit_interval(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CapsuleConfigError(
            f"JudgeResult.{name} must be a number in [0, 1], got {value!r}; "
            "convert the judge's raw score to a float first.",
            code="bad_judge_result",
        )
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise CapsuleConfigError(
            f"JudgeResult.{name} must lie in [0, 1], got {number!r}; rescale the raw "
            "score (e.g. divide a 0-10 rubric score by 10), or return score=None for "
            "a judgement that failed.",
            code="bad_judge_result",
        )
    return number


@dataclass(frozen=True, kw_only=True)
class JudgeResult:
    """One judgement of a candidate output against a reference output.

    Example:
        >>> JudgeResult(score=0.9, confidence=0.85).scored
        True
        >>> JudgeResult.no_score("reply was not JSON").details["error"]
        'reply was not JSON'
    """

    score: float | None
    """Quality in [0, 1]; ``None`` means *no score* (the judgement failed or could not be
    parsed). A failed judgement is never reported as 0.0: the gate skips it instead of
    counting it as a failing reading."""

    confidence: float = 1.0
    """How much the judge trusts this score, in [0, 1] (0.0 when ``score`` is None)."""

    details: Mapping[str, Any] = field(default_factory=dict)
    """Judge-specific evidence (sub-scores, missing facts, errors); JSON-safe values."""

    def __post_init__(self) -> None:
        if self.score is not None:
            object.__setattr__(self, "score", _unit_interval(self.score, "score"))
        object.__setattr__(self, "confidence", _unit_interval(self.confidence, "confidence"))
        if not isinstance(self.details, Mapping):
            raise CapsuleConfigError(
                f"JudgeResult.details must be a mapping, got {type(self.details).__name__}; "
                "pass a dict of evidence (or nothing).",
                code="bad_judge_result",
            )

    @property
    def scored(self) -> bool:
        """True when the judgement produced a score."""
        return self.score is not None

    @classmethod
    def no_score(cls, error: str, **details: Any) -> JudgeResult:
        """A failed judgement: ``score=None``, confidence 0, ``details["error"] = error``.

        Args:
            error: Why there is no score.
            **details: More evidence to keep.

        Returns:
            The result.
        """
        return cls(score=None, confidence=0.0, details={**details, "error": error})


class Judge(Protocol):
    """Scores a candidate output against a reference output for the same task.

    A judge must not raise: a judgement that fails returns ``score=None`` (see
    :meth:`JudgeResult.no_score`). Plain callables with the openevals evaluator
    signature are turned into judges by :func:`langgraph_capsules.judges.as_judge`.

    **Reference-free judges.** A judge that needs no reference (it grades the candidate
    against the task alone) says so with the attribute ``reference_free = True`` (see
    :func:`is_reference_free`; ``LLMJudge(model, reference_free=True)`` is one, and a
    plain function may carry the attribute). The quality gate then audits compound runs
    without running fine, and passes ``reference=""`` to it.

    Example:
        >>> class LengthJudge:
        ...     def __call__(self, task: str, reference: str, candidate: str) -> JudgeResult:
        ...         ratio = min(len(candidate) / max(len(reference), 1), 1.0)
        ...         return JudgeResult(score=ratio, confidence=0.5)
        >>> LengthJudge()("t", "abcd", "ab").score
        0.5
    """

    def __call__(self, task: str, reference: str, candidate: str) -> JudgeResult:
        """Judge ``candidate`` against ``reference``.

        Args:
            task: The input both outputs answer (may be empty when unknown).
            reference: The trusted output (in the gate: the fine-mode output).
            candidate: The output under test (in the gate: the compound output).

        Returns:
            The judgement; ``score=None`` when it failed.
        """
        ...


def is_reference_free(judge: object) -> bool:
    """Whether ``judge`` grades a candidate without a reference (attribute
    ``reference_free is True``; wrapped functions pass theirs on).

    Args:
        judge: Any judge.

    Returns:
        ``True`` only when the judge declares it.

    Example:
        >>> def length(task, reference, candidate):
        ...     return min(len(candidate) / 100, 1.0)
        >>> is_reference_free(length)
        False
        >>> length.reference_free = True
        >>> is_reference_free(length)
        True
    """
    return getattr(judge, "reference_free", False) is True
