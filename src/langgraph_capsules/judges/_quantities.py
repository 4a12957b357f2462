"""Unit-aware number reading for the fact-recall judge (internal).

A *quantity* is a number as written in prose, read together with its scale word and
percent marker: ``"482m"``, ``"482 million"``, ``"482,000,000"`` and ``"NOK 482 million"``
all read as 482,000,000; ``"12.5%"`` and ``"12.5 percent"`` as the percentage 12.5,
which never equals the plain number 12.5. Each quantity also carries its *resolution*,
the value of one unit in its last written digit (``"482m"``: 1,000,000; ``"0.48bn"``:
10,000,000; ``"12.5%"``: 0.1), so a rounded restatement can be recognised.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Quantity", "find_quantities", "normalize", "same_quantity"]

_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u00a0": " ",
        "\u202f": " ",
    }
)

_CURRENCY_CODES = (
    "usd|eur|gbp|chf|sek|nok|dkk|isk|pln|czk|jpy|cny|rmb|cad|aud|nzd|sgd|hkd|inr|brl|zar|krw"
)
# "EUR48m" -> "EUR 48m", "FY2025" -> "FY 2025": a currency code or fiscal-year prefix
# glued to a number must not hide the number.
_GLUED_CURRENCY = re.compile(rf"(?<![a-z])({_CURRENCY_CODES}|fy)(?=\d)")
# "1. Item" / "2) Item" at the start of a line: list numbering, not a fact.
_LIST_MARKER = re.compile(r"(?m)^([ \t]*(?:[#>*-]+[ \t]*)?)\d{1,3}[.)](?=[ \t])")

_QUANTITY = re.compile(
    r"(?<![\w.,])"  # not glued to a word ("Q3", "FY2024") or inside a longer number
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\d,]\d)"
    r"(?:\s?(?P<word>thousand|million|billion|trillion|mln|mn|bn|tn)(?![a-z0-9])"
    r"|(?P<glued>k|m|b)(?![a-z0-9]))?"
    r"(?![a-z0-9])"  # "3x", "5g", "10k-sense" stay unread
    r"(?:\s?(?P<pct>%|percentage points?|per\s?cent|pct|pp)(?![a-z0-9]))?"
)

_RANGE_JOIN = re.compile(rf"\s*(?:-|to)\s*(?:(?:{_CURRENCY_CODES}|[$€£¥])\s?)?")

_SCALES: dict[str, float] = {
    "": 1.0,
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


@dataclass(frozen=True)
class Quantity:
    """One number read from text.

    Attributes:
        value: The number times its scale (``"482m"`` -> ``482e6``); signs are ignored.
        percent: True for percentages and percentage points.
        resolution: The value of one unit in the last written digit.
        text: The text it was read from (for reports).
    """

    value: float
    percent: bool
    resolution: float
    text: str

    @property
    def key(self) -> tuple[float, bool]:
        """Identity used to count distinct quantities."""
        return (self.value, self.percent)

    def render(self) -> str:
        """A canonical spelling: ``482000000`` or ``12.5%``."""
        number = f"{self.value:.12g}"
        return f"{number}%" if self.percent else number


def normalize(text: str) -> str:
    """NFKC, lower case, ASCII quotes and dashes, non-breaking spaces to spaces."""
    return unicodedata.normalize("NFKC", text).translate(_TRANSLATE).lower()


def find_quantities(text: str) -> list[Quantity]:
    """Every quantity in ``text``, in order (list numbering at line starts is skipped).

    The first number of a range without its own unit takes the unit of the second
    (``"5.1-5.4 billion"``, ``"10 to 12%"``; also ``"from 55 to 62%"``, read as 55%).

    Args:
        text: Any prose.

    Returns:
        The quantities as written; duplicates are kept.
    """
    norm = _LIST_MARKER.sub(lambda m: m.group(1), normalize(text))
    norm = " ".join(_GLUED_CURRENCY.sub(r"\1 ", norm).split())
    matches = list(_QUANTITY.finditer(norm))
    found: list[Quantity] = []
    for i, m in enumerate(matches):
        scale_word = m["word"] or m["glued"] or ""
        percent = m["pct"] is not None
        if not scale_word and not percent and i + 1 < len(matches):
            # A range shares its unit: "5.1-5.4 billion", "NOK 5.1 to NOK 5.4bn", "10-12%".
            nxt = matches[i + 1]
            if _RANGE_JOIN.fullmatch(norm, m.end(), nxt.start()):
                scale_word = nxt["word"] or nxt["glued"] or ""
                percent = nxt["pct"] is not None
        digits = m["num"].replace(",", "")
        scale = _SCALES[scale_word]
        decimals = len(digits.partition(".")[2])
        found.append(
            Quantity(
                value=float(digits) * scale,
                percent=percent,
                resolution=scale * 10.0**-decimals,
                text=m.group(0).strip(),
            )
        )
    return found


def same_quantity(written: Quantity, reference: Quantity) -> bool:
    """Whether ``written`` states ``reference``, allowing rounding to its own precision.

    ``"482m"`` states 482,400,000 (rounded to the nearest million) but ``"482.4m"`` does
    not state 482,000,000: a restatement may drop precision, never add it. Percentages
    only match percentages.
    """
    if written.percent != reference.percent:
        return False
    tolerance = written.resolution / 2 + 1e-9 * max(abs(reference.value), 1.0)
    return math.isclose(written.value, reference.value, rel_tol=1e-9) or (
        abs(written.value - reference.value) <= tolerance
    )
