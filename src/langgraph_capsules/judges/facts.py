"""``FactRecallJudge``: the deterministic, reference-based offline default judge."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from langgraph_capsules.judges._quantities import Quantity, find_quantities, same_quantity
from langgraph_capsules.judges._text import proper_names, word_set
from langgraph_capsules.judges.base import JudgeResult

__all__ = ["FactRecallJudge"]

_LISTED = 20  # how many missing facts / unsupported numbers the details name


@dataclass(frozen=True)
class _Facts:
    numbers: tuple[Quantity, ...]
    """Distinct quantities (first spelling kept)."""
    names: dict[str, str]
    words: frozenset[str]
    """Every case-folded word (letters, then letters or digits), to look names up in."""


def _distinct(quantities: list[Quantity]) -> tuple[Quantity, ...]:
    seen: dict[tuple[float, bool], Quantity] = {}
    for q in quantities:
        kept = seen.get(q.key)
        # Keep the coarsest spelling: the most lenient reading of what was stated.
        if kept is None or q.resolution > kept.resolution:
            seen[q.key] = q
    return tuple(seen.values())


@lru_cache(maxsize=256)
def _facts(text: str) -> _Facts:
    # Cached: a gate or an MDD run judges many candidates against one reference.
    return _Facts(
        numbers=_distinct(find_quantities(text)),
        names=proper_names(text),
        words=frozenset(word_set(text, alphabetic=False)),
    )


@dataclass(frozen=True)
class FactRecallJudge:
    """Share of the reference's facts found in the candidate, times number precision.

    The offline default for the quality gate and for benchmark quality: deterministic
    (the same inputs always give the same score, so its MDD is 0), no model, about a
    millisecond per call. It checks *what* was said (numbers and names), not how.

    **Facts of the reference.**

    * *Numbers*, read with their units: a scale word or suffix (``k``/``thousand``,
      ``m``/``mn``/``mln``/``million``, ``b``/``bn``/``billion``, ``tn``/``trillion``)
      multiplies the value, thousands separators are dropped and currencies are
      ignored, so ``"482m"`` = ``"482 million"`` = ``"482,000,000"`` = ``"NOK 482
      million"``. A percent marker (``%``, ``percent``, ``per cent``, ``pct``,
      ``percentage point(s)``, ``pp``) makes a percentage, which never equals a plain
      number (``"12%"`` is not ``"12"``). Signs are ignored (``"-4%"`` = ``"down 4%"``).
      Numbers glued to letters (``"Q3"``, ``"FY2024"``, ``"3x"``), list numbering at a
      line start and numbers written as words are not read.
    * *Names*: words starting with a capital letter that look like acronyms or codes
      (two or more capitals or a digit: ``"EU"``, ``"Q3"``) or that appear capitalised
      mid-sentence at least once (``"Nordvik"``); words capitalised only at sentence
      starts and words on heading lines are taken for ordinary words.

    **Rule.** With R the reference's distinct numbers, N its names and C the candidate's
    distinct numbers::

        recall    = (|numbers of R stated in the candidate| + |names of N in the candidate|)
                    / (|R| + |N|)
        precision = |numbers of C that state a number of R| / |C|   (1.0 when C is empty)
        score     = recall * precision

    A written number *states* a reference number of the same kind when it equals it up
    to its own written precision (``"482m"`` states 482.4 million, ``"482.4m"`` does not
    state 482 million; a number rounded to a neighbour, like 9.5% -> 9%, is therefore
    not caught). A name is found when the candidate contains the same word, ignoring
    case. So every invented or changed number costs precision, and a candidate that
    changes every number scores 0 whatever else it keeps.

    **No score.** A reference without numbers or names gives ``score=None`` (nothing to
    check: use :class:`SchemaComplianceJudge` for such outputs).

    **Confidence** grows with the evidence: ``facts / (facts + 5)`` (5 facts: 0.5, 20:
    0.8, 45: 0.9).

    Example:
        >>> judge = FactRecallJudge()
        >>> reference = "Revenue at Nordvik rose 12% to NOK 482 million."
        >>> judge("", reference, "Nordvik: revenue NOK 482m, +12%.").score
        1.0
        >>> judge("", reference, "Nordvik: revenue NOK 497m, +12%.").score
        0.375
    """

    def __call__(self, task: str, reference: str, candidate: str) -> JudgeResult:
        """Judge ``candidate`` against ``reference`` (``task`` is not used).

        Args:
            task: Ignored (the reference already answers it).
            reference: The trusted output whose facts must reappear.
            candidate: The output under test.

        Returns:
            The judgement; details hold ``recall``, ``precision``, the fact counts, up
            to 20 ``missing`` facts and ``unsupported_numbers`` and both lengths.
        """
        ref = _facts(reference)
        total = len(ref.numbers) + len(ref.names)
        lengths = {"reference_chars": len(reference), "candidate_chars": len(candidate)}
        if total == 0:
            return JudgeResult.no_score(
                "the reference states no numbers or names to check", judge="fact_recall", **lengths
            )
        cand = _facts(candidate)
        missing: list[str] = []
        numbers_found = 0
        for q in ref.numbers:
            if any(same_quantity(c, q) for c in cand.numbers):
                numbers_found += 1
            else:
                missing.append(q.text)
        names_found = 0
        for key, written in ref.names.items():
            if key in cand.words:
                names_found += 1
            else:
                missing.append(written)
        unsupported = [
            c.text for c in cand.numbers if not any(same_quantity(c, q) for q in ref.numbers)
        ]
        recall = (numbers_found + names_found) / total
        precision = 1.0 - len(unsupported) / len(cand.numbers) if cand.numbers else 1.0
        return JudgeResult(
            score=recall * precision,
            confidence=total / (total + 5),
            details={
                "judge": "fact_recall",
                "recall": recall,
                "precision": precision,
                "numbers_found": numbers_found,
                "numbers_total": len(ref.numbers),
                "names_found": names_found,
                "names_total": len(ref.names),
                "candidate_numbers": len(cand.numbers),
                "missing": missing[:_LISTED],
                "unsupported_numbers": unsupported[:_LISTED],
                **lengths,
            },
        )
