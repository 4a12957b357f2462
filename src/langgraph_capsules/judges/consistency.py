"""``ConsistencyJudge``: word-set Jaccard overlap, no LLM."""

from __future__ import annotations

from dataclasses import dataclass

from langgraph_capsules.judges._text import word_set
from langgraph_capsules.judges.base import JudgeResult

__all__ = ["ConsistencyJudge"]


@dataclass(frozen=True)
class ConsistencyJudge:
    """Token Jaccard similarity of the two outputs (capsules-spec 5.3), confidence 0.60.

    ``score = |A & B| / |A | B|`` (intersection over union), where A and B are the
    sets of case-folded alphabetic words of three or more letters of the reference and
    the candidate (1.0 when neither text has such a word). A cheap "same topic and wording"
    signal, blind to numbers; do not gate on it alone.
    Deterministic: its MDD is 0.

    Example:
        >>> ConsistencyJudge()("", "wind turbine sensors", "turbine sensors sold").score
        0.5
    """

    def __call__(self, task: str, reference: str, candidate: str) -> JudgeResult:
        """Judge ``candidate`` against ``reference`` (``task`` is not used).

        Args:
            task: Ignored.
            reference: The trusted output.
            candidate: The output under test.

        Returns:
            The judgement; details hold the set sizes and both lengths.
        """
        a, b = word_set(reference, min_len=3), word_set(candidate, min_len=3)
        union = a | b
        score = len(a & b) / len(union) if union else 1.0
        return JudgeResult(
            score=score,
            confidence=0.60,
            details={
                "judge": "consistency",
                "shared_words": len(a & b),
                "union_words": len(union),
                "reference_words": len(a),
                "candidate_words": len(b),
                "reference_chars": len(reference),
                "candidate_chars": len(candidate),
            },
        )
