"""Declared agents: exact prompts from declared reads, byte-identical shared prefixes in a
group, tiers (standard, two_phase with tools, sequential), structured output."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest
from conftest import overlap
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

import langgraph_capsules as lc
from langgraph_capsules.agents import GATHER_INSTRUCTION, build_messages
from langgraph_capsules.strategies.sequential import parse_sequential_turn
from langgraph_capsules.testing import ScriptedChatModel

DOC = "Nordvik Sensors reported revenue of NOK 482 million in 2024, up 12 percent."


class S(TypedDict, total=False):
    doc: str
    scope: str
    secret: str
    entities: str
    claims: str
    signals: str
    brief: str
    log: Annotated[list[str], operator.add]


def _app(llm: Any, **extra: Any) -> StateGraph[Any, Any, Any, Any]:
    """doc -> scoping -> three declared extractors (fan-out) -> briefer."""
    b = StateGraph(S)
    b.add_node(lc.agent("Frame the company in one line.", reads=["doc"], writes="scope", llm=llm))
    for kind in ("entities", "claims", "signals"):
        b.add_node(
            lc.agent(
                f"List the {kind} stated in the source.",
                reads=["scope", "doc"],
                writes=kind,
                llm=llm,
                max_tokens=64,
                **extra.get(kind, {}),
            )
        )
        b.add_edge("scope", kind)
    b.add_node(
        lc.agent(
            "Write a brief.",
            reads=["scope", "entities", "claims", "signals"],
            writes="brief",
            llm=llm,
        )
    )
    b.add_edge(START, "scope")
    b.add_edge(["entities", "claims", "signals"], "brief")
    b.add_edge("brief", END)
    return b


def _texts(call: Any) -> list[str]:
    return [str(m.content) for m in call.messages]


def test_prompt_holds_only_the_declared_reads_in_cache_aligned_order() -> None:
    node = lc.agent("List the claims.", reads=["scope", "doc"], writes="claims")
    spec = node.capsule_agent  # type: ignore[attr-defined]
    state = {"doc": DOC, "scope": "Nordvik: sensors.", "secret": "never shown", "entities": "x"}
    msgs = build_messages(spec, state)
    assert [type(m) for m in msgs] == [SystemMessage, SystemMessage, HumanMessage]
    # standalone: every read is stable context, in sorted key order, then instructions
    assert msgs[0].content == f"CONTEXT:\n\n## doc\n{DOC}\n\n## scope\nNordvik: sensors."
    assert msgs[1].content == "List the claims."
    assert msgs[2].content == "Write your answer for: claims."
    assert "never shown" not in str(msgs) and "entities" not in str(msgs[0].content)
    # in a group that shares only "doc", the scope moves to the agent's own tail
    grouped = build_messages(spec, state, shared=["doc"], hint="Keep it short.")
    assert grouped[0].content == f"CONTEXT:\n\n## doc\n{DOC}"
    assert grouped[2].content == (
        "## scope\nNordvik: sensors.\n\nKeep it short.\n\nWrite your answer for: claims."
    )


def test_a_declared_agent_is_an_ordinary_node_outside_capsules() -> None:
    scripted = ScriptedChatModel()
    out = _app(scripted).compile().invoke({"doc": DOC, "secret": "hidden"})
    assert all(out[k] for k in ("scope", "entities", "claims", "signals", "brief"))
    assert not any("hidden" in "".join(_texts(c)) for c in scripted.calls)
    # siblings never see each other's outputs
    extractor_calls = [c for c in scripted.calls if "stated in the source" in _texts(c)[1]]
    assert len(extractor_calls) == 3
    for call in extractor_calls:
        others = {out[k] for k in ("entities", "claims", "signals")}
        assert not any(o in "".join(_texts(call)) for o in others)


def test_group_members_share_a_byte_identical_prefix() -> None:
    scripted = ScriptedChatModel()
    capsules = lc.capsulize(_app(lc.CapsuleChatModel(scripted)))
    assert [sorted(g.members) for g in capsules.plan.groups] == [["claims", "entities", "signals"]]
    capsules.compile().invoke({"doc": DOC}, {"configurable": {"capsules": {"mode": "fine"}}})
    calls = [c for c in scripted.calls if "stated in the source" in "".join(_texts(c))]
    assert len(calls) == 3
    prefixes = {_texts(c)[0] for c in calls}
    assert len(prefixes) == 1  # the group's shared reads, byte-identical
    assert next(iter(prefixes)).startswith("CONTEXT:\n\n## doc\n")
    # the shared prefix is served from the (simulated) prefix cache after the first call
    cached = sorted(c.usage["input_token_details"]["cache_read"] for c in calls)
    assert cached[0] == 0 and cached[1] > 0


def test_standard_tier_sends_the_shared_context_once() -> None:
    scripted = ScriptedChatModel()
    capsules = lc.capsulize(_app(lc.CapsuleChatModel(scripted)))
    out = capsules.compile().invoke(
        {"doc": DOC}, {"configurable": {"capsules": {"mode": "compound"}}}
    )
    assert len(scripted.merged_calls) == 1
    merged = "".join(_texts(scripted.merged_calls[0]))
    assert merged.count(DOC) == 1
    assert all(out[k] for k in ("entities", "claims", "signals"))
    assert capsules.history()[-1]["fallback"] == []


def test_sequential_tier_with_declared_agents() -> None:
    scripted = ScriptedChatModel()
    capsules = lc.capsulize(_app(lc.CapsuleChatModel(scripted)))
    fine = _app(ScriptedChatModel()).compile().invoke({"doc": DOC})
    out = capsules.compile().invoke(
        {"doc": DOC}, {"configurable": {"capsules": {"mode": "sequential"}}}
    )
    turns = [c for c in scripted.calls if parse_sequential_turn(c.messages) is not None]
    assert len(turns) == 3 and len({_texts(c)[0] for c in turns}) == 1
    # the same prompt lines reach each member (the digest after the head; the head is
    # the prompt's first line, and the shared context now comes first in the turn)
    assert {k: out[k].split(" :: ", 1)[1] for k in ("entities", "claims", "signals")} == {
        k: fine[k].split(" :: ", 1)[1] for k in ("entities", "claims", "signals")
    }


# ---------------------------------------------------------------- tools
@tool
def revenue(company: str) -> str:
    """Revenue of a company in 2024."""
    return "NOK 482 million (2024)"


def _tool_script(messages: list[BaseMessage]) -> list[dict[str, Any]] | None:
    """Call the tool once, then answer in text."""
    if any(m.type == "tool" for m in messages):
        return None
    return [{"name": "revenue", "args": {"company": "Nordvik"}}]


def _tool_model() -> ScriptedChatModel:
    return ScriptedChatModel(tool_calls_for=_tool_script)


def _tool_calls(scripted: ScriptedChatModel) -> int:
    return sum(1 for c in scripted.calls if c.kwargs.get("tools"))


def test_fine_tier_runs_the_tool_loop() -> None:
    scripted = _tool_model()
    app = _app(scripted, entities={"tools": [revenue]}).compile()
    out = app.invoke({"doc": DOC})
    assert out["entities"]
    looped = [c for c in scripted.calls if c.kwargs.get("tools")]
    assert len(looped) == 2  # the tool call, then the answer after the tool result
    assert any(m.type == "tool" and "482" in str(m.content) for m in looped[1].messages)


def test_two_phase_gathers_with_tools_then_merges_without_them() -> None:
    scripted = _tool_model()
    capsules = lc.capsulize(_app(lc.CapsuleChatModel(scripted), entities={"tools": [revenue]}))
    group = capsules.plan.groups[0]
    assert "two_phase" in capsules.runtimes[group.name].built_tiers
    out = capsules.compile().invoke(
        {"doc": DOC}, {"configurable": {"capsules": {"mode": "two_phase"}}}
    )
    # phase A: the tool-using agent's gather loop (with the gather-only instruction)
    gather = [c for c in scripted.calls if c.kwargs.get("tools")]
    assert len(gather) == 2 and GATHER_INSTRUCTION in "".join(_texts(gather[0]))
    # phase B: one merged call without tools, holding the gathered data in its section
    assert len(scripted.merged_calls) == 1
    merged = scripted.merged_calls[0]
    assert not merged.kwargs.get("tools")
    assert "## gathered data" in "".join(_texts(merged))
    assert out["entities"] and capsules.history()[-1]["tier"] == "two_phase"


def test_standard_tier_drops_tools_by_design() -> None:
    scripted = _tool_model()
    capsules = lc.capsulize(_app(lc.CapsuleChatModel(scripted), entities={"tools": [revenue]}))
    capsules.compile().invoke({"doc": DOC}, {"configurable": {"capsules": {"mode": "standard"}}})
    assert _tool_calls(scripted) == 0 and len(scripted.merged_calls) == 1
    assert capsules.history()[-1]["tier"] == "standard"


COMPOUND_MODE: Any = {"configurable": {"capsules": {"mode": "compound"}}}


def _compound_tool_run(scripted: ScriptedChatModel, asynchronous: bool) -> tuple[Any, Any]:
    """The app whose entities agent has a tool, capsulized, run once in mode compound
    (``ainvoke`` when ``asynchronous``): the capsule graph and its output."""
    capsules = lc.capsulize(_app(lc.CapsuleChatModel(scripted), entities={"tools": [revenue]}))
    app = capsules.compile()
    if asynchronous:
        return capsules, asyncio.run(app.ainvoke({"doc": DOC}, COMPOUND_MODE))
    return capsules, app.invoke({"doc": DOC}, COMPOUND_MODE)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_compound_mode_merges_a_tool_group_in_two_phase(asynchronous: bool) -> None:
    """Mode "compound" is the merged tier that fits the group: with a declared tool
    agent that is two_phase (its tools are used, then one merged call), not standard,
    which would drop them; sync and async alike, and explain() says why."""
    scripted = _tool_model()
    capsules, out = _compound_tool_run(scripted, asynchronous)
    gather = [c for c in scripted.calls if c.kwargs.get("tools")]
    assert len(gather) == 2 and len(scripted.merged_calls) == 1
    assert "## gathered data" in "".join(_texts(scripted.merged_calls[0]))
    assert out["entities"] and capsules.history()[-1]["tier"] == "two_phase"
    # a group without tools still merges in standard under the same mode
    plain = ScriptedChatModel()
    other = lc.capsulize(_app(lc.CapsuleChatModel(plain)))
    other.compile().invoke({"doc": DOC}, COMPOUND_MODE)
    assert other.history()[-1]["tier"] == "standard"
    # the controller's locked decision says the same, and why
    built = capsules.runtimes[capsules.plan.groups[0].name].built_tiers
    d = lc.decide(
        [], lc.ControllerPolicy(), mode="compound", n_agents=3, has_tools=True, built_tiers=built
    )
    assert d.tier == "two_phase" and "tools" in " ".join(d.reasons)
    d = lc.decide(
        [], lc.ControllerPolicy(), mode="standard", n_agents=3, has_tools=True, built_tiers=built
    )
    assert d.tier == "standard"


def test_auto_picks_two_phase_for_a_tool_group() -> None:
    scripted = _tool_model()
    capsules = lc.capsulize(
        _app(lc.CapsuleChatModel(scripted), entities={"tools": [revenue]}), policy="aggressive"
    )
    app = capsules.compile()
    for _ in range(3):
        app.invoke({"doc": DOC})
    group = capsules.plan.groups[0].name
    assert [o["tier"] for o in capsules.observations(group)] == ["fine", "fine", "two_phase"]


@tool
def headcount(company: str) -> str:
    """Employees of a company at the end of 2024."""
    if company == "Failing":
        raise ConnectionError("filings service unreachable")
    return "412 employees (2024)"


def _stubborn(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """A model under a forced tool_choice: revenue, then headcount, then headcount forever."""
    if not any(m.type == "tool" for m in messages):
        return [{"name": "revenue", "args": {"company": "Nordvik"}}]
    return [{"name": "headcount", "args": {"company": "Nordvik"}}]


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_required_tool_choice_gathers_until_nothing_is_new_then_answers(how: str) -> None:
    import asyncio

    scripted = ScriptedChatModel(tool_calls_for=_stubborn, respond=lambda t: "answer")
    extra = {"entities": {"tools": [revenue, headcount], "tool_choice": "required"}}
    app = _app(scripted, **extra).compile()
    out = app.invoke({"doc": DOC}) if how == "invoke" else asyncio.run(app.ainvoke({"doc": DOC}))
    looped = [c for c in scripted.calls if c.kwargs.get("tools")]
    # revenue, headcount, the repeat (not run), then the answer with tool use off
    assert [c.kwargs.get("tool_choice") for c in looped] == ["required"] * 3 + ["none"]
    last = looped[-1].messages
    assert str(last[-1].content) == lc.agents.ANSWER_PROMPT
    results = [str(m.content) for m in last if m.type == "tool"]
    assert results == ["NOK 482 million (2024)", "412 employees (2024)"]
    assert out["entities"] == "answer" and out["brief"]


def test_required_tool_choice_reports_a_failing_tool_and_stops_at_the_limit() -> None:
    def always_new(messages: list[BaseMessage]) -> list[dict[str, Any]]:
        done = sum(m.type == "tool" for m in messages)
        return [{"name": "headcount", "args": {"company": "Failing" if done == 0 else f"C{done}"}}]

    scripted = ScriptedChatModel(tool_calls_for=always_new, respond=lambda t: "partial")
    node = lc.agent(
        "Count the staff.",
        reads=["doc"],
        writes="staff",
        tools=[headcount],
        tool_choice="required",
        llm=scripted,
    )
    assert node({"doc": DOC}, {}) == {"staff": "partial"}
    looped = scripted.calls
    assert len(looped) == lc.agents.MAX_TOOL_ROUNDS  # gathering turns, then the answer
    assert looped[-1].kwargs.get("tool_choice") == "none"
    first_result = next(m for m in looped[-1].messages if m.type == "tool")
    assert "ConnectionError: filings service unreachable" in str(first_result.content)


def test_two_phase_gathers_under_a_required_tool_choice() -> None:
    scripted = ScriptedChatModel(tool_calls_for=_stubborn, respond=lambda t: "gathered")
    extra = {"entities": {"tools": [revenue, headcount], "tool_choice": "required"}}
    capsules = lc.capsulize(_app(lc.CapsuleChatModel(scripted), **extra))
    out = capsules.compile().invoke(
        {"doc": DOC}, {"configurable": {"capsules": {"mode": "two_phase"}}}
    )
    gather = [c for c in scripted.calls if c.kwargs.get("tools")]
    assert [c.kwargs.get("tool_choice") for c in gather] == ["required"] * 3 + ["none"]
    assert GATHER_INSTRUCTION in "".join(_texts(gather[0]))
    assert len(scripted.merged_calls) == 1 and "gathered" in "".join(
        _texts(scripted.merged_calls[0])
    )
    assert out["entities"] and capsules.history()[-1]["tier"] == "two_phase"


def _flaky_forced_model() -> ScriptedChatModel:
    """A model under a forced tool_choice whose provider drops the connection once, on
    the second gathering turn (after the first tool result)."""
    failed: list[bool] = []

    def calls(messages: list[BaseMessage]) -> list[dict[str, Any]]:
        results = sum(m.type == "tool" for m in messages)
        if results == 1 and not failed:
            failed.append(True)
            raise ConnectionError("provider reset the connection")
        name = "revenue" if results == 0 else "headcount"
        return [{"name": name, "args": {"company": "Nordvik"}}]

    return ScriptedChatModel(tool_calls_for=calls, respond=lambda t: "answer")


def _run(app: Any, inputs: Any, config: Any, how: str) -> dict[str, Any]:
    import asyncio

    if how == "invoke":
        return dict(app.invoke(inputs, config))
    return dict(asyncio.run(app.ainvoke(inputs, config)))


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_a_provider_fault_mid_forced_gather_in_fine_resumes_from_the_checkpoint(
    how: str,
) -> None:
    """The fault surfaces as the node's error (as in the app without capsules); the
    siblings' outputs are kept in the checkpoint and resuming re-runs only the failed
    agent, whose gather starts over."""
    from langgraph.checkpoint.memory import InMemorySaver

    scripted = _flaky_forced_model()
    extra = {"entities": {"tools": [revenue, headcount], "tool_choice": "required"}}
    capsules = lc.capsulize(_app(lc.CapsuleChatModel(scripted), **extra))
    app = capsules.compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t1", "capsules": {"mode": "fine"}}}
    with pytest.raises(ConnectionError, match="provider reset the connection"):
        _run(app, {"doc": DOC}, config, how)
    saved = app.get_state(config)
    done = {k for k in ("entities", "claims", "signals") if saved.values.get(k)}
    # siblings that finished before the fault are kept; which ones did depends on timing
    # (a sync run lets started siblings finish and drops unstarted ones, an async run
    # cancels the unfinished), so the check is that exactly the missing ones are pending
    assert "entities" in saved.next and "entities" not in done
    assert done <= {"claims", "signals"}
    assert set(saved.next) == {"entities", "claims", "signals"} - done
    assert capsules.history() == []  # the failed run recorded nothing
    out = _run(app, None, config, how)
    assert out["entities"] == "answer" and out["brief"]
    assert all(out[k] for k in ("claims", "signals"))
    assert [h["tier"] for h in capsules.history()] == ["fine"]
    looped = [c for c in scripted.calls if c.kwargs.get("tools")]
    # the failed gather (revenue, then the fault), then a whole new gather and the answer
    assert [c.kwargs.get("tool_choice") for c in looped] == ["required"] * 5 + ["none"]


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_a_provider_fault_mid_forced_gather_in_two_phase_falls_back_to_the_agent(
    how: str,
) -> None:
    scripted = _flaky_forced_model()
    extra = {"entities": {"tools": [revenue, headcount], "tool_choice": "required"}}
    capsules = lc.capsulize(_app(lc.CapsuleChatModel(scripted), **extra))
    config: Any = {"configurable": {"capsules": {"mode": "two_phase"}}}
    out = _run(capsules.compile(), {"doc": DOC}, config, how)
    assert all(out[k] for k in ("entities", "claims", "signals", "brief"))
    record = capsules.history()[-1]
    assert record["tier"] == "two_phase" and record["error"] is None
    assert record["fallback"] == ["entities"]
    assert (
        "ConnectionError: provider reset the connection" in record["fallback_reasons"]["entities"]
    )
    assert out["entities"] == "answer"  # its own tool loop, run again as its own node
    assert len(scripted.merged_calls) == 1  # the others stayed merged


# ---------------------------------------------------------- structured output
class Facts(BaseModel):
    company: str
    revenue: str


def test_structured_output_fine_and_compound() -> None:
    def structured(messages: list[BaseMessage]) -> list[dict[str, Any]] | None:
        return [{"name": "Facts", "args": {"company": "Nordvik", "revenue": "NOK 482m"}}]

    scripted = ScriptedChatModel(
        tool_calls_for=structured,
        rules={"JSON schema": '```json\n{"company": "Nordvik", "revenue": "NOK 482m"}\n```'},
    )
    node = lc.agent(
        "Extract the facts.",
        reads=["doc"],
        writes=["company", "revenue"],
        output_schema=Facts,
        llm=scripted,
    )
    assert node({"doc": DOC}, {}) == {"company": "Nordvik", "revenue": "NOK 482m"}


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"reads": [], "writes": "x"}, "reads is empty"),
        ({"reads": ["a"], "writes": []}, "writes is empty"),
        ({"reads": ["a"], "writes": "a"}, "both read and written"),
        ({"reads": ["a"], "writes": ["x", "y"]}, "need an output_schema"),
        ({"reads": ["a"], "writes": ["x", "y"], "output_schema": Facts}, "not fields of Facts"),
        ({"reads": ["a"], "writes": "x", "tool_choice": "any"}, "tool_choice must be"),
        ({"reads": ["a"], "writes": "x", "tool_choice": "required"}, "needs tools"),
    ],
)
def test_bad_declarations_are_named(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(lc.CapsuleConfigError) as err:
        lc.agent("Do it.", **kwargs)
    assert err.value.code == "bad_agent" and problem in str(err.value)


def test_end_to_end_escalation_across_every_tier() -> None:
    """standard -> two_phase -> sequential -> fine, as merged and then per-agent answers
    degrade (a tool group: standard loses the tool, two_phase keeps it)."""

    scripted = _tool_model()
    policy = lc.ControllerPolicy.aggressive(quality_floor=0.9, compound_execution_model="standard")
    capsules = lc.capsulize(
        _app(lc.CapsuleChatModel(scripted), entities={"tools": [revenue]}),
        policy=policy,
        judge=overlap,
    )
    app = capsules.compile()
    group = capsules.plan.groups[0].name

    def run(n: int) -> None:
        for _ in range(n):
            app.invoke({"doc": DOC})

    run(4)
    assert capsules.explain(group).state.tier == "standard"  # the shadow passed (tool lost)
    scripted.compress = 0.3  # merged answers (standard and two_phase's phase B) degrade
    run(5)
    assert capsules.explain(group).state.tier == "sequential"
    scripted.compress_turns = 0.05  # now the per-agent calls of sequential degrade too
    run(3)
    tiers = [o["tier"] for o in capsules.observations(group) if not o["shadow"]]
    ladder = [t for i, t in enumerate(tiers) if i == 0 or t != tiers[i - 1]]
    assert ladder == ["fine", "standard", "two_phase", "sequential", "fine"]
    state = capsules.explain(group).state
    assert state.mode == "fine" and state.revert_count == 1
    # two_phase kept the tool: its runs called the tool, standard's did not
    calls = {o["tier"]: o["calls"] for o in capsules.observations(group) if not o["shadow"]}
    assert calls["two_phase"] > calls["standard"] == 1


def test_provider_cache_hints() -> None:
    from langchain_openai import ChatOpenAI

    from langgraph_capsules.cache_hints import cache_hints, provider_of

    shared = SystemMessage("CONTEXT:\n\n## doc\n" + DOC)
    a = [shared, SystemMessage("List the claims."), HumanMessage("Write your answer.")]
    b = [shared, SystemMessage("List the signals."), HumanMessage("Write your answer.")]
    openai = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test")  # type: ignore[arg-type]
    assert provider_of(lc.CapsuleChatModel(openai)) == "openai"
    (_, ka), (_, kb) = cache_hints(openai, a), cache_hints(openai, b)
    assert ka == kb and ka["prompt_cache_key"].startswith("capsule-")  # same shared block
    other = [SystemMessage("CONTEXT:\n\n## doc\nAnother document."), *a[1:]]
    assert cache_hints(openai, other)[1] != ka
    local = ChatOpenAI(model="m", api_key="x", base_url="http://127.0.0.1:8080/v1")  # type: ignore[arg-type]
    assert provider_of(local) == "other" and cache_hints(local, a) == (a, {})
    # a subclass of ChatOpenAI (the embedded client) is still OpenAI's client
    from langgraph_capsules.tool_text import ToolTextChatOpenAI

    sub = ToolTextChatOpenAI(model="gpt-4o-mini", api_key="sk-test")  # type: ignore[arg-type]
    assert provider_of(lc.CapsuleChatModel(sub)) == "openai"

    class ChatAnthropic(ScriptedChatModel):  # stands in for langchain_anthropic's class
        pass

    claude = ChatAnthropic(model_name="claude-sonnet-4-5")
    assert cache_hints(claude, a) == (a, {})  # too short to be cached: no breakpoint
    long = [SystemMessage("CONTEXT:\n\n" + "word " * 1500), *a[1:]]
    msgs, kwargs = cache_hints(claude, long)
    assert kwargs == {} and msgs[1:] == long[1:]
    assert msgs[0].content[0]["cache_control"] == {"type": "ephemeral"}  # type: ignore[index]


def test_linear_chain_context_is_predecessor_only_in_the_capsule_graph() -> None:
    class C(TypedDict, total=False):
        doc: str
        facts: str
        analysis: str
        memo: str

    def chain(llm: Any, context: str) -> StateGraph[Any, Any, Any, Any]:
        b = StateGraph(C)
        b.add_node(lc.agent("List the facts.", reads=["doc"], writes="facts", llm=llm))
        b.add_node(
            lc.agent("Analyse the facts.", reads=["doc", "facts"], writes="analysis", llm=llm)
        )
        b.add_node(
            lc.agent(
                "Write the memo.",
                reads=["doc", "facts", "analysis"],
                writes="memo",
                llm=llm,
                context=context,
            )
        )
        b.add_edge(START, "facts")
        b.add_edge("facts", "analysis")
        b.add_edge("analysis", "memo")
        b.add_edge("memo", END)
        return b

    def memo_prompt(scripted: ScriptedChatModel) -> str:
        return "".join(_texts(next(c for c in scripted.calls if "memo" in _texts(c)[-1])))

    alone = ScriptedChatModel()
    out = chain(alone, "predecessor_only").compile().invoke({"doc": DOC})
    assert out["facts"] in memo_prompt(alone)  # the graph on its own: every declared read

    narrowed = ScriptedChatModel()
    lc.capsulize(chain(narrowed, "predecessor_only")).compile().invoke({"doc": DOC})
    prompt = memo_prompt(narrowed)
    assert "## facts" not in prompt  # written two links up the chain: hidden
    assert "## analysis" in prompt and DOC in prompt  # predecessor output and graph input

    full = ScriptedChatModel()
    lc.capsulize(chain(full, "full")).compile().invoke({"doc": DOC})
    assert "## facts" in memo_prompt(full)
    # the middle agent's predecessor is the first: it keeps what it declared
    analysis = next(c for c in narrowed.calls if "analysis" in _texts(c)[-1])
    assert "## facts" in "".join(_texts(analysis))


@pytest.mark.parametrize("asynchronous", [False, True])
def test_compound_mode_on_a_tool_group_loses_nothing_when_the_merged_call_fails(
    asynchronous: bool,
) -> None:
    """A provider fault on the two_phase merged call that mode "compound" now makes: each
    member is answered by its own call (the tool agent with its gathered data), so every
    output equals the fine run's, sync and async alike."""
    fine = _app(_tool_model(), entities={"tools": [revenue]}).compile().invoke({"doc": DOC})
    scripted = _tool_model()
    scripted.fail_merged = True
    capsules, out = _compound_tool_run(scripted, asynchronous)
    assert len(scripted.merged_calls) == 1  # it was attempted, and it raised
    assert {k: out[k] for k in ("entities", "claims", "signals")} == {
        k: fine[k] for k in ("entities", "claims", "signals")
    }
    last = capsules.history()[-1]
    assert last["tier"] == "two_phase" and sorted(last["fallback"]) == [
        "claims",
        "entities",
        "signals",
    ]
