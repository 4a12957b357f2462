"""A small market-brief app deployed on LangGraph's server (``langgraph dev``).

The app is written the way LangGraph apps usually are: a scoping node frames the
company, three sibling extractors (competitors, financials, risks) each make one call
to the same chat model, and a briefer writes the brief from their notes. The only
capsule-specific lines are the model wrapper and the ``lc.capsulize(...)`` call.

``langgraph.json`` registers two graphs built from it:

* ``capsules``: :data:`graph`, a compiled capsule graph (built once, at import);
* ``capsules_factory``: :func:`make_graph`, a graph factory the server calls for
  every run (and for schema and state reads) with the run's config.

The server supplies its own checkpointer and store, so nothing is passed to
``.compile()``. The controller's history goes to PostgreSQL when ``CAPSULES_PG`` holds
a libpq connection string (every worker and every graph built from that string then
shares one history), else to ``store="process"``: one in-memory store per plan id in
this process, so the factory's per-run graphs keep learning.

The model is :class:`langgraph_capsules.testing.ScriptedChatModel`, a deterministic
offline chat model, so the example runs without network access or keys; replace it
with your own model (``lc.CapsuleChatModel(ChatOpenAI(...))``).

Run it with::

    cd examples/deploy && langgraph dev
"""

from __future__ import annotations

import operator
import os
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel

__all__ = [
    "EXTRACTORS",
    "GROUP",
    "PG_ENV",
    "BriefState",
    "build_app",
    "capsule_graph",
    "controller_store",
    "graph",
    "make_graph",
    "make_model",
    "word_overlap",
]

EXTRACTORS = ("competitors", "financials", "risks")
"""The sibling extractor nodes; each writes the state key of its own name."""
GROUP = "arm"
"""The capsule group the extractors form."""
PG_ENV = "CAPSULES_PG"
"""The environment variable holding the controller store's PostgreSQL conninfo."""

_INSTRUCTIONS = {
    "competitors": "You name every competitor of the company and how it competes.",
    "financials": "You list every financial figure stated in the source, with its period.",
    "risks": "You list every risk to the company that the source mentions.",
}


class BriefState(TypedDict, total=False):
    """The graph state: the input document, each node's output, and a trace."""

    doc: str
    scope: str
    competitors: str
    financials: str
    risks: str
    brief: str
    trace: Annotated[list[str], operator.add]


def make_model(model_name: str = "scripted-1") -> lc.CapsuleChatModel:
    """The app's chat model, wrapped once so that the extractors' calls can merge.

    Args:
        model_name: The scripted model's name (a real app would pick its model here).

    Returns:
        A :class:`~langgraph_capsules.CapsuleChatModel` around an offline model.
    """
    inner: BaseChatModel = ScriptedChatModel(model_name=model_name)
    return lc.CapsuleChatModel(inner)


def build_app(llm: BaseChatModel, *, async_nodes: bool = False) -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled app: scoping -> three extractors in parallel -> briefer.

    Args:
        llm: The chat model every node calls.
        async_nodes: Write the extractors as ``async def`` nodes calling ``ainvoke``
            and join them into the briefer with one fan-in edge (the factory graph's
            variant); else plain ``def`` nodes with one edge each.

    Returns:
        A ``StateGraph`` builder, as the app would hand to ``.compile()``.
    """

    def scoping(state: BriefState) -> dict[str, Any]:
        reply = llm.invoke(
            [
                SystemMessage("Frame the company in two sentences: what it sells, to whom."),
                HumanMessage(state["doc"]),
            ]
        )
        return {"scope": reply.content, "trace": ["scoping"]}

    def messages(kind: str, state: BriefState) -> list[Any]:
        return [
            SystemMessage(f"{_INSTRUCTIONS[kind]} Number the items, one per line."),
            HumanMessage(
                f"Company frame:\n{state['scope']}\n\nSource:\n\n{state['doc']}\n\nList the {kind}."
            ),
        ]

    def extractor(kind: str) -> Any:
        if async_nodes:

            async def extract_async(state: BriefState) -> dict[str, Any]:
                reply = await llm.ainvoke(messages(kind, state))
                return {kind: reply.content, "trace": [kind]}

            return extract_async

        def extract(state: BriefState) -> dict[str, Any]:
            reply = llm.invoke(messages(kind, state))
            return {kind: reply.content, "trace": [kind]}

        return extract

    def briefer(state: BriefState) -> dict[str, Any]:
        notes = "\n\n".join(f"{kind}:\n{state.get(kind, '')}" for kind in EXTRACTORS)
        reply = llm.invoke([SystemMessage("Write a one-paragraph brief."), HumanMessage(notes)])
        return {"brief": reply.content, "trace": ["briefer"]}

    builder = StateGraph(BriefState)
    builder.add_node("scoping", scoping)
    for kind in EXTRACTORS:
        builder.add_node(kind, extractor(kind))
        builder.add_edge("scoping", kind)
    builder.add_node("briefer", briefer)
    builder.add_edge(START, "scoping")
    if async_nodes:
        builder.add_edge(list(EXTRACTORS), "briefer")
    else:
        for kind in EXTRACTORS:
            builder.add_edge(kind, "briefer")
    builder.add_edge("briefer", END)
    return builder


def word_overlap(task: str, reference: str, candidate: str) -> float:
    """The quality judge: the share of the reference's words found in the candidate.

    Args:
        task: The member's task (unused by this judge).
        reference: The member's output on the fine tier.
        candidate: Its output on the merged tier, for the same input.

    Returns:
        A score in [0, 1]; 0.0 for an empty reference.
    """
    ref = set(reference.split())
    return len(ref & set(candidate.split())) / len(ref) if ref else 0.0


def controller_store() -> lc.ControllerStore | str:
    """Where the controller keeps its history: PostgreSQL if ``CAPSULES_PG`` is set.

    Returns:
        A :class:`~langgraph_capsules.PostgresControllerStore` over ``$CAPSULES_PG``,
        else ``"process"`` (one in-memory store per plan id in this process).
    """
    conninfo = os.environ.get(PG_ENV, "").strip()
    return lc.PostgresControllerStore(conninfo) if conninfo else "process"


_STORE = controller_store()
"""One store object for every graph of this process (it keeps its connections)."""


def capsule_graph(llm: BaseChatModel, *, async_nodes: bool = False) -> lc.CapsuleGraph:
    """The app with its extractors grouped, in ``auto`` mode with a quality gate.

    Args:
        llm: The wrapped chat model.
        async_nodes: Which variant of the app to build (see :func:`build_app`).

    Returns:
        The :class:`~langgraph_capsules.CapsuleGraph`; ``.compile()`` it.
    """
    return lc.capsulize(
        build_app(llm, async_nodes=async_nodes),
        groups={GROUP: list(EXTRACTORS)},
        mode="auto",
        policy=lc.ControllerPolicy.aggressive(quality_floor=0.5),
        judge=word_overlap,
        store=_STORE,
    )


graph: CompiledStateGraph[Any, Any, Any, Any] = capsule_graph(make_model()).compile()
"""The compiled capsule graph (``"capsules"`` in ``langgraph.json``)."""


def make_graph(config: RunnableConfig) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph factory (``"capsules_factory"``): a new graph for every run.

    The model is picked from ``configurable.model_name`` (default ``scripted-1``), as an
    app that picks its model per request would. The controller's history survives the
    rebuild because the store is shared (PostgreSQL, or ``"process"``).

    Args:
        config: The run's config, as the server passes it.

    Returns:
        A compiled capsule graph (the async variant of the app).
    """
    configurable = config.get("configurable") or {}
    model_name = str(configurable.get("model_name") or "scripted-1")
    return capsule_graph(make_model(model_name), async_nodes=True).compile()
