"""Quality of one due-diligence run, judged against gold references built from SQLite.

Score of a run, in [0, 1]::

    quality = 0.50 * research + 0.30 * analysis + 0.20 * memo

Each part is the mean :class:`lc.FactRecallJudge` score of its agents' outputs against
a reference text (:func:`reference_texts`), built from the financials table itself:

* a researcher's reference is every data line of its metrics, as the tools write them;
* an analyst's reference is the derived figures of :mod:`.figures` (growth, net debt,
  revenue per employee, ...) computed from the table;
* the memo's reference is the memo title and its key figures (the latest year's
  revenue growth, operating margin, net debt or net cash and revenue per employee).

``FactRecallJudge`` scores recall of the reference's numbers and names times the
precision of the candidate's numbers, so a researcher that lost its tools (the standard
tier) and reports no figures scores near 0 on its part, and an invented figure costs
precision. The judge is deterministic: its spread over repeated scoring is zero.

For the quality gate and the oracle ablation, which judge a compound run against the
fine run of the same input, use ``lc.FactRecallJudge()`` directly; this module is the
absolute, gold-based score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from statistics import fmean
from typing import Any, TypedDict

import langgraph_capsules as lc
from benchmarks.due_diligence import figures
from benchmarks.due_diligence.dataset import data_line, find_company, series
from benchmarks.due_diligence.pipeline import ANALYSTS, RESEARCHERS, output_key

__all__ = ["WEIGHTS", "DDScore", "reference_texts", "score_run"]

WEIGHTS = {"research": 0.50, "analysis": 0.30, "memo": 0.20}
"""Weight of each part in a run's quality."""

_FIGURES: dict[str, Callable[[str, figures.Series], list[str]]] = {
    "profitability_analyst": figures.profitability_lines,
    "risk_analyst": figures.risk_lines,
    "efficiency_analyst": figures.efficiency_lines,
}


class DDScore(TypedDict):
    """A run's quality, its parts and the score of each agent's output."""

    quality: float
    research: float
    analysis: float
    memo: float
    per_key: dict[str, float]


def reference_texts(company: str) -> dict[str, str]:
    """The gold reference of every judged output key, built from the SQLite table.

    Args:
        company: A company id or name of the table.

    Returns:
        Output key (``financial_findings``, ..., ``memo``) -> reference text.

    Raises:
        KeyError: for an unknown company.

    Example:
        >>> reference_texts("corvanta")["balance_sheet_findings"].splitlines()[0]
        'Corvanta Materials S.A. cash 2022: PLN 54 million'
    """
    info = find_company(company)
    if info is None:
        raise KeyError(f"unknown company {company!r}")
    raw = series(info.id)
    refs: dict[str, str] = {}
    for name, (_, metrics) in RESEARCHERS.items():
        refs[output_key(name)] = "\n".join(
            data_line(info, m, y, v) for m in metrics for y, v in sorted(raw[m].items())
        )
    every: list[str] = []
    for name in ANALYSTS:
        lines = _FIGURES[name](info.currency, raw)
        every += lines
        refs[output_key(name)] = "\n".join([f"Analysis of {info.name}:", *lines])
    refs["memo"] = "\n".join([f"Investment memo: {info.name}", *figures.key_figures(every)])
    return refs


def score_run(
    company: str, outputs: Mapping[str, Any], judge: lc.FactRecallJudge | None = None
) -> DDScore:
    """Score one run's final state against the gold references.

    Args:
        company: The company the run was about (id or name).
        outputs: The run's final state.
        judge: The fact judge (default ``lc.FactRecallJudge()``).

    Returns:
        The quality and its parts; ``per_key`` holds each output's score (a reference
        with nothing to check counts as 0).
    """
    judge = judge or lc.FactRecallJudge()
    per: dict[str, float] = {}
    for key, reference in reference_texts(company).items():
        result = judge("", reference, str(outputs.get(key) or ""))
        per[key] = result.score if result.score is not None else 0.0
    parts = {
        "research": fmean(per[output_key(n)] for n in RESEARCHERS),
        "analysis": fmean(per[output_key(n)] for n in ANALYSTS),
        "memo": per["memo"],
    }
    quality = sum(WEIGHTS[k] * v for k, v in parts.items())
    return {"quality": quality, **parts, "per_key": per}  # type: ignore[typeddict-item]
