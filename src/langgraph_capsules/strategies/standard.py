"""The standard tier: one merged call answers every member's captured call.

Layout (cache-aligned: the stable parts come first, the per-call nonce last)::

    system:  the team preamble + the budgeted structural hint        (coordination)
    human:   SHARED CONTEXT  <each shared unit once>                 (payload)
             TASK 1 <member 1's own text> ... TASK n <member n's>    (payload + headers)
             the reply skeleton with one marker line per task        (coordination)

Section markers carry a random nonce drawn per call and checked against the prompt,
so no source text (a document, an earlier agent's output) can forge a section
boundary. The reply is split by sorting the marker lines by position and slicing
between neighbours. When a marker repeats, the first usable section counts. A task
whose marker is missing, whose only sections are
empty or contain the nonce (they swallowed a broken marker), gets no answer; its
member is re-run through its original node.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langgraph_capsules.prompts import SharedSplit, estimate_tokens, split_shared

__all__ = [
    "DEFAULT_SECTION_WORDS",
    "MergedPrompt",
    "ParsedMergedPrompt",
    "build_merged_prompt",
    "parse_merged_prompt",
    "split_reply",
]

DEFAULT_SECTION_WORDS = 250
"""Budget of the structural hint, in words per section (the paper's parallel framing)."""

_PREAMBLE = (
    "Answer the {n} independent tasks below in one reply. Follow each task's own "
    "instructions and format as if it were the only task, and never refer to another "
    "task. Give every task a complete, full-depth answer of about {words} words; the "
    "last task deserves the same depth as the first. Start each answer with its marker "
    "line, exactly as shown at the end, and write nothing before the first marker."
)
_SHARED_HEAD = "SHARED CONTEXT (applies to every task):"
_TASK_HEAD = "TASK {i}"
_FORMAT_HEAD = "Reply in exactly this format, one section per task:"
_MARKER = "### SECTION {i} {nonce}"
_SKELETON_BODY = "<your answer to task {i}>"
_TASK_HEAD_RE = re.compile(r"^TASK (\d+)$", re.M)


@dataclass(frozen=True)
class MergedPrompt:
    """A merged prompt ready to send, with what is needed to split its reply."""

    messages: list[BaseMessage]
    nonce: str
    members: tuple[str, ...]
    payload_tokens: int
    """Estimated tokens of the shared units plus every task's own text."""
    coordination_tokens: int
    """Estimated tokens of everything else: preamble, hint, headers, skeleton."""
    floor_tokens: int
    """Estimated tokens of every distinct unit sent once (the token floor)."""
    naive_tokens: int
    """Estimated tokens of all members' calls sent separately."""


def _new_nonce(texts: Sequence[str]) -> str:
    while True:
        nonce = secrets.token_hex(3)
        if not any(nonce in t for t in texts):
            return nonce


def build_merged_prompt(
    members: Sequence[str],
    calls: Sequence[Sequence[BaseMessage]],
    *,
    section_words: int = DEFAULT_SECTION_WORDS,
    nonce: str | None = None,
) -> MergedPrompt | None:
    """Build one merged prompt from the members' captured calls.

    Args:
        members: Member names, in task order.
        calls: Each member's captured messages, same order.
        section_words: Word budget per section for the structural hint.
        nonce: Marker nonce (random per call when None; tests pass one).

    Returns:
        The merged prompt, or None if some call cannot be merged as text.
    """
    split = split_shared(calls)
    if split is None:
        return None
    texts = [*split.full]
    nonce = nonce or _new_nonce(texts)
    system = _PREAMBLE.format(n=len(members), words=section_words)
    parts: list[str] = []
    if split.shared:
        parts.append(_SHARED_HEAD + "\n" + "\n\n".join(split.shared))
    for i, task in enumerate(split.tasks, 1):
        parts.append(_TASK_HEAD.format(i=i) + "\n" + task)
    skeleton = "\n".join(
        f"{_MARKER.format(i=i, nonce=nonce)}\n{_SKELETON_BODY.format(i=i)}"
        for i in range(1, len(members) + 1)
    )
    parts.append(_FORMAT_HEAD + "\n" + skeleton)
    human = "\n\n".join(parts)
    return MergedPrompt(
        messages=[SystemMessage(system), HumanMessage(human)],
        nonce=nonce,
        members=tuple(members),
        **_stats(split, system, human),
    )


def _stats(split: SharedSplit, system: str, human: str) -> dict[str, int]:
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


def _marker_re(nonce: str) -> re.Pattern[str]:
    # Tolerant of markdown decoration around the marker; strict about the nonce.
    return re.compile(
        r"^[ \t>*_#]*SECTION[ \t]+(\d+)[ \t:\-\[(*_]*" + re.escape(nonce) + r"\b.*$",
        re.I | re.M,
    )


_FENCE = re.compile(r"^```[\w-]*\n(.*?)\n?```$", re.S)


def split_reply(text: str, prompt: MergedPrompt) -> tuple[dict[str, str], dict[str, str]]:
    """Split a merged reply into per-member answers.

    Returns:
        ``(answers, problems)``: the section text per member that has a usable section,
        and a reason (``missing``, ``duplicate``, ``empty``, ``malformed``) per member that has not.
    """
    found: dict[int, list[tuple[int, int]]] = {}
    marks = sorted(
        (m.start(), m.end(), int(m.group(1))) for m in _marker_re(prompt.nonce).finditer(text)
    )
    for k, (_start, end, num) in enumerate(marks):
        nxt = marks[k + 1][0] if k + 1 < len(marks) else len(text)
        found.setdefault(num, []).append((end, nxt))
    answers: dict[str, str] = {}
    problems: dict[str, str] = {}
    for i, member in enumerate(prompt.members, 1):
        spans = found.get(i, [])
        if not spans:
            problems[member] = "missing"
            continue
        verdicts = [_section(text[a:b], i, prompt.nonce) for a, b in spans]
        usable = [body for body, problem in verdicts if problem is None]
        if usable:
            # A repeated marker (small models restart the format or echo the skeleton):
            # the first usable section is the answer.
            answers[member] = usable[0]
        else:
            problems[member] = "duplicate" if len(spans) > 1 else str(verdicts[0][1])
    return answers, problems


def _section(raw: str, index: int, nonce: str) -> tuple[str, str | None]:
    """A section's body and its problem (``empty``, ``malformed``) or None if usable."""
    body = raw.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body or body == _SKELETON_BODY.format(i=index):
        return body, "empty"
    if nonce in body.lower():
        return body, "malformed"  # it swallowed a broken marker of another section
    return body, None


@dataclass(frozen=True)
class ParsedMergedPrompt:
    """A merged prompt read back from its messages (used by the scripted model)."""

    nonce: str
    shared: str
    tasks: tuple[str, ...]


_NONCE_IN_SKELETON = re.compile(r"^### SECTION 1 ([0-9a-f]{6})$", re.M)


def parse_merged_prompt(messages: Sequence[BaseMessage]) -> ParsedMergedPrompt | None:
    """Recognise a prompt built by :func:`build_merged_prompt`; None for any other prompt."""
    if len(messages) != 2 or not isinstance(messages[1], HumanMessage):
        return None
    human = messages[1].content
    if not isinstance(human, str) or _FORMAT_HEAD not in human:
        return None
    body, _, skeleton = human.rpartition(_FORMAT_HEAD)
    m = _NONCE_IN_SKELETON.search(skeleton)
    if m is None:
        return None
    shared = ""
    if body.startswith(_SHARED_HEAD):
        first_task = _TASK_HEAD_RE.search(body)
        cut = first_task.start() if first_task else len(body)
        shared = body[len(_SHARED_HEAD) : cut].strip()
        body = body[cut:]
    heads = list(_TASK_HEAD_RE.finditer(body))
    tasks = tuple(
        body[h.end() : heads[k + 1].start() if k + 1 < len(heads) else len(body)].strip()
        for k, h in enumerate(heads)
    )
    return ParsedMergedPrompt(nonce=m.group(1), shared=shared, tasks=tasks)
