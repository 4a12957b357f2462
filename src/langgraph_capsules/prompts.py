"""Prompt layout helpers: rendering captured calls and finding their shared content.

**The shared-content rule** (used by the standard tier). Each member's captured call is
rendered to text message by message; the text is cut into *units*, first paragraphs
(split at blank lines), and inside the paragraphs that are not shared, single lines.
A unit is **shared** when the same unit (whitespace-normalised) occurs in *every*
member's call and has at least :data:`MIN_SHARED_WORDS` words; shorter units (headings
such as ``"Answer:"``) stay with their task so each task keeps its own cues, except a
short paragraph that, in every call, directly precedes a shared paragraph: that is the
shared paragraph's heading (``"Source:"``) and goes with it. Shared
units are sent once, in the order of the first member's prompt, ahead of all tasks;
each task keeps the rest of its own text in its own order.

The yardstick is the *token floor*: every distinct unit sent once. The rule reaches
the floor whenever the members' common content sits in its own paragraphs or lines,
which is how prompt templates are normally written (``f"{instructions}\\n\\n{document}"``);
content shared only inside a longer line is not found and is sent once per task.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

__all__ = [
    "EARLIER_REPLY_LABEL",
    "MIN_SHARED_WORDS",
    "SharedSplit",
    "estimate_tokens",
    "message_text",
    "split_shared",
]

MIN_SHARED_WORDS = 6
"""Shortest unit (in words) that is hoisted into the shared context."""
EARLIER_REPLY_LABEL = "(Your earlier reply:)"
"""The line put before an assistant turn when a call is rendered as text (a merged
prompt has no roles, so the model's own earlier replies are labelled)."""

_PARA = re.compile(r"\n[ \t]*\n")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """A provider-free token estimate: words plus punctuation marks.

    Within about 15% of BPE tokenisers on English prose; used by the scripted model and
    for prompt statistics, never for billing.
    """
    return len(_TOKEN.findall(text))


def message_text(message: BaseMessage) -> str | None:
    """The plain text of a message, or None if it carries non-text content."""
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            return None
    return "".join(parts)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _render(messages: Sequence[BaseMessage]) -> list[str] | None:
    """Render a call as a list of paragraphs (None if it cannot be merged as text)."""
    paras: list[str] = []
    for m in messages:
        text = message_text(m)
        if text is None:
            return None
        if isinstance(m, AIMessage):
            if m.tool_calls:
                return None
            text = f"{EARLIER_REPLY_LABEL}\n{text}"
        elif not isinstance(m, (SystemMessage, HumanMessage)):
            return None  # tool results, function messages: keep such calls unmerged
        paras.extend(p.strip("\n") for p in _PARA.split(text) if p.strip())
    return paras


@dataclass(frozen=True)
class SharedSplit:
    """The result of :func:`split_shared`."""

    shared: tuple[str, ...]
    """Shared units, in first-member order (each sent once)."""
    tasks: tuple[str, ...]
    """Per member, the member's own remaining text."""
    full: tuple[str, ...]
    """Per member, its whole rendered call (for statistics)."""


def split_shared(calls: Sequence[Sequence[BaseMessage]]) -> SharedSplit | None:
    """Split captured calls into shared units and per-task remainders (see module doc).

    Returns None if some call cannot be rendered as text (tool results, images).
    """
    normed: dict[str, str] = {}  # each distinct unit normalised once

    def norm(text: str) -> str:
        out = normed.get(text)
        if out is None:
            out = normed[text] = _norm(text)
        return out

    rendered = [_render(c) for c in calls]
    if any(r is None for r in rendered):
        return None
    paras = [r for r in rendered if r is not None]
    full = tuple("\n\n".join(p) for p in paras)
    if len(paras) < 2:
        return SharedSplit((), full, full)

    def common(units_per_call: list[list[str]]) -> set[str]:
        sets = [{norm(u) for u in units} for units in units_per_call]
        out = set.intersection(*sets) if sets else set()
        return {u for u in out if len(u.split()) >= MIN_SHARED_WORDS}

    shared_paras = common(paras)

    def pairs_of(ps: list[str]) -> set[tuple[str, str]]:
        return {
            (norm(p), norm(after))
            for p, after in pairwise(ps)
            if len(norm(p).split()) < MIN_SHARED_WORDS and norm(after) in shared_paras
        }

    # A short paragraph that labels the same shared paragraph in every call is that
    # paragraph's heading and goes with it, provided the first call labels the shared
    # paragraph's first occurrence (where the shared context places it).
    first = paras[0]
    seen_first: set[str] = set()
    labels_first: set[tuple[str, str]] = set()
    for i, p in enumerate(first):
        key = norm(p)
        if key in shared_paras and key not in seen_first:
            seen_first.add(key)
            if i > 0:
                labels_first.add((norm(first[i - 1]), key))
    heads = set.intersection(*(pairs_of(ps) for ps in paras)) & labels_first

    def is_head(ps: list[str], i: int) -> bool:
        return i + 1 < len(ps) and (norm(ps[i]), norm(ps[i + 1])) in heads

    # second pass: single lines inside the paragraphs that are not shared
    lines = [
        [
            ln
            for i, p in enumerate(ps)
            if norm(p) not in shared_paras and not is_head(ps, i)
            for ln in p.splitlines()
            if ln.strip()
        ]
        for ps in paras
    ]
    shared_lines = common(lines) - shared_paras

    shared: list[str] = []
    seen: set[str] = set()
    for i, p in enumerate(first):
        key = norm(p)
        if is_head(first, i):
            if norm(first[i + 1]) not in seen:
                shared.append(p)
            continue
        if key in shared_paras:
            if key not in seen:
                shared.append(p)
                seen.add(key)
            continue
        for ln in p.splitlines():
            lk = norm(ln)
            if lk in shared_lines and lk not in seen:
                shared.append(ln.strip())
                seen.add(lk)

    tasks: list[str] = []
    for ps in paras:
        kept: list[str] = []
        for i, p in enumerate(ps):
            if norm(p) in shared_paras or is_head(ps, i):
                continue
            if shared_lines:
                keep_lines = [ln for ln in p.splitlines() if norm(ln) not in shared_lines]
                p = "\n".join(keep_lines).strip("\n")
            if p.strip():
                kept.append(p)
        tasks.append("\n\n".join(kept))
    return SharedSplit(tuple(shared), tuple(tasks), full)
