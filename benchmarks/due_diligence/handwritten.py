"""The due-diligence app written by hand in plain LangGraph (the benchmark's LG arm).

One node per agent, as a LangGraph user would write it without the plugin::

    START -> scoping -> financial_researcher, growth_researcher, balance_sheet_researcher
          -> profitability_analyst, risk_analyst, efficiency_analyst
          -> investment_writer -> END

Each node builds its own prompt (the agent's instructions as the system message, its
inputs as ``## <key>`` blocks) and calls the model once; a researcher runs a real tool
loop instead, written for a model that would rather invent figures than call a tool
(the embedded 1.5B model does, asked with ``tool_choice="auto"``): it *gathers* with
the tools bound and ``tool_choice="required"``, LangGraph's prebuilt ``ToolNode``
executing each round's calls, until a round brings no new call (a repeat, or a text
reply) or :data:`MAX_TOOL_ROUNDS` is reached; then it *answers*, one turn with tool
use switched off (:data:`ANSWER_PROMPT`). The instructions, inputs and tools are read from
the declared pipeline (:func:`.pipeline.build_due_diligence`), so every arm asks the
same questions of the same data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode

from benchmarks.due_diligence.pipeline import (
    ANALYSTS,
    RESEARCHERS,
    DDState,
    build_due_diligence,
)
from benchmarks.due_diligence.scripted import scripted_due_diligence
from benchmarks.due_diligence.tools import FINANCIAL_TOOLS
from langgraph_capsules.agents import AgentSpec, agent_spec

__all__ = [
    "AGENTS",
    "ANSWER_PROMPT",
    "MAX_TOOL_ROUNDS",
    "agent_specs",
    "build_handwritten",
    "user_message",
]

MAX_TOOL_ROUNDS = 6
"""Model turns a researcher may take, the answer included (list_metrics, queries one
per turn for a model that calls one tool at a time, and the answer)."""

ANSWER_PROMPT = "Write your report now, from the tool results above."
"""The researcher's last turn, with tool use off: the report from the gathered data."""

AGENTS: tuple[str, ...] = ("scoping", *RESEARCHERS, *ANALYSTS, "investment_writer")
"""The agents in pipeline order."""


def agent_specs() -> dict[str, AgentSpec]:
    """Every agent's declared spec (instructions, reads, writes, tools), read from the
    declared pipeline so the hand-written and DSPy versions cannot drift from it."""
    builder = build_due_diligence(scripted_due_diligence())
    specs = {name: agent_spec(builder.nodes[name].runnable) for name in AGENTS}
    return {name: spec for name, spec in specs.items() if spec is not None}


def user_message(spec: AgentSpec, state: Any) -> str:
    """The agent's inputs as ``## <key>`` blocks (the format every arm's prompt uses)."""
    return "\n\n".join(f"## {k}\n{state.get(k, '')}" for k in spec.reads)


def _text(message: BaseMessage) -> str:
    return message.content if isinstance(message.content, str) else str(message.content)


def _plain_node(llm: BaseChatModel, spec: AgentSpec) -> Callable[[DDState], dict[str, Any]]:
    def node(state: DDState) -> dict[str, Any]:
        msgs = [SystemMessage(spec.instructions), HumanMessage(user_message(spec, state))]
        return {spec.writes[0]: _text(llm.invoke(msgs))}

    return node


def _call_key(call: Any) -> str:
    return json.dumps([call["name"], call["args"]], sort_keys=True, default=str)


def _tool_node(llm: BaseChatModel, spec: AgentSpec) -> Callable[[DDState], dict[str, Any]]:
    gather = llm.bind_tools(list(FINANCIAL_TOOLS), tool_choice="required")
    answer = llm.bind_tools(list(FINANCIAL_TOOLS), tool_choice="none")
    run_tools = ToolNode(list(FINANCIAL_TOOLS))

    def node(state: DDState) -> dict[str, Any]:
        convo: list[BaseMessage] = [
            SystemMessage(spec.instructions),
            HumanMessage(user_message(spec, state)),
        ]
        asked: set[str] = set()
        for _ in range(MAX_TOOL_ROUNDS - 1):
            reply = gather.invoke(convo)
            calls = reply.tool_calls if isinstance(reply, AIMessage) else []
            new = {_call_key(c) for c in calls} - asked
            if not new:  # nothing new to fetch: the data is in
                break
            asked |= new
            convo.append(reply)
            convo.extend(run_tools.invoke({"messages": convo})["messages"])
        final = answer.invoke([*convo, HumanMessage(ANSWER_PROMPT)])
        return {spec.writes[0]: _text(final)}

    return node


def build_handwritten(llm: BaseChatModel) -> StateGraph[Any, Any, Any, Any]:
    """The hand-written app as an uncompiled builder (capsulize it for the capsule arms).

    Args:
        llm: The chat model of every node (pass it wrapped in
            :class:`lc.CapsuleChatModel` when the builder will be capsulized).

    Returns:
        The builder; ``invoke(initial_state(company))`` returns every agent's output.

    Example:
        >>> from benchmarks.due_diligence.pipeline import initial_state
        >>> app = build_handwritten(scripted_due_diligence()).compile()
        >>> app.invoke(initial_state("kelvara"))["memo"].splitlines()[0]
        'Investment memo: Kelvara Sensing AB'
    """
    specs = agent_specs()
    b = StateGraph(DDState)
    for name in AGENTS:
        make = _tool_node if specs[name].tools else _plain_node
        b.add_node(name, make(llm, specs[name]))
    b.add_edge(START, "scoping")
    for name in RESEARCHERS:
        b.add_edge("scoping", name)
    for name in ANALYSTS:
        b.add_edge(list(RESEARCHERS), name)
    b.add_edge(list(ANALYSTS), "investment_writer")
    b.add_edge("investment_writer", END)
    return b
