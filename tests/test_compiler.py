"""The pass: purity, group inference, validation errors, the rewritten graph's shape."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict

import pytest
from conftest import COMPOUND, DOC, KINDS, build_app
from langgraph.graph import START, StateGraph
from langgraph.types import Command, RetryPolicy, interrupt

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel


def _fingerprint(b: StateGraph[Any, Any, Any, Any]) -> Any:
    return (
        {k: (id(v.runnable), v.metadata, v.error_handler_node) for k, v in b.nodes.items()},
        sorted(b.edges),
        sorted(b.waiting_edges),
        {k: dict(v) for k, v in b.branches.items()},
        dict(b.channels),
        b.compiled,
    )


def test_caller_builder_is_never_mutated_and_still_runs() -> None:
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()))
    before = _fingerprint(builder)
    out1 = builder.compile().invoke({"doc": DOC})
    before_compiled = _fingerprint(builder)
    capsules = lc.capsulize(builder, groups={"arm": list(KINDS)})
    capsules.compile().invoke({"doc": DOC}, COMPOUND)
    assert _fingerprint(builder) == before_compiled
    assert before[0] == before_compiled[0]
    assert builder.compile().invoke({"doc": DOC}) == out1


def test_builder_with_default_error_handler_compiles_twice() -> None:
    """langgraph#8612: compile() writes a default error handler node into the builder."""
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()))
    builder.set_node_defaults(error_handler=lambda state: {"brief": "handled"})
    builder.compile()  # leaks __default_error_handler__ into the caller's builder
    capsules = lc.capsulize(builder, groups={"arm": list(KINDS)})
    a = capsules.compile().invoke({"doc": DOC}, COMPOUND)
    b = capsules.compile().invoke({"doc": DOC}, COMPOUND)
    assert a["brief"] == b["brief"] != "handled"


def test_group_inference_finds_fan_out_siblings() -> None:
    capsules = lc.capsulize(build_app(lc.CapsuleChatModel(ScriptedChatModel())))
    assert [(g.name, g.members, g.inferred) for g in capsules.plan.groups] == [
        ("after_scoping", KINDS, True)
    ]
    assert capsules.plan.untouched == {
        "scoping": "not in any group",
        "briefer": "not in any group",
    }
    text = str(capsules.plan)
    assert "after_scoping" in text and "capsule__after_scoping" in text
    data = capsules.plan.to_dict()
    assert data["groups"][0]["gate_node"] == "gate__after_scoping"


def test_inferred_name_uses_common_prefix_and_exclude_shrinks_groups() -> None:
    llm = lc.CapsuleChatModel(ScriptedChatModel())

    class S(TypedDict, total=False):
        doc: str
        lens_a: str
        lens_b: str
        lens_c: str

    b = StateGraph(S)
    for n in ("lens_a", "lens_b", "lens_c"):
        b.add_node(n, lambda s, n=n: {n: llm.invoke(s["doc"]).content})
        b.add_edge(START, n)
    assert lc.capsulize(b).plan.groups[0].name == "lens"
    plan = lc.capsulize(b, exclude=["lens_c"]).plan
    assert plan.groups[0].members == ("lens_a", "lens_b")
    assert plan.untouched["lens_c"] == "excluded by the user"


def test_rewritten_graph_mermaid_snapshot(snapshot: Any) -> None:
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()))
    app = lc.capsulize(builder, groups={"arm": list(KINDS)}).compile()
    mermaid = app.get_graph().draw_mermaid()
    assert "capsule__arm" in mermaid and "gate__arm" in mermaid
    assert mermaid == snapshot


class S2(TypedDict, total=False):
    x: str
    a: str
    b: str
    c: str
    d: str
    items: Annotated[list[str], operator.add]


def _node(key: str) -> Any:
    return lambda state: {key: key, "items": [key]}


def _diamond() -> StateGraph[Any, Any, Any, Any]:
    b = StateGraph(S2)
    for n in ("a", "b", "c", "d"):
        b.add_node(n, _node(n))
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    b.add_edge("a", "c")
    b.add_edge("b", "d")
    return b


@pytest.mark.parametrize(
    ("groups", "code"),
    [
        ({"g": ["a", "zz"]}, "unknown_node"),
        ({"g": ["a", "b"], "h": ["b", "a"]}, "node_in_two_groups"),
        ({"g": ["a"]}, "group_too_small"),
        ({"g": ["a", "c"]}, "edge_within_group"),
        ({"g": ["c", "d"]}, "mismatched_predecessors"),
        ({"bad-name": ["a", "b"]}, "bad_group_name"),
    ],
)
def test_bad_groups_fail_early_with_codes(groups: dict[str, list[str]], code: str) -> None:
    with pytest.raises(lc.CapsuleConfigError) as e:
        lc.capsulize(_diamond(), groups=groups)
    assert e.value.code == code
    assert e.value.group is not None or code == "unknown_node"


def test_unknown_node_message_names_node_and_choices() -> None:
    with pytest.raises(lc.CapsuleConfigError, match=r"'zz'.*nodes: \['a', 'b', 'c', 'd'\]"):
        lc.capsulize(_diamond(), groups={"g": ["a", "zz"]})
    with pytest.raises(lc.CapsuleConfigError) as e:
        lc.capsulize(_diamond(), exclude=["nope"])
    assert e.value.code == "unknown_node" and e.value.node == "nope"


def test_non_state_graph_argument() -> None:
    b = _diamond()
    with pytest.raises(lc.CapsuleConfigError) as e:
        lc.capsulize(b.compile())  # type: ignore[arg-type]
    assert e.value.code == "not_a_state_graph" and "app.builder" in str(e.value)
    with pytest.raises(lc.CapsuleError):
        lc.capsulize({"nodes": []})  # type: ignore[arg-type]


class S3(TypedDict, total=False):
    x: str
    out: Annotated[list[str], operator.add]


def test_ineligible_nodes_are_reported_and_refused_in_groups() -> None:
    S = S3

    def router(state: S3) -> Literal["e", "f"]:
        return "e"

    def asks(state: S3) -> dict[str, Any]:
        return {"out": [str(interrupt("ok?"))]}

    def commander(state: S3) -> Command[Literal["e"]]:
        return Command(goto="e", update={"out": ["cmd"]})

    b = StateGraph(S)
    b.add_node("plain1", _node("x"))
    b.add_node("plain2", lambda s: {"out": ["p2"]})
    b.add_node("asker", asks)
    b.add_node("cmd", commander)
    b.add_node("deferred", lambda s: {"out": ["d"]}, defer=True)
    b.add_node("sub", _diamond().compile())
    b.add_node("brancher", lambda s: {"out": ["b"]})
    b.add_node("e", lambda s: {"out": ["e"]})
    b.add_node("f", lambda s: {"out": ["f"]})
    for n in ("plain1", "plain2", "asker", "cmd", "deferred", "sub", "brancher"):
        b.add_edge(START, n)
    b.add_conditional_edges("brancher", router)
    plan = lc.capsulize(b).plan
    assert [g.members for g in plan.groups] == [("plain1", "plain2")]
    why = plan.untouched
    assert why["asker"] == "calls interrupt()"
    assert "Command" in why["cmd"]
    assert "defer" in why["deferred"]
    assert why["sub"] == "is a subgraph"
    assert why["brancher"] == "has conditional out-edges"
    assert "conditional edge from 'brancher'" in why["e"]
    for bad in ("asker", "cmd", "deferred", "sub", "brancher", "e"):
        with pytest.raises(lc.CapsuleConfigError) as e:
            lc.capsulize(b, groups={"g": ["plain1", bad]})
        assert e.value.code == "ineligible_node" and e.value.node == bad
        assert "Remove it from the group" in str(e.value)


def test_opaque_branch_makes_every_target_ineligible_with_a_fix() -> None:
    b = StateGraph(S2)
    for n in ("a", "b", "c"):
        b.add_node(n, _node(n))
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    b.add_conditional_edges("a", lambda s: "c")  # no path_map, no hint: could go anywhere
    plan = lc.capsulize(b).plan
    assert plan.groups == ()
    assert "path_map" in plan.untouched["b"]


def test_retry_policy_and_metadata_of_members_survive() -> None:
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()))
    builder.nodes["claims"].retry_policy = RetryPolicy(max_attempts=2)
    capsules = lc.capsulize(builder, groups={"arm": list(KINDS)})
    assert capsules.builder.nodes["claims"].retry_policy == RetryPolicy(max_attempts=2)
    assert set(builder.nodes) < set(capsules.builder.nodes)
    assert set(capsules.builder.nodes) - set(builder.nodes) == {"capsule__arm", "gate__arm"}


def test_chained_groups_and_join_entry() -> None:
    """Group 2 is fed by group 1 (a gate feeds a router); group 3 is entered by a join."""
    calls: list[str] = []

    class S(TypedDict, total=False):
        items: Annotated[list[str], operator.add]

    def mk(n: str) -> Any:
        def f(state: S) -> dict[str, Any]:
            calls.append(n)
            return {"items": [n]}

        return f

    b = StateGraph(S)
    for n in ("a1", "a2", "b1", "b2", "c1", "c2", "z"):
        b.add_node(n, mk(n))
    b.add_edge(START, "a1")
    b.add_edge(START, "a2")
    for a in ("a1", "a2"):
        for t in ("b1", "b2"):
            b.add_edge(a, t)
    b.add_edge(["b1", "b2"], "c1")
    b.add_edge(["b1", "b2"], "c2")
    b.add_edge("c1", "z")
    b.add_edge("c2", "z")
    base = b.compile().invoke({"items": []})
    capsules = lc.capsulize(b)
    assert sorted(g.members for g in capsules.plan.groups) == [
        ("a1", "a2"),
        ("b1", "b2"),
        ("c1", "c2"),
    ]
    for mode in ("fine", "compound"):
        calls.clear()
        out = capsules.compile().invoke(
            {"items": []}, {"configurable": {"capsules": {"mode": mode}}}
        )
        assert sorted(out["items"]) == sorted(base["items"])
        assert calls.count("z") == 1 and len(calls) == 7


def test_opaque_runnable_is_left_out_of_inferred_groups_but_may_be_declared() -> None:
    from langchain_core.runnables import RunnableLambda

    chain = RunnableLambda(lambda s: {"c": "c", "items": ["c"]}) | RunnableLambda(lambda u: u)
    b = StateGraph(S2)
    b.add_node("a", _node("a"))
    b.add_node("b", _node("b"))
    b.add_node("chain", chain)
    for n in ("a", "b", "chain"):
        b.add_edge(START, n)
    plan = lc.capsulize(b).plan
    assert [g.members for g in plan.groups] == [("a", "b")]
    assert "cannot be read" in plan.untouched["chain"]
    declared = lc.capsulize(b, groups={"g": ["a", "b", "chain"]})
    assert declared.plan.group("g").members == ("a", "b", "chain")
    base = b.compile().invoke({"items": []})
    out = declared.compile().invoke({"items": []}, COMPOUND)
    assert sorted(out["items"]) == sorted(base["items"]) and out["c"] == "c"


def test_return_hints_decide_before_the_code_scan() -> None:
    def vouched(state: S2) -> dict[str, Any]:
        _ = Command  # refers to Command, but the hint says it returns updates
        return {"a": "a"}

    def plain_command(state: S2) -> Command:  # type: ignore[type-arg]
        return Command(update={"b": "b"})

    def no_hint(state: S2):  # type: ignore[no-untyped-def]
        return {"c": "c"}

    b = StateGraph(S2)
    for name, fn in (("vouched", vouched), ("cmd", plain_command), ("plain", no_hint)):
        b.add_node(name, fn)
        b.add_edge(START, name)
    plan = lc.capsulize(b).plan
    assert [g.members for g in plan.groups] == [("vouched", "plain")]
    assert "return type hint" in plan.untouched["cmd"]
    with pytest.raises(lc.CapsuleConfigError) as e:
        lc.capsulize(b, groups={"g": ["vouched", "cmd"]})
    assert e.value.code == "ineligible_node" and e.value.node == "cmd"


def test_the_pass_reads_the_graph_and_its_agent_specs_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """capsulize() reads the topology and every declared agent's spec once; the plan,
    the context rules and the rewrite use that one reading (and agree with it)."""
    import langgraph_capsules.graph as graph_mod
    import langgraph_capsules.topology as topology_mod
    from benchmarks.due_diligence.pipeline import DD_GROUPS, build_due_diligence

    topo_reads: list[object] = []
    spec_reads: list[object] = []
    read_topology = topology_mod.read_topology
    agent_spec = topology_mod.agent_spec

    def counting_topology(builder: Any) -> Any:
        topo_reads.append(builder)
        return read_topology(builder)

    def counting_spec(node: Any) -> Any:
        spec_reads.append(node)
        return agent_spec(node)

    monkeypatch.setattr(graph_mod, "read_topology", counting_topology)
    monkeypatch.setattr(topology_mod, "agent_spec", counting_spec)
    builder = build_due_diligence(ScriptedChatModel())
    capsules = lc.capsulize(builder, groups={k: list(v) for k, v in DD_GROUPS.items()})
    assert len(topo_reads) == 1
    assert len(spec_reads) == len(builder.nodes)  # one look per node, at read time
    # the one reading drives the plan: the tool-using research group offers two_phase
    research = next(g for g in capsules.plan.groups if "financial_researcher" in g.members)
    analysis = next(g for g in capsules.plan.groups if "risk_analyst" in g.members)
    assert "two_phase" in research.tiers and "two_phase" not in analysis.tiers
