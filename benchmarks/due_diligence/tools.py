"""The research agents' tools: LangChain ``@tool`` functions over the financials table.

Both tools open the SQLite file read-only (:func:`~.dataset.connect`), use only
parameterised queries and never raise for bad input: an unknown company, metric or year
comes back as one line of text starting with ``error:`` that names the valid choices, so
the model can correct itself (LangChain's ``handle_tool_error``; argument validation
errors are turned into the same kind of text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_core.tools import BaseTool, ToolException, tool
from pydantic import ValidationError

from benchmarks.due_diligence.dataset import (
    METRICS,
    CompanyInfo,
    company_ids,
    connect,
    data_line,
    find_company,
)

if TYPE_CHECKING:
    from pydantic.v1 import ValidationError as ValidationErrorV1

__all__ = ["FINANCIAL_TOOLS", "list_metrics", "query_financials"]

_ALIASES = {
    "sales": "revenue",
    "turnover": "revenue",
    "margin": "operating_margin",
    "ebit_margin": "operating_margin",
    "employees": "headcount",
    "staff": "headcount",
    "cash_and_equivalents": "cash",
    "borrowings": "debt",
    "gross_debt": "debt",
}


def _company(name: str) -> CompanyInfo:
    found = find_company(name)
    if found is None:
        raise ToolException(
            f"error: unknown company {name!r}; known companies: {', '.join(company_ids())}"
        )
    return found


def _metric(name: str) -> str:
    key = "_".join(name.strip().lower().replace("-", " ").split())
    key = _ALIASES.get(key, key)
    if key not in METRICS:
        raise ToolException(f"error: unknown metric {name!r}; metrics: {', '.join(METRICS)}")
    return key


def _invalid_arguments(e: ValidationError | ValidationErrorV1) -> str:
    problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
    return f"error: invalid arguments: {problems}"


@tool(parse_docstring=True)
def list_metrics(company: str) -> str:
    """List the financial metrics and years available for a company.

    Args:
        company: The company's name or id, e.g. "Corvanta Materials S.A." or "corvanta".
    """
    info = _company(company)
    con = connect()
    try:
        years = [
            y
            for (y,) in con.execute(
                "SELECT DISTINCT year FROM financials WHERE company_id = ? ORDER BY year",
                (info.id,),
            )
        ]
        metrics = con.execute(
            "SELECT m.name, m.unit, m.description FROM metrics m WHERE m.name IN "
            "(SELECT DISTINCT metric FROM financials WHERE company_id = ?)",
            (info.id,),
        ).fetchall()
    finally:
        con.close()
    order = {name: i for i, name in enumerate(METRICS)}
    lines = [
        f"{info.name} ({info.id}): years {years[0]}-{years[-1]}; "
        f"amounts in {info.currency} million. Metrics:"
    ]
    for name, unit, description in sorted(metrics, key=lambda m: order[m[0]]):
        shown = unit.replace("currency", info.currency)
        lines.append(f"- {name} ({shown}): {description}")
    return "\n".join(lines)


@tool(parse_docstring=True)
def query_financials(company: str, metric: str, year: int | None = None) -> str:
    """Look up one financial metric of a company, for one year or for every year.

    Args:
        company: The company's name or id, e.g. "Corvanta Materials S.A." or "corvanta".
        metric: One of revenue, operating_margin, headcount, cash, debt.
        year: A financial year (2022-2024); leave it out for every year.
    """
    info = _company(company)
    key = _metric(metric)
    sql = "SELECT year, value FROM financials WHERE company_id = ? AND metric = ?"
    params: tuple[object, ...] = (info.id, key)
    if year is not None:
        sql += " AND year = ?"
        params += (year,)
    con = connect()
    try:
        found = con.execute(sql + " ORDER BY year", params).fetchall()
        if not found and year is not None:
            years = [
                y
                for (y,) in con.execute(
                    "SELECT DISTINCT year FROM financials WHERE company_id = ? ORDER BY year",
                    (info.id,),
                )
            ]
            raise ToolException(
                f"error: no {key} for {info.name} in {year}; years: " + ", ".join(map(str, years))
            )
    finally:
        con.close()
    return "\n".join(data_line(info, key, int(y), float(v)) for y, v in found)


for _t in (list_metrics, query_financials):
    _t.handle_tool_error = True
    _t.handle_validation_error = _invalid_arguments

FINANCIAL_TOOLS: tuple[BaseTool, ...] = (list_metrics, query_financials)
"""The research agents' tools."""
