"""Loader and gold-fact matcher for the fictional competitive-intelligence benchmark.

The data lives in ``data/companies/<id>.json`` next to this module: one file per
fictional company with an ``overview`` (read by the scoping agent), four lens bundles
(``competitive``, ``product``, ``financial``, ``risk``; each read by three extractors:
``entities``, ``claims``, ``signals``) and gold facts per lens and kind, plus ``scoping``
and ``brief`` gold facts. See ``data/README.md``.

Gold-fact matching rule (:func:`fact_found`)
--------------------------------------------
A gold fact is ``{"id": str, "text": str, "match": [[alt, ...], [alt, ...], ...]}``.
The fact is *found* in a candidate text when **every** group of ``match`` has **at least
one** alternative present in the candidate.

Both the candidate and each alternative are normalised first: Unicode NFKC, lower case,
typographic quotes to ``'``/``"``, Unicode dashes and minus signs to ``-``, and every run
of whitespace to a single space.

An alternative is a *quantity* when, after normalisation, it is exactly one number with
optional decorations: a currency marker before or after it (``$``, ``€``, ``£``, ``¥``,
``us$``, ``usd``, ``eur``, ``gbp``, ``chf``, ``sek``, ``nok``, ``dkk``, ``jpy``, ...), an
optional scale word (``k``/``thousand``, ``m``/``mn``/``mln``/``million``,
``b``/``bn``/``billion``, ``tn``/``trillion``; the one-letter forms only when glued to the
number, as in ``48.2m``, so that ``"3,100 k-sense"`` stays 3100) and an optional percent
marker (``%``, ``percent``, ``per cent``, ``pct``, ``percentage point(s)``, ``pp``). Thousands
separators (``48,200,000``) are allowed. A quantity alternative matches when the
candidate contains *some* quantity with the same value (number x scale, relative
tolerance 1e-9) and the same kind (percentage or not). The currency is ignored. So
``"EUR 48.2 million"`` ~ ``"48.2m"`` ~ ``"€48.2 mn"`` ~ ``"48,200,000"``, ``"$310m"`` ~
``"310 million"``, ``"1.4bn"`` ~ ``"1.4 billion"`` and ``"12.5%"`` ~ ``"12.5 percent"``,
while ``"12.5%"`` matches neither ``"125"`` nor a bare ``"12.5"``, and ``"48.2 million"``
does not match ``"148.2 million"``. Numbers glued to letters (``"Q3"``, ``"FY2024"``,
``"B2B"``, ``"3x"``) are not read as quantities; a currency code glued to a number
(``"EUR48m"``) is split off first. Numbers written as words are not recognised.

Every other alternative matches as a plain case-insensitive substring of the normalised
candidate, with one guard: an alternative that starts or ends with a digit must not continue
a longer number there (``"K-Sense 500"`` is not found in ``"K-Sense 5000"``, ``"Insight 4.0"``
not in ``"Insight 4.01"``).
"""

from __future__ import annotations

import copy
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Literal, TypedDict

__all__ = [
    "DATA_DIR",
    "KINDS",
    "LENSES",
    "Company",
    "CompanyGold",
    "GoldFact",
    "Kind",
    "Lens",
    "LensData",
    "LensGold",
    "Quantity",
    "all_bundles",
    "company_ids",
    "fact_found",
    "find_quantities",
    "load_companies",
    "load_company",
    "missing_facts",
    "normalize_text",
    "parse_quantity",
    "recall",
]

Lens = Literal["competitive", "product", "financial", "risk"]
Kind = Literal["entities", "claims", "signals"]

LENSES: tuple[Lens, ...] = ("competitive", "product", "financial", "risk")
KINDS: tuple[Kind, ...] = ("entities", "claims", "signals")

DATA_DIR: Path = Path(__file__).resolve().parent / "data" / "companies"


class GoldFact(TypedDict):
    """One checkable fact: found when every group in ``match`` has one alternative present."""

    id: str
    text: str
    match: list[list[str]]


class LensGold(TypedDict):
    entities: list[GoldFact]
    claims: list[GoldFact]
    signals: list[GoldFact]


class LensData(TypedDict):
    bundle: str
    gold: LensGold


class CompanyGold(TypedDict):
    scoping: list[GoldFact]
    brief: list[GoldFact]


class Company(TypedDict):
    id: str
    name: str
    sector: str
    held_out: bool
    overview: str
    lenses: dict[str, LensData]
    gold: CompanyGold


# --------------------------------------------------------------------------- loading


def _check_facts(facts: object, where: str) -> None:
    if not isinstance(facts, list):
        raise ValueError(f"{where}: gold facts must be a list")
    for fact in facts:
        if not isinstance(fact, dict) or set(fact) != {"id", "text", "match"}:
            raise ValueError(f"{where}: a gold fact needs exactly the keys id, text, match")
        groups = fact["match"]
        ok = (
            isinstance(fact["id"], str)
            and isinstance(fact["text"], str)
            and isinstance(groups, list)
            and bool(groups)
            and all(
                isinstance(g, list) and g and all(isinstance(a, str) and a.strip() for a in g)
                for g in groups
            )
        )
        if not ok:
            raise ValueError(f"{where}: malformed gold fact {fact.get('id')!r}")


def _validate(raw: object, path: Path) -> Company:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: top level must be an object")
    for key, typ in (
        ("id", str),
        ("name", str),
        ("sector", str),
        ("held_out", bool),
        ("overview", str),
        ("lenses", dict),
        ("gold", dict),
    ):
        if not isinstance(raw.get(key), typ):
            raise ValueError(f"{path}: key {key!r} missing or not {typ.__name__}")
    if raw["id"] != path.stem:
        raise ValueError(f"{path}: id {raw['id']!r} does not match the file name")
    if tuple(raw["lenses"]) != LENSES:
        raise ValueError(f"{path}: lenses must be exactly {LENSES} in that order")
    for lens, data in raw["lenses"].items():
        if not isinstance(data, dict) or not isinstance(data.get("bundle"), str):
            raise ValueError(f"{path}: lens {lens!r} needs a string 'bundle'")
        gold = data.get("gold")
        if not isinstance(gold, dict) or tuple(gold) != KINDS:
            raise ValueError(f"{path}: lens {lens!r} gold must have exactly the keys {KINDS}")
        for kind in KINDS:
            _check_facts(gold[kind], f"{path}: {lens}/{kind}")
    if set(raw["gold"]) != {"scoping", "brief"}:
        raise ValueError(f"{path}: gold must have exactly the keys 'scoping' and 'brief'")
    for key in ("scoping", "brief"):
        _check_facts(raw["gold"][key], f"{path}: gold/{key}")
    company: Company = raw  # type: ignore[assignment]
    return company


@cache
def _load_cached(path: Path) -> Company:
    with path.open(encoding="utf-8") as fh:
        return _validate(json.load(fh), path)


def _load_path(path: Path) -> Company:
    # A deep copy, so that a caller mutating its company cannot affect later loads.
    return copy.deepcopy(_load_cached(path))


def _paths() -> list[Path]:
    return sorted(DATA_DIR.glob("*.json"))


def load_company(company_id: str) -> Company:
    """Load one company by id (raises ``KeyError`` for an unknown id)."""
    path = DATA_DIR / f"{company_id}.json"
    if not re.fullmatch(r"[a-z0-9_-]+", company_id) or not path.is_file():
        raise KeyError(f"unknown company id {company_id!r}")
    return _load_path(path)


def load_companies(*, include_held_out: bool = True) -> list[Company]:
    """All companies, sorted by id; ``include_held_out=False`` drops the held-out ones."""
    companies = [_load_path(p) for p in _paths()]
    return [c for c in companies if include_held_out or not c["held_out"]]


def company_ids(held_out: bool | None = None) -> list[str]:
    """Sorted company ids: all (``None``), only held-out (``True``) or only dev (``False``)."""
    return [c["id"] for c in load_companies() if held_out is None or c["held_out"] is held_out]


def all_bundles(company: Company) -> str:
    """The four lens bundles joined in :data:`LENSES` order (the briefer's source)."""
    return "\n\n".join(company["lenses"][lens]["bundle"] for lens in LENSES)


# --------------------------------------------------------------------------- matching

_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
    }
)

_CURRENCY = (
    r"(?:us\$|a\$|c\$|s\$|hk\$|nz\$|r\$|\$|€|£|¥|₹|"
    r"usd|eur|gbp|chf|sek|nok|dkk|isk|pln|czk|jpy|cny|rmb|cad|aud|nzd|sgd|hkd|inr|brl|"
    r"zar|mxn|krw|aed|sar)"
)
_CORE = (
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?!\d)"
    r"(?:(?:\s?(?P<scale>thousand|million|billion|trillion|mln|mn|bn|tn)|(?P<s1>k|m|b))"
    r"(?![a-z0-9]))?"
    r"(?![a-z0-9])"
    r"(?:\s?(?P<pct>%|percentage points?|per\s?cent|pct|pp)(?![a-z0-9]))?"
)
_QUANTITY_RE = re.compile(r"(?<![\w.])" + _CORE)
_PURE_QUANTITY_RE = re.compile(rf"(?:{_CURRENCY}\s?)?{_CORE}(?:\s?{_CURRENCY})?")
_GLUED_CURRENCY_RE = re.compile(r"(?<![a-z])(" + _CURRENCY[3:-1] + r")(?=\d)")
_SCALES = {
    None: 1.0,
    "k": 1e3,
    "thousand": 1e3,
    "m": 1e6,
    "mn": 1e6,
    "mln": 1e6,
    "million": 1e6,
    "b": 1e9,
    "bn": 1e9,
    "billion": 1e9,
    "tn": 1e12,
    "trillion": 1e12,
}

Quantity = tuple[float, bool]
"""A parsed number: ``(value, is_percentage)``."""


def normalize_text(text: str) -> str:
    """NFKC, lower case, straight quotes, ASCII dashes, single spaces (see module docs)."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()
    return " ".join(text.split())


def _to_quantity(match: re.Match[str]) -> Quantity:
    value = float(match["num"].replace(",", "")) * _SCALES[match["scale"] or match["s1"]]
    return value, match["pct"] is not None


def parse_quantity(alternative: str) -> Quantity | None:
    """``(value, is_percentage)`` if ``alternative`` is exactly one quantity, else ``None``."""
    m = _PURE_QUANTITY_RE.fullmatch(normalize_text(alternative))
    return _to_quantity(m) if m else None


def find_quantities(text: str) -> list[Quantity]:
    """Every quantity in ``text`` as ``(value, is_percentage)``, in order of appearance."""
    norm = _GLUED_CURRENCY_RE.sub(r"\1 ", normalize_text(text))
    return [_to_quantity(m) for m in _QUANTITY_RE.finditer(norm)]


def _same(a: Quantity, b: Quantity) -> bool:
    return a[1] == b[1] and math.isclose(a[0], b[0], rel_tol=1e-9, abs_tol=1e-12)


@cache
def _substring_pattern(norm_alternative: str) -> re.Pattern[str]:
    pattern = re.escape(norm_alternative)
    if norm_alternative[:1].isdigit():
        pattern = r"(?<![\d.])" + pattern
    if norm_alternative[-1:].isdigit():
        pattern += r"(?!\.?\d)"
    return re.compile(pattern)


def _alternative_found(alternative: str, norm_text: str, quantities: Sequence[Quantity]) -> bool:
    wanted = parse_quantity(alternative)
    if wanted is not None:
        return any(_same(wanted, q) for q in quantities)
    return _substring_pattern(normalize_text(alternative)).search(norm_text) is not None


def fact_found(fact: GoldFact, text: str) -> bool:
    """True when every group of ``fact["match"]`` has an alternative present in ``text``."""
    norm = normalize_text(text)
    quantities = find_quantities(text)
    return all(
        any(_alternative_found(alt, norm, quantities) for alt in group) for group in fact["match"]
    )


def missing_facts(facts: Iterable[GoldFact], text: str) -> list[str]:
    """Ids of the facts in ``facts`` that are not found in ``text``."""
    return [f["id"] for f in facts if not fact_found(f, text)]


def recall(facts: Sequence[GoldFact], text: str) -> float:
    """Share of ``facts`` found in ``text`` (1.0 for an empty list)."""
    if not facts:
        return 1.0
    return sum(fact_found(f, text) for f in facts) / len(facts)
