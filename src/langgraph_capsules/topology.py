"""Read a ``StateGraph`` builder: dependencies, which nodes can be merged, fan-out groups.

A node can join a group when it is plain-edge triggered and does nothing the merged
path could not reproduce. These nodes stay as they are (and the plan says why):

* nodes with conditional out-edges (``add_conditional_edges`` from the node);
* nodes that may return ``Command``/``Send``: declared ``destinations``, a return
  hint naming ``Command``/``Send``, or, without a return hint, code that refers to the
  names ``Command``, ``Send`` or ``goto`` (the node function, its nested functions, its
  closures, same-module helpers it calls by name, a callable object's class). A return
  hint that names neither vouches for the node: the code is not read. A node whose code
  cannot be read at all (an opaque runnable) is left out of *inferred* groups only;
* ``defer=True`` nodes, subgraphs, nodes whose code calls ``interrupt()``;
* nodes targeted by a conditional edge (their runs are not tied to their siblings'),
  including any node when the graph has an *opaque* conditional edge (no ``path_map``
  and no ``Literal`` return hint): it could route anywhere;
* nodes the user excluded.

Fan-out groups are inferred from siblings: eligible nodes with the same set of
triggers (plain-edge predecessors and fan-in joins) and at least two members. Such
siblings never have edges among them and always run in the same superstep.

:attr:`Topology.routes` records who may trigger whom at run time (conditional edges,
``Command``/``Send``; unknown targets for a node whose routing is only seen in its
code). The plan uses it to keep a group out when a node outside it, not downstream of
it, may trigger one of its successors: the group's gate runs a superstep after the
members, so that successor would run twice where the original ran it once.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableBinding
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel

from langgraph_capsules._compat import END, START, node_functions, node_runnable
from langgraph_capsules.agents import AgentSpec, agent_spec
from langgraph_capsules.model import CapsuleChatModel

__all__ = ["CodeScan", "Topology", "Trigger", "read_topology", "returned_routing", "scan_code"]

Trigger = str | tuple[str, ...]
"""A node's trigger: a predecessor name (plain edge) or a fan-in join's sources."""


def _calls_interrupt(fn: Any) -> bool:
    code = getattr(fn, "__code__", None)
    if code is None:
        code = getattr(getattr(fn, "__call__", None), "__code__", None)  # noqa: B004
    if code is None:
        return False
    stack = [code]
    while stack:
        c = stack.pop()
        if "interrupt" in c.co_names:
            return True
        stack.extend(k for k in c.co_consts if hasattr(k, "co_names"))
    return False


ROUTING_NAMES = ("Command", "Send", "goto")
"""Names whose presence in a node's code means it may route (``Command(goto=...)``,
``Send``): without a return hint such a node is never grouped."""
_SCAN_DEPTH = 4


@dataclass
class CodeScan:
    """What a node's Python code refers to, read statically (the node never runs)."""

    routing: set[str] = field(default_factory=set)
    """Names among :data:`ROUTING_NAMES` found in its code."""
    models: list[Any] = field(default_factory=list)
    """Chat models reachable from its closures, globals, partial arguments or attributes."""
    readable: bool = False
    """Some Python code was found (``False``: an opaque runnable or C callable)."""


def _is_chat_model(obj: Any) -> bool:
    while isinstance(obj, RunnableBinding):
        obj = obj.bound
    return isinstance(obj, BaseChatModel)


def _codes(code: types.CodeType) -> Iterable[types.CodeType]:
    stack = [code]
    while stack:
        c = stack.pop()
        yield c
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))


def _const_strings(code: types.CodeType) -> set[str]:
    out: set[str] = set()
    for k in code.co_consts:
        if isinstance(k, str):
            out.add(k)
        elif isinstance(k, tuple):  # keyword names of a call: ("goto", "update")
            out.update(x for x in k if isinstance(x, str))
    return out


def scan_code(fns: Iterable[Any]) -> CodeScan:
    """Read the code behind a node's callables: nested code objects, closure cells,
    same-module functions it names, ``functools.partial`` and ``__wrapped__`` targets, a
    callable object's class (``__call__`` and the methods it may call)."""
    out = CodeScan()
    seen: set[int] = set()
    todo: list[tuple[Any, int]] = [(f, 0) for f in fns]
    while todo:
        obj, depth = todo.pop()
        if id(obj) in seen or depth > _SCAN_DEPTH:
            continue
        seen.add(id(obj))
        if _is_chat_model(obj):
            out.models.append(obj)
        elif isinstance(obj, functools.partial):
            todo.append((obj.func, depth))
            todo.extend((a, depth + 1) for a in (*obj.args, *obj.keywords.values()))
        elif isinstance(obj, types.MethodType):
            todo.extend([(obj.__func__, depth), (obj.__self__, depth + 1)])
        elif isinstance(obj, types.FunctionType):
            out.readable = True
            _scan_function(obj, depth, out, todo)
        elif isinstance(obj, (staticmethod, classmethod)):
            todo.append((obj.__func__, depth))
        elif _python_call(obj) is not None:
            cls = type(obj)  # a callable object: every method of its own classes
            for klass in cls.__mro__:
                if klass.__module__ == cls.__module__:
                    todo.extend((v, depth) for v in vars(klass).values())
            todo.extend((v, depth + 1) for v in getattr(obj, "__dict__", {}).values())
    return out


def _python_call(obj: Any) -> types.FunctionType | None:
    """The ``__call__`` a callable object's class defines in Python, if any."""
    for klass in type(obj).__mro__:
        call = vars(klass).get("__call__")
        if call is not None:
            return call if isinstance(call, types.FunctionType) else None
    return None


def _scan_function(
    fn: types.FunctionType, depth: int, out: CodeScan, todo: list[tuple[Any, int]]
) -> None:
    wrapped = getattr(fn, "__wrapped__", None)
    if wrapped is not None:
        todo.append((wrapped, depth))
    globals_ = fn.__globals__
    for code in _codes(fn.__code__):
        names = {*code.co_names, *code.co_varnames, *code.co_freevars, *code.co_cellvars}
        out.routing.update(n for n in ROUTING_NAMES if n in names)
        if "goto" in _const_strings(code):
            out.routing.add("goto")
        for name in code.co_names:
            value = globals_.get(name)
            if _is_chat_model(value) or (
                isinstance(value, types.FunctionType) and value.__module__ == fn.__module__
            ):
                todo.append((value, depth + 1))
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(value) or _is_chat_model(value):
            todo.append((value, depth + 1))


def _return_hint(fn: Any) -> Any:
    """A callable's return annotation (resolved when possible), or ``None``."""
    fn = inspect.unwrap(fn)
    while isinstance(fn, functools.partial):
        fn = inspect.unwrap(fn.func)
    target = fn if isinstance(fn, (types.FunctionType, types.MethodType)) else None
    if target is None:
        target = _python_call(fn)
    if target is None:
        return None
    try:
        return typing.get_type_hints(target).get("return")
    except Exception:
        return getattr(target, "__annotations__", {}).get("return")


_ROUTING_HINT = re.compile(r"\b(Command|Send)\b")


def _hint_routes(hint: Any) -> bool | None:
    """``True``: the hint names Command/Send; ``False``: it vouches for plain updates;
    ``None``: no usable hint (none, ``Any`` or ``object``)."""
    if hint is None or hint is Any or hint is object:
        return None
    if isinstance(hint, str):
        if hint.strip() in ("Any", "typing.Any", "object"):
            return None
        return bool(_ROUTING_HINT.search(hint))
    from langgraph.types import Command, Send

    stack = [hint]
    while stack:
        h = stack.pop()
        if h is Command or h is Send or typing.get_origin(h) in (Command, Send):
            return True
        if isinstance(h, (str, typing.ForwardRef)):
            text = h if isinstance(h, str) else h.__forward_arg__
            if _ROUTING_HINT.search(text):
                return True
        stack.extend(typing.get_args(h))
    return False


def _hint_text(hint: Any) -> str:
    return hint if isinstance(hint, str) else getattr(hint, "__name__", None) or repr(hint)


def _routing_reason(fns: list[Any], scan: CodeScan) -> tuple[str | None, bool]:
    """Why a node may return Command/Send (``None``: it does not), and whether that is
    only a doubt (unreadable code: left out of inferred groups, allowed when declared)."""
    verdicts = [_hint_routes(_return_hint(f)) for f in fns]
    for f, v in zip(fns, verdicts, strict=True):
        if v:
            return (
                f"may return Command/Send (its return type hint is {_hint_text(_return_hint(f))}); "
                "a member's own routing cannot be kept in a group: exclude it",
                False,
            )
    if fns and all(v is False for v in verdicts):
        return None, False  # the hint vouches for plain state updates
    if scan.routing:
        names = ", ".join(n for n in ROUTING_NAMES if n in scan.routing)
        return (
            f"may return Command/Send: its code refers to {names} and it has no return type "
            "hint. If it returns only state updates, annotate its return type (e.g. "
            "-> dict[str, Any]) so it can join a group; if it routes, exclude it",
            False,
        )
    if not scan.readable:
        return (
            "its code cannot be read, so it may return Command/Send: left out of inferred "
            "groups (name it in groups= if it returns only state updates)",
            True,
        )
    return None, False


def _subgraph_routing(graph: Any, depth: int = 0) -> tuple[str | None, bool]:
    """Whether a compiled subgraph may route in the parent graph. Its nodes' own
    ``Command``/``Send`` route inside the subgraph; only ``Command(graph=Command.PARENT)``
    reaches the parent, so the subgraph routes when some node of it (at any depth)
    refers to ``PARENT``, and is a doubt when its nodes cannot be read."""
    builder = getattr(graph, "builder", None)
    nodes = getattr(builder, "nodes", None)
    if not isinstance(nodes, dict) or depth > _SCAN_DEPTH:
        return (
            "is a subgraph whose nodes cannot be read, so it may route in this graph",
            True,
        )
    for name, spec in nodes.items():
        if isinstance(spec.runnable, Pregel):
            why, doubt = _subgraph_routing(spec.runnable, depth + 1)
            if why is not None:
                return why, doubt
            continue
        for fn in user_functions(spec):
            code = getattr(fn, "__code__", None)
            if code is None:
                continue
            if any("PARENT" in c.co_names for c in _codes(code)):
                return (
                    f"is a subgraph whose node '{name}' may route in this graph "
                    "(Command(graph=Command.PARENT))",
                    False,
                )
    return None, False


def returned_routing(ret: Any) -> str | None:
    """What a node's return value routes to at run time (``Command(goto=...)``, a
    ``Send``), described for an error message; ``None`` for plain updates."""
    from langgraph.types import Command, Send

    items = ret if isinstance(ret, (list, tuple)) else [ret]
    for item in items:
        if isinstance(item, Send):
            return f"Send({item.node!r}, ...)"
        if isinstance(item, Command) and item.goto not in (None, (), [], ""):
            gotos = item.goto if isinstance(item.goto, (list, tuple)) else [item.goto]
            shown = ", ".join(
                f"Send({g.node!r}, ...)" if isinstance(g, Send) else repr(g) for g in gotos
            )
            return f"Command(goto={shown})"
    return None


def user_functions(spec: Any) -> list[Any]:
    """The callables behind a node as the user wrote them (LangGraph's async wrapper of a
    sync function and ``functools.wraps`` decorators unwrapped, duplicates dropped)."""
    out: list[Any] = []
    for f in node_functions(spec):
        try:
            f = inspect.unwrap(f)
        except ValueError:  # a __wrapped__ cycle: read the callable as it is
            pass
        if all(f is not g for g in out):
            out.append(f)
    return out


def unwrapped_models(scan: CodeScan) -> list[str]:
    """Class names of chat models the code reaches that are not a ``CapsuleChatModel``."""
    names: list[str] = []
    for m in scan.models:
        base = m
        while isinstance(base, RunnableBinding):
            base = base.bound
        if not isinstance(base, CapsuleChatModel) and type(base).__name__ not in names:
            names.append(type(base).__name__)
    return names


@dataclass(frozen=True)
class Topology:
    """A static reading of a builder's graph."""

    nodes: tuple[str, ...]
    triggers: dict[str, frozenset[Trigger]]
    """Per node, what triggers it through static edges (plain predecessors, joins)."""
    successors: dict[str, frozenset[str]]
    """Per node, targets of its plain out-edges."""
    ineligible: dict[str, str]
    """Nodes that cannot join a group, with the reason."""
    uninferred: dict[str, str] = field(default_factory=dict)
    """Nodes left out of *inferred* groups only (a doubt, not a certainty), with the
    reason; a group that names one explicitly may hold it."""
    unwrapped: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per node, class names of chat models its code reaches that are not wrapped in a
    ``CapsuleChatModel`` (calls on them are never merged)."""
    routes: dict[str, frozenset[str] | None] = field(default_factory=dict)
    """Nodes that may trigger others at run time (conditional edges, ``Command``/``Send``),
    with the targets (``None``: unknown, any node)."""
    intrinsic: dict[str, str] = field(default_factory=dict)
    """Nodes that cannot run merged whatever triggers them (conditional out-edges,
    ``Command``/``Send``, ``defer=True``, a subgraph, ``interrupt()``), with the reason:
    a conditional-edge or ``Send`` target not in here can join a *dynamic* group."""
    branches: dict[str, dict[str, frozenset[str] | None]] = field(default_factory=dict)
    """Per source node, per conditional edge (its path's name), the nodes it may route
    to (``Send`` or name); ``None`` for an opaque edge (no ``path_map``, no ``Literal``
    hint). ``END`` is left out."""
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    """Per node built with :func:`~langgraph_capsules.agent`, its declared spec (read once
    here; the plan, the context rules and the rewrite use this)."""

    def descendants(self, nodes: Iterable[str]) -> set[str]:
        """Every node reachable from ``nodes`` through edges, joins and routes whose
        targets are known (a route to unknown targets is not followed)."""
        out_of: dict[str, set[str]] = {}
        for dst, trigs in self.triggers.items():
            for t in trigs:
                for src in (t,) if isinstance(t, str) else t:
                    out_of.setdefault(src, set()).add(dst)
        for src, targets in self.routes.items():
            out_of.setdefault(src, set()).update(targets or ())
        seen: set[str] = set()
        todo = list(nodes)
        while todo:
            for nxt in out_of.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def siblings(self, exclude: Iterable[str] = ()) -> list[tuple[frozenset[Trigger], list[str]]]:
        """Eligible nodes grouped by identical (non-empty) trigger sets, 2+ per set."""
        skip = set(exclude) | set(self.uninferred)
        by_trigger: dict[frozenset[Trigger], list[str]] = {}
        for n in self.nodes:
            if n in self.ineligible or n in skip or not self.triggers[n]:
                continue
            by_trigger.setdefault(self.triggers[n], []).append(n)
        return [(t, ms) for t, ms in by_trigger.items() if len(ms) >= 2]


def read_topology(builder: StateGraph[Any, Any, Any, Any]) -> Topology:
    """Read dependencies and eligibility from a builder (the builder is not modified)."""
    nodes = tuple(n for n, spec in builder.nodes.items() if not spec.is_error_handler and n != END)
    triggers: dict[str, set[Trigger]] = {n: set() for n in nodes}
    successors: dict[str, set[str]] = {n: set() for n in (*nodes, START)}
    for src, dst in builder.edges:
        if dst in triggers:
            triggers[dst].add(src)
        successors.setdefault(src, set()).add(dst)
    for starts, dst in builder.waiting_edges:
        if dst in triggers:
            triggers[dst].add(tuple(sorted(starts)))

    ineligible: dict[str, str] = {}
    opaque: list[str] = []
    routes: dict[str, set[str] | None] = {}
    branch_targets: dict[str, dict[str, frozenset[str] | None]] = {}
    for src, branches in builder.branches.items():
        for bname, branch in branches.items():
            branch_targets.setdefault(src, {})[bname] = (
                None
                if branch.ends is None
                else frozenset(t for t in branch.ends.values() if t in triggers)
            )
            if branch.ends is None:
                opaque.append(src)
                routes[src] = None
                continue
            known = routes.setdefault(src, set())
            if known is not None:
                known.update(t for t in branch.ends.values() if t != END)
            for target in branch.ends.values():
                if target in triggers and target not in ineligible:
                    ineligible[target] = f"targeted by a conditional edge from '{src}'"
    uninferred: dict[str, str] = {}
    unwrapped: dict[str, tuple[str, ...]] = {}
    intrinsic: dict[str, str] = {}
    agents: dict[str, AgentSpec] = {}
    for name in nodes:
        spec = builder.nodes[name]
        if (declared := agent_spec(node_runnable(spec))) is not None:
            agents[name] = declared
        fns = user_functions(spec)
        scan = scan_code(fns)
        if models := unwrapped_models(scan):
            unwrapped[name] = tuple(models)
        if isinstance(spec.runnable, Pregel) and not spec.ends:
            routes_why, doubt = _subgraph_routing(spec.runnable)
        else:
            routes_why, doubt = (None, False) if spec.ends else _routing_reason(fns, scan)
        if spec.ends or routes_why is not None:
            ends = spec.ends.values() if isinstance(spec.ends, dict) else spec.ends or ()
            known = routes.setdefault(name, set())
            if routes_why is not None:
                routes[name] = None  # Command/Send to targets nobody declared
            elif known is not None:
                known.update(t for t in ends if t != END)
        reason = None
        if builder.branches.get(name):
            reason = "has conditional out-edges"
        elif spec.ends:
            reason = "may return Command/Send (declares destinations)"
        elif routes_why is not None and not doubt:
            reason = routes_why
        elif spec.defer:
            reason = "is deferred (defer=True)"
        elif isinstance(spec.runnable, Pregel):
            reason = "is a subgraph"
        elif any(_calls_interrupt(f) for f in node_functions(spec)):
            reason = "calls interrupt()"
        if reason is not None:
            intrinsic[name] = reason
        elif name in ineligible:
            continue
        elif opaque:
            reason = (
                f"may be targeted by the conditional edge from '{opaque[0]}', which has no "
                "path_map (give add_conditional_edges a path_map or a Literal return hint)"
            )
        elif not triggers[name]:
            reason = "has no incoming edges"
        if reason is not None:
            ineligible[name] = reason
        elif routes_why is not None:
            uninferred[name] = routes_why
    return Topology(
        nodes=nodes,
        triggers={n: frozenset(t) for n, t in triggers.items()},
        successors={n: frozenset(s) for n, s in successors.items()},
        ineligible=ineligible,
        uninferred=uninferred,
        unwrapped=unwrapped,
        routes={n: None if t is None else frozenset(t) for n, t in routes.items()},
        intrinsic=intrinsic,
        branches=branch_targets,
        agents=agents,
    )


_NAME_OK = re.compile(r"[^A-Za-z0-9_]+")


def infer_group_name(members: list[str], triggers: frozenset[Trigger], taken: set[str]) -> str:
    """A deterministic name: the members' common leading word, else ``after_<preds>``."""
    heads = {m.split("_")[0] for m in members}
    if len(heads) == 1 and len(next(iter(heads))) >= 3:
        base = next(iter(heads))
    else:
        preds: list[str] = []
        for t in sorted(triggers, key=str):
            preds.extend(t if isinstance(t, tuple) else (t,))
        base = "after_" + "_".join("start" if p == START else p for p in preds)
    base = _NAME_OK.sub("_", base).strip("_") or "group"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name
