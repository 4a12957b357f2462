"""Text helpers shared by the deterministic judges (internal)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

__all__ = [
    "is_json",
    "iter_words",
    "proper_names",
    "strip_code_fences",
    "word_set",
]

_WORD = re.compile(r"[^\W\d_][^\W_]*")
_ALPHA_WORD = re.compile(r"[^\W\d_]+")
_FENCE = re.compile(r"```[ \t]*[\w+-]*[ \t]*\r?\n?(.*?)(?:```|\Z)", re.DOTALL)
# What may sit between a line start and a sentence's first word: bullets, numbering,
# markdown emphasis, opening quotes and brackets.
_LINE_LEAD = re.compile(r"[ \t]*(?:[-*+•·>#]+|\d{1,3}[.)]|\(?[a-z]\))?[ \t]*[\"'(\[*_]*[ \t]*")
_SENTENCE_END = ".!?:;"
_NOT_NAMES = frozenset({"i", "ok"})


def strip_code_fences(text: str) -> str:
    """The body of the first fenced code block of ``text``, or ``text`` unchanged.

    An opening fence without a closing one is tolerated (its body runs to the end).
    """
    m = _FENCE.search(text)
    return m.group(1) if m else text


def is_json(text: str) -> bool:
    """Whether ``text`` (code fences stripped) is one JSON object or array."""
    body = strip_code_fences(text).strip()
    if not body or body[0] not in "[{":
        return False
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def iter_words(text: str, *, min_len: int = 1, alphabetic: bool = True) -> Iterator[str]:
    """Lower-cased words of ``text`` with at least ``min_len`` characters.

    Args:
        text: Any prose.
        min_len: Shortest word kept.
        alphabetic: True: runs of letters only (``"FY2024"`` -> ``"fy"``); False: words
            start with a letter and may contain digits (``"q3"``).

    Returns:
        An iterator over the words in order.
    """
    pattern = _ALPHA_WORD if alphabetic else _WORD
    for m in pattern.finditer(text):
        word = m.group(0)
        if len(word) >= min_len:
            yield word.casefold()


def word_set(text: str, *, min_len: int = 1, alphabetic: bool = True) -> set[str]:
    """The distinct words of :func:`iter_words`."""
    return set(iter_words(text, min_len=min_len, alphabetic=alphabetic))


def _is_heading(line: str) -> bool:
    """Markdown headings, all-caps lines and short ``Label:`` lines carry no names.

    List items (a line opening with a bullet or a number) are never headings.
    """
    stripped = line.strip()
    if stripped.startswith("#"):
        return True
    stripped = stripped.strip("*_").strip()
    if not stripped or len(stripped.split()) > 8 or re.match(r"[-+•·>]|\d{1,3}[.)]", stripped):
        return False
    letters = [c for c in stripped if c.isalpha()]
    return stripped.endswith(":") or (bool(letters) and all(c.isupper() for c in letters))


def _is_acronym_like(word: str) -> bool:
    return sum(c.isupper() for c in word) >= 2 or any(c.isdigit() for c in word)


def proper_names(text: str) -> dict[str, str]:
    """Proper names and acronyms of ``text``: ``{casefolded: as written}``.

    A word counts when it starts with a capital letter, has at least two characters
    and either looks like an acronym or code (two or more capitals, or a digit:
    ``"EU"``, ``"NordTek"``, ``"Q3"``) or appears capitalised at least once in the
    middle of a sentence. A capitalised word seen only at sentence starts (after
    ``.!?:;``, at a line start or after a bullet) is taken for an ordinary word.
    Heading lines (markdown ``#``, all-caps labels, short title-case lines) are skipped.

    Args:
        text: Any prose.

    Returns:
        The names, keyed by their case-folded form.
    """
    mid: dict[str, str] = {}
    strong: dict[str, str] = {}
    for line in text.splitlines(keepends=True):
        if _is_heading(line):
            continue
        lead = _LINE_LEAD.match(line)
        lead_end = lead.end() if lead else 0
        for m in _WORD.finditer(line):
            word = m.group(0)
            if len(word) < 2 or not word[0].isupper():
                continue
            key = word.casefold()
            if key in _NOT_NAMES:
                continue
            if _is_acronym_like(word):
                strong.setdefault(key, word)
                continue
            before = line[: m.start()].rstrip().rstrip("\"'([*_").rstrip()
            initial = m.start() <= lead_end or not before or before[-1] in _SENTENCE_END
            if not initial:
                mid.setdefault(key, word)
    return {**mid, **strong}
