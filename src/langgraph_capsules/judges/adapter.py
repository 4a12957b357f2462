"""``as_judge``: accept our judges, plain three-argument callables and openevals evaluators."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.judges.base import Judge, JudgeResult, is_reference_free
from langgraph_capsules.judges.consistency import ConsistencyJudge
from langgraph_capsules.judges.facts import FactRecallJudge
from langgraph_capsules.judges.llm import LLMJudge
from langgraph_capsules.judges.schema import SchemaComplianceJudge

__all__ = ["CallableJudge", "EvaluatorJudge", "as_judge"]

_SAFE = (FactRecallJudge, SchemaComplianceJudge, ConsistencyJudge, LLMJudge)
"""Built-in judges: they already never raise, so they are returned unwrapped."""


def _score_value(raw: object) -> float | None:
    """A score in [0, 1] from a bool or a number, else None."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, (int, float)) and math.isfinite(raw) and 0.0 <= raw <= 1.0:
        return float(raw)
    return None


class CallableJudge:
    """A user's ``(task, reference, candidate)`` callable, made safe to use as a judge.

    The callable may return a :class:`JudgeResult`, or a bare score (a number in
    [0, 1] or a bool, given confidence 1.0), or None for "no score". Exceptions and
    other return values become ``score=None`` with the problem in ``details["error"]``.

    Example:
        >>> judge = CallableJudge(lambda task, ref, cand: float(ref == cand))
        >>> judge("t", "same", "same").score
        1.0
    """

    def __init__(self, fn: Callable[[str, str, str], Any]) -> None:
        """Wrap ``fn``.

        Args:
            fn: The three-argument judging function (its ``reference_free``
                attribute, if any, is passed on).
        """
        self.fn = fn
        self.reference_free = is_reference_free(fn)

    def __repr__(self) -> str:
        return f"CallableJudge({self.fn!r})"

    def __call__(self, task: str, reference: str, candidate: str) -> JudgeResult:
        """Call the wrapped function and normalise what it returns.

        Args:
            task: The task both outputs answer.
            reference: The trusted output.
            candidate: The output under test.

        Returns:
            The judgement; ``score=None`` if the function raised or returned something
            that is not a judgement.
        """
        try:
            out = self.fn(task, reference, candidate)
        except Exception as exc:
            return JudgeResult.no_score(f"the judge raised {type(exc).__name__}: {exc}")
        if isinstance(out, JudgeResult):
            return out
        if out is None:
            return JudgeResult.no_score("the judge returned None")
        score = _score_value(out)
        if score is None:
            return JudgeResult.no_score(
                f"the judge returned {out!r}; return a JudgeResult or a score in [0, 1]"
            )
        return JudgeResult(score=score, confidence=1.0)


class EvaluatorJudge:
    """An openevals-style evaluator used as a judge.

    The evaluator is called as ``evaluator(inputs=task, outputs=candidate,
    reference_outputs=reference)`` and must return a dict such as ``{"key":
    "correctness", "score": 0.8, "comment": "..."}`` (or a list of such dicts, whose
    scores are averaged). A bool score maps to 1.0 / 0.0; a number must lie in [0, 1].
    A raised exception, a missing or out-of-range score or an unexpected return value
    gives ``score=None``; the comment and key are kept in the details.

    Example:
        >>> def exact(*, inputs, outputs, reference_outputs, **kw):
        ...     return {"key": "exact", "score": outputs == reference_outputs}
        >>> EvaluatorJudge(exact)("task", "42", "42").score
        1.0
    """

    def __init__(self, evaluator: Callable[..., Any], *, confidence: float = 0.85) -> None:
        """Wrap ``evaluator``.

        Args:
            evaluator: A callable taking ``inputs``, ``outputs`` and
                ``reference_outputs`` as keywords.
            confidence: Confidence reported with each score (0.85 by default, that
                of an LLM rubric judge).

        Raises:
            CapsuleConfigError: ``bad_judge_option`` for a confidence outside [0, 1].
        """
        if isinstance(confidence, bool) or not 0.0 <= confidence <= 1.0:
            raise CapsuleConfigError(
                f"EvaluatorJudge confidence must lie in [0, 1], got {confidence!r}.",
                code="bad_judge_option",
            )
        self.evaluator = evaluator
        self.confidence = float(confidence)
        self.reference_free = is_reference_free(evaluator)

    def __repr__(self) -> str:
        return f"EvaluatorJudge({self.evaluator!r})"

    def __call__(self, task: str, reference: str, candidate: str) -> JudgeResult:
        """Run the evaluator and convert its result.

        Args:
            task: Passed as ``inputs``.
            reference: Passed as ``reference_outputs``.
            candidate: Passed as ``outputs``.

        Returns:
            The judgement; ``details`` holds the evaluator's ``key`` and ``comment``.
        """
        try:
            out = self.evaluator(inputs=task, outputs=candidate, reference_outputs=reference)
        except Exception as exc:
            return JudgeResult.no_score(f"the evaluator raised {type(exc).__name__}: {exc}")
        if inspect.isawaitable(out):
            close = getattr(out, "close", None)
            if callable(close):
                close()  # do not leak an un-awaited coroutine
            return JudgeResult.no_score("the evaluator is async; pass its sync version")
        results: Sequence[object]
        if isinstance(out, Mapping):
            results = [out]
        elif isinstance(out, Sequence) and not isinstance(out, str) and out:
            results = out
        else:
            return JudgeResult.no_score(
                f"the evaluator returned {type(out).__name__}; expected a dict with a 'score'"
            )
        scores: list[float] = []
        entries: list[dict[str, Any]] = []
        for item in results:
            if not isinstance(item, Mapping):
                return JudgeResult.no_score(f"the evaluator returned a list holding {item!r}")
            score = _score_value(item.get("score"))
            entries.append(
                {"key": item.get("key"), "score": item.get("score"), "comment": item.get("comment")}
            )
            if score is not None:
                scores.append(score)
        details: dict[str, Any] = {"judge": "evaluator", "results": entries}
        if len(entries) == 1:
            details.update(key=entries[0]["key"], comment=entries[0]["comment"])
        if not scores:
            raw = [e["score"] for e in entries]
            return JudgeResult.no_score(
                f"the evaluator gave no score in [0, 1] (got {raw!r})", **details
            )
        return JudgeResult(
            score=sum(scores) / len(scores), confidence=self.confidence, details=details
        )


def _signature(obj: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _is_evaluator(sig: inspect.Signature) -> bool:
    names = {
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    return "outputs" in names or ("reference_outputs" in names and "inputs" in names)


def _takes_three_positionals(sig: inspect.Signature) -> bool:
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return len(positional) >= 3 and all(p in positional[:3] for p in required)


def as_judge(obj: object, *, confidence: float = 0.85) -> Judge:
    """Turn anything that can judge into a :class:`Judge` that never raises.

    Detection, in order:

    1. a built-in judge (:class:`FactRecallJudge`, :class:`SchemaComplianceJudge`,
       :class:`ConsistencyJudge`, :class:`LLMJudge`) or an already-wrapped judge is
       returned as is;
    2. a callable with a parameter named ``outputs`` (or both ``inputs`` and
       ``reference_outputs``), the openevals evaluator signature, becomes an
       :class:`EvaluatorJudge` with ``confidence``;
    3. a callable accepting ``(task, reference, candidate)`` positionally becomes a
       :class:`CallableJudge` (it may return a ``JudgeResult`` or a bare score);
    4. a callable whose signature cannot be read is assumed to be case 3.

    Args:
        obj: The judge, evaluator or function.
        confidence: Confidence given to an openevals evaluator's scores.

    Returns:
        A judge.

    Raises:
        CapsuleConfigError: ``bad_judge`` if ``obj`` is not callable, is an ``async``
            function, or has neither signature.

    Example:
        >>> def evaluator(*, inputs, outputs, reference_outputs, **kw):
        ...     return {"key": "same", "score": outputs.strip() == reference_outputs.strip()}
        >>> as_judge(evaluator)("task", "Oslo", " Oslo ").score
        1.0
    """
    if isinstance(obj, (*_SAFE, CallableJudge, EvaluatorJudge)):
        judge: Judge = obj
        return judge
    if not callable(obj):
        raise CapsuleConfigError(
            f"a judge must be callable, got {type(obj).__name__}; pass a judge such as "
            "FactRecallJudge(), a function (task, reference, candidate) -> JudgeResult, "
            "or an openevals evaluator (*, inputs, outputs, reference_outputs).",
            code="bad_judge",
        )
    target = getattr(obj, "__call__", obj)  # noqa: B004 - the bound method of an instance
    if inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(target):
        raise CapsuleConfigError(
            f"{obj!r} is an async function; judges are called synchronously: pass its "
            "sync version (openevals: create_llm_as_judge, not create_async_llm_as_judge).",
            code="bad_judge",
        )
    sig = _signature(obj)
    if sig is None:
        return CallableJudge(obj)
    if _is_evaluator(sig):
        return EvaluatorJudge(obj, confidence=confidence)
    if _takes_three_positionals(sig):
        return CallableJudge(obj)
    raise CapsuleConfigError(
        f"cannot use {obj!r} as a judge: its signature {sig} matches neither "
        "(task, reference, candidate) -> JudgeResult nor the openevals evaluator "
        "(*, inputs, outputs, reference_outputs, **kwargs) -> dict; adapt it to one "
        "of them.",
        code="bad_judge",
    )
