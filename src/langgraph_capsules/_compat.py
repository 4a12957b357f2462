"""Every touch of LangGraph private API goes through this module.

Supported range: ``langgraph>=1.2.24,<1.3`` (pinned in pyproject.toml; the clone test in
``tests/test_compiler.py`` exercises everything here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from langchain_core.runnables import Runnable
from langgraph._internal._constants import CONFIG_KEY_READ_STATE
from langgraph._internal._runnable import RunnableCallable
from langgraph.channels.binop import BinaryOperatorAggregate
from langgraph.constants import END, START, TAG_NOSTREAM
from langgraph.graph import StateGraph
from langgraph.graph._branch import BranchSpec
from langgraph.graph._node import StateNodeSpec

__all__ = [
    "CONFIG_KEY_READ_STATE",
    "DEFAULT_ERROR_HANDLER",
    "END",
    "START",
    "TAG_NOSTREAM",
    "BinaryOperatorAggregate",
    "BranchSpec",
    "RunnableCallable",
    "StateNodeSpec",
    "clone_builder",
    "node_functions",
    "node_runnable",
]

DEFAULT_ERROR_HANDLER = "__default_error_handler__"


def clone_builder(b: StateGraph[Any, Any, Any, Any]) -> StateGraph[Any, Any, Any, Any]:
    """Copy every part of a builder into a fresh ``StateGraph`` (the input is untouched).

    ``compile()`` writes an auto-generated default error handler node back into the
    builder (langgraph issue #8612); the clone drops it so the clone compiles again.
    """
    n: StateGraph[Any, Any, Any, Any] = StateGraph(
        b.state_schema,
        b.context_schema,
        input_schema=b.input_schema,
        output_schema=b.output_schema,
    )
    n.schemas = {k: dict(v) for k, v in b.schemas.items()}
    n.channels = dict(b.channels)
    n.managed = dict(b.managed)
    for name, spec in b.nodes.items():
        if name == DEFAULT_ERROR_HANDLER:
            continue
        handler = spec.error_handler_node
        if handler == DEFAULT_ERROR_HANDLER:
            handler = None
        n.nodes[name] = dataclasses.replace(
            spec,
            error_handler_node=handler,
            metadata=dict(spec.metadata) if spec.metadata is not None else None,
        )
    n.edges = set(b.edges)
    n.waiting_edges = set(b.waiting_edges)
    for src, branches in b.branches.items():
        n.branches[src] = dict(branches)
    n._node_defaults = dataclasses.replace(b._node_defaults)
    return n


def node_runnable(spec: StateNodeSpec[Any, Any]) -> Runnable[Any, Any]:
    """The node's runnable (``add_node`` always stores a ``Runnable``)."""
    return cast("Runnable[Any, Any]", spec.runnable)


def node_functions(spec: StateNodeSpec[Any, Any]) -> list[Any]:
    """The Python callables behind a node (for static checks), or ``[]`` if opaque."""
    r = spec.runnable
    out = []
    for attr in ("func", "afunc"):
        f = getattr(r, attr, None)
        if f is not None:
            out.append(f)
    return out
