"""A deterministic stand-in model for offline runs of the due-diligence pipeline.

:func:`scripted_due_diligence` returns a :class:`ScriptedChatModel` that behaves like a
careful analyst who follows the pipeline's instructions:

* **Tool calls** (``tool_calls_for``, only when tools are bound). A researcher first
  calls ``list_metrics`` for the company named in its context, then ``query_financials``
  for each metric its task names ("Metrics to query: ...") that the listing
  offers, then answers in text. A ``list_metrics`` error (an unknown company) ends the
  loop: the model answers with the error.
* **Answers** (``respond``), read from the prompt only:

  - a researcher copies every data line it sees for its metrics (tool results in the
    fine tier, the gathered data in two_phase's phase B); with the gather-only
    instruction (phase A) it writes the compact data summary instead. Without data (the
    standard tier drops the tools) it says that no figures were retrieved, so tool loss
    shows up as missing numbers;
  - an analyst parses the research data lines and writes the derived figures of
    :mod:`.figures` (the same code the judge uses for its reference);
  - the writer picks the key figures from the analyses.

Every answer depends only on the task's own text, so an agent answered inside a merged
call gives exactly the answer it gives alone.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from benchmarks.due_diligence import figures
from benchmarks.due_diligence.dataset import METRICS, YEARS, find_company
from langgraph_capsules.testing import ScriptedChatModel

__all__ = ["parse_data_lines", "scripted_due_diligence"]

_ROLE = re.compile(r"You are the due-diligence ([a-z -]+?)\.")
_METRICS = re.compile(r"Metrics to query: ([a-z_, ]+)\.")
_COMPANY = re.compile(r"^## company\n(.+)$", re.M)
_SCOPE = re.compile(r"Due-diligence scope for (.+?):")
_DATA = re.compile(
    r"^(?:- )?(?P<company>.+?) (?P<metric>" + "|".join(METRICS) + r") (?P<year>\d{4}): "
    r"(?P<value>.+)$",
    re.M,
)
_ERROR = re.compile(r"^(?:- )?(error: .+)$", re.M)
_AMOUNT = re.compile(r"(?P<cur>[A-Z]{3}) (?P<num>-?\d+(?:\.\d+)?) million")
_PERCENT = re.compile(r"(?P<num>-?\d+(?:\.\d+)?)%")
_HEADS = re.compile(r"(?P<num>\d+) employees")
_GATHER = "Gather only:"

_RESEARCH_ROLES = ("financial researcher", "growth researcher", "balance-sheet researcher")
_ANALYSES: dict[str, tuple[str, Any]] = {
    "profitability analyst": ("Profitability analysis", figures.profitability_lines),
    "risk analyst": ("Balance-sheet risk analysis", figures.risk_lines),
    "efficiency analyst": ("Efficiency analysis", figures.efficiency_lines),
}


def _text(messages: list[BaseMessage]) -> str:
    return "\n\n".join(
        m.content if isinstance(m.content, str) else str(m.content) for m in messages
    )


def _company(text: str) -> str | None:
    for pattern in (_COMPANY, _SCOPE):
        m = pattern.search(text)
        if m:
            return m.group(1).strip()
    return None


def _metrics(text: str) -> list[str]:
    m = _METRICS.search(text)
    if m is None:
        return []
    return [x for x in (p.strip() for p in m.group(1).split(",")) if x in METRICS]


def parse_data_lines(text: str) -> tuple[str | None, dict[str, dict[int, float]]]:
    """The raw figures in ``text``: the currency and metric -> year -> value, read from
    the tools' data lines (``"<company> <metric> <year>: <value>"``).

    Example:
        >>> parse_data_lines("- Corvanta Materials S.A. revenue 2023: PLN 742 million")
        ('PLN', {'revenue': {2023: 742.0}})
    """
    currency: str | None = None
    out: dict[str, dict[int, float]] = {}
    for m in _DATA.finditer(text):
        value = m["value"].strip()
        amount = _AMOUNT.fullmatch(value)
        number = amount or _PERCENT.fullmatch(value) or _HEADS.fullmatch(value)
        if number is None:
            continue
        if amount is not None:
            currency = amount["cur"]
        out.setdefault(m["metric"], {})[int(m["year"])] = float(number["num"])
    return currency, out


def _data_lines(text: str, metrics: list[str]) -> list[str]:
    found: dict[tuple[int, int], str] = {}
    for m in _DATA.finditer(text):
        if m["metric"] in metrics:
            line = m.group(0).removeprefix("- ").strip()
            found.setdefault((metrics.index(m["metric"]), int(m["year"])), line)
    return [found[k] for k in sorted(found)]


def _errors(text: str) -> list[str]:
    return list(dict.fromkeys(m.group(1).strip() for m in _ERROR.finditer(text)))


# --------------------------------------------------------------------------- tools


def _tool_calls(messages: list[BaseMessage]) -> list[dict[str, Any]] | None:
    """List the metrics, then query the instructed ones, then answer (``None``)."""
    text = _text(messages)
    company, metrics = _company(text), _metrics(text)
    if company is None or not metrics:
        return None
    called = [c["name"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    if "list_metrics" not in called:
        return [{"name": "list_metrics", "args": {"company": company}}]
    if "query_financials" in called:
        return None
    results = [m for m in messages if isinstance(m, ToolMessage)]
    listing = str(results[-1].content) if results else ""
    if listing.startswith("error:"):
        return None
    return [
        {"name": "query_financials", "args": {"company": company, "metric": metric}}
        for metric in metrics
        if f"- {metric} (" in listing
    ] or None


# --------------------------------------------------------------------------- answers


def _scope(company: str) -> str:
    return (
        f"Due-diligence scope for {company}: review revenue, operating margin, headcount, "
        f"cash and debt for {YEARS[0]} to {YEARS[-1]} from the financials database. The "
        "analysts then assess profitability, balance-sheet risk and operating efficiency."
    )


def _research(text: str, company: str) -> str:
    metrics = _metrics(text)
    heading = " and ".join(m.replace("_", " ") for m in metrics).capitalize() or "Figures"
    lines, errors = _data_lines(text, metrics), _errors(text)
    if _GATHER in text:
        return "\n".join([f"Data gathered for {company}:", *lines, *errors])
    if not lines and not errors:
        return (
            f"{heading} of {company}: no figures were retrieved from the financials "
            "database, so none are reported."
        )
    body = [f"- {ln}" for ln in (*lines, *errors)]
    return "\n".join([f"{heading} of {company} (financials database):", *body])


def _verdict(role: str, series: dict[str, dict[int, float]]) -> str:
    def trend(values: dict[int, float]) -> bool:
        seq = [values[y] for y in sorted(values)]
        return all(b > a for a, b in itertools.pairwise(seq))

    if role == "profitability analyst":
        margins = series.get("operating_margin", {})
        state = "profitable" if margins and margins[max(margins)] > 0 else "loss-making"
        how = "improved every year" if trend(margins) else "moved unevenly"
        return f"Verdict: {state}; the operating margin {how}."
    if role == "risk analyst":
        cash, debt = series.get("cash", {}), series.get("debt", {})
        year = max(set(cash) & set(debt), default=None)
        if year is None:
            return "Verdict: balance-sheet risk cannot be assessed."
        net = debt[year] - cash[year]
        sales = series.get("revenue", {}).get(year) or 0.0
        if net <= 0:
            return "Verdict: low balance-sheet risk; the company holds net cash."
        level = "high" if sales and net / sales > 0.4 else "moderate"
        return f"Verdict: {level} balance-sheet risk from net debt."
    revenue, heads = series.get("revenue", {}), series.get("headcount", {})
    per_head = {y: revenue[y] / heads[y] for y in set(revenue) & set(heads) if heads[y]}
    how = "improving" if trend(per_head) else "not improving every year"
    return f"Verdict: operating efficiency is {how}."


def _analysis(role: str, text: str, company: str) -> str:
    title, lines_of = _ANALYSES[role]
    currency, series = parse_data_lines(text)
    lines = lines_of(currency or "", series) if currency else []
    if not lines:
        return (
            f"{title} of {company}: the data is insufficient; the research findings hold "
            "no figures."
        )
    return "\n".join([f"{title} of {company}:", *lines, _verdict(role, series)])


def _memo(text: str, company: str) -> str:
    key = figures.key_figures(text.splitlines())
    recommendation = figures.recommendation(text.splitlines())
    head = [f"Investment memo: {company}", f"Recommendation: {recommendation}"]
    if not key:
        return "\n".join(
            [*head, "Thesis: the analyses hold no figures, so no investment case can be made."]
        )
    first = figures.ANALYSIS_LINE.match(key[0])
    year = first["year"] if first else "latest year"
    return "\n".join(
        [
            *head,
            f"Thesis: {company} is judged on its latest growth, margin, leverage and efficiency.",
            f"Key figures {year}:",
            *key,
            "Top risks: the path to sustained profit; the funding of further growth.",
            "Next steps: verify the audited accounts; meet management on the margin plan; "
            "review the debt terms and covenants.",
        ]
    )


def _respond(text: str) -> str:
    role_match = _ROLE.search(text)
    role = role_match.group(1) if role_match else ""
    company = _company(text)
    if company is None:
        named = _DATA.search(text)
        company = named["company"].removeprefix("- ") if named else "the company"
    info = find_company(company)
    company = info.name if info is not None else company
    if role == "lead":
        return _scope(company)
    if role in _RESEARCH_ROLES:
        return _research(text, company)
    if role in _ANALYSES:
        return _analysis(role, text, company)
    if role == "investment writer":
        return _memo(text, company)
    return "I cannot tell which task this is."


def scripted_due_diligence(**knobs: Any) -> ScriptedChatModel:
    """A :class:`ScriptedChatModel` that runs the due-diligence pipeline offline.

    Args:
        **knobs: Further :class:`ScriptedChatModel` fields (``compress``,
            ``drop_sections``, ``cache_min_tokens``, ...).

    Returns:
        The model (it records every call in ``.calls``).

    Example:
        >>> llm = scripted_due_diligence()
        >>> reply = llm.invoke("You are the due-diligence lead.\\n\\n## company\\nKelvara")
        >>> reply.content.split(":")[0]
        'Due-diligence scope for Kelvara Sensing AB'
    """
    return ScriptedChatModel(
        respond=_respond,
        tool_calls_for=_tool_calls,
        model_name="scripted-due-diligence",
        **knobs,
    )
