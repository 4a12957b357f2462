"""Field apps: small LangGraph apps with the shapes published LangGraph apps have.

Each app is a builder factory ``build(model)`` taking an ordinary chat model (the
scripted one in tests) and wrapping it the way the README asks an app to: one
``lc.CapsuleChatModel`` around it (or a ``get_model()`` factory that builds a new one
per call). The node functions are written as app authors write them; nothing in them
knows about capsules. The patterns they stand for are named in each docstring; the
code and prompts are our own.

:data:`FIELD_APPS` lists them with a few inputs each, what ``capsulize`` is expected
to do with them, and :func:`run_arm` measures one run (final state, real LLM calls,
input tokens) with :func:`langgraph_capsules.track_usage`. ``tests/test_field_apps.py``
and ``benchmarks/field_apps.py`` use both.
"""

from __future__ import annotations

import asyncio
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Send
from pydantic import BaseModel, Field

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel

Builder = StateGraph[Any, Any, Any, Any]


# ====================================================== 1. orchestrator-worker (Send)
class Section(BaseModel):
    name: str = Field(description="Short title of the report section.")
    description: str = Field(description="What the section must cover.")


class ReportPlan(BaseModel):
    sections: list[Section] = Field(description="The sections of the report, in order.")


class OrchestratorState(TypedDict, total=False):
    topic: str
    outline: list[str]
    sections: list[Section]
    completed_sections: Annotated[list[str], operator.add]
    final_report: str


class WorkerState(TypedDict):
    topic: str
    section: Section


def orchestrator_worker_app(model: BaseChatModel) -> Builder:
    """Orchestrator-worker (LangGraph docs' workflows tutorial): a planner asks for a
    structured plan of sections, ``Send`` dispatches one worker per section to a single
    ``write_section`` node, the ``operator.add`` list is reduced by a synthesizer."""
    llm = lc.CapsuleChatModel(model)
    planner = llm.with_structured_output(ReportPlan)

    def orchestrator(state: OrchestratorState) -> dict[str, Any]:
        outline = "\n".join(f"- {part}" for part in state["outline"])
        plan = planner.invoke(
            [
                SystemMessage("Plan a short report. Give one section per outline item."),
                HumanMessage(f"Report topic: {state['topic']}\nOutline:\n{outline}"),
            ]
        )
        return {"sections": plan.sections}

    def write_section(state: WorkerState) -> dict[str, Any]:
        section = state["section"]
        reply = llm.invoke(
            [
                SystemMessage(
                    "You write one section of a report in markdown. Start with the section "
                    "title as a heading and write two short paragraphs; no preamble."
                ),
                HumanMessage(
                    f"Report topic: {state['topic']}\nSection: {section.name}\n"
                    f"It covers: {section.description}"
                ),
            ]
        )
        return {"completed_sections": [str(reply.content)]}

    def assign_workers(state: OrchestratorState) -> list[Send]:
        return [
            Send("write_section", {"topic": state["topic"], "section": s})
            for s in state["sections"]
        ]

    def synthesizer(state: OrchestratorState) -> dict[str, Any]:
        return {"final_report": "\n\n---\n\n".join(state.get("completed_sections", []))}

    b = StateGraph(OrchestratorState)
    b.add_node("orchestrator", orchestrator)
    b.add_node("write_section", write_section)
    b.add_node("synthesizer", synthesizer)
    b.add_edge(START, "orchestrator")
    b.add_conditional_edges("orchestrator", assign_workers, ["write_section"])
    b.add_edge("write_section", "synthesizer")
    b.add_edge("synthesizer", END)
    return b


def _bullets(text: str) -> list[str]:
    """The ``- item`` lines of a request, stripped."""
    return [item.strip() for item in re.findall(r"^- (.+)$", text, re.M)]


def _plan_from_outline(text: str) -> dict[str, Any]:
    """The scripted planner: one section per outline line of the request."""
    items = _bullets(text)
    return {
        "sections": [
            {"name": item, "description": f"The facts and figures on {item}."} for item in items
        ]
    }


# ==================================== 2. router to parallel analysts (trading desk)
ANALYST_FOCUS = {
    "market": "You read price action and technical indicators (trend, momentum, volume).",
    "sentiment": "You read social media and retail investor mood about the company.",
    "news": "You read recent news and macro events that move the stock.",
    "fundamentals": "You read the financial statements, margins and valuation.",
}


class DeskState(TypedDict, total=False):
    ticker: str
    trade_date: str
    selected_analysts: list[str]
    dossier: str
    market_report: str
    sentiment_report: str
    news_report: str
    fundamentals_report: str
    decision: str


def trading_desk_app(model: BaseChatModel) -> Builder:
    """Multi-analyst trading desk (the TradingAgents shape, made parallel): the user
    picks which analysts take part, a conditional edge sends the run to those analyst
    nodes, each writes its report from the same dossier, and a trader decides."""
    llm = lc.CapsuleChatModel(model)

    def load_data(state: DeskState) -> dict[str, Any]:
        t = state["ticker"]
        dossier = (
            f"{t} closed at 41.20 on {state['trade_date']}, up 3.1% on the week on "
            "twice the average volume; the 50-day average is 38.90.\n\n"
            f"Quarterly revenue of {t} rose 14% to 2.3 billion; gross margin slipped from "
            "47% to 44% on freight costs. Net debt is 1.1 times EBITDA.\n\n"
            f"Posts about {t} on investor forums doubled after a product launch; most are "
            "positive, a minority complain about delivery delays.\n\n"
            "The central bank held rates; a new import tariff on components was announced."
        )
        return {"dossier": dossier}

    def analyst(kind: str) -> Any:
        def node(state: DeskState) -> dict[str, Any]:
            reply = llm.invoke(
                [
                    SystemMessage(
                        f"You are the {kind} analyst on a trading desk. {ANALYST_FOCUS[kind]} "
                        "Write a short report for the trader and end with a one-line "
                        "bullish, bearish or neutral call."
                    ),
                    HumanMessage(
                        f"Ticker: {state['ticker']} as of {state['trade_date']}\n\n"
                        f"Dossier:\n\n{state['dossier']}"
                    ),
                ]
            )
            return {f"{kind}_report": str(reply.content)}

        return node

    def route_analysts(state: DeskState) -> list[str]:
        return [k for k in ANALYST_FOCUS if k in state["selected_analysts"]]

    def trader(state: DeskState) -> dict[str, Any]:
        reports = "\n\n".join(
            f"{k} analyst:\n{state[f'{k}_report']}"  # type: ignore[literal-required]
            for k in ANALYST_FOCUS
            if state.get(f"{k}_report")
        )
        reply = llm.invoke(
            [
                SystemMessage("You are the trader. Decide BUY, SELL or HOLD and say why."),
                HumanMessage(f"Ticker: {state['ticker']}\n\n{reports}"),
            ]
        )
        return {"decision": str(reply.content)}

    b = StateGraph(DeskState)
    b.add_node("load_data", load_data)
    for kind in ANALYST_FOCUS:
        b.add_node(kind, analyst(kind))
        b.add_edge(kind, "trader")
    b.add_node("trader", trader)
    b.add_edge(START, "load_data")
    b.add_conditional_edges("load_data", route_analysts, list(ANALYST_FOCUS))
    b.add_edge("trader", END)
    return b


# ======================================= 3. report writers with a get_model() factory
class ReportState(TypedDict, total=False):
    topic: str
    sections: list[str]
    memo: str
    content: str
    introduction: str
    conclusion: str
    final_report: str


def report_writers_app(model: BaseChatModel) -> Builder:
    """The research assistant's report stage (LangChain Academy): interview memos are
    gathered, then the report body, the introduction and the conclusion are written in
    parallel and stitched together. Every node gets its model from ``get_model()``,
    which builds a new ``CapsuleChatModel`` on each call, as apps with a model factory
    (one per agent, configured at run time) do."""

    def get_model() -> lc.CapsuleChatModel:
        return lc.CapsuleChatModel(model)

    def gather(state: ReportState) -> dict[str, Any]:
        memo = "\n\n".join(f"Memo {i}: {s}" for i, s in enumerate(state["sections"], 1))
        return {"memo": memo}

    def writer(key: str, instructions: str) -> Any:
        def node(state: ReportState) -> dict[str, Any]:
            reply = get_model().invoke(
                [
                    SystemMessage(
                        f"You are a technical writer finishing a report on {state['topic']}. "
                        f"{instructions}"
                    ),
                    HumanMessage(f"The analysts' memos:\n\n{state['memo']}"),
                ]
            )
            return {key: str(reply.content)}

        return node

    def finalize(state: ReportState) -> dict[str, Any]:
        parts = (state["introduction"], state["content"], state["conclusion"])
        return {"final_report": "\n\n".join(parts)}

    b = StateGraph(ReportState)
    b.add_node("gather", gather)
    b.add_node("write_report", writer("content", "Write the body: merge the memos into sections."))
    b.add_node(
        "write_introduction",
        writer("introduction", "Write a 100-word introduction that previews the report."),
    )
    b.add_node(
        "write_conclusion",
        writer("conclusion", "Write a 100-word conclusion that sums up the findings."),
    )
    b.add_node("finalize", finalize)
    b.add_edge(START, "gather")
    for w in ("write_report", "write_introduction", "write_conclusion"):
        b.add_edge("gather", w)
    b.add_edge(["write_report", "write_introduction", "write_conclusion"], "finalize")
    b.add_edge("finalize", END)
    return b


# ================================ 4. evaluator-optimizer with structured graders
class Grade(BaseModel):
    """One grader's verdict on the draft."""

    grade: Literal["pass", "revise"] = Field(description="Does the draft pass this check?")
    feedback: str = Field(description="What to change, if anything.")


GRADERS = {
    "clarity": "Is every sentence clear to a non-specialist reader?",
    "accuracy": "Is every claim supported by the brief?",
    "tone": "Is the tone friendly and free of hype?",
}


class DraftState(TypedDict, total=False):
    brief: str
    draft: str
    iteration: int
    clarity: Grade
    accuracy: Grade
    tone: Grade
    history: Annotated[list[str], operator.add]


def graded_writer_app(model: BaseChatModel, *, max_iterations: int = 3) -> Builder:
    """Evaluator-optimizer (LangGraph docs' workflows tutorial) with a panel of
    structured-output graders: a generator writes a draft, three graders each return a
    ``Grade`` via ``with_structured_output``, and the draft loops back with their
    feedback until every grader passes it or the iteration budget is spent."""
    llm = lc.CapsuleChatModel(model)

    def generator(state: DraftState) -> dict[str, Any]:
        feedback = "\n".join(
            f"- {g}: {state[g].feedback}"  # type: ignore[literal-required]
            for g in GRADERS
            if g in state and state[g].grade == "revise"  # type: ignore[literal-required]
        )
        request = f"Brief:\n{state['brief']}"
        if feedback:
            request += f"\n\nYour previous draft:\n{state['draft']}\n\nFix this:\n{feedback}"
        reply = llm.invoke(
            [
                SystemMessage("Write a 120-word product announcement from the brief."),
                HumanMessage(request),
            ]
        )
        n = state.get("iteration", 0) + 1
        return {"draft": str(reply.content), "iteration": n, "history": [f"draft {n}"]}

    def grader(name: str) -> Any:
        def node(state: DraftState) -> dict[str, Any]:
            judge = llm.with_structured_output(Grade)
            grade = judge.invoke(
                [
                    SystemMessage(f"You grade a product announcement. {GRADERS[name]}"),
                    HumanMessage(f"Brief:\n{state['brief']}\n\nDraft:\n{state['draft']}"),
                ]
            )
            return {name: grade}

        return node

    def collect(state: DraftState) -> dict[str, Any]:
        verdicts = ", ".join(f"{g}={state[g].grade}" for g in GRADERS)  # type: ignore[literal-required]
        return {"history": [verdicts]}

    def route(state: DraftState) -> str:
        passed = all(state[g].grade == "pass" for g in GRADERS)  # type: ignore[literal-required]
        return END if passed or state["iteration"] >= max_iterations else "generator"

    b = StateGraph(DraftState)
    b.add_node("generator", generator)
    for g in GRADERS:
        b.add_node(g, grader(g))
        b.add_edge("generator", g)
    b.add_node("collect", collect)
    b.add_edge(list(GRADERS), "collect")
    b.add_edge(START, "generator")
    b.add_conditional_edges("collect", route, ["generator", END])
    return b


# ================================ 5. MessagesState chat with parallel reviewers
REVIEWERS = {
    "fact_checker": "Check every factual claim in the assistant's last answer.",
    "style_reviewer": "Check that the last answer is plain, short and well ordered.",
    "safety_reviewer": "Check the last answer for unsafe or non-compliant advice.",
}


def reviewed_chat_app(model: BaseChatModel) -> Builder:
    """A ``MessagesState`` chat bot with a review panel (the LangChain Academy chat and
    multi-agent reflection shapes): the assistant answers from the conversation, three
    reviewers read ``state["messages"]`` in parallel and append their notes as named
    ``AIMessage``s through ``add_messages``, then the assistant revises its answer."""
    llm = lc.CapsuleChatModel(model)
    persona = SystemMessage("You are a helpful assistant for a small online bank.")

    def assistant(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke([persona, *state["messages"]])]}

    def reviewer(name: str) -> Any:
        def node(state: MessagesState) -> dict[str, Any]:
            reply = llm.invoke(
                [
                    SystemMessage(f"You review a support conversation. {REVIEWERS[name]}"),
                    *state["messages"],
                ]
            )
            return {"messages": [AIMessage(content=reply.content, name=name)]}

        return node

    def revise(state: MessagesState) -> dict[str, Any]:
        notes: list[AnyMessage] = [
            HumanMessage(f"Reviewer {m.name} says: {m.content}")
            for m in state["messages"]
            if isinstance(m, AIMessage) and m.name in REVIEWERS
        ]
        reply = llm.invoke(
            [
                persona,
                *[m for m in state["messages"] if getattr(m, "name", None) not in REVIEWERS],
                *notes,
                HumanMessage("Rewrite your last answer taking the reviews into account."),
            ]
        )
        return {"messages": [reply]}

    b = StateGraph(MessagesState)
    b.add_node("assistant", assistant)
    for r in REVIEWERS:
        b.add_node(r, reviewer(r))
        b.add_edge("assistant", r)
    b.add_node("revise", revise)
    b.add_edge(START, "assistant")
    b.add_edge(list(REVIEWERS), "revise")
    b.add_edge("revise", END)
    return b


# ======================== 6. a compiled subgraph next to sibling LLM nodes
class DiligenceState(TypedDict, total=False):
    company: str
    filing: str
    queries: str
    research: str
    risk_view: str
    market_view: str
    memo: str


class ResearchState(TypedDict, total=False):
    company: str
    filing: str
    queries: str
    research: str


def diligence_app(model: BaseChatModel) -> Builder:
    """Research assistant with a subgraph (LangChain Academy sub-graphs and research
    assistant): a compiled ``research`` subgraph (write search queries, then summarize
    what they find) runs as one node beside two analyst nodes that read the same
    filing; an investment memo joins the three."""
    llm = lc.CapsuleChatModel(model)

    def write_queries(state: ResearchState) -> dict[str, Any]:
        reply = llm.invoke(
            [
                SystemMessage("Write three web search queries to check the filing's claims."),
                HumanMessage(f"Company: {state['company']}\n\nFiling:\n\n{state['filing']}"),
            ]
        )
        return {"queries": str(reply.content)}

    def summarize(state: ResearchState) -> dict[str, Any]:
        reply = llm.invoke(
            [
                SystemMessage("Summarize what these searches would establish, in five bullets."),
                HumanMessage(f"Company: {state['company']}\n\nQueries:\n{state['queries']}"),
            ]
        )
        return {"research": str(reply.content)}

    sub = StateGraph(ResearchState)
    sub.add_node("write_queries", write_queries)
    sub.add_node("summarize", summarize)
    sub.add_edge(START, "write_queries")
    sub.add_edge("write_queries", "summarize")
    sub.add_edge("summarize", END)
    research = sub.compile()

    def analyst(key: str, angle: str) -> Any:
        def node(state: DiligenceState) -> dict[str, Any]:
            reply = llm.invoke(
                [
                    SystemMessage(f"You are a due-diligence analyst. Assess the {angle}."),
                    HumanMessage(f"Company: {state['company']}\n\nFiling:\n\n{state['filing']}"),
                ]
            )
            return {key: str(reply.content)}

        return node

    def write_memo(state: DiligenceState) -> dict[str, Any]:
        reply = llm.invoke(
            [
                SystemMessage("Write a one-paragraph investment memo."),
                HumanMessage(
                    f"Research:\n{state['research']}\n\nRisks:\n{state['risk_view']}\n\n"
                    f"Market:\n{state['market_view']}"
                ),
            ]
        )
        return {"memo": str(reply.content)}

    b = StateGraph(DiligenceState)
    b.add_node("research", research)
    b.add_node("risk_analyst", analyst("risk_view", "main risks and their likelihood"))
    b.add_node("market_analyst", analyst("market_view", "market position and competitors"))
    b.add_node("write_memo", write_memo)
    for n in ("research", "risk_analyst", "market_analyst"):
        b.add_edge(START, n)
    b.add_edge(["research", "risk_analyst", "market_analyst"], "write_memo")
    b.add_edge("write_memo", END)
    return b


# =================================== 7. parallelization: joke, story, poem
class CreativeState(TypedDict, total=False):
    topic: str
    joke: str
    story: str
    poem: str
    combined_output: str


def parallel_creative_app(model: BaseChatModel) -> Builder:
    """Parallelization (LangGraph docs' workflows tutorial): three LLM calls on one topic
    (a joke, a story, a poem) run in parallel; a plain aggregator joins them."""
    llm = lc.CapsuleChatModel(model)

    def make(key: str, ask: str) -> Any:
        def node(state: CreativeState) -> dict[str, Any]:
            return {key: str(llm.invoke(f"{ask} about {state['topic']}").content)}

        return node

    def aggregator(state: CreativeState) -> dict[str, Any]:
        text = (
            f"Here's a story, joke, and poem about {state['topic']}!\n\n"
            f"STORY:\n{state['story']}\n\nJOKE:\n{state['joke']}\n\nPOEM:\n{state['poem']}"
        )
        return {"combined_output": text}

    b = StateGraph(CreativeState)
    b.add_node("call_joke", make("joke", "Write a joke"))
    b.add_node("call_story", make("story", "Write a short story"))
    b.add_node("call_poem", make("poem", "Write a poem"))
    b.add_node("aggregator", aggregator)
    for n in ("call_joke", "call_story", "call_poem"):
        b.add_edge(START, n)
        b.add_edge(n, "aggregator")
    b.add_edge("aggregator", END)
    return b


# ====================================================== 8. prompt chain
class ChainState(TypedDict, total=False):
    topic: str
    joke: str
    improved_joke: str
    final_joke: str


def prompt_chain_app(model: BaseChatModel) -> Builder:
    """Prompt chaining (LangGraph docs' workflows tutorial): draft a joke, a plain gate
    checks it for a punchline, and failing drafts are improved, then polished: a
    linear chain with nothing to merge."""
    llm = lc.CapsuleChatModel(model)

    def generate_joke(state: ChainState) -> dict[str, Any]:
        return {"joke": str(llm.invoke(f"Write a short joke about {state['topic']}").content)}

    def check_punchline(state: ChainState) -> str:
        return END if ("?" in state["joke"] or "!" in state["joke"]) else "improve_joke"

    def improve_joke(state: ChainState) -> dict[str, Any]:
        reply = llm.invoke(f"Make this joke funnier with wordplay:\n{state['joke']}")
        return {"improved_joke": str(reply.content)}

    def polish_joke(state: ChainState) -> dict[str, Any]:
        reply = llm.invoke(f"Add a surprising twist to this joke:\n{state['improved_joke']}")
        return {"final_joke": str(reply.content)}

    b = StateGraph(ChainState)
    b.add_node("generate_joke", generate_joke)
    b.add_node("improve_joke", improve_joke)
    b.add_node("polish_joke", polish_joke)
    b.add_edge(START, "generate_joke")
    b.add_conditional_edges("generate_joke", check_punchline, ["improve_joke", END])
    b.add_edge("improve_joke", "polish_joke")
    b.add_edge("polish_joke", END)
    return b


# ============================ 9. interviews by Send to a subgraph, then three writers
class Analyst(BaseModel):
    name: str = Field(description="The analyst's name.")
    focus: str = Field(description="What the analyst asks about.")


class Perspectives(BaseModel):
    analysts: list[Analyst] = Field(description="One analyst per perspective.")


class InterviewState(MessagesState, total=False):
    analyst: Analyst
    turns: int
    sections: list[str]


class ResearchReportState(TypedDict, total=False):
    topic: str
    perspectives: list[str]
    analysts: list[Analyst]
    sections: Annotated[list[str], operator.add]
    introduction: str
    body: str
    conclusion: str
    report: str


INTERVIEW_TURNS = 2
"""Questions each analyst asks before writing up."""


def interview_report_app(model: BaseChatModel) -> Builder:
    """Research assistant with interviews (LangChain Academy's research-assistant
    module): a structured-output call names one analyst per perspective; ``Send``
    starts one interview per analyst in a compiled subgraph on ``MessagesState`` (the
    analyst asks, an expert answers, looped by a conditional edge, then a write-up);
    the ``operator.add`` list of sections feeds three writers that run in parallel
    (introduction, body, conclusion), and a plain node assembles the report. Prompts are
    built per call with f-strings, as the tutorial's nodes do."""
    llm = lc.CapsuleChatModel(model)
    planner = llm.with_structured_output(Perspectives)

    def create_analysts(state: ResearchReportState) -> dict[str, Any]:
        wanted = "\n".join(f"- {p}" for p in state["perspectives"])
        plan = planner.invoke(
            [
                SystemMessage("Create one analyst persona per perspective below."),
                HumanMessage(f"Research topic: {state['topic']}\nPerspectives:\n{wanted}"),
            ]
        )
        return {"analysts": plan.analysts}

    def ask_question(state: InterviewState) -> dict[str, Any]:
        analyst = state["analyst"]
        system = SystemMessage(
            f"You are {analyst.name}, an analyst interviewing an expert about {analyst.focus}. "
            "Ask one specific question at a time; when you have enough, say thank you."
        )
        reply = llm.invoke([system, *state["messages"]])
        return {"messages": [reply], "turns": state.get("turns", 0) + 1}

    def answer_question(state: InterviewState) -> dict[str, Any]:
        reply = llm.invoke(
            [
                SystemMessage(
                    "You are an expert being interviewed. Answer the last question in three "
                    "sentences, only from what is known about the topic."
                ),
                *state["messages"],
            ]
        )
        return {"messages": [AIMessage(str(reply.content), name="expert")]}

    def route_turns(state: InterviewState) -> str:
        return "write_up" if state.get("turns", 0) >= INTERVIEW_TURNS else "ask_question"

    def write_up(state: InterviewState) -> dict[str, Any]:
        transcript = "\n".join(f"{m.name or m.type}: {m.content}" for m in state["messages"])
        reply = llm.invoke(
            [
                SystemMessage(
                    f"Write a report section for {state['analyst'].name}'s interview: a "
                    "markdown heading, then one paragraph of findings."
                ),
                HumanMessage(transcript),
            ]
        )
        return {"sections": [str(reply.content)]}

    sub = StateGraph(InterviewState)
    sub.add_node("ask_question", ask_question)
    sub.add_node("answer_question", answer_question)
    sub.add_node("write_up", write_up)
    sub.add_edge(START, "ask_question")
    sub.add_edge("ask_question", "answer_question")
    sub.add_conditional_edges("answer_question", route_turns, ["ask_question", "write_up"])
    sub.add_edge("write_up", END)
    interview = sub.compile()

    def start_interviews(state: ResearchReportState) -> list[Send]:
        opening = f"So you said you were researching {state['topic']}?"
        return [
            Send("conduct_interview", {"analyst": a, "messages": [HumanMessage(opening)]})
            for a in state["analysts"]
        ]

    def writer(key: str, ask: str) -> Any:
        def node(state: ResearchReportState) -> dict[str, Any]:
            memos = "\n\n".join(state["sections"])
            reply = llm.invoke(
                [
                    SystemMessage(f"You are a technical writer. {ask}"),
                    HumanMessage(f"Topic: {state['topic']}\n\nAnalyst memos:\n\n{memos}"),
                ]
            )
            return {key: str(reply.content)}

        return node

    def assemble(state: ResearchReportState) -> dict[str, Any]:
        parts = (state["introduction"], state["body"], state["conclusion"])
        return {"report": "\n\n---\n\n".join(parts)}

    writers = {
        "write_introduction": writer("introduction", "Write a 60-word introduction."),
        "write_body": writer("body", "Merge the memos into one body without repetition."),
        "write_conclusion": writer("conclusion", "Write a 60-word conclusion."),
    }
    b = StateGraph(ResearchReportState)
    b.add_node("create_analysts", create_analysts)
    b.add_node("conduct_interview", interview)
    for name, fn in writers.items():
        b.add_node(name, fn)
        b.add_edge("conduct_interview", name)
    b.add_node("assemble", assemble)
    b.add_edge(START, "create_analysts")
    b.add_conditional_edges("create_analysts", start_interviews, ["conduct_interview"])
    b.add_edge(list(writers), "assemble")
    b.add_edge("assemble", END)
    return b


def _analysts_from_perspectives(text: str) -> dict[str, Any]:
    """The scripted planner: one analyst per perspective line of the request."""
    return {
        "analysts": [
            {"name": f"Analyst {i}", "focus": item} for i, item in enumerate(_bullets(text), 1)
        ]
    }


# ================== 10. async map-reduce summaries with LCEL chains and a collapse loop
class SummaryState(TypedDict, total=False):
    contents: list[str]
    summaries: Annotated[list[str], operator.add]
    collapsed: list[str]
    final_summary: str


class DocState(TypedDict):
    content: str


SUMMARY_WORD_LIMIT = 90
"""Words of summaries the reduce step takes at once; above it they are collapsed first."""


def map_reduce_summary_app(model: BaseChatModel) -> Builder:
    """Map-reduce summarization (LangChain's summarization tutorial): ``async`` nodes
    that await LCEL chains (``ChatPromptTemplate | model | StrOutputParser()``), a
    ``Send`` per document to one map node, a conditional loop that collapses the
    summaries in batches while they exceed a length limit, then one reduce call. Every
    node is async only, so the app runs with ``ainvoke`` (or ``astream``)."""
    llm = lc.CapsuleChatModel(model)
    map_chain = (
        ChatPromptTemplate.from_messages(
            [
                ("system", "You summarise documents for a news digest in two sentences."),
                ("human", "Summarise this document:\n\n{context}"),
            ]
        )
        | llm
        | StrOutputParser()
    )
    reduce_chain = (
        ChatPromptTemplate.from_messages(
            [("human", "Combine these summaries into one digest of the main themes:\n\n{docs}")]
        )
        | llm
        | StrOutputParser()
    )

    def words(texts: list[str]) -> int:
        return sum(len(t.split()) for t in texts)

    async def generate_summary(state: DocState) -> dict[str, Any]:
        summary = await map_chain.ainvoke({"context": state["content"]})
        return {"summaries": [summary]}

    def map_summaries(state: SummaryState) -> list[Send]:
        return [Send("generate_summary", {"content": c}) for c in state["contents"]]

    async def collect_summaries(state: SummaryState) -> dict[str, Any]:
        return {"collapsed": list(state["summaries"])}

    async def collapse_summaries(state: SummaryState) -> dict[str, Any]:
        batches: list[list[str]] = [[]]
        for text in state["collapsed"]:
            if batches[-1] and words([*batches[-1], text]) > SUMMARY_WORD_LIMIT:
                batches.append([])
            batches[-1].append(text)
        merged = [await reduce_chain.ainvoke({"docs": "\n\n".join(b)}) for b in batches]
        return {"collapsed": merged}

    def should_collapse(state: SummaryState) -> str:
        too_long = words(state["collapsed"]) > SUMMARY_WORD_LIMIT
        return "collapse_summaries" if too_long else "generate_final_summary"

    async def generate_final_summary(state: SummaryState) -> dict[str, Any]:
        final = await reduce_chain.ainvoke({"docs": "\n\n".join(state["collapsed"])})
        return {"final_summary": final}

    b = StateGraph(SummaryState)
    b.add_node("generate_summary", generate_summary)
    b.add_node("collect_summaries", collect_summaries)
    b.add_node("collapse_summaries", collapse_summaries)
    b.add_node("generate_final_summary", generate_final_summary)
    b.add_conditional_edges(START, map_summaries, ["generate_summary"])
    b.add_edge("generate_summary", "collect_summaries")
    b.add_conditional_edges(
        "collect_summaries", should_collapse, ["collapse_summaries", "generate_final_summary"]
    )
    b.add_conditional_edges(
        "collapse_summaries", should_collapse, ["collapse_summaries", "generate_final_summary"]
    )
    b.add_edge("generate_final_summary", END)
    return b


NEWS = (
    "The city council approved a bus lane on the harbour road after a two-year trial.",
    "A bakery chain will close four shops and move its ovens to one central kitchen.",
    "Rain in March was double the average and two rivers flooded farmland upstream.",
    "The university opened a battery lab funded by a grant of 12 million euros.",
    "Ferry fares rise by 8 percent in May; season tickets keep their price.",
    "A local startup raised 3 million euros to build sensors for leaking pipes.",
)


# ============================================= 11. parallel tool-using analysts
PRICES = {"NVLX": [101.2, 103.9, 99.4, 107.5], "ORBT": [12.1, 11.8, 12.6, 13.0]}
HEADLINES = {
    "NVLX": ["NVLX wins a datacentre order from a cloud provider.", "A rival cuts prices."],
    "ORBT": ["ORBT delays its launch to the third quarter."],
}


@tool
def get_prices(ticker: str) -> str:
    """Closing prices of the last four sessions for ``ticker``."""
    base = 10 + sum(map(ord, ticker)) % 90  # any other ticker: a series of its own
    prices = PRICES.get(ticker) or [base + 1.5 * k for k in range(4)]
    return ", ".join(f"{p:.2f}" for p in prices)


@tool
def get_headlines(ticker: str) -> str:
    """This week's news headlines about ``ticker``."""
    return "\n".join(HEADLINES.get(ticker, [f"No major news on {ticker} this week."]))


ANALYST_TOOLS = {"market": [get_prices], "news": [get_headlines]}
"""Each tool-using analyst's tools (its own, bound to the model in its node)."""


class AnalystDeskState(TypedDict, total=False):
    ticker: str
    market_messages: Annotated[list[AnyMessage], add_messages]
    news_messages: Annotated[list[AnyMessage], add_messages]
    market_report: str
    news_report: str
    risk_report: str
    compliance_report: str
    decision: str


def tool_analysts_app(model: BaseChatModel) -> Builder:
    """Parallel tool-using analysts (the TradingAgents analyst team made parallel, and
    the research agents of multi-agent research apps): each analyst keeps its own
    message list, calls ``llm.bind_tools(tools)`` in its node and loops through its own
    ``ToolNode`` until it answers without a tool call, routed by ``tools_condition``;
    beside them two tool-free reviewers read the ticker; a join waits for all four and
    a manager decides. Tool-bound calls are not merged (capsules cannot know whether a
    reply will be a tool call), so compound merges the two reviewers only."""
    llm = lc.CapsuleChatModel(model)

    def analyst(name: str) -> Callable[[AnalystDeskState], dict[str, Any]]:
        key = f"{name}_messages"

        def node(state: AnalystDeskState) -> dict[str, Any]:
            history = state.get(key) or []  # type: ignore[misc]
            if not history:
                history = [HumanMessage(f"Analyse {state['ticker']} for a trade today.")]
            system = SystemMessage(
                f"You are the {name} analyst of a trading desk. Use your tools to fetch "
                "data before you answer, then write a three-line report."
            )
            reply = llm.bind_tools(ANALYST_TOOLS[name]).invoke([system, *history])
            return {key: [*history[len(state.get(key) or []) :], reply]}  # type: ignore[misc]

        return node

    def report(name: str) -> Callable[[AnalystDeskState], dict[str, Any]]:
        def node(state: AnalystDeskState) -> dict[str, Any]:
            last = state[f"{name}_messages"][-1]  # type: ignore[literal-required]
            return {f"{name}_report": str(last.content)}

        return node

    def reviewer(name: str, focus: str) -> Callable[[AnalystDeskState], dict[str, Any]]:
        def node(state: AnalystDeskState) -> dict[str, Any]:
            msgs = [
                SystemMessage(f"You are the desk's {name} reviewer. Be brief."),
                HumanMessage(f"Ticker: {state['ticker']}. Note {focus} for a trade today."),
            ]
            return {f"{name}_report": str(llm.invoke(msgs).content)}

        return node

    def manager(state: AnalystDeskState) -> dict[str, Any]:
        reports = "\n\n".join(
            f"{k.removesuffix('_report')}: {state[k]}"  # type: ignore[literal-required]
            for k in ("market_report", "news_report", "risk_report", "compliance_report")
        )
        msgs = [
            SystemMessage("You are the portfolio manager. Decide buy, hold or sell."),
            HumanMessage(f"Reports on {state['ticker']}:\n\n{reports}"),
        ]
        return {"decision": str(llm.invoke(msgs).content)}

    b = StateGraph(AnalystDeskState)
    for name, tools in ANALYST_TOOLS.items():
        b.add_node(f"{name}_analyst", analyst(name))
        b.add_node(f"{name}_tools", ToolNode(tools, messages_key=f"{name}_messages"))
        b.add_node(f"{name}_done", report(name))
        b.add_edge(START, f"{name}_analyst")
        b.add_conditional_edges(
            f"{name}_analyst",
            partial(tools_condition, messages_key=f"{name}_messages"),
            {"tools": f"{name}_tools", "__end__": f"{name}_done"},
        )
        b.add_edge(f"{name}_tools", f"{name}_analyst")
    for name, focus in (("risk", "the main risks"), ("compliance", "restrictions")):
        b.add_node(name, reviewer(name, focus))
        b.add_edge(START, name)
    b.add_node("manager", manager)
    b.add_edge(["market_done", "news_done", "risk", "compliance"], "manager")
    b.add_edge("manager", END)
    return b


def _analyst_tool_calls(messages: list[BaseMessage]) -> list[dict[str, Any]] | None:
    """The scripted analysts: call their tool once for the ticker, then answer."""
    if any(isinstance(m, ToolMessage) for m in messages):
        return None
    system = str(messages[0].content) if messages else ""
    found = re.search(r"You are the (\w+) analyst", system)
    ticker = re.search(r"Analyse (\w+)", str(messages[-1].content))
    if not found or not ticker or found.group(1) not in ANALYST_TOOLS:
        return None
    (tool_,) = ANALYST_TOOLS[found.group(1)]
    return [{"name": tool_.name, "args": {"ticker": ticker.group(1)}}]


# ============================================================ the registry
@dataclass(frozen=True)
class FieldApp:
    """One field app: how to build it, the pattern, inputs, and what capsules does."""

    name: str
    pattern: str
    build: Callable[[BaseChatModel], Builder]
    inputs: tuple[Mapping[str, Any], ...]
    merges: bool
    """True when compound must make fewer LLM calls than the original on every input
    (sibling nodes make text or structured calls to one model)."""
    messages: bool = False
    """State holds LangChain messages (ids are random per run: compared without them)."""
    asynchronous: bool = False
    """Its nodes are async only: it runs with ``ainvoke``, and ``invoke`` refuses it."""


def _chat(*turns: str) -> dict[str, Any]:
    msgs: list[AnyMessage] = []
    for i, t in enumerate(turns):
        msgs.append(HumanMessage(t) if i % 2 == 0 else AIMessage(t))
    return {"messages": msgs}


FILING_A = (
    "Brightwater Foods makes plant-based dairy in Ireland and sells in six EU countries.\n\n"
    "Revenue was EUR 88 million in 2025, up 21 percent; the company lost EUR 4 million.\n\n"
    "Two supermarket chains account for 55 percent of sales. Oat prices rose 30 percent."
)
FILING_B = (
    "Keelson Marine builds hybrid tugboats in Rotterdam.\n\n"
    "Its order book covers three years of output; one yard fire in 2024 halted work for "
    "two months.\n\nA rival in Korea offers similar tugs at a 15 percent lower price."
)

FIELD_APPS: tuple[FieldApp, ...] = (
    FieldApp(
        "orchestrator_worker",
        "Send map-reduce to one node",
        orchestrator_worker_app,
        (
            {"topic": "LLM scaling laws", "outline": ["history", "compute", "data", "limits"]},
            {"topic": "heat pumps", "outline": ["physics", "costs"]},
            {"topic": "tidal power", "outline": [f"site {k}" for k in range(1, 11)]},
        ),
        merges=True,
    ),
    FieldApp(
        "trading_desk",
        "router picks parallel analysts",
        trading_desk_app,
        (
            {
                "ticker": "NVLX",
                "trade_date": "2026-03-02",
                "selected_analysts": ["market", "sentiment", "news", "fundamentals"],
            },
            {
                "ticker": "ORBT",
                "trade_date": "2026-03-09",
                "selected_analysts": ["news", "fundamentals"],
            },
        ),
        merges=True,
    ),
    FieldApp(
        "report_writers",
        "get_model() factory per node",
        report_writers_app,
        (
            {
                "topic": "grid batteries",
                "sections": [
                    "Lithium iron phosphate dominates new grid storage projects.",
                    "Sodium-ion cells are cheaper but less dense.",
                ],
            },
            {"topic": "urban cycling", "sections": ["Protected lanes raise ridership."]},
        ),
        merges=True,
    ),
    FieldApp(
        "graded_writer",
        "structured-output graders in a loop",
        graded_writer_app,
        (
            {"brief": "A budgeting app adds shared wallets for families; free until June."},
            {"brief": "Our e-bike gets a 90 km battery and a theft-tracking chip."},
            {"brief": "The museum opens late on Fridays with guided night tours."},
        ),
        merges=True,
    ),
    FieldApp(
        "reviewed_chat",
        "MessagesState, parallel reviewers",
        reviewed_chat_app,
        (
            _chat("Can I raise my card limit from the app?"),
            _chat(
                "How do I send money abroad?",
                "Use the Transfers tab and pick International.",
                "Is there a fee for euros?",
            ),
        ),
        merges=True,
        messages=True,
    ),
    FieldApp(
        "diligence",
        "compiled subgraph beside LLM siblings",
        diligence_app,
        (
            {"company": "Brightwater Foods", "filing": FILING_A},
            {"company": "Keelson Marine", "filing": FILING_B},
        ),
        merges=True,
    ),
    FieldApp(
        "parallel_creative",
        "parallelization: joke, story, poem",
        parallel_creative_app,
        ({"topic": "cats"}, {"topic": "lighthouses"}),
        merges=True,
    ),
    FieldApp(
        "interview_report",
        "Send to an interview subgraph, then parallel writers",
        interview_report_app,
        (
            {"topic": "home batteries", "perspectives": ["installers", "grid operators"]},
            {"topic": "school meals", "perspectives": ["nutrition", "cost", "farm supply"]},
        ),
        merges=True,
        messages=False,
    ),
    FieldApp(
        "map_reduce_summary",
        "async LCEL chains, Send map, collapse loop",
        map_reduce_summary_app,
        ({"contents": list(NEWS)}, {"contents": list(NEWS[:2])}),
        merges=True,
        asynchronous=True,
    ),
    FieldApp(
        "tool_analysts",
        "parallel ToolNode loops beside tool-free reviewers",
        tool_analysts_app,
        ({"ticker": "NVLX"}, {"ticker": "ORBT"}),
        merges=True,
        messages=True,
    ),
    FieldApp(
        "prompt_chain",
        "prompt chain (linear)",
        prompt_chain_app,
        ({"topic": "penguins"}, {"topic": "tax returns"}),
        merges=False,
    ),
)


def scripted_model() -> ScriptedChatModel:
    """The deterministic model every field app runs on in tests and the benchmark; the
    orchestrator's plan has one section per outline line."""
    return ScriptedChatModel(
        structured_answers={
            "ReportPlan": _plan_from_outline,
            "Perspectives": _analysts_from_perspectives,
        },
        tool_calls_for=_analyst_tool_calls,
    )


# ============================================================ measuring a run
COMPOUND: Any = {"configurable": {"capsules": {"mode": "compound"}}}
FINE: Any = {"configurable": {"capsules": {"mode": "fine"}}}


@dataclass
class ArmRun:
    state: dict[str, Any]
    calls: int
    input_tokens: int
    merged_calls: int


def run_arm(graph: Any, inputs: Mapping[str, Any], config: Any = None) -> ArmRun:
    """Invoke ``graph`` once, counting its real LLM calls and input tokens."""
    with lc.track_usage() as usage:
        state = graph.invoke(dict(inputs), config)
    t = usage.totals()
    return ArmRun(state, int(t["calls"]), int(t["input_tokens"]), int(t["merged_calls"]))


async def arun_arm(graph: Any, inputs: Mapping[str, Any], config: Any = None) -> ArmRun:
    """:func:`run_arm` through ``graph.ainvoke`` (the async path)."""
    with lc.track_usage() as usage:
        state = await graph.ainvoke(dict(inputs), config)
    t = usage.totals()
    return ArmRun(state, int(t["calls"]), int(t["input_tokens"]), int(t["merged_calls"]))


def run_app_arm(app: FieldApp, graph: Any, inputs: Mapping[str, Any], config: Any = None) -> ArmRun:
    """:func:`run_arm`, or :func:`arun_arm` in a fresh event loop for an app whose nodes
    are async only."""
    if app.asynchronous:
        return asyncio.run(arun_arm(graph, inputs, config))
    return run_arm(graph, inputs, config)


def comparable(value: Any, *, content_only: bool = False) -> Any:
    """``value`` with each message's random ``id`` and its tool-call ids dropped (the
    scripted model numbers tool calls in the order parallel branches reach it); with
    ``content_only``, messages reduced to (type, name, content)."""
    if isinstance(value, Mapping):
        return {k: comparable(v, content_only=content_only) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v, content_only=content_only) for v in value]
    if isinstance(value, AIMessage | HumanMessage | SystemMessage | ToolMessage):
        if content_only:
            return (value.type, value.name, value.content)
        update: dict[str, Any] = {"id": None}
        if isinstance(value, ToolMessage):
            update["tool_call_id"] = ""
        elif isinstance(value, AIMessage):
            update["tool_calls"] = [{**c, "id": None} for c in value.tool_calls]
        return value.model_copy(update=update)
    return value
