"""The due-diligence benchmark's data: a small SQLite table of company financials.

The source of truth is ``data/financials.csv`` next to this module (reviewable text, one
row per company and year). On first use it is loaded into a SQLite file in a private
temporary directory (:func:`database_path`); the agents' tools open that file read-only
(:func:`connect`). Nothing is downloaded and nothing is written next to the code.

Schema (long format, so every query is parameterised; no column name is ever built from
user input)::

    companies (id TEXT PRIMARY KEY, name TEXT, currency TEXT)
    metrics   (name TEXT PRIMARY KEY, unit TEXT, description TEXT)
    financials(company_id TEXT, year INTEGER, metric TEXT, value REAL)
        -- primary key (company_id, year, metric)

Eight companies: the six development companies of the competitive-intelligence
benchmark (``benchmarks/competitive_intelligence/data/companies``; that benchmark's two
held-out companies are left out because their text may not be read to keep the figures
consistent), plus two companies of this benchmark only, :data:`HELD_OUT`, kept out of
every compilation and tuning step (see ``data/README.md``). Every figure is fictional.

Formatting (:func:`format_value`, :func:`data_line`) is shared by the tools, the
scripted model and the judge, so a number reads the same wherever it appears:
``"PLN 742 million"``, ``"11.9%"``, ``"610 employees"``.
"""

from __future__ import annotations

import atexit
import csv
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "CSV_PATH",
    "DATA_DIR",
    "HELD_OUT",
    "METRICS",
    "YEARS",
    "CompanyInfo",
    "FinancialRow",
    "Metric",
    "build_database",
    "company_ids",
    "connect",
    "data_line",
    "database_path",
    "development_ids",
    "find_company",
    "format_value",
    "load_companies",
    "load_rows",
    "series",
]

DATA_DIR: Path = Path(__file__).resolve().parent / "data"
CSV_PATH: Path = DATA_DIR / "financials.csv"
YEARS: tuple[int, ...] = (2022, 2023, 2024)
"""The financial years every company has a row for."""
HELD_OUT: tuple[str, ...] = ("fjordane", "quorvia")
"""Companies of this benchmark only, never used to compile a program (the DSPy arm's
optimizer), tune a prompt or write the scripted model: the figures of record."""


@dataclass(frozen=True)
class Metric:
    """One metric of the ``financials`` table."""

    name: str
    column: str
    """Its column in ``financials.csv``."""
    unit: str
    """``"currency million"``, ``"%"`` or ``"employees"``."""
    description: str


METRICS: Mapping[str, Metric] = {
    m.name: m
    for m in (
        Metric("revenue", "revenue_m", "currency million", "Revenue of the financial year"),
        Metric(
            "operating_margin",
            "operating_margin_pct",
            "%",
            "Operating profit (EBIT) as a percentage of revenue",
        ),
        Metric("headcount", "headcount", "employees", "Employees at year end"),
        Metric("cash", "cash_m", "currency million", "Cash and equivalents at year end"),
        Metric(
            "debt",
            "debt_m",
            "currency million",
            "Gross financial debt at year end (loans, bonds, drawn credit lines)",
        ),
    )
}
"""The metrics, in the order the tools list them."""


@dataclass(frozen=True)
class CompanyInfo:
    """A company of the table."""

    id: str
    name: str
    currency: str
    """ISO code of the currency its amounts are in (``PLN``, ``EUR``, ``SEK``)."""


@dataclass(frozen=True)
class FinancialRow:
    """One company-year of ``financials.csv``."""

    company: CompanyInfo
    year: int
    values: Mapping[str, float]
    """Metric name -> value (currency amounts in millions)."""


# --------------------------------------------------------------------------- loading


@cache
def load_rows() -> tuple[FinancialRow, ...]:
    """Every row of ``financials.csv``, validated (sorted by company id, then year).

    Returns:
        The rows.

    Raises:
        ValueError: naming the line, for a missing column, a non-numeric value, a company
            whose name or currency changes between rows, or a company without exactly
            the years in :data:`YEARS`.
    """
    rows: list[FinancialRow] = []
    seen: dict[str, CompanyInfo] = {}
    with CSV_PATH.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        wanted = {"company_id", "company", "currency", "year"} | {
            m.column for m in METRICS.values()
        }
        missing = wanted - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{CSV_PATH.name}: missing columns {sorted(missing)}")
        for line, raw in enumerate(reader, start=2):
            info = CompanyInfo(raw["company_id"], raw["company"], raw["currency"])
            if seen.setdefault(info.id, info) != info:
                raise ValueError(f"{CSV_PATH.name}:{line}: {info.id!r} changes name or currency")
            try:
                year = int(raw["year"])
                values = {m.name: float(raw[m.column]) for m in METRICS.values()}
            except ValueError as e:
                raise ValueError(f"{CSV_PATH.name}:{line}: {e}") from None
            rows.append(FinancialRow(info, year, values))
    for cid in seen:
        years = sorted(r.year for r in rows if r.company.id == cid)
        if tuple(years) != YEARS:
            raise ValueError(f"{CSV_PATH.name}: {cid!r} has years {years}, expected {list(YEARS)}")
    return tuple(sorted(rows, key=lambda r: (r.company.id, r.year)))


def load_companies() -> list[CompanyInfo]:
    """The companies of the table, sorted by id."""
    return sorted({r.company for r in load_rows()}, key=lambda c: c.id)


def company_ids() -> list[str]:
    """Sorted company ids (the development ones are the competitive-intelligence data's
    ids)."""
    return [c.id for c in load_companies()]


def development_ids() -> list[str]:
    """Sorted ids of the companies that compilation and tuning may use (every company
    but :data:`HELD_OUT`)."""
    return [c for c in company_ids() if c not in HELD_OUT]


def _key(text: str) -> str:
    return " ".join(text.replace(",", " ").lower().split())


def find_company(text: str) -> CompanyInfo | None:
    """The company ``text`` names: its id, its full name or its first word, any case.

    Example:
        >>> find_company("Corvanta").id, find_company("corvanta materials s.a.").id
        ('corvanta', 'corvanta')
        >>> find_company("Acme Fintech Inc.") is None
        True
    """
    wanted = _key(text)
    if not wanted:
        return None
    for c in load_companies():
        if wanted in (c.id, _key(c.name), _key(c.name).split(" ")[0]):
            return c
    return None


# --------------------------------------------------------------------------- SQLite

_SCHEMA = """
CREATE TABLE companies (id TEXT PRIMARY KEY, name TEXT NOT NULL, currency TEXT NOT NULL);
CREATE TABLE metrics (name TEXT PRIMARY KEY, unit TEXT NOT NULL, description TEXT NOT NULL);
CREATE TABLE financials (
    company_id TEXT NOT NULL REFERENCES companies(id),
    year INTEGER NOT NULL,
    metric TEXT NOT NULL REFERENCES metrics(name),
    value REAL NOT NULL,
    PRIMARY KEY (company_id, year, metric)
);
"""


def build_database(path: Path) -> Path:
    """Write the SQLite database built from ``financials.csv`` to ``path``.

    Args:
        path: Where to write it (an existing file is replaced).

    Returns:
        ``path``.
    """
    rows = load_rows()
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    try:
        with con:
            con.executescript(_SCHEMA)
            con.executemany(
                "INSERT INTO companies (id, name, currency) VALUES (?, ?, ?)",
                [(c.id, c.name, c.currency) for c in load_companies()],
            )
            con.executemany(
                "INSERT INTO metrics (name, unit, description) VALUES (?, ?, ?)",
                [(m.name, m.unit, m.description) for m in METRICS.values()],
            )
            con.executemany(
                "INSERT INTO financials (company_id, year, metric, value) VALUES (?, ?, ?, ?)",
                [(r.company.id, r.year, k, v) for r in rows for k, v in r.values.items()],
            )
    finally:
        con.close()
    return path


_BUILD_LOCK = threading.Lock()
_BUILT: list[Path] = []


def database_path() -> Path:
    """The process's SQLite file, built from the CSV on first use in a private temp dir
    (removed at exit)."""
    with _BUILD_LOCK:
        if not _BUILT or not _BUILT[0].is_file():
            tmp = Path(tempfile.mkdtemp(prefix="dd-financials-"))
            atexit.register(shutil.rmtree, tmp, ignore_errors=True)
            _BUILT[:] = [build_database(tmp / "financials.sqlite")]
        return _BUILT[0]


def connect() -> sqlite3.Connection:
    """A read-only connection to :func:`database_path` (writes raise
    ``sqlite3.OperationalError``); the caller closes it."""
    con = sqlite3.connect(f"{database_path().as_uri()}?mode=ro", uri=True)
    con.execute("PRAGMA query_only = ON")
    return con


def series(company_id: str) -> dict[str, dict[int, float]]:
    """Every metric of one company from the SQLite table: metric -> year -> value.

    Raises:
        KeyError: for an unknown company id.
    """
    con = connect()
    try:
        found = con.execute(
            "SELECT metric, year, value FROM financials WHERE company_id = ? ORDER BY year",
            (company_id,),
        ).fetchall()
    finally:
        con.close()
    if not found:
        raise KeyError(f"unknown company id {company_id!r}; ids: {company_ids()}")
    out: dict[str, dict[int, float]] = {m: {} for m in METRICS}
    for metric, year, value in found:
        out[metric][int(year)] = float(value)
    return out


# --------------------------------------------------------------------------- formatting


def _num(value: float) -> str:
    return f"{round(value, 1):g}"


def format_value(metric: str, value: float, currency: str) -> str:
    """A value as the tools write it.

    Example:
        >>> format_value("revenue", 742.0, "PLN"), format_value("operating_margin", -6.7, "SEK")
        ('PLN 742 million', '-6.7%')
    """
    unit = METRICS[metric].unit
    if unit == "%":
        return f"{_num(value)}%"
    if unit == "employees":
        return f"{int(value)} employees"
    return f"{currency} {_num(value)} million"


def data_line(company: CompanyInfo, metric: str, year: int, value: float) -> str:
    """One figure as a self-contained line: ``"<name> <metric> <year>: <value>"``.

    Example:
        >>> data_line(find_company("corvanta"), "revenue", 2023, 742.0)
        'Corvanta Materials S.A. revenue 2023: PLN 742 million'
    """
    return f"{company.name} {metric} {year}: {format_value(metric, value, company.currency)}"
