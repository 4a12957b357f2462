"""The tool-using due-diligence pipeline, written with declared agents (:func:`lc.agent`).

Eight agents in four steps (after capsules-spec 6.2, P-1, with a SQLite table instead of
search stubs)::

    scoping -> research: financial_researcher, growth_researcher, balance_sheet_researcher
               (each with the tools list_metrics and query_financials)
            -> analysis: profitability_analyst, risk_analyst, efficiency_analyst
               (no tools; each reads every research output)
            -> investment_writer (the synthesis)

The two groups of :data:`DD_GROUPS` are the capsule groups. Because the researchers have
tools, the research group can run every tier: ``standard`` drops the tools (tool loss:
the researchers answer without data), ``two_phase`` gathers with the tools first and
then merges. The analysis group has no tools, so it runs fine, standard and sequential.
The synthesis is a single agent and is not grouped (a group needs two members).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict, cast

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph

import langgraph_capsules as lc
from benchmarks.due_diligence.dataset import YEARS, company_ids, find_company
from benchmarks.due_diligence.tools import FINANCIAL_TOOLS

__all__ = [
    "ANALYSTS",
    "DD_GROUPS",
    "INPUTS",
    "RESEARCHERS",
    "DDState",
    "build_due_diligence",
    "initial_state",
    "output_key",
    "task_key",
]

_PERIOD = f"{YEARS[0]} to {YEARS[-1]}"

SCOPING_INSTRUCTIONS = (
    "You are the due-diligence lead. From the company name and the mandate, write the "
    "scope of the review in two sentences, starting with 'Due-diligence scope for "
    f"<exact company name>:'. Name the financial years ({_PERIOD}) and the questions the "
    "researchers and analysts must answer."
)

RESEARCHERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "financial_researcher": ("financial researcher", ("revenue", "operating_margin")),
    "growth_researcher": ("growth researcher", ("revenue", "headcount")),
    "balance_sheet_researcher": ("balance-sheet researcher", ("cash", "debt")),
}
"""Research agent -> (role, the metrics it queries)."""

_RESEARCH_TASK = (
    "Metrics to query: {metrics}. Call query_financials once for each of them, with the "
    "year left out so that every year comes back."
)

_RESEARCH_INSTRUCTIONS = (
    "You are the due-diligence {role}. Look up the company's figures in the financials "
    "database with the tools, as your task says.\n"
    "Under a one-line heading, report every figure you retrieved as a bullet line, "
    "exactly as the tool wrote it ('<company> <metric> <year>: <value>'). Report tool "
    "errors as they are. Never estimate or invent a figure."
)

ANALYSTS: dict[str, tuple[str, str]] = {
    "profitability_analyst": (
        "profitability analyst",
        "Compute the year-on-year revenue growth and list the operating margin of every "
        "year, one bullet line each: '- revenue growth <year>: <x.x>%' and '- operating "
        "margin <year>: <x.x>%'. Then one line 'Verdict: ...' on the profitability trend.",
    ),
    "risk_analyst": (
        "risk analyst",
        "Compute net debt (debt minus cash) for every year as '- net debt <year>: "
        "<currency> <x> million', or '- net cash <year>: <currency> <x> million' when cash "
        "exceeds debt, and, when there is net debt, its share of revenue as '- net debt to "
        "revenue <year>: <x.x>%'. Then one line 'Verdict: ...' on balance-sheet risk.",
    ),
    "efficiency_analyst": (
        "efficiency analyst",
        "Compute revenue per employee (revenue divided by headcount) for every year as '- "
        "revenue per employee <year>: <currency> <x> thousand' and the year-on-year "
        "headcount growth as '- headcount growth <year>: <x.x>%'. Then one line 'Verdict: "
        "...' on operating efficiency.",
    ),
}
"""Analysis agent -> (role, its job)."""

_ANALYSIS_INSTRUCTIONS = (
    "You are the due-diligence {role}. Work only from the research findings you are "
    "given; round as shown and never invent a figure. If the findings hold no figures, "
    "say that the data is insufficient.\n{job}"
)

WRITER_INSTRUCTIONS = (
    "You are the due-diligence investment writer. From the analyses, write a memo of 120 "
    "to 200 words: a title line 'Investment memo: <company>', a line 'Recommendation: "
    "...' (proceed, proceed with conditions, or do not proceed), a one-sentence thesis, "
    "'Key figures <latest year>:' with the latest revenue growth, operating margin, net "
    "debt (or net cash) and revenue per employee as bullet lines copied from the "
    "analyses, then the top two risks and three next steps. Use only figures from the "
    "analyses."
)

MANDATE = (
    "Assess {name} for a minority investment: financial performance and growth from "
    f"{_PERIOD}, balance-sheet risk and operating efficiency. Recommend whether to proceed."
)

DD_GROUPS: dict[str, list[str]] = {
    "research": list(RESEARCHERS),
    "analysis": list(ANALYSTS),
}
"""The capsule groups: group name -> member node names."""


class DDState(TypedDict, total=False):
    """The pipeline's state: the inputs, then one key per agent."""

    company: str
    mandate: str
    scope: str
    financial_task: str
    growth_task: str
    balance_sheet_task: str
    financial_findings: str
    growth_findings: str
    balance_sheet_findings: str
    profitability_analysis: str
    risk_analysis: str
    efficiency_analysis: str
    memo: str


def output_key(agent: str) -> str:
    """The state key an agent writes (``financial_researcher`` -> ``financial_findings``).

    Example:
        >>> output_key("risk_analyst"), output_key("investment_writer")
        ('risk_analysis', 'memo')
    """
    if agent in RESEARCHERS:
        return agent.removesuffix("_researcher") + "_findings"
    if agent in ANALYSTS:
        return agent.removesuffix("_analyst") + "_analysis"
    return {"scoping": "scope", "investment_writer": "memo"}[agent]


def task_key(researcher: str) -> str:
    """The input key holding a researcher's task (``growth_researcher`` -> ``growth_task``).

    The task (which metrics to query, and how) is part of the researcher's user turn,
    not of its instructions: the embedded 1.5B model, with tools bound, follows the
    user turn and walks the ``list_metrics`` listing in order whatever the system
    message names (probed on development companies).

    Example:
        >>> task_key("balance_sheet_researcher")
        'balance_sheet_task'
    """
    return researcher.removesuffix("_researcher") + "_task"


INPUTS: tuple[str, ...] = ("company", "mandate", *map(task_key, RESEARCHERS))
"""The keys of a run's input state (:func:`initial_state`)."""


def initial_state(company: str) -> DDState:
    """The inputs of one run: the company's exact name and the mandate.

    Args:
        company: A company id or name of the financials table (``"corvanta"``).

    Returns:
        ``{"company": <name>, "mandate": <text>}``.

    Raises:
        KeyError: for a company not in the table, naming the known ids.

    Example:
        >>> initial_state("kelvara")["company"]
        'Kelvara Sensing AB'
    """
    info = find_company(company)
    if info is None:
        raise KeyError(f"unknown company {company!r}; ids: {company_ids()}")
    state: DDState = {"company": info.name, "mandate": MANDATE.format(name=info.name)}
    for name, (_, metrics) in RESEARCHERS.items():
        state[task_key(name)] = _RESEARCH_TASK.format(metrics=", ".join(metrics))  # type: ignore[literal-required]
    return state


def _add(b: StateGraph[Any, Any, Any, Any], node: Callable[..., dict[str, Any]]) -> None:
    # lc.agent() is typed as a positional Callable, which mypy does not match to
    # LangGraph's node protocols (their parameters have names): the node is fine at run time.
    b.add_node(cast(Any, node))


def build_due_diligence(llm: BaseChatModel) -> StateGraph[Any, Any, Any, Any]:
    """The due-diligence app as an uncompiled ``StateGraph`` builder.

    Args:
        llm: The chat model of every agent (wrapped once in
            :class:`lc.CapsuleChatModel` if it is not one, so capsule groups can answer
            its calls).

    Returns:
        The builder: ``START -> scoping -> research (3) -> analysis (3) ->
        investment_writer -> END``.

    Example:
        >>> from benchmarks.due_diligence.scripted import scripted_due_diligence
        >>> app = build_due_diligence(scripted_due_diligence()).compile()
        >>> app.invoke(initial_state("corvanta"))["memo"].splitlines()[0]
        'Investment memo: Corvanta Materials S.A.'
    """
    model = llm if isinstance(llm, lc.CapsuleChatModel) else lc.CapsuleChatModel(llm)
    b = StateGraph(DDState)
    _add(
        b,
        lc.agent(
            SCOPING_INSTRUCTIONS,
            reads=["company", "mandate"],
            writes="scope",
            llm=model,
            name="scoping",
        ),
    )
    b.add_edge(START, "scoping")
    for name, (role, _) in RESEARCHERS.items():
        _add(
            b,
            lc.agent(
                _RESEARCH_INSTRUCTIONS.format(role=role),
                reads=["company", "scope", task_key(name)],
                writes=output_key(name),
                tools=FINANCIAL_TOOLS,
                tool_choice="required",  # the embedded models answer from memory otherwise
                llm=model,
                name=name,
            ),
        )
        b.add_edge("scoping", name)
    findings = [output_key(n) for n in RESEARCHERS]
    for name, (role, job) in ANALYSTS.items():
        _add(
            b,
            lc.agent(
                _ANALYSIS_INSTRUCTIONS.format(role=role, job=job),
                reads=["scope", *findings],
                writes=output_key(name),
                llm=model,
                name=name,
            ),
        )
        b.add_edge(list(RESEARCHERS), name)
    _add(
        b,
        lc.agent(
            WRITER_INSTRUCTIONS,
            reads=["scope", *(output_key(n) for n in ANALYSTS)],
            writes="memo",
            llm=model,
            name="investment_writer",
        ),
    )
    b.add_edge(list(ANALYSTS), "investment_writer")
    b.add_edge("investment_writer", END)
    return b
