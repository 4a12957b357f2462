"""``measure_mdd``: how large a quality difference a judge can resolve above its own noise."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.judges.adapter import as_judge
from langgraph_capsules.judges.base import Judge

__all__ = ["MDD_FACTOR", "PUBLISHED_MDD", "MddReport", "measure_mdd"]

MDD_FACTOR = 2.5
"""MDD = ``MDD_FACTOR`` x sigma-bar (capsules-spec 5.5: reproduces Opus's 0.030 from its
sigma-bar 0.012, and is conservative for GPT-4o: 0.080 against the published 0.065)."""

PUBLISHED_MDD: Mapping[str, float] = MappingProxyType({"claude-opus-4-6": 0.030, "gpt-4o": 0.065})
"""MDDs the Agent Capsules paper measured (Table 11); reuse them only for those judges
with the paper's rubric. Any other judge: measure it with :func:`measure_mdd`."""


@dataclass(frozen=True, kw_only=True)
class MddReport:
    """The noise of one judge on a set of cases, from :func:`measure_mdd`.

    Example:
        >>> from langgraph_capsules.judges import FactRecallJudge
        >>> report = measure_mdd(FactRecallJudge(), [("", "Oslo grew 4%.", "Oslo: +4%")])
        >>> report.mdd, report.is_null(0.01)
        (0.0, False)
    """

    reps: int
    """Judgements per case."""
    scores: tuple[tuple[float | None, ...], ...]
    """Every judgement's score, per case (None: no score)."""
    case_means: tuple[float | None, ...]
    """Mean score per case (None when no judgement of the case gave a score)."""
    case_stds: tuple[float | None, ...]
    """Sample standard deviation (n - 1) per case over its scored judgements (None with
    fewer than two)."""
    sigma_bar: float | None
    """Mean of the defined per-case standard deviations (None when none is defined)."""
    mdd: float | None
    """Minimum detectable difference, ``MDD_FACTOR * sigma_bar`` (None with sigma_bar)."""
    no_score: int
    """Judgements that gave no score (failed or unparsable), over all cases."""
    judgements: int
    """Judgements made: cases x reps."""
    seconds_per_judgement: float
    """Mean wall time of one judgement."""

    def is_null(self, delta: float) -> bool:
        """Whether a quality difference is within judge noise (``|delta| < mdd``).

        Args:
            delta: A difference between two mean scores from this judge.

        Returns:
            True when the difference cannot be told apart from noise. With MDD 0 (a
            deterministic judge) only an exact zero is null.

        Raises:
            CapsuleConfigError: ``no_mdd`` when no MDD could be measured.
        """
        if self.mdd is None:
            raise CapsuleConfigError(
                "this report has no MDD (fewer than two scored judgements per case); "
                "rerun measure_mdd with a judge that gives scores, or more reps.",
                code="no_mdd",
            )
        return abs(delta) < self.mdd or delta == 0.0


def _check_cases(cases: object) -> list[tuple[str, str, str]]:
    if isinstance(cases, (str, bytes)) or not isinstance(cases, Sequence) or not cases:
        raise CapsuleConfigError(
            "measure_mdd needs a non-empty list of (task, reference, candidate) string "
            "triples; the paper uses three: a low-, a mid- and a high-quality candidate.",
            code="bad_mdd_cases",
        )
    checked: list[tuple[str, str, str]] = []
    for i, case in enumerate(cases):
        if (
            isinstance(case, (str, bytes))
            or not isinstance(case, Sequence)
            or len(case) != 3
            or not all(isinstance(part, str) for part in case)
        ):
            raise CapsuleConfigError(
                f"case {i} of measure_mdd is {case!r}; each case must be a "
                "(task, reference, candidate) triple of strings.",
                code="bad_mdd_cases",
            )
        checked.append((case[0], case[1], case[2]))
    return checked


def measure_mdd(
    judge: Judge | Callable[..., Any], cases: Sequence[Sequence[str]], reps: int = 7
) -> MddReport:
    """Judge each case ``reps`` times and derive the minimum detectable difference.

    Per case, the mean and the sample standard deviation of its scored judgements;
    sigma-bar is the mean of the per-case standard deviations and MDD = 2.5 x
    sigma-bar (capsules-spec 5.5, Table 11: the paper found 7 reps enough and measured
    sigma-bar 0.012 / MDD 0.030 for Opus and 0.032 / 0.065 for GPT-4o, see
    :data:`PUBLISHED_MDD`). Report the MDD next to every mean and treat any difference
    below it as null. Judgements without a score are counted in ``no_score`` and left
    out of the statistics. A deterministic judge (:class:`FactRecallJudge`,
    :class:`SchemaComplianceJudge`, :class:`ConsistencyJudge`) repeats itself exactly,
    so its MDD is 0: its spread comes from the *outputs* (wording), not from judging,
    and must be measured over repeated pipeline runs instead.

    Args:
        judge: Any judge :func:`as_judge` accepts.
        cases: ``(task, reference, candidate)`` string triples, e.g. one low-, one mid-
            and one high-quality candidate.
        reps: Judgements per case (at least 2; 7 in the paper).

    Returns:
        The report.

    Raises:
        CapsuleConfigError: ``bad_mdd_cases`` for malformed cases, ``bad_mdd_reps``
            for ``reps`` below 2, ``bad_judge`` for something that cannot judge.

    Example:
        >>> from langgraph_capsules.judges import ConsistencyJudge
        >>> case = ("", "the plant opens in Gdansk", "a plant opens in Gdansk soon")
        >>> measure_mdd(ConsistencyJudge(), [case], reps=3).case_means
        (0.6,)
    """
    checked = _check_cases(cases)
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 2:
        raise CapsuleConfigError(
            f"reps must be an integer of at least 2 (7 in the paper), got {reps!r}.",
            code="bad_mdd_reps",
        )
    run = as_judge(judge)
    all_scores: list[tuple[float | None, ...]] = []
    means: list[float | None] = []
    stds: list[float | None] = []
    start = time.perf_counter()
    for task, reference, candidate in checked:
        case_scores = tuple(run(task, reference, candidate).score for _ in range(reps))
        all_scores.append(case_scores)
        scored = [s for s in case_scores if s is not None]
        means.append(statistics.fmean(scored) if scored else None)
        stds.append(statistics.stdev(scored) if len(scored) >= 2 else None)
    elapsed = time.perf_counter() - start
    defined = [s for s in stds if s is not None]
    sigma_bar = statistics.fmean(defined) if defined else None
    judgements = len(checked) * reps
    return MddReport(
        reps=reps,
        scores=tuple(all_scores),
        case_means=tuple(means),
        case_stds=tuple(stds),
        sigma_bar=sigma_bar,
        mdd=None if sigma_bar is None else MDD_FACTOR * sigma_bar,
        no_score=sum(s is None for case in all_scores for s in case),
        judgements=judgements,
        seconds_per_judgement=elapsed / judgements,
    )
