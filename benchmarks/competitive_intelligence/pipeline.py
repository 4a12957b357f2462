"""The 14-agent competitive-intelligence pipeline, written as LangGraph apps.

Three apps, one set of instructions:

* :func:`build_lg14`: the hand-written LangGraph app a careful engineer writes. It has
  14 plain nodes: scoping, then 12 extractors (4 lenses x entities/claims/signals) in
  parallel, then the briefer. Each node calls the chat model it is given.
* :func:`build_lg6`: its hand-merged 6-node variant. Scoping, then 4 arm nodes that each
  ask for the three extractions in one delimited call and parse them with a regex,
  then the briefer.
* The capsules arms run :func:`langgraph_capsules.capsulize` over the very same 14-node
  builder, with the four arms as groups (:data:`ARM_GROUPS`).

Outputs land in the same state keys in every app (``scope``, ``<lens>_<kind>``,
``brief``), so one judge scores them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

from benchmarks.competitive_intelligence.dataset import KINDS, LENSES, Company

__all__ = [
    "ARM_GROUPS",
    "BUDGETS",
    "KIND_INSTRUCTIONS",
    "LENS_TITLES",
    "MARKER_TOKENS",
    "CIState",
    "arm_budget",
    "build_declared",
    "build_lg6",
    "build_lg14",
    "extractor_key",
    "initial_state",
]

LENS_TITLES = {
    "competitive": "competitive landscape",
    "product": "product portfolio",
    "financial": "financial signals",
    "risk": "risk and regulation",
}

SCOPING_INSTRUCTIONS = (
    "You are a research analyst. From the company overview, write a frame of two or three "
    "sentences: the company's name, its sector, its headquarters city, its founding year "
    "and a one-line description of what it does. Use only facts from the overview."
)

KIND_INSTRUCTIONS = {
    "entities": (
        "You extract stated facts. List every fact the source states: organisations, "
        "products, people with their roles, places, dates, amounts, percentages and "
        "counts. Write a numbered list of at most 15 lines, one terse fact per line, copying "
        "names and numbers "
        "exactly as written. Do not infer or add anything."
    ),
    "claims": (
        "You extract qualitative claims. List the positioning statements the source makes "
        "or reports: who leads or lags, how customers or analysts judge the company, and "
        "comparisons with rivals. Write a numbered list of at most 8 lines, one claim per "
        "line, paraphrased "
        "and naming who holds the view. Do not invent claims."
    ),
    "signals": (
        "You extract forward-looking signals. List the indicators of what may happen next: "
        "plans, launches, hiring, expansion or retrenchment, risks, threats, regulation "
        "and opportunities. Write a numbered list of at most 8 lines, one signal per line, "
        "and end each line "
        "with (explicit) if the source states it or (implied) if you infer it."
    ),
}

BRIEFER_INSTRUCTIONS = (
    "You are a senior analyst writing a one-page competitive-intelligence brief from the "
    "extracted findings you are given. Use only facts from them and keep names and "
    "numbers exact. Structure: an 'Executive summary' of three or four sentences; one "
    "paragraph per lens, each starting with its title (Competitive landscape, Product "
    "portfolio, Financial signals, Risk and regulation); then 'Key takeaways' with "
    "exactly three bullet points."
)

BUDGETS = {"scoping": 256, "extractor": 512, "briefer": 1024}
"""``max_tokens`` per call kind, sized so per-agent calls finish on their own on the
1.5B model (``finish_reason="stop"``, not ``"length"``). At 128 the extractors were cut
mid-list and the signals extractor, which copies facts in source order, never reached
the outlook paragraph where the gold signals sit; at 384 one extractor (risk claims,
which copied its source nearly whole: 395 tokens) was still cut. At these budgets the
LG 14-node arm on the 1.5B model (solvarra, one run) ended 0 of 14 calls with "length":
scoping 132 of 192 tokens, extractors 23-477 of 512, briefer 696 of 1024. Over the
four-company study (docs/results/ci-study-1.5b) 6 of its 112 calls were still cut (5.4%):
solvarra's briefer, veridane's scoping and corvanta's product-claims extractor, each in
both runs. Veridane's scoping was not a runaway: given 512 it stops on its own at 203
tokens (every other company's at <= 141), so scoping has 256 since (2026-12-03; that
study and the main job of that day ran at 192, as their ``meta.budgets`` say)."""

MARKER_TOKENS = 16
"""Output room per marker line of a merged reply: the library's merged call gets the
members' budgets plus this per marker, and so does the hand-merged arm call."""


def arm_budget() -> int:
    """``max_tokens`` of a hand-merged arm call: the same allowance as the library's merged
    call of the arm's three extractors (3 x extractor + 16 per marker line)."""
    return len(KINDS) * (BUDGETS["extractor"] + MARKER_TOKENS)


ARM_GROUPS = {lens: [f"{lens}_{kind}" for kind in KINDS] for lens in LENSES}
"""The capsule groups: one per lens arm, three extractors each."""


class CIState(TypedDict, total=False):
    """State of every app: inputs, then each agent's output key."""

    company: str
    overview: str
    bundle_competitive: str
    bundle_product: str
    bundle_financial: str
    bundle_risk: str
    scope: str
    competitive_entities: str
    competitive_claims: str
    competitive_signals: str
    product_entities: str
    product_claims: str
    product_signals: str
    financial_entities: str
    financial_claims: str
    financial_signals: str
    risk_entities: str
    risk_claims: str
    risk_signals: str
    brief: str


def extractor_key(lens: str, kind: str) -> str:
    """State key (and node name) of one extractor."""
    return f"{lens}_{kind}"


def initial_state(company: Company) -> CIState:
    """The inputs of one run for ``company``."""
    state: dict[str, Any] = {"company": company["name"], "overview": company["overview"]}
    for lens in LENSES:
        state[f"bundle_{lens}"] = company["lenses"][lens]["bundle"]
    return state  # type: ignore[return-value]


def _text(message: Any) -> str:
    content = message.content
    return content if isinstance(content, str) else str(content)


def _source_block(state: CIState, lens: str) -> str:
    title = LENS_TITLES[lens].capitalize()
    bundle = state[f"bundle_{lens}"]  # type: ignore[literal-required]
    return f"Company frame:\n{state['scope']}\n\n{title} source:\n\n{bundle}"


def extractor_messages(state: CIState, lens: str, kind: str) -> list[BaseMessage]:
    """The prompt of one extractor (shared by the 14-node app and the declared agents)."""
    task = f"List the {kind} in the {LENS_TITLES[lens]} source above."
    return [
        SystemMessage(KIND_INSTRUCTIONS[kind]),
        HumanMessage(f"{_source_block(state, lens)}\n\n{task}"),
    ]


def briefer_messages(state: CIState) -> list[BaseMessage]:
    """The briefer's prompt: the frame plus all twelve extractor outputs, labelled."""
    blocks = [f"Company frame:\n{state['scope']}"]
    for lens in LENSES:
        for kind in KINDS:
            key = extractor_key(lens, kind)
            label = f"{LENS_TITLES[lens].capitalize()} - {kind}"
            blocks.append(f"{label}:\n{state.get(key, '')}")  # type: ignore[misc]
    blocks.append("Write the brief.")
    return [SystemMessage(BRIEFER_INSTRUCTIONS), HumanMessage("\n\n".join(blocks))]


def _scoping(llm: Any) -> Callable[[CIState], dict[str, Any]]:
    def scoping(state: CIState) -> dict[str, Any]:
        msgs = [SystemMessage(SCOPING_INSTRUCTIONS), HumanMessage(state["overview"])]
        return {"scope": _text(llm.bind(max_tokens=BUDGETS["scoping"]).invoke(msgs))}

    return scoping


def _briefer(llm: Any) -> Callable[[CIState], dict[str, Any]]:
    def briefer(state: CIState) -> dict[str, Any]:
        reply = llm.bind(max_tokens=BUDGETS["briefer"]).invoke(briefer_messages(state))
        return {"brief": _text(reply)}

    return briefer


def build_lg14(llm: BaseChatModel) -> StateGraph[Any, Any, Any, Any]:
    """The hand-written 14-node LangGraph app (an uncompiled builder)."""

    def extractor(lens: str, kind: str) -> Callable[[CIState], dict[str, Any]]:
        key = extractor_key(lens, kind)

        def node(state: CIState) -> dict[str, Any]:
            reply = llm.bind(max_tokens=BUDGETS["extractor"]).invoke(
                extractor_messages(state, lens, kind)
            )
            return {key: _text(reply)}

        node.__name__ = key
        return node

    b = StateGraph(CIState)
    b.add_node("scoping", _scoping(llm))
    b.add_node("briefer", _briefer(llm))
    b.add_edge(START, "scoping")
    keys = []
    for lens in LENSES:
        for kind in KINDS:
            key = extractor_key(lens, kind)
            keys.append(key)
            b.add_node(key, extractor(lens, kind))
            b.add_edge("scoping", key)
    b.add_edge(keys, "briefer")
    b.add_edge("briefer", END)
    return b


_ARM_INSTRUCTIONS = (
    "You are a team of three extractors working on one source. Do three independent "
    "extractions and write each under its own marker line, exactly ENTITIES:, CLAIMS: "
    "and SIGNALS:, in that order, starting with the first marker.\n\n"
    "ENTITIES: {entities}\n\nCLAIMS: {claims}\n\nSIGNALS: {signals}"
)
_ARM_SPLIT = re.compile(
    r"^\W*(ENTITIES|CLAIMS|SIGNALS)\W*:?\W*$|^\W*(ENTITIES|CLAIMS|SIGNALS):", re.M
)


def split_arm_reply(text: str) -> dict[str, str]:
    """Split a hand-merged arm reply on its upper-case markers (missing kinds: empty)."""
    marks = [
        (m.start(), m.end(), (m.group(1) or m.group(2)).lower()) for m in _ARM_SPLIT.finditer(text)
    ]
    out = {kind: "" for kind in KINDS}
    for i, (_start, end, kind) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        if not out[kind]:
            out[kind] = text[end:stop].strip()
    return out


def build_lg6(llm: BaseChatModel) -> StateGraph[Any, Any, Any, Any]:
    """The hand-merged 6-node variant: one delimited call per lens arm."""
    system = _ARM_INSTRUCTIONS.format(**KIND_INSTRUCTIONS)

    def arm(lens: str) -> Callable[[CIState], dict[str, Any]]:
        def node(state: CIState) -> dict[str, Any]:
            task = (
                f"Do the three extractions from the {LENS_TITLES[lens]} source above, "
                "under ENTITIES:, CLAIMS: and SIGNALS:."
            )
            msgs = [SystemMessage(system), HumanMessage(f"{_source_block(state, lens)}\n\n{task}")]
            reply = llm.bind(max_tokens=arm_budget()).invoke(msgs)
            parts = split_arm_reply(_text(reply))
            return {extractor_key(lens, kind): parts[kind] for kind in KINDS}

        node.__name__ = f"arm_{lens}"
        return node

    b = StateGraph(CIState)
    b.add_node("scoping", _scoping(llm))
    b.add_node("briefer", _briefer(llm))
    b.add_edge(START, "scoping")
    arms = [f"arm_{lens}" for lens in LENSES]
    for lens, name in zip(LENSES, arms, strict=True):
        b.add_node(name, arm(lens))
        b.add_edge("scoping", name)
    b.add_edge(arms, "briefer")
    b.add_edge("briefer", END)
    return b


def build_declared(llm: BaseChatModel) -> StateGraph[Any, Any, Any, Any]:
    """The same 14-agent pipeline written with declared agents (:func:`lc.agent`): the
    same instructions and budgets, each agent reading only the state keys it declares.
    The three extractors of a lens share their reads (the frame and the lens source), so
    capsulized they send one byte-identical, cache-aligned prefix."""
    import langgraph_capsules as lc

    b = StateGraph(CIState)
    b.add_node(
        lc.agent(
            SCOPING_INSTRUCTIONS,
            reads=["overview"],
            writes="scope",
            llm=llm,
            name="scoping",
            max_tokens=BUDGETS["scoping"],
        )
    )
    keys = []
    for lens in LENSES:
        for kind in KINDS:
            key = extractor_key(lens, kind)
            keys.append(key)
            task = f"List the {kind} in the {LENS_TITLES[lens]} source (bundle_{lens})."
            b.add_node(
                lc.agent(
                    f"{KIND_INSTRUCTIONS[kind]}\n\n{task}",
                    reads=["scope", f"bundle_{lens}"],
                    writes=key,
                    llm=llm,
                    max_tokens=BUDGETS["extractor"],
                )
            )
            b.add_edge("scoping", key)
    b.add_node(
        lc.agent(
            BRIEFER_INSTRUCTIONS,
            reads=["scope", *keys],
            writes="brief",
            llm=llm,
            name="briefer",
            max_tokens=BUDGETS["briefer"],
        )
    )
    b.add_edge(START, "scoping")
    b.add_edge(keys, "briefer")
    b.add_edge("briefer", END)
    return b
