"""``SchemaComplianceJudge``: key-term coverage, completeness and format, no LLM."""

from __future__ import annotations

from dataclasses import dataclass

from langgraph_capsules.judges._text import is_json, iter_words, word_set
from langgraph_capsules.judges.base import JudgeResult

__all__ = ["STOP_WORDS", "SchemaComplianceJudge"]

STOP_WORDS: frozenset[str] = frozenset(
    """
    about above across after afterwards again against almost alone along already also
    although always among amongst another anyone anything anyway anywhere around
    because become becomes becoming been before beforehand behind being below beside
    besides between beyond both cannot could does doing down during each either else
    elsewhere enough especially even ever every everyone everything everywhere except
    first former formerly further furthermore given going hence here hereby herein
    however indeed instead itself just last later latter least less likely made make
    makes many maybe might more moreover most mostly much must neither never
    nevertheless next nobody none nonetheless nothing nowhere often once only onto
    other others otherwise ought ourselves over overall perhaps please quite rather
    really said same seem seemed seeming seems several shall should since some someone
    something sometime sometimes somewhere still such than that their theirs them
    themselves then thence there thereafter thereby therefore therein these they thing
    things this those though three through throughout thus together toward towards
    under unless until upon used using very well were what whatever when whenever where
    whereas whereby wherever whether which while whither whoever whole whom whose will
    with within without would yours yourself yourselves
    """.split()
)
"""Common English function words that are never key terms."""

_MIN_TERM = 5
_COMPLETE_RATIO = 0.60


@dataclass(frozen=True)
class SchemaComplianceJudge:
    """Did the candidate keep the reference's key terms, length and format? (no LLM)

    ``score = 0.50 * coverage + 0.30 * completeness + 0.20 * format`` with confidence
    0.70 (capsules-spec 5.3), where:

    * **coverage**: the share of the reference's distinct *key terms* (case-folded
      alphabetic words of five or more letters that are not in :data:`STOP_WORDS`)
      that occur as words in the candidate; 1.0 when the reference has none;
    * **completeness**: with ``ratio`` = candidate words / reference words (words are
      whitespace-separated), 1.0 when ``ratio >= 0.60``, else ``ratio / 0.60`` (so it
      falls linearly to 0 for an empty candidate); 1.0 for an empty reference;
    * **format**: when the reference is one JSON object or array (code fences
      allowed), 1.0 if the candidate is too, else 0.0; 1.0 when the reference is not JSON.

    Judging a reference against itself scores 1.0, so in the gate the drops it reports
    are upper bounds on real quality loss. Deterministic: its MDD is 0.

    Example:
        >>> judge = SchemaComplianceJudge()
        >>> judge("", "Turbine sensors shipped to Poland", "Turbine sensors shipped").score
        0.875
    """

    def __call__(self, task: str, reference: str, candidate: str) -> JudgeResult:
        """Judge ``candidate`` against ``reference`` (``task`` is not used).

        Args:
            task: Ignored.
            reference: The trusted output.
            candidate: The output under test.

        Returns:
            The judgement; details hold ``coverage``, ``completeness``, ``format``,
            ``length_ratio``, up to 20 ``missing_terms`` and both lengths.
        """
        terms = {w for w in iter_words(reference, min_len=_MIN_TERM) if w not in STOP_WORDS}
        have = word_set(candidate, min_len=_MIN_TERM)
        missing = sorted(terms - have)
        coverage = 1.0 - len(missing) / len(terms) if terms else 1.0
        ref_words, cand_words = len(reference.split()), len(candidate.split())
        ratio = cand_words / ref_words if ref_words else 1.0
        completeness = 1.0 if ratio >= _COMPLETE_RATIO else ratio / _COMPLETE_RATIO
        wants_json = is_json(reference)
        fmt = 1.0 if not wants_json or is_json(candidate) else 0.0
        return JudgeResult(
            score=min(1.0, 0.50 * coverage + 0.30 * completeness + 0.20 * fmt),
            confidence=0.70,
            details={
                "judge": "schema_compliance",
                "coverage": coverage,
                "completeness": completeness,
                "format": fmt,
                "reference_is_json": wants_json,
                "length_ratio": ratio,
                "key_terms": len(terms),
                "missing_terms": missing[:20],
                "reference_chars": len(reference),
                "candidate_chars": len(candidate),
            },
        )
