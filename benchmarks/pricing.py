"""What a benchmark run would cost on a provider, from price sheets kept as data.

The sheets (``price_sheets.json``) give USD per million tokens for input, cached input,
cache writes where billed, and output, with the date and source of each figure. A run's
cost is priced call by call from its measured ``(input, cached, output)`` tokens, under
the provider's caching rules:

* a prompt shorter than the sheet's ``min_prompt_tokens`` is never cached, and a cached
  prefix counts only in ``increment_tokens`` steps (OpenAI: 1,024 tokens, 128-token steps);
* ``automatic`` caching (OpenAI) is always on and has no write fee;
* ``opt-in`` caching (Anthropic) bills every uncached input token of a cacheable prompt at
  the cache-write price while it is on, so :func:`arm_cost` prices an arm both ways and
  keeps the cheaper setting, as its owner would.

The cached counts are the embedded server's prefix-cache hits, a stand-in for the
provider's own cache; token counts are the embedded model's tokenizer's.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PriceSheet", "arm_cost", "call_cost", "load_sheets", "run_cost"]

SHEETS_FILE = Path(__file__).with_name("price_sheets.json")
CallTokens = Sequence[int]
"""One billed call: ``(input_tokens, cached_tokens, output_tokens)``."""


@dataclass(frozen=True)
class PriceSheet:
    """One model's prices in USD per million tokens, and its caching rules."""

    id: str
    provider: str
    model: str
    input: float
    cached_input: float
    cache_write: float | None
    output: float
    mode: str
    """``automatic`` (always on, no write fee) or ``opt-in`` (writes billed)."""
    min_prompt_tokens: int
    increment_tokens: int
    date: str
    source: str

    @property
    def label(self) -> str:
        """``openai gpt-4.1-mini``."""
        return f"{self.provider} {self.model}"


def load_sheets(path: Path = SHEETS_FILE) -> list[PriceSheet]:
    """The price sheets in ``path``; a sheet missing a price raises ``ValueError``."""
    data = json.loads(Path(path).read_text())
    sheets = []
    for raw in data["sheets"]:
        try:
            cache = raw["cache"]
            sheets.append(
                PriceSheet(
                    id=raw["id"],
                    provider=raw["provider"],
                    model=raw["model"],
                    input=float(raw["input"]),
                    cached_input=float(raw["cached_input"]),
                    cache_write=None if raw["cache_write"] is None else float(raw["cache_write"]),
                    output=float(raw["output"]),
                    mode=cache["mode"],
                    min_prompt_tokens=int(cache["min_prompt_tokens"]),
                    increment_tokens=max(1, int(cache["increment_tokens"])),
                    date=raw["date"],
                    source=raw["source"],
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"price sheet {raw.get('id', '?')!r} in {path} is incomplete ({e!r}); every "
                "sheet needs input, cached_input, cache_write (or null), output, cache, "
                "date and source"
            ) from e
        if sheets[-1].mode not in ("automatic", "opt-in"):
            raise ValueError(f"price sheet {raw['id']!r}: cache.mode must be automatic or opt-in")
    return sheets


def _billed_hit(sheet: PriceSheet, prompt: int, cached: int) -> int:
    """Cached tokens the provider would bill as hits: none below its minimum prompt or
    prefix length, otherwise whole increments."""
    if prompt < sheet.min_prompt_tokens:
        return 0
    hit = min(max(cached, 0), prompt)
    if hit < sheet.min_prompt_tokens:
        return 0
    return hit - hit % sheet.increment_tokens


def call_cost(sheet: PriceSheet, call: CallTokens, *, caching: bool) -> float:
    """USD for one call of ``(input, cached, output)`` tokens, caching on or off."""
    prompt, cached, output = (int(x) for x in call)
    usd = output * sheet.output
    if not caching:
        return (usd + prompt * sheet.input) / 1e6
    hit = _billed_hit(sheet, prompt, cached)
    rest = prompt - hit
    cacheable = prompt >= sheet.min_prompt_tokens
    fresh_price = sheet.cache_write if sheet.cache_write is not None and cacheable else sheet.input
    return (usd + hit * sheet.cached_input + rest * fresh_price) / 1e6


def run_cost(sheet: PriceSheet, calls: Sequence[CallTokens], *, caching: bool) -> float:
    """USD for every billed call of one run."""
    return sum(call_cost(sheet, c, caching=caching) for c in calls)


def arm_cost(sheet: PriceSheet, runs: Sequence[Sequence[CallTokens]]) -> dict[str, Any]:
    """An arm's median cost per run on ``sheet`` (with min and max): ``automatic`` sheets
    with caching on; ``opt-in`` sheets with caching on or off, whichever gives the arm the
    lower median (``caching`` says which)."""
    if not runs:
        return {"median": None, "min": None, "max": None, "caching": None}
    settings = [True] if sheet.mode == "automatic" else [True, False]
    best: dict[str, Any] | None = None
    for on in settings:
        costs = [run_cost(sheet, calls, caching=on) for calls in runs]
        row = {
            "median": statistics.median(costs),
            "min": min(costs),
            "max": max(costs),
            "caching": on,
        }
        if best is None or row["median"] < best["median"]:
            best = row
    assert best is not None
    return best
