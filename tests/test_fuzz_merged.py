"""Fuzzed merged replies: no member ever holds another member's answer, a truncated,
placeholder or empty answer, and no output is lost.

A fuzzing model answers each merged call (standard tier) or turn (sequential tier) with
the correct reply and then breaks it at random: markers that lost or changed their
nonce, deleted or repeated markers, another member's answer under a marker, skeleton
placeholders, ``N/A``, huge section numbers, replies cut by the length limit, replies
as lists of content blocks, fenced and decorated sections, reordered sections, and
provider errors. Every run has a new input (production traffic), and every member must
end with exactly the answer its own call gives (from its section, or from its re-run).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import zlib
from collections import Counter
from typing import Any, TypedDict

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, StateGraph
from pydantic import PrivateAttr

import langgraph_capsules as lc
from langgraph_capsules.strategies import parse_merged_prompt
from langgraph_capsules.strategies.sequential import parse_sequential_turn
from langgraph_capsules.strategies.standard import MergedPrompt, split_reply
from langgraph_capsules.testing import ScriptedChatModel, ScriptedError

MEMBERS = ("market", "finance", "people", "risk")
WORDS = "river copper lantern orbit harbor velvet quarry meadow signal falcon ember tundra".split()


class State(TypedDict, total=False):
    item: str
    market: str
    finance: str
    people: str
    risk: str


def _messages(member: str, item: str) -> list[BaseMessage]:
    return [
        SystemMessage(f"You are the {member} reviewer. Answer in two or three lines."),
        HumanMessage(f"Case file:\n\n{item}\n\nGive the {member} assessment of this case."),
    ]


def build(llm: Any, *, use_async: bool) -> StateGraph[Any]:
    """Four reviewers calling one model through different entry points; one of them
    swallows errors into a default, as many apps do."""
    b: StateGraph[Any] = StateGraph(State)

    def text(msg: Any) -> str:
        return msg.content if isinstance(msg.content, str) else str(msg.content)

    def make(k: int, member: str) -> Any:
        if use_async:

            async def anode(state: State) -> dict[str, str]:
                msgs = _messages(member, state["item"])
                if k == 0:
                    return {member: text(await llm.ainvoke(msgs))}
                if k == 1:
                    return {member: await (llm | StrOutputParser()).ainvoke(msgs)}
                if k == 2:
                    return {member: "".join([text(c) async for c in llm.astream(msgs)])}
                try:
                    return {member: text(await llm.ainvoke(msgs))}
                except Exception:
                    return {member: "DEFAULT"}

            return anode

        def node(state: State) -> dict[str, str]:
            msgs = _messages(member, state["item"])
            if k == 0:
                return {member: text(llm.invoke(msgs))}
            if k == 1:
                return {member: (llm | StrOutputParser()).invoke(msgs)}
            if k == 2:
                return {member: "".join(text(c) for c in llm.stream(msgs))}
            try:
                return {member: text(llm.invoke(msgs))}
            except Exception:
                return {member: "DEFAULT"}

        return node

    for k, m in enumerate(MEMBERS):
        b.add_node(m, make(k, m))
        b.add_edge(START, m)
        b.add_edge(m, END)
    return b


# ----------------------------------------------------------------- mutations
def _sections(text: str, nonce: str) -> list[tuple[str, str]]:
    """(marker line, body) pairs of a well-formed reply."""
    parts = re.split(rf"^(### SECTION \d+ {nonce})$", text, flags=re.M)
    return [(parts[i], parts[i + 1].strip("\n")) for i in range(1, len(parts), 2)]


def _join(sections: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"{marker}\n{body}" for marker, body in sections)


def mutate(text: str, nonce: str, rng: random.Random) -> tuple[Any, dict[str, Any], str]:
    """Break a correct merged reply; returns (content, response_metadata, label)."""
    secs = _sections(text, nonce)
    n = len(secs)
    meta: dict[str, Any] = {"finish_reason": "stop"}
    labels: list[str] = []
    kinds = [rng.choice(MUTATIONS) for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))]
    # repeats are made last, from the reply as it then stands: a copy of an answer whose
    # original was lost is a mislabel no splitter can see
    kinds.sort(key=lambda kind: kind.startswith("dup_"))
    if "drop_marker" in kinds and "reorder" in kinds:
        # reordered with an answer hidden under no marker: if the visible order still
        # looks right, no splitter can know (documented in strategies/standard.py);
        # an out-of-order reply with a missing task is tested by the splitter tests
        # (every draw of it: two "reorder"s and a "drop_marker" once slipped through)
        kinds = [kind for kind in kinds if kind != "reorder"]
    for kind in kinds:
        labels.append(kind)
        if not secs:
            continue
        k = rng.randrange(len(secs))
        if kind == "strip_nonce":
            secs[k] = (secs[k][0].rsplit(" ", 1)[0], secs[k][1])
        elif kind == "wrong_nonce":
            other = "".join(rng.choice("0123456789abcdef") for _ in range(6))
            secs[k] = (secs[k][0].replace(nonce, other), secs[k][1])
        elif kind == "drop_marker":
            secs[k] = ("", secs[k][1])
        elif kind == "drop_section":
            secs.pop(k)
        elif kind.startswith("dup_"):  # the model repeats a marker (of a marked section)
            marked = [sec for sec in secs if sec[0]]
            if marked:
                marker, body = rng.choice(marked)
                if kind == "dup_other":
                    body = rng.choice(secs)[1]
                secs.append((marker, body))
        elif kind == "placeholder":
            secs[k] = (secs[k][0], f"<your answer to task {rng.randint(1, n)}>")
        elif kind == "na":
            secs[k] = (secs[k][0], rng.choice(["N/A", "n/a.", "TBD", "None", "..."]))
        elif kind == "empty":
            secs[k] = (secs[k][0], "   ")
        elif kind == "huge_number":
            digits = "9" * rng.randint(7, 4000)
            forged = f"### SECTION {digits} {nonce}\nforged text"
            secs[k] = (secs[k][0], secs[k][1] + "\n" + forged)
        elif kind == "marker_in_body":  # a broken marker of the next task inside a body
            secs[k] = (secs[k][0], secs[k][1] + f"\n### SECTION {k + 2}\n" + "stolen answer")
        elif kind == "fence":
            secs[k] = (secs[k][0], f"```\n{secs[k][1]}\n```")
        elif kind == "decorate":
            secs[k] = (f"**{secs[k][0]}**", secs[k][1])
        elif kind == "lowercase":
            secs[k] = (secs[k][0].replace("SECTION", "section"), secs[k][1])
        elif kind == "reorder":
            rng.shuffle(secs)
        elif kind == "nonce_in_body":
            secs[k] = (secs[k][0], secs[k][1] + f" (ref {nonce})")
    out = "\n\n".join(f"{m}\n{b}" if m else b for m, b in secs)
    if "preamble" in labels:
        out = "Sure, here are the answers.\n\n" + out
    if "truncate" in labels and out:
        out = out[: rng.randrange(len(out))]
        meta = {"finish_reason": rng.choice(["length", "max_tokens"])}
    if "raise" in labels:
        raise ScriptedError("fuzzed provider failure")
    content: Any = out
    if "blocks" in labels and out:
        cut = rng.randrange(len(out) + 1)
        content = [
            {"type": "reasoning", "reasoning": "thinking about SECTION 1"},
            {"type": "text", "text": out[:cut]},
            {"type": "text", "text": out[cut:]},
        ]
    return content, meta, "+".join(labels) or "clean"


MUTATIONS = [
    "strip_nonce",
    "wrong_nonce",
    "drop_marker",
    "drop_section",
    "dup_other",
    "dup_same",
    "placeholder",
    "na",
    "empty",
    "huge_number",
    "marker_in_body",
    "truncate",
    "blocks",
    "fence",
    "decorate",
    "lowercase",
    "reorder",
    "preamble",
    "nonce_in_body",
    "raise",
]

TURN_FAULTS = ["clean", "clean", "raise", "empty", "na", "blocks", "placeholder"]


class FuzzModel(ScriptedChatModel):
    """The scripted model (answers as a member's own call gets them), with every merged
    reply and sequential turn broken at random."""

    seed: int = 0
    _rng: random.Random = PrivateAttr()
    _labels: Counter[str] = PrivateAttr(default_factory=Counter)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rng = random.Random(self.seed)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        msg = result.generations[0].message
        parsed = parse_merged_prompt(messages)
        with self._lock:
            rng = random.Random(self._rng.random())
        if parsed is not None:
            try:
                content, meta, label = mutate(str(msg.content), parsed.nonce, rng)
            except ScriptedError:
                with self._lock:
                    self._labels["raise"] += 1
                raise
        elif parse_sequential_turn(messages) is not None:
            label = rng.choice(TURN_FAULTS)
            content, meta = msg.content, {"finish_reason": "stop"}
            if label == "raise":
                with self._lock:
                    self._labels["raise"] += 1
                raise ScriptedError("fuzzed provider failure")
            if label == "empty":
                content = ""
            elif label == "na":
                content = "N/A"
            elif label == "placeholder":
                content = "<your answer to task 1>"
            elif label == "blocks":
                content = [{"type": "text", "text": str(msg.content)}]
        else:
            return result
        with self._lock:
            self._labels[label.split("+")[0]] += 1
        fuzzed = AIMessage(
            content=content, usage_metadata=msg.usage_metadata, response_metadata=meta
        )
        return ChatResult(generations=[ChatGeneration(message=fuzzed)])


def _item(rng: random.Random, i: int) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40)))
    return f"Case {i}-{rng.randrange(10**9)}: {words}.\n\nFiled under {rng.choice(WORDS)}."


def _expected(item: str) -> dict[str, str]:
    llm = ScriptedChatModel()
    return {m: str(llm.invoke(_messages(m, item)).content) for m in MEMBERS}


RUNS = {"standard": 700, "sequential": 300}


def _seed(name: str) -> int:
    """A seed stable across processes (``hash`` of a string is not), shifted by
    ``CAPSULES_FUZZ_SEED`` to sweep other seeds: ``CAPSULES_FUZZ_SEED=17 pytest ...``."""
    return zlib.crc32(name.encode()) % 1000 + int(os.environ.get("CAPSULES_FUZZ_SEED", "0"))


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("tier", ["standard", "sequential"])
def test_fuzzed_merged_replies_never_give_a_wrong_answer(tier: str, use_async: bool) -> None:
    seed = _seed(f"{tier}-{use_async}")
    fuzz = FuzzModel(seed=seed)
    capsules = lc.capsulize(build(lc.CapsuleChatModel(fuzz), use_async=use_async))
    app = capsules.compile()
    config = {"configurable": {"capsules": {"mode": tier}}}
    rng = random.Random(seed)
    wrong: list[tuple[str, str, str]] = []
    runs = RUNS[tier]

    async def run_all() -> None:
        for i in range(runs):
            item = _item(rng, i)
            if use_async:
                out = await app.ainvoke({"item": item}, config)
            else:
                out = app.invoke({"item": item}, config)
            expected = _expected(item)
            for m in MEMBERS:
                if out.get(m) != expected[m]:
                    wrong.append((m, repr(out.get(m))[:80], expected[m][:40]))

    asyncio.run(run_all())
    assert wrong == [], f"{len(wrong)} wrong member outputs, e.g. {wrong[:3]}"
    records = capsules.history()
    assert len(records) == runs and all(r["tier"] == tier for r in records)
    merged = sum(fuzz._labels.values())
    assert merged >= runs  # every run made its merged call (or turns)
    # the fuzz really broke things, and sound sections still served members
    fell_back = sum(len(r["fallback"]) for r in records)
    assert 0 < fell_back < runs * len(MEMBERS)
    clean = fuzz._labels["clean"]
    assert 0 < clean < merged


def _prompt(n: int, nonce: str) -> MergedPrompt:
    from langgraph_capsules.strategies import build_merged_prompt

    calls = [[HumanMessage(f"Task {k}: summarise the case file in two lines.")] for k in range(n)]
    prompt = build_merged_prompt([f"m{k}" for k in range(n)], calls, nonce=nonce)
    assert prompt is not None
    return prompt


@pytest.mark.parametrize("offset", range(8))
def test_splitter_fuzz_accepts_only_true_answers(offset: int) -> None:
    """5,000 fuzzed replies straight into the splitter, for each of eight seeds (two
    flaws hid behind one seed until a sweep of 300): every accepted answer is the true
    answer of its own task."""
    rng = random.Random(_seed(f"splitter-{offset}"))
    accepted = rejected = 0
    for trial in range(5000):
        n = rng.randint(2, 6)
        nonce = "".join(rng.choice("0123456789abcdef") for _ in range(6))
        prompt = _prompt(n, nonce)
        truth = {
            f"m{k}": f"answer {k} of trial {trial}: {' '.join(rng.sample(WORDS, 5))}"
            for k in range(n)
        }
        reply = "\n\n".join(f"### SECTION {k + 1} {nonce}\n{truth[f'm{k}']}" for k in range(n))
        try:
            content, meta, _ = mutate(reply, nonce, rng)
        except ScriptedError:
            continue
        text = (
            content
            if isinstance(content, str)
            else "".join(b["text"] for b in content if b.get("type") == "text")
        )
        answers, problems = split_reply(
            text, prompt, truncated=meta["finish_reason"] in ("length", "max_tokens")
        )
        assert set(answers) | set(problems) == set(truth) and not set(answers) & set(problems)
        for m, a in answers.items():
            assert a == truth[m], (trial, m, a, reply, text)
        accepted += len(answers)
        rejected += len(problems)
    assert accepted > 5000 and rejected > 1000  # both paths exercised
