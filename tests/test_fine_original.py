"""Fine is always the original: apps that route from a member or write one plain key
from two members run alike in the original graph, in fine mode and in compound mode."""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any, Literal, TypedDict

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import InvalidUpdateError
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel

FINE: RunnableConfig = {"configurable": {"capsules": {"mode": "fine"}}}
COMPOUND: RunnableConfig = {"configurable": {"capsules": {"mode": "compound"}}}
MODES = (FINE, COMPOUND)


class S(TypedDict, total=False):
    doc: str
    a: str
    b: str
    c: str
    x: str
    log: Annotated[list[str], operator.add]


def _ask(llm: Any, kind: str, state: Any) -> str:
    text = f"List the {kind} stated in the source below.\n\nSource:\n\n{state['doc']}"
    return str(llm.invoke([HumanMessage(text)]).content)


def _routing_app(
    llm: Any,
    ran: list[str],
    *,
    hint: Literal["none", "lying", "declared"] = "none",
    goto: str = "z",
    router: bool = True,
) -> StateGraph[Any, Any, Any, Any]:
    """START -> a, b, c; ``a`` routes with ``Command(goto=goto)``; b, c -> z.

    ``hint``: ``none`` (LangGraph accepts a Command without one), ``lying`` (claims a
    dict: the pass cannot see the Command before it runs), ``declared``
    (``Command[Literal[goto]]``: LangGraph and the pass know its target)."""

    def a(state: S):  # type: ignore[no-untyped-def]  # no return hint, as LangGraph allows
        ran.append("a")
        return Command(goto=goto, update={"a": _ask(llm, "names", state), "log": ["a"]})

    def a_lying(state: S) -> dict[str, Any]:
        return a(state)  # type: ignore[no-any-return]

    def a_declared(state: S) -> Command:  # type: ignore[type-arg]
        return a(state)  # type: ignore[no-any-return]

    a_declared.__annotations__["return"] = Command[Literal[goto]]  # type: ignore[valid-type]

    def member(key: str) -> Any:
        def node(state: S) -> dict[str, Any]:
            ran.append(key)
            return {key: _ask(llm, f"{key} facts", state), "log": [key]}

        return node

    def tail(name: str) -> Any:
        def node(state: S) -> dict[str, Any]:
            ran.append(name)
            return {"log": [name]}

        return node

    b = StateGraph(S)
    if router:
        b.add_node("a", {"none": a, "lying": a_lying, "declared": a_declared}[hint])
        b.add_edge(START, "a")
    b.add_node("b", member("b"))
    b.add_node("c", member("c"))
    b.add_node("y", tail("y"))
    b.add_node("z", tail("z"))
    b.add_edge(START, "b")
    b.add_edge(START, "c")
    b.add_edge("b", "z")
    b.add_edge("c", "z")
    b.add_edge("z", END)
    return b


def _same_in_every_mode(builder: StateGraph[Any, Any, Any, Any], ran: list[str]) -> Any:
    """Run the original, then the capsule graph fine and compound: same state, same runs."""
    ran.clear()
    original = builder.compile().invoke({"doc": DOC})
    runs = sorted(ran)
    capsules = lc.capsulize(builder)
    app = capsules.compile()
    for config in MODES:
        ran.clear()
        assert app.invoke({"doc": DOC}, config) == original
        assert sorted(ran) == runs, config
    return capsules


DOC = "Nordvik Sensors is based in Oslo. It was founded in 2011 by Ingrid Halvorsen."


def _llm() -> lc.CapsuleChatModel:
    return lc.CapsuleChatModel(ScriptedChatModel())


def test_member_routing_with_command_is_left_out_and_every_mode_matches_the_original() -> None:
    ran: list[str] = []
    capsules = _same_in_every_mode(_routing_app(_llm(), ran), ran)
    assert ran.count("z") == 1
    why = capsules.plan.untouched["a"]
    assert "Command" in why and "annotate its return type" in why and "exclude it" in why
    assert "a: may return Command/Send" in str(capsules.plan)
    # a may route anywhere from b and c's superstep: the gate would run z twice
    assert capsules.plan.groups == ()
    assert "'z'" in capsules.plan.untouched["b"] and "'a'" in capsules.plan.untouched["b"]
    assert "twice" in capsules.plan.untouched["c"]


def test_a_sibling_routing_elsewhere_keeps_the_group_and_every_mode_matches() -> None:
    ran: list[str] = []
    capsules = _same_in_every_mode(_routing_app(_llm(), ran, hint="declared", goto="y"), ran)
    assert [g.members for g in capsules.plan.groups] == [("b", "c")]
    assert ran.count("z") == 1 and ran.count("y") == 1


def test_a_sibling_routing_to_the_groups_successor_keeps_it_ungrouped() -> None:
    ran: list[str] = []
    builder = _routing_app(_llm(), ran, hint="declared", goto="z")
    capsules = _same_in_every_mode(builder, ran)
    assert capsules.plan.groups == () and ran.count("z") == 1
    with pytest.raises(lc.CapsuleConfigError) as e:
        lc.capsulize(builder, groups={"g": ["b", "c"]})
    assert e.value.code == "successor_routed" and e.value.group == "g"
    assert "'z'" in str(e.value) and "declare its targets" in str(e.value)


def test_a_sibling_conditional_edge_to_the_successor_keeps_it_ungrouped() -> None:
    ran: list[str] = []
    builder = _routing_app(_llm(), ran, router=False)
    builder.add_node("a", lambda s: {"a": "a"})
    builder.add_edge(START, "a")
    builder.add_conditional_edges("a", lambda s: "z", ["z", END])
    capsules = _same_in_every_mode(builder, ran)
    assert capsules.plan.groups == () and ran.count("z") == 1


def test_explicit_group_naming_a_routing_member_is_refused() -> None:
    builder = _routing_app(_llm(), [])
    with pytest.raises(lc.CapsuleConfigError) as e:
        lc.capsulize(builder, groups={"g": ["a", "b", "c"]})
    assert e.value.code == "ineligible_node" and e.value.node == "a"
    msg = str(e.value)
    assert "'a'" in msg and "Command" in msg
    assert "annotate its return type" in msg and "Remove it from the group" in msg


@pytest.mark.parametrize("config", MODES, ids=["fine", "compound"])
def test_a_member_that_routes_despite_its_hint_fails_loudly(config: RunnableConfig) -> None:
    """The safety net: a grouped member returning Command(goto=...) at run time."""
    ran: list[str] = []
    builder = _routing_app(_llm(), ran, hint="lying")
    capsules = lc.capsulize(builder)
    assert [g.members for g in capsules.plan.groups] == [("a", "b", "c")]
    with pytest.raises(lc.CapsuleError) as e:
        capsules.compile().invoke({"doc": DOC}, config)
    assert e.value.code == "member_routes"
    assert "'z'" in str(e.value) and "exclude" in str(e.value)
    assert ran.count("z") == 0


def test_a_member_returning_send_fails_loudly() -> None:
    def a(state: S) -> dict[str, Any]:
        return Command(goto=[Send("z", {"x": "1"})])  # type: ignore[return-value]

    b = StateGraph(S)
    b.add_node("a", a)
    b.add_node("b", lambda s: {"b": "b"})
    b.add_node("z", lambda s: {"log": ["z"]})
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    capsules = lc.capsulize(b, groups={"g": ["a", "b"]})
    for config in MODES:
        with pytest.raises(lc.CapsuleError) as e:
            capsules.compile().invoke({"doc": DOC}, config)
        assert e.value.code == "member_routes" and "Send" in str(e.value)


class _Router:
    def __call__(self, state: S) -> Any:
        return self.route(state)

    def route(self, state: S) -> Any:
        return Command(goto="z")


def _helper_goto(state: S) -> Any:
    return Command(goto="z")


def _via_global(state: S):  # type: ignore[no-untyped-def]
    return _helper_goto(state)


def _via_partial(state: S, target: str):  # type: ignore[no-untyped-def]
    return Command(goto=target)


def _via_closure() -> Any:
    def inner(state: S) -> Any:
        return Send("z", state)

    def node(state: S):  # type: ignore[no-untyped-def]
        return inner(state)

    return node


def _via_nested(state: S):  # type: ignore[no-untyped-def]
    def pick() -> Any:
        return Command(goto="z")

    return pick()


@pytest.mark.parametrize(
    "fn",
    [
        _Router(),
        _via_global,
        functools.partial(_via_partial, target="z"),
        _via_closure(),
        _via_nested,
    ],
    ids=["callable_object", "global_helper", "partial", "closure", "nested_code"],
)
def test_routing_is_found_in_helpers_closures_and_callable_objects(fn: Any) -> None:
    b = StateGraph(S)
    b.add_node("r", fn)
    b.add_node("p", lambda s: {"b": "b"})
    b.add_node("q", lambda s: {"c": "c"})
    b.add_node("z", lambda s: {"log": ["z"]})
    for n in ("r", "p", "q"):
        b.add_edge(START, n)
    plan = lc.capsulize(b).plan
    assert [g.members for g in plan.groups] == [("p", "q")]
    assert "may return Command/Send" in plan.untouched["r"]


def test_a_return_hint_without_command_lets_a_node_that_names_command_join() -> None:
    def checks(state: S) -> dict[str, Any]:
        # refers to Command (a false positive of the code scan); the hint vouches for it
        return {"a": "cmd" if isinstance(state.get("doc"), Command) else "a"}

    def hinted_command(state: S) -> Command:  # type: ignore[type-arg]
        return Command(update={"c": "c"})

    b = StateGraph(S)
    b.add_node("checks", checks)
    b.add_node("p", lambda s: {"b": "b"})
    b.add_node("hinted", hinted_command)
    for n in ("checks", "p", "hinted"):
        b.add_edge(START, n)
    plan = lc.capsulize(b).plan
    assert [g.members for g in plan.groups] == [("checks", "p")]
    assert "return type hint" in plan.untouched["hinted"]


# ---------------------------------------------------------------- one plain key, two writers


def _two_writers(llm: Any) -> StateGraph[Any, Any, Any, Any]:
    def writer(kind: str) -> Any:
        def node(state: S) -> dict[str, Any]:
            return {"x": _ask(llm, kind, state), "log": [kind]}

        return node

    b = StateGraph(S)
    b.add_node("w1", writer("names"))
    b.add_node("w2", writer("dates"))
    b.add_edge(START, "w1")
    b.add_edge(START, "w2")
    return b


def test_two_members_writing_one_plain_key_raise_langgraphs_error_in_every_mode() -> None:
    builder = _two_writers(_llm())
    with pytest.raises(InvalidUpdateError) as original:
        builder.compile().invoke({"doc": DOC})
    assert "At key 'x': Can receive only one value per step" in str(original.value)
    app = lc.capsulize(builder).compile()
    for config in MODES:
        with pytest.raises(InvalidUpdateError) as e:
            app.invoke({"doc": DOC}, config)
        assert type(e.value) is type(original.value)
        assert str(e.value) == str(original.value)


def test_members_writing_different_plain_keys_and_one_reducer_key_match_the_original() -> None:
    builder = _routing_app(_llm(), [], router=False)
    original = builder.compile().invoke({"doc": DOC})
    app = lc.capsulize(builder).compile()
    for config in MODES:
        assert app.invoke({"doc": DOC}, config) == original


@pytest.mark.parametrize("bad", [{"empty_sections": {2}}, {"empty_sections": {1}}])
def test_two_writers_raise_even_when_one_of_them_is_rerun_as_its_node(bad: Any) -> None:
    """One writer's section is bad, so it re-runs as its own node a superstep before the
    gate commits the other's staged write: still LangGraph's own error, not a silent
    last-write-wins."""
    builder = _two_writers(lc.CapsuleChatModel(ScriptedChatModel(**bad)))
    with pytest.raises(InvalidUpdateError) as original:
        builder.compile().invoke({"doc": DOC})
    capsules = lc.capsulize(builder)
    with pytest.raises(InvalidUpdateError) as e:
        capsules.compile().invoke({"doc": DOC}, COMPOUND)
    assert str(e.value) == str(original.value)


def _subgraph_sibling_app(llm: Any, *, parent_route: bool) -> StateGraph[Any, Any, Any, Any]:
    """b and c feed z; a compiled subgraph s runs beside them. With ``parent_route`` its
    inner node sends the parent graph to z (Command.PARENT)."""

    def routing(state: S) -> Any:
        return Command(graph=Command.PARENT, goto="z", update={"log": ["s"]})

    def plain(state: S) -> Any:
        return {"log": ["s"]}

    sub = StateGraph(S)
    sub.add_node("inner", routing if parent_route else plain)
    sub.add_edge(START, "inner")

    def writer(key: str) -> Any:
        def node(state: S) -> dict[str, Any]:
            return {key: _ask(llm, key, state), "log": [key]}

        return node

    def z(state: S) -> dict[str, Any]:
        return {"log": ["z"]}

    b = StateGraph(S)
    b.add_node("s", sub.compile())
    b.add_node("b", writer("b"))
    b.add_node("c", writer("c"))
    b.add_node("z", z)
    for n in ("s", "b", "c"):
        b.add_edge(START, n)
    b.add_edge(["b", "c"], "z")
    return b


def test_a_subgraph_routing_in_the_parent_keeps_its_siblings_ungrouped() -> None:
    quiet = lc.capsulize(_subgraph_sibling_app(_llm(), parent_route=False)).plan
    assert [set(g.members) for g in quiet.groups] == [{"b", "c"}]
    builder = _subgraph_sibling_app(_llm(), parent_route=True)
    plan = lc.capsulize(builder).plan
    assert plan.groups == ()  # s may trigger z beside the gate: z would run twice
    original = builder.compile().invoke({"doc": DOC})
    app = lc.capsulize(builder).compile()
    for config in MODES:
        assert app.invoke({"doc": DOC}, config) == original
