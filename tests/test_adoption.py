"""Adoption without surprises: a capsule graph continues the threads an app already has.

Apps in the shapes real apps have: a ``MessagesState`` chat whose every turn fans out to
two readers before the reply, a due-diligence fan-out with a human review before the
analysts, a ``Send`` map-reduce. Threads written by the original graph (or by another
plan) continue under the capsule graph when nothing of the writer is in flight, with
the answers the original gives; a thread paused inside another plan's capsule run is
refused with the fix.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send, interrupt

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel

FINE = {"mode": "fine"}
COMPOUND = {"mode": "compound"}


def _cfg(thread: str, capsules: dict[str, Any] | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread}
    if capsules is not None:
        conf["capsules"] = capsules
    return {"configurable": conf}


def _run(app: Any, inp: Any, cfg: dict[str, Any], use_async: bool = False) -> Any:
    if use_async:
        return asyncio.run(app.ainvoke(inp, cfg))
    return app.invoke(inp, cfg)


# ------------------------------------------------------------------ chat app
class ChatState(MessagesState):
    intent: str
    mood: str


def chat_app(llm: Any) -> StateGraph[Any, Any, Any, Any]:
    """Each turn: two readers of the conversation (intent, mood), then the reply."""

    def transcript(state: ChatState) -> str:
        return "\n".join(f"{m.type}: {m.content}" for m in state["messages"])

    def intent(state: ChatState) -> dict[str, Any]:
        r = llm.invoke(
            [
                SystemMessage("Name what the customer wants in one line."),
                HumanMessage(transcript(state)),
            ]
        )
        return {"intent": r.content}

    def mood(state: ChatState) -> dict[str, Any]:
        r = llm.invoke(
            [
                SystemMessage("Describe the customer's mood in one line."),
                HumanMessage(transcript(state)),
            ]
        )
        return {"mood": r.content}

    def reply(state: ChatState) -> dict[str, Any]:
        system = SystemMessage(
            "You are a support agent. Answer the last message.\n"
            f"Intent: {state['intent']}\nMood: {state['mood']}"
        )
        r = llm.invoke([system, *state["messages"]])
        return {"messages": [AIMessage(r.content)]}

    b = StateGraph(ChatState)
    b.add_node("intent", intent)
    b.add_node("mood", mood)
    b.add_node("reply", reply)
    b.add_edge(START, "intent")
    b.add_edge(START, "mood")
    b.add_edge("intent", "reply")
    b.add_edge("mood", "reply")
    b.add_edge("reply", END)
    return b


TURNS = (
    "Hi, my order 1182 arrived with a cracked screen.",
    "I already sent photos yesterday. Can you refund it?",
    "Fine, a replacement then. How long will it take?",
    "Thanks. Can it go to my office address instead?",
)


def _turn(text: str) -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


def _contents(out: dict[str, Any]) -> list[str]:
    return [str(m.content) for m in out["messages"]]


def _chat_reference() -> list[str]:
    """All four turns on the original graph: the answers a capsule graph must give."""
    app = chat_app(lc.CapsuleChatModel(ScriptedChatModel())).compile(checkpointer=InMemorySaver())
    out: dict[str, Any] = {}
    for text in TURNS:
        out = app.invoke(_turn(text), _cfg("ref"))
    return _contents(out)


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
@pytest.mark.parametrize("mode", ["fine", "compound"])
def test_chat_thread_of_the_original_graph_continues_on_the_capsule_graph(
    mode: str, use_async: bool
) -> None:
    scripted = ScriptedChatModel()
    builder = chat_app(lc.CapsuleChatModel(scripted))
    saver = InMemorySaver()
    original = builder.compile(checkpointer=saver)
    for text in TURNS[:2]:
        _run(original, _turn(text), _cfg("chat"), use_async)
    capsules = lc.capsulize(builder)
    assert capsules.plan.groups and set(capsules.plan.groups[0].members) == {"intent", "mood"}
    app = capsules.compile(checkpointer=saver)
    for text in TURNS[2:]:  # the 2nd turn under the capsule graph is its own thread now
        out = _run(app, _turn(text), _cfg("chat", {"mode": mode}), use_async)
    assert _contents(out) == _chat_reference()
    assert len(scripted.merged_calls) == (2 if mode == "compound" else 0)
    # and the thread goes back to the original graph just as well
    back = _run(original, _turn("One more thing."), _cfg("chat"), use_async)
    assert len(back["messages"]) == 2 * len(TURNS) + 2


def test_chat_thread_of_another_plan_continues() -> None:
    """A redeploy with another grouping (or an older plan id) keeps the users' chats."""
    builder = chat_app(lc.CapsuleChatModel(ScriptedChatModel()))
    saver = InMemorySaver()
    excluded = lc.capsulize(builder, exclude=["mood"]).compile(checkpointer=saver)
    grouped = lc.capsulize(builder).compile(checkpointer=saver)
    assert excluded.config["metadata"] != grouped.config["metadata"]
    for i, text in enumerate(TURNS):
        app = grouped if i % 2 else excluded
        out = app.invoke(_turn(text), _cfg("chat", COMPOUND))
    assert _contents(out) == _chat_reference()


# ------------------------------------------------------------- fan-out app
class DealState(TypedDict, total=False):
    company: str
    outline: str
    finance: str
    legal: str
    product: str
    memo: str
    log: Annotated[list[str], operator.add]


def deal_app(llm: Any, *, review: bool = False) -> StateGraph[Any, Any, Any, Any]:
    """outline -> finance, legal, product (fan-out) -> memo; a reviewer approves the
    outline before the analysts run (interrupt_before an analyst). ``review``: a
    human signs the memo off (``interrupt()``) in a last node."""

    def outline(state: DealState) -> dict[str, Any]:
        r = llm.invoke([SystemMessage("Outline the deal review."), HumanMessage(state["company"])])
        return {"outline": r.content, "log": ["outline"]}

    def analyst(lens: str) -> Any:
        def node(state: DealState) -> dict[str, Any]:
            r = llm.invoke(
                [
                    SystemMessage(f"You review the {lens} side of a deal. Give three findings."),
                    HumanMessage(f"Company: {state['company']}\nOutline:\n{state['outline']}"),
                ]
            )
            return {lens: r.content, "log": [lens]}

        return node

    def memo(state: DealState) -> dict[str, Any]:
        body = "\n".join(f"{k}: {state[k]}" for k in ("finance", "legal", "product"))
        r = llm.invoke([SystemMessage("Write the investment memo."), HumanMessage(body)])
        return {"memo": r.content, "log": ["memo"]}

    b = StateGraph(DealState)
    b.add_node("outline", outline)
    for lens in ("finance", "legal", "product"):
        b.add_node(lens, analyst(lens))
        b.add_edge("outline", lens)
        b.add_edge(lens, "memo")

    def sign_off(state: DealState) -> dict[str, Any]:
        verdict = interrupt({"memo": state["memo"]})
        return {"log": [f"signed: {verdict}"]}

    b.add_node("memo", memo)
    b.add_edge(START, "outline")
    if review:
        b.add_node("sign_off", sign_off)
        b.add_edge("memo", "sign_off")
        b.add_edge("sign_off", END)
    else:
        b.add_edge("memo", END)
    return b


COMPANY = {"company": "Nordvik Sensors, vibration sensors for wind turbines, Oslo"}
LENSES = ["finance", "legal", "product"]


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
@pytest.mark.parametrize("mode", ["fine", "compound"])
def test_fanout_thread_interrupted_before_a_member_resumes_on_the_capsule_graph(
    mode: str, use_async: bool
) -> None:
    builder = deal_app(lc.CapsuleChatModel(ScriptedChatModel()))
    base = builder.compile().invoke(COMPANY)
    saver = InMemorySaver()
    original = builder.compile(checkpointer=saver, interrupt_before=["legal"])
    _run(original, COMPANY, _cfg("deal"), use_async)
    assert set(original.get_state(_cfg("deal")).next) == set(LENSES)
    app = lc.capsulize(builder, groups={"desk": LENSES}).compile(
        checkpointer=saver, interrupt_before=["legal"]
    )
    out = _run(app, None, _cfg("deal", {"mode": mode}), use_async)
    assert out["memo"] == base["memo"] and sorted(out["log"]) == sorted(base["log"])
    assert app.get_state(_cfg("deal")).next == ()
    # the next deal on the same thread runs the capsule way (and stops at the review)
    _run(app, COMPANY, _cfg("deal", {"mode": mode}), use_async)
    expected = ("capsule__desk",) if mode == "compound" else tuple(LENSES)
    assert set(app.get_state(_cfg("deal", {"mode": mode})).next) == set(expected)


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
def test_thread_waiting_on_a_human_in_an_original_node_resumes(use_async: bool) -> None:
    builder = deal_app(lc.CapsuleChatModel(ScriptedChatModel()), review=True)
    saver = InMemorySaver()
    original = builder.compile(checkpointer=saver)
    first = _run(original, COMPANY, _cfg("deal"), use_async)
    assert first["__interrupt__"] and original.get_state(_cfg("deal")).next == ("sign_off",)
    app = lc.capsulize(builder, groups={"desk": LENSES}).compile(checkpointer=saver)
    out = _run(app, Command(resume="approved"), _cfg("deal", COMPOUND), use_async)
    assert out["memo"] == first["memo"] and out["log"][-1] == "signed: approved"


def test_thread_whose_last_step_failed_is_retried_on_the_capsule_graph() -> None:
    """The model failed in memo (after the analysts): memo is an original node with
    nothing of its step saved, so the capsule graph retries it."""
    builder = deal_app(lc.CapsuleChatModel(ScriptedChatModel(fail_calls={4})))
    saver = InMemorySaver()
    with pytest.raises(Exception, match="scripted failure"):
        builder.compile(checkpointer=saver).invoke(COMPANY, _cfg("deal"))
    app = lc.capsulize(builder, groups={"desk": LENSES}).compile(checkpointer=saver)
    out = app.invoke(None, _cfg("deal", COMPOUND))
    assert sorted(out["log"]) == sorted(["outline", *LENSES, "memo"])


def test_thread_whose_fanout_step_failed_part_way_is_refused() -> None:
    """legal failed while finance and product finished: their writes are saved with
    the original's edges (straight to memo), and the capsule graph would re-run legal
    through its gate, so memo would run twice. Refused; the original finishes it."""
    builder = deal_app(lc.CapsuleChatModel(ScriptedChatModel(fail_calls={2})))
    saver = InMemorySaver()
    original = builder.compile(checkpointer=saver)
    with pytest.raises(Exception, match="scripted failure"):
        original.invoke(COMPANY, _cfg("deal"))
    app = lc.capsulize(builder, groups={"desk": LENSES}).compile(checkpointer=saver)
    with pytest.raises(lc.CapsuleResumeError, match="run twice") as e:
        app.invoke(None, _cfg("deal", COMPOUND))
    assert e.value.group == "desk" and "new thread_id" in str(e.value)
    out = original.invoke(None, _cfg("deal"))
    assert sorted(out["log"]) == sorted(["outline", *LENSES, "memo"])


# ------------------------------------------------- threads paused in a capsule run
def _paused_in_plan_a(scripted: ScriptedChatModel, saver: Any, **knobs: Any) -> Any:
    builder = deal_app(lc.CapsuleChatModel(scripted))
    plan_a = lc.capsulize(builder, groups={"desk": LENSES}).compile(checkpointer=saver, **knobs)
    plan_a.invoke(COMPANY, _cfg("deal", COMPOUND))
    return builder, plan_a


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
def test_thread_paused_before_another_plans_capsule_node_is_refused_with_the_fix(
    use_async: bool,
) -> None:
    saver = InMemorySaver()
    builder, plan_a = _paused_in_plan_a(ScriptedChatModel(), saver, interrupt_before=["legal"])
    assert plan_a.get_state(_cfg("deal")).next == ("capsule__desk",)
    stamp = plan_a.config["metadata"]["capsule_plan"]
    for groups in ({"pair": ["finance", "legal"]}, {"desk": ["finance", "legal"]}):
        plan_b = lc.capsulize(builder, groups=groups).compile(checkpointer=saver)
        with pytest.raises(lc.CapsuleResumeError) as e:
            _run(plan_b, None, _cfg("deal", COMPOUND), use_async)
        msg = str(e.value)
        assert e.value.code == "plan_mismatch"
        assert e.value.node == "capsule__desk" and e.value.group == "desk"
        assert f"capsule plan {stamp}" in msg and "'capsule__desk' pending" in msg
        assert "Finish the thread on the graph that wrote it" in msg and "new thread_id" in msg
    # the fix: the writer finishes it, then the thread is free for any plan
    assert _run(plan_a, None, _cfg("deal", COMPOUND), use_async)["memo"]
    plan_b = lc.capsulize(builder, groups={"pair": ["finance", "legal"]}).compile(
        checkpointer=saver
    )
    assert _run(plan_b, COMPANY, _cfg("deal", COMPOUND), use_async)["memo"]


def test_thread_with_staged_outputs_of_another_plans_group_is_refused() -> None:
    """The merged reply lost a section: the members it answered are staged in the
    group's private channel and the others re-run alone. Paused there, only original
    nodes are pending, but the staged outputs belong to plan A's gate."""
    saver = InMemorySaver()
    scripted = ScriptedChatModel(drop_sections={2})
    builder, plan_a = _paused_in_plan_a(scripted, saver, interrupt_before=["legal"])
    plan_a.invoke(None, _cfg("deal", COMPOUND))  # runs capsule__desk, stops before legal
    pending = plan_a.get_state(_cfg("deal")).next
    assert "legal" in pending and set(pending) < set(LENSES)
    plan_b = lc.capsulize(builder, groups={"pair": ["finance", "product"]}).compile(
        checkpointer=saver
    )
    with pytest.raises(lc.CapsuleResumeError, match="staged data of group 'desk'") as e:
        plan_b.invoke(None, _cfg("deal"))
    assert e.value.group == "desk" and "new thread_id" in str(e.value)
    out = plan_a.invoke(None, _cfg("deal", COMPOUND))
    assert sorted(out["log"]) == sorted(["outline", *LENSES, "memo"])


def test_thread_paused_before_another_plans_gate_is_refused() -> None:
    saver = InMemorySaver()
    builder, plan_a = _paused_in_plan_a(ScriptedChatModel(), saver, interrupt_before=["gate__desk"])
    assert plan_a.get_state(_cfg("deal")).next == ("gate__desk",)
    plan_b = lc.capsulize(builder, groups={"pair": ["finance", "legal"]}).compile(
        checkpointer=saver
    )
    with pytest.raises(lc.CapsuleResumeError, match="'gate__desk' pending") as e:
        asyncio.run(plan_b.ainvoke(None, _cfg("deal")))
    assert e.value.group == "desk"


# ---------------------------------------------------------------- map-reduce
class JokeState(TypedDict, total=False):
    topic: str
    subjects: list[str]
    jokes: Annotated[list[str], operator.add]
    best: str


def joke_app(llm: Any) -> StateGraph[Any, Any, Any, Any]:
    def topics(state: JokeState) -> dict[str, Any]:
        return {"subjects": [f"{state['topic']} number {k}" for k in range(3)]}

    def joke(state: dict[str, Any]) -> dict[str, Any]:
        r = llm.invoke(
            [
                SystemMessage("Write one short, clean joke about the subject."),
                HumanMessage(f"Subject: {state['subject']}"),
            ]
        )
        return {"jokes": [r.content]}

    def fan_out(state: JokeState) -> list[Send]:
        return [Send("joke", {"subject": s}) for s in state["subjects"]]

    def best(state: JokeState) -> dict[str, Any]:
        return {"best": max(state["jokes"], key=len)}

    b = StateGraph(JokeState)
    b.add_node("topics", topics)
    b.add_node("joke", joke)
    b.add_node("best", best)
    b.add_edge(START, "topics")
    b.add_conditional_edges("topics", fan_out, ["joke"])
    b.add_edge("joke", "best")
    b.add_edge("best", END)
    return b


def test_sends_of_the_original_graph_continue_and_a_batch_of_another_plan_is_refused() -> None:
    scripted = ScriptedChatModel()
    builder = joke_app(lc.CapsuleChatModel(scripted))
    base = builder.compile().invoke({"topic": "cats"})
    saver = InMemorySaver()
    original = builder.compile(checkpointer=saver, interrupt_before=["joke"])
    original.invoke({"topic": "cats"}, _cfg("orig"))
    capsules = lc.capsulize(builder)
    (dyn,) = capsules.plan.dynamic
    app = capsules.compile(checkpointer=saver, interrupt_before=[dyn.capsule_node])
    assert sorted(app.invoke(None, _cfg("orig", COMPOUND))["jokes"]) == sorted(base["jokes"])

    app.invoke({"topic": "cats"}, _cfg("caps", COMPOUND))
    assert app.get_state(_cfg("caps")).next == (dyn.capsule_node,)
    other = lc.capsulize(builder, groups={"jokes": ["joke"]}).compile(checkpointer=saver)
    with pytest.raises(lc.CapsuleResumeError, match=dyn.capsule_node) as e:
        other.invoke(None, _cfg("caps", COMPOUND))
    assert e.value.group == dyn.name


# ------------------------------------------------------- empty plan, opt-out, ids
def test_a_plan_with_no_groups_continues_anything() -> None:
    saver = InMemorySaver()
    builder, plan_a = _paused_in_plan_a(ScriptedChatModel(), saver, interrupt_before=["legal"])
    empty = lc.capsulize(builder, groups={})
    assert not empty.plan.groups and not empty.plan.dynamic
    app = empty.compile(checkpointer=saver)
    # like the original graph, it has no capsule__desk to run: nothing runs, no error
    assert "memo" not in app.invoke(None, _cfg("deal"))
    assert plan_a.get_state(_cfg("deal")).next == ("capsule__desk",)  # still plan A's
    assert plan_a.invoke(None, _cfg("deal", COMPOUND))["memo"]

    chat = chat_app(lc.CapsuleChatModel(ScriptedChatModel()))
    original = chat.compile(checkpointer=saver)
    for text in TURNS[:2]:
        original.invoke(_turn(text), _cfg("chat"))
    chat_empty = lc.capsulize(chat, groups={}).compile(checkpointer=saver)
    for text in TURNS[2:]:
        out = chat_empty.invoke(_turn(text), _cfg("chat"))
    assert _contents(out) == _chat_reference()


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
def test_resume_allow_skips_the_check(use_async: bool) -> None:
    saver = InMemorySaver()
    builder, _plan_a = _paused_in_plan_a(ScriptedChatModel(), saver, interrupt_before=["legal"])
    plan_b = lc.capsulize(builder, groups={"pair": ["finance", "legal"]}, resume="allow")
    assert plan_b.resume == "allow"
    _run(plan_b.compile(checkpointer=saver), None, _cfg("deal"), use_async)  # no error


@pytest.mark.parametrize("bad", ["strict", "", None, True, 1])
def test_resume_option_is_validated(bad: Any) -> None:
    builder = deal_app(lc.CapsuleChatModel(ScriptedChatModel()))
    with pytest.raises(lc.CapsuleConfigError, match="resume must be one of") as e:
        lc.capsulize(builder, resume=bad)
    assert e.value.code == "bad_option"


def test_plan_id_reflects_the_graph_groups_and_dynamic_groups() -> None:
    llm = lc.CapsuleChatModel(ScriptedChatModel())
    deal, chat, jokes = deal_app(llm), chat_app(llm), joke_app(llm)
    empty_ids = {lc.capsulize(b, groups={}).plan.plan_id for b in (deal, chat, jokes)}
    assert len(empty_ids) == 3  # different apps, no groups: different ids
    ids = {
        lc.capsulize(deal, groups={"desk": LENSES}).plan.plan_id,
        lc.capsulize(deal, groups={"desk": LENSES[:2]}).plan.plan_id,
        lc.capsulize(deal, groups={"pair": LENSES[:2]}).plan.plan_id,
        lc.capsulize(jokes).plan.plan_id,
        lc.capsulize(jokes, groups={"jokes": ["joke"]}).plan.plan_id,
        *empty_ids,
    }
    assert len(ids) == 8
    # a rebuilt app (new functions, same shape), even after compiling it, keeps its id
    again = deal_app(lc.CapsuleChatModel(ScriptedChatModel()))
    again.compile()
    assert (
        lc.capsulize(again, groups={"desk": LENSES}).plan.plan_id
        == lc.capsulize(deal, groups={"desk": LENSES}).plan.plan_id
    )
