"""Guards for the throughput work (issue 12): caches and shortcuts keep behaviour.

Merge statistics count each distinct unit once, markers and task headers are matched by
one pattern per nonce length; both are checked against the direct computation. Parking
on async runs and reused thread pools are checked with concurrent runs whose nonces and
outputs must never mix.
"""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langgraph_capsules.prompts import estimate_tokens, split_shared
from langgraph_capsules.strategies.standard import (
    _marker_re,
    build_merged_prompt,
    marker_spans,
    parse_merged_prompt,
    split_tasks,
)
from langgraph_capsules.strategies.structured import PartSpec, build_structured_prompt

ROOT = Path(__file__).resolve().parents[1]

_WORDS = ["alpha", "beta", "Gamma", "d3lta", "x", "revenue", "42", "Oslo", "n/a"]
_PUNCT = [",", ".", ":", "-", "(", ")", "'", "é", "—", "%"]


def _text(rng: random.Random, words: int) -> str:
    out: list[str] = []
    for _ in range(words):
        r = rng.random()
        if r < 0.1:
            out.append(rng.choice(_PUNCT))
        elif r < 0.15:
            out.append(rng.choice(["\n", "\n\n", "\n \t\n", "  "]))
        else:
            out.append(rng.choice(_WORDS) + rng.choice(["", "", ",", "."]))
    return " ".join(out).strip() or "word"


def _calls(rng: random.Random, n: int) -> list[list[BaseMessage]]:
    shared = [_text(rng, rng.randint(6, 40)) for _ in range(rng.randint(0, 3))]
    calls: list[list[BaseMessage]] = []
    for k in range(n):
        own = _text(rng, rng.randint(1, 30))
        paras = [*shared, own] if rng.random() < 0.5 else [own, *shared]
        if rng.random() < 0.3 and shared:
            paras.append(shared[0])  # a shared paragraph twice in one call
        human = "\n\n".join(paras)
        msgs: list[BaseMessage] = [HumanMessage(human)]
        if rng.random() < 0.7:
            msgs.insert(0, SystemMessage(f"Task {k}: " + _text(rng, rng.randint(1, 12))))
        calls.append(msgs)
    return calls


def _direct(system: str, human: str, calls: list[list[BaseMessage]]) -> dict[str, int]:
    """The statistics as computed before: every text tokenised whole."""
    split = split_shared(calls)
    assert split is not None
    payload = sum(estimate_tokens(s) for s in split.shared) + sum(
        estimate_tokens(t) for t in split.tasks
    )
    total = estimate_tokens(system) + estimate_tokens(human)
    return {
        "payload_tokens": payload,
        "coordination_tokens": max(total - payload, 0),
        "floor_tokens": payload,
        "naive_tokens": sum(estimate_tokens(f) for f in split.full),
    }


def _stats(prompt: Any) -> dict[str, int]:
    keys = ("payload_tokens", "coordination_tokens", "floor_tokens", "naive_tokens")
    return {k: getattr(prompt, k) for k in keys}


def test_merge_statistics_equal_the_direct_count() -> None:
    rng = random.Random(12)
    spec = PartSpec("Part", {"type": "object"}, None, "content", "json_object", False)
    for _ in range(300):
        n = rng.randint(2, 5)
        calls = _calls(rng, n)
        members = [f"m{k}" for k in range(n)]
        budgets = [rng.choice([None, 100, 300]) for _ in range(n)]
        prompt = build_merged_prompt(members, calls, budgets=budgets)
        assert prompt is not None
        system, human = (str(m.content) for m in prompt.messages)
        assert _stats(prompt) == _direct(system, human, calls)
        structured = build_structured_prompt(members, calls, [spec] * n)
        assert structured is not None
        system, human = (str(m.content) for m in structured.messages)
        assert _stats(structured) == _direct(system, human, calls)


def _marker_lines(rng: random.Random, nonce: str) -> str:
    other = "".join(rng.choice("0123456789abcdef") for _ in range(len(nonce)))
    lines: list[str] = []
    for _ in range(rng.randint(1, 12)):
        num = str(rng.randint(0, 12)) if rng.random() < 0.9 else "1234567"
        nn = rng.choice([nonce, nonce.upper(), other, nonce + "0", nonce[:-1], "x" + nonce])
        sep = rng.choice(["", " ", ": ", " - ", "[", " (", "_", "\t"])
        deco = rng.choice(["", "### ", "**", "> ", "  #", "`"])
        tail = rng.choice(["", "]", ":", "**", ". answer", "#", " text", "a"])
        word = rng.choice(["SECTION", "section", "Section", "SECTON", "SECTION\t"])
        head = rng.choice([" ", "  ", ""])
        lines.append(f"{deco}{word}{head}{num}{sep}{nn}{tail}")
        lines.append(_text(rng, rng.randint(0, 6)).replace("\n", " "))
    return "\n".join(lines)


def test_marker_spans_match_the_per_nonce_pattern() -> None:
    rng = random.Random(4)
    seen = 0
    for _ in range(3000):
        nonce = rng.choice(
            [
                "".join(rng.choice("0123456789abcdef") for _ in range(6)),
                "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(4)),
                "7abc12",
                "a-b.c",  # not alphanumeric: its own pattern
            ]
        )
        text = _marker_lines(rng, nonce)
        want = [(m.start(), m.start(2), int(m.group(1))) for m in _marker_re(nonce).finditer(text)]
        assert marker_spans(text, nonce) == want, (nonce, text)
        seen += len(want)
    assert seen > 1000  # the fuzz reaches real markers, not only rejects


def test_task_headers_are_cut_at_the_exact_nonce() -> None:
    rng = random.Random(5)
    for _ in range(200):
        n = rng.randint(2, 4)
        calls = _calls(rng, n)
        prompt = build_merged_prompt([f"m{k}" for k in range(n)], calls)
        assert prompt is not None
        parsed = parse_merged_prompt(prompt.messages)
        assert parsed is not None and parsed.nonce == prompt.nonce
        split = split_shared(calls)
        assert split is not None
        assert parsed.tasks == tuple(t.strip() for t in split.tasks)
    body = "TASK 1 abc123\none\nTASK 2 abc1234\nstill one\nTASK 2 ABC123\nstill\nTASK 2 abc123\ntwo"
    assert split_tasks(body, "abc123") == (
        "",
        ("one\nTASK 2 abc1234\nstill one\nTASK 2 ABC123\nstill", "two"),
    )
