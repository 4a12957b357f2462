"""Derived figures of the analysis agents, written one way for everybody.

The analysts turn raw figures (metric -> year -> value) into derived ones: revenue
growth, net debt, revenue per employee and so on. The scripted analysts
(:mod:`.scripted`) compute them from the research findings in their prompt; the judge
(:mod:`.judge`) computes the same lines from the SQLite table as the gold reference.
Sharing one implementation keeps the rounding and the wording identical, so a number
the analysts got right always matches the reference.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "ANALYSIS_LINE",
    "Series",
    "efficiency_lines",
    "key_figures",
    "profitability_lines",
    "recommendation",
    "risk_lines",
]

Series = Mapping[str, Mapping[int, float]]
"""Raw figures of one company: metric -> year -> value (amounts in millions)."""

ANALYSIS_LINE = re.compile(r"^- (?P<label>[a-z][a-z /]*?) (?P<year>\d{4}): (?P<value>.+)$", re.M)
"""A figure line of an analysis: ``"- <label> <year>: <value>"``."""


def _n(value: float, digits: int = 1) -> str:
    return f"{round(value, digits):g}"


def _pct(value: float) -> str:
    return f"{_n(value)}%"


def _growth(values: Mapping[int, float]) -> dict[int, float]:
    years = sorted(values)
    return {y: (values[y] / values[p] - 1) * 100 for p, y in itertools.pairwise(years) if values[p]}


def profitability_lines(currency: str, s: Series) -> list[str]:
    """Revenue growth per year and the operating margin per year."""
    out = [f"- revenue growth {y}: {_pct(g)}" for y, g in _growth(s.get("revenue", {})).items()]
    out += [
        f"- operating margin {y}: {_pct(m)}"
        for y, m in sorted(s.get("operating_margin", {}).items())
    ]
    return out


def _net_debt(s: Series) -> dict[int, float]:
    cash, debt = s.get("cash", {}), s.get("debt", {})
    return {y: debt[y] - cash[y] for y in sorted(set(cash) & set(debt))}


def risk_lines(currency: str, s: Series) -> list[str]:
    """Net debt (or net cash) per year and net debt as a share of revenue."""
    revenue = s.get("revenue", {})
    out = []
    for y, nd in _net_debt(s).items():
        if nd > 0:
            out.append(f"- net debt {y}: {currency} {_n(nd)} million")
            if revenue.get(y):
                out.append(f"- net debt to revenue {y}: {_pct(nd / revenue[y] * 100)}")
        else:
            out.append(f"- net cash {y}: {currency} {_n(abs(nd))} million")
    return out


def efficiency_lines(currency: str, s: Series) -> list[str]:
    """Revenue per employee per year and headcount growth."""
    revenue, heads = s.get("revenue", {}), s.get("headcount", {})
    out = [
        f"- revenue per employee {y}: {currency} {_n(revenue[y] * 1000 / heads[y], 0)} thousand"
        for y in sorted(set(revenue) & set(heads))
        if heads[y]
    ]
    out += [f"- headcount growth {y}: {_pct(g)}" for y, g in _growth(heads).items()]
    return out


def _parsed(lines: Iterable[str]) -> list[tuple[str, int, str, str]]:
    out = []
    for line in lines:
        m = ANALYSIS_LINE.match(line.strip())
        if m is not None:
            out.append((m["label"], int(m["year"]), m["value"].strip(), m.group(0)))
    return out


def _latest(parsed: list[tuple[str, int, str, str]]) -> int | None:
    years = [y for label, y, _, _ in parsed if label in ("revenue growth", "operating margin")]
    return max(years) if years else None


def key_figures(lines: Iterable[str]) -> list[str]:
    """The memo's key figures, picked from analysis lines: the latest year's revenue
    growth, operating margin, net debt (or net cash) and revenue per employee, in that
    order (empty without analysis figures)."""
    parsed = _parsed(lines)
    year = _latest(parsed)
    order = ("revenue growth", "operating margin", "net debt", "net cash", "revenue per employee")
    picked = {label: line for label, y, _, line in parsed if y == year and label in order}
    return [picked[label] for label in order if label in picked]


def _pct_value(text: str) -> float | None:
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)%", text)
    return float(m.group(1)) if m else None


def recommendation(lines: Iterable[str]) -> str:
    """The memo's graded recommendation from analysis lines: the latest operating margin
    and net debt to revenue (net cash counts as 0%)."""
    parsed = _parsed(lines)
    year = _latest(parsed)
    values = {label: v for label, y, v, _ in parsed if y == year}
    margin = _pct_value(values.get("operating margin", ""))
    if margin is None:
        return "No recommendation: the figures are missing"
    leverage = _pct_value(values.get("net debt to revenue", "")) or 0.0
    if margin >= 5 and leverage <= 60:
        return "Proceed"
    if margin >= -10:
        return "Proceed with conditions"
    return "Do not proceed without a funding plan"
