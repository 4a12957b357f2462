"""Quality of one pipeline run: the deterministic gold-fact judge (the offline default).

Score of a run, in [0, 1]::

    quality = 0.50 * extraction + 0.30 * brief + 0.10 * scoping + 0.10 * structure

* ``extraction``: the mean over the 12 extractors of the recall of their gold facts
  (the gold facts of their lens and kind found in their output);
* ``brief``: the recall of the company's brief gold facts in the brief;
* ``scoping``: the recall of the scoping gold facts (name, sector, HQ, founding year);
* ``structure``: the share of the brief's required parts that are present: an executive
  summary, a paragraph per lens (its title), key takeaways, and three bullet points.

The judge is deterministic (the same text always gets the same score), so its spread
over repeated scoring is zero. The spread that matters is over runs (the model's
sampling and batching) and over companies. The runner reports the minimum detectable
difference (MDD) as 2.5 times the pooled standard deviation of run-to-run quality
within (arm, company) cells (capsules-spec.md section 5.5). Recall only: a fact stated
wrongly elsewhere is not penalised here; numbers are matched unit-aware
(``dataset.fact_found``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from statistics import mean
from typing import Any, TypedDict

from benchmarks.competitive_intelligence.dataset import KINDS, LENSES, Company, recall
from benchmarks.competitive_intelligence.pipeline import LENS_TITLES, extractor_key

__all__ = ["WEIGHTS", "QualityScore", "score_run"]

WEIGHTS = {"extraction": 0.50, "brief": 0.30, "scoping": 0.10, "structure": 0.10}


class QualityScore(TypedDict):
    """A run's quality and its parts."""

    quality: float
    extraction: float
    brief: float
    scoping: float
    structure: float
    per_extractor: dict[str, float]


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S", re.M)


def _structure(brief: str) -> float:
    low = brief.lower()
    checks = [
        "executive summary" in low or "summary" in low[:200],
        *(LENS_TITLES[lens] in low for lens in LENSES),
        "takeaway" in low,
        len(_BULLET.findall(brief)) >= 3,
    ]
    return sum(checks) / len(checks)


def score_run(company: Company, outputs: Mapping[str, Any]) -> QualityScore:
    """Score one run's outputs (the final state) against the company's gold facts."""
    per: dict[str, float] = {}
    for lens in LENSES:
        gold = company["lenses"][lens]["gold"]
        for kind in KINDS:
            key = extractor_key(lens, kind)
            per[key] = recall(gold[kind], str(outputs.get(key) or ""))
    brief = str(outputs.get("brief") or "")
    parts = {
        "extraction": mean(per.values()),
        "brief": recall(company["gold"]["brief"], brief),
        "scoping": recall(company["gold"]["scoping"], str(outputs.get("scope") or "")),
        "structure": _structure(brief),
    }
    quality = sum(WEIGHTS[k] * v for k, v in parts.items())
    return {"quality": quality, **parts, "per_extractor": per}  # type: ignore[typeddict-item]
