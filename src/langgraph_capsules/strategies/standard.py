"""The standard tier: one merged call answers every member's captured call.

Layout (cache-aligned: the stable parts come first, the per-call nonce last)::

    system:  the team preamble + each task's own length limit          (coordination)
    human:   SHARED CONTEXT  <each shared unit once>                 (payload)
             TASK 1 <nonce> <member 1's own text> ... TASK n <nonce> (payload + headers)
             the reply skeleton with one marker line per task        (coordination)

Task headers and section markers carry a random nonce drawn per call and absent from
every captured call, so no source text (a document, an earlier agent's output) can
forge a task boundary or a section boundary.

**The splitter accepts a section only when it is sound** (:func:`split_reply`):

* a marker is a line ``### SECTION <i> <nonce>`` (markdown decoration tolerated, the
  nonce exact, ``i`` at most six digits); a section runs from its marker to the next
  marker, whatever its number;
* a section whose body holds anything that looks like a marker (``SECTION <digits>``
  at the start of a line, with a wrong, a missing or a broken nonce, or a line that is
  the word ``SECTION`` alone) is ``malformed``: it may hold another task's answer;
* a body that is empty, the skeleton's placeholder, or a non-answer such as ``N/A`` is
  ``empty``;
* a section must be closed by the next task's marker (the last task's by the end of
  the reply); one that is not is ``misplaced``, since a marker lost in between would
  leave another task's answer inside it (so a reply in another order re-runs its
  members: sound, at the cost of calls);
* a reply whose markers are out of order while a task's marker is missing is rejected
  whole: the missing answer may sit in any section. (A reply that puts its sections in
  another order *and* loses a marker without a trace, so that the visible markers still
  look in order, can hide an answer in a section no rule can see; the fuzz tests keep
  to what a splitter can know.)
* a task with two sections of different text is ``duplicate`` (which one is the answer
  cannot be known); identical repeats count once; an answer holding a paragraph of at
  least :data:`MIN_COPY_WORDS` words that also appears under another task, or twice in
  its own section, is ``duplicate`` (a rule line such as ``****`` ends a paragraph);
* when the reply hit its length limit, the section that runs to the end of the reply
  is ``truncated``; the sections before it are complete and accepted.

A task without an accepted section gets no answer; its member is re-run through its
original node, so no output is lost.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langgraph_capsules.prompts import SharedSplit, estimate_tokens, split_shared

__all__ = [
    "DEFAULT_SECTION_WORDS",
    "MARKER_TOKENS",
    "SHARED_HEAD",
    "WORDS_PER_TOKEN",
    "MergedPrompt",
    "ParsedMergedPrompt",
    "build_merged_prompt",
    "context_limit",
    "hit_length_limit",
    "marker_spans",
    "merged_max_tokens",
    "new_nonce",
    "non_answer",
    "output_limit",
    "pack_within",
    "parse_merged_prompt",
    "prompt_stats",
    "reply_text",
    "split_reply",
    "split_tasks",
]

DEFAULT_SECTION_WORDS: int | None = None
"""No length target of the merged prompt's own: each task keeps its own instructions,
and a task's length limit comes only from its member's own ``max_tokens``. A number
(``capsulize(section_words=...)``) asks for about that many words per task that has no
budget of its own (the paper's budgeted structural hint)."""
WORDS_PER_TOKEN = 0.6
"""Words of English prose per token of a member's budget, in the length limits line
(conservative, so a section fits its member's own budget)."""
MARKER_TOKENS = 16
"""Output allowance per section of a merged call for its marker line."""

# A shorter framing (a 32-word preamble, "Reply format, one section per task:", "..." as
# each skeleton body) was tried on 2026-12-04: the CI study's lens calls sent 1.10x the
# hand-merged arm's input instead of 1.15x, but 3 of 12 merged calls on the 1.5B model
# ran to their length limit with the first section unfinished (study v2, this text: 2 of
# 64). Kept as is until an A/B with enough calls clears a shorter text
# (docs/results/framing-trial-2026-12-04).
_PREAMBLE = (
    "Answer the {n} independent tasks below in one reply. Follow each task's own "
    "instructions, format and length as if it were the only task, never refer to "
    "another task, and give the last task the same care as the first. Start each "
    "answer with its marker line, exactly as shown at the end, and write nothing "
    "before the first marker."
)
SHARED_HEAD = "SHARED CONTEXT (applies to every task):"
_TASK_HEAD = "TASK {i} {nonce}"
_FORMAT_HEAD = "Reply in exactly this format, one section per task:"
_MARKER = "### SECTION {i} {nonce}"
_SKELETON_BODY = "<your answer to task {i}>"
MIN_COPY_WORDS = 8
"""An answer of at least this many words that also appears under another task is
rejected, and so is one holding such a paragraph of another section (a copy error;
short answers such as labels may repeat legitimately)."""
MAX_SECTION_DIGITS = 6
"""Longest section number the splitter reads (a longer one is not a marker)."""
_NON_ANSWERS = frozenset(
    {"n/a", "na", "none", "null", "nil", "-", "--", "...", "…", "tbd", "todo", "(empty)"}
)
_PLACEHOLDER_RE = re.compile(r"^<\s*your answer to task \d{1,6}\s*>$", re.I)
_LOOSE_MARKER_RE = re.compile(r"^[ \t>*_#`]*SECTION(?:[ \t]*\d|[ \t>*_#`:.\-]*$)", re.I | re.M)
"""Anything that looks like a section marker, with or without a (correct) nonce: a line
starting with ``SECTION <digits>``, or a line that is only the word ``SECTION`` with its
decoration (a marker that lost its number and nonce)."""


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


def new_nonce(texts: Sequence[str]) -> str:
    """A random 6-hex-digit nonce that occurs in none of ``texts`` (in any case)."""
    while True:
        nonce = secrets.token_hex(3)
        if not any(nonce in t.lower() for t in texts):
            return nonce


def build_merged_prompt(
    members: Sequence[str],
    calls: Sequence[Sequence[BaseMessage]],
    *,
    budgets: Sequence[int | None] | None = None,
    section_words: int | None = DEFAULT_SECTION_WORDS,
    nonce: str | None = None,
) -> MergedPrompt | None:
    """Build one merged prompt from the members' captured calls.

    Args:
        members: Member names, in task order.
        calls: Each member's captured messages, same order.
        budgets: Each member's own output budget in tokens (its ``max_tokens``, or the
            model's default), ``None`` where it has none: a task with a budget gets a
            length limit of :data:`WORDS_PER_TOKEN` words per token; the others none.
        section_words: About this many words for each task without a budget of its
            own (``None``: no length target; the default).
        nonce: Marker nonce (random per call when None; tests pass one).

    Returns:
        The merged prompt, or None if some call cannot be merged as text.
    """
    split = split_shared(calls)
    if split is None:
        return None
    texts = [*split.full]
    nonce = nonce or new_nonce(texts)
    system = _PREAMBLE.format(n=len(members))
    limits = _limits(len(members), budgets, section_words)
    if limits:
        system += " " + limits
    parts: list[str] = []
    if split.shared:
        parts.append(SHARED_HEAD + "\n" + "\n\n".join(split.shared))
    for i, task in enumerate(split.tasks, 1):
        parts.append(_TASK_HEAD.format(i=i, nonce=nonce) + "\n" + task)
    skeleton = "\n".join(
        f"{_MARKER.format(i=i, nonce=nonce)}\n{_SKELETON_BODY.format(i=i)}"
        for i in range(1, len(members) + 1)
    )
    parts.append(_FORMAT_HEAD + "\n" + skeleton)
    human = "\n\n".join(parts)
    coordination = [system, skeleton, _FORMAT_HEAD]
    coordination += [_TASK_HEAD.format(i=i, nonce=nonce) for i in range(1, len(split.tasks) + 1)]
    if split.shared:
        coordination.append(SHARED_HEAD)
    return MergedPrompt(
        messages=[SystemMessage(system), HumanMessage(human)],
        nonce=nonce,
        members=tuple(members),
        **prompt_stats(split, coordination),
    )


def _limits(n: int, budgets: Sequence[int | None] | None, words: int | None) -> str:
    """The length limits line: each task's own budget (or the explicit word target);
    one phrase for all tasks when every task has the same limit."""
    limits: list[str | None] = []
    for i in range(1, n + 1):
        budget = budgets[i - 1] if budgets is not None and i <= len(budgets) else None
        if budget is not None:
            limits.append(f"at most about {max(1, int(budget * WORDS_PER_TOKEN))}")
        else:
            limits.append(f"about {words}" if words is not None else None)
    if all(x is None for x in limits):
        return ""
    if n > 1 and len(set(limits)) == 1:
        return f"Length limit in words: {limits[0]} per task."
    per_task = [f"task {i} {x}" for i, x in enumerate(limits, 1) if x is not None]
    return "Length limits in words: " + "; ".join(per_task) + "."


def merged_max_tokens(budgets: Sequence[int | None], limit: int | None = None) -> int | None:
    """The merged call's ``max_tokens``: the sum of the members' own budgets plus
    :data:`MARKER_TOKENS` per section (the same room the separate calls get), never
    above the model's output ``limit``; ``None`` (unset) unless every member has one.

    Example:
        >>> merged_max_tokens([300, 300, 300])
        948
        >>> merged_max_tokens([16000, 16000, 16000], limit=16384)
        16384
        >>> merged_max_tokens([300, None]) is None
        True
    """
    if not budgets or any(b is None or b <= 0 for b in budgets):
        return None
    total = sum(b for b in budgets if b is not None) + MARKER_TOKENS * len(budgets)
    return min(total, limit) if limit else total


def output_limit(model: Any) -> int | None:
    """A chat model's output-token limit, from its langchain-core profile
    (``profile={"max_output_tokens": N}`` sets or overrides it), else ``None``."""
    profile = getattr(model, "profile", None) or {}
    limit = profile.get("max_output_tokens") if isinstance(profile, Mapping) else None
    return limit if isinstance(limit, int) and limit > 0 else None


def context_limit(model: Any) -> int | None:
    """A chat model's input-token limit, from its langchain-core profile
    (``profile={"max_input_tokens": N}``), else ``None`` (no limit known)."""
    profile = getattr(model, "profile", None) or {}
    limit = profile.get("max_input_tokens") if isinstance(profile, Mapping) else None
    return limit if isinstance(limit, int) and limit > 0 else None


def pack_within(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive groups of indices whose sizes sum to at most ``limit`` (greedy, in
    order); an index whose size alone exceeds ``limit`` is a group of its own."""
    out: list[list[int]] = []
    room = 0
    for i, size in enumerate(sizes):
        if out and size <= room:
            out[-1].append(i)
            room -= size
        else:
            out.append([i])
            room = limit - size
    return out


def prompt_stats(split: SharedSplit, coordination: Sequence[str]) -> dict[str, int]:
    """A merged prompt's token statistics, each distinct unit tokenised once.

    ``coordination`` holds every part of the merged prompt that is not payload (system
    text, headers, skeleton). The estimate counts words and punctuation marks, so the
    count of texts joined by whitespace is the sum of their counts: the prompt's total
    is the payload plus the coordination parts, and a member's whole call is the sum of
    its paragraphs, each distinct paragraph (the shared document, mostly) counted once.
    """
    counts: dict[str, int] = {}

    def tokens(text: str) -> int:
        n = counts.get(text)
        if n is None:
            n = counts[text] = estimate_tokens(text)
        return n

    payload = sum(tokens(u) for u in split.shared) + sum(
        tokens(p) for t in split.tasks for p in t.split("\n\n")
    )
    naive = sum(tokens(p) for f in split.full for p in f.split("\n\n"))
    coord = sum(estimate_tokens(c) for c in coordination)
    return {
        "payload_tokens": payload,
        "coordination_tokens": coord,
        "floor_tokens": payload,
        "naive_tokens": naive,
    }


_MARKER_CACHE: dict[str, re.Pattern[str]] = {}
_MARKER_ANY: dict[int, re.Pattern[str]] = {}
_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")


def _marker_re(nonce: str) -> re.Pattern[str]:
    """The exact marker pattern of one nonce (compiled once per nonce)."""
    pattern = _MARKER_CACHE.get(nonce)
    if pattern is None:
        # markdown decoration around the marker is tolerated; the nonce is exact
        pattern = re.compile(
            r"^[ \t>*_#]*SECTION[ \t]+(\d{1,"
            + str(MAX_SECTION_DIGITS)
            + r"})[ \t:\-\[(*_]*"
            + re.escape(nonce)
            + r"(?![0-9a-z])[ \t*_\])#:.\-]*(.*)$",
            re.I | re.M,
        )
        if len(_MARKER_CACHE) > 256:
            _MARKER_CACHE.clear()
        _MARKER_CACHE[nonce] = pattern
    return pattern


def _marker_any(length: int) -> re.Pattern[str]:
    """:func:`_marker_re` with any alphanumeric nonce of ``length`` characters in its
    place (group 2), so a random nonce per call needs no compilation of its own."""
    pattern = _MARKER_ANY.get(length)
    if pattern is None:
        pattern = _MARKER_ANY[length] = re.compile(
            r"^[ \t>*_#]*SECTION[ \t]+(\d{1,"
            + str(MAX_SECTION_DIGITS)
            + r"})[ \t:\-\[(*_]*([0-9a-z]{"
            + str(length)
            + r"})(?![0-9a-z])[ \t*_\])#:.\-]*(.*)$",
            re.I | re.M,
        )
    return pattern


def marker_spans(text: str, nonce: str) -> list[tuple[int, int, int]]:
    """Each marker line of ``nonce`` in ``text``: (line start, body start, number).

    An alphanumeric nonce (what :func:`new_nonce` draws) is matched by one pattern per
    nonce length and compared after matching: the nonce sits between separators (or the
    section number) and a non-alphanumeric character, so every line has at most one
    candidate in that place, and the lines kept are exactly those :func:`_marker_re`
    matches. Any other nonce is matched by its own pattern."""
    low = nonce.lower()
    if not low or not set(low) <= _ALNUM:
        return [(m.start(), m.start(2), int(m.group(1))) for m in _marker_re(nonce).finditer(text)]
    return [
        (m.start(), m.start(3), int(m.group(1)))
        for m in _marker_any(len(low)).finditer(text)
        if m.group(2).lower() == low
    ]


_FENCE = re.compile(r"^```[\w-]*\n(.*?)\n?```$", re.S)


def split_reply(
    text: str, prompt: MergedPrompt, *, truncated: bool = False
) -> tuple[dict[str, str], dict[str, str]]:
    """Split a merged reply into per-member answers, accepting only sound sections.

    Args:
        text: The merged reply's text.
        prompt: The merged prompt the reply answers.
        truncated: The reply hit its length limit (``finish_reason="length"``): the
            section that runs to the end of the reply is incomplete.

    Returns:
        ``(answers, problems)``: the section text per member that has a sound section,
        and a reason (``missing``, ``duplicate``, ``empty``, ``malformed``,
        ``misplaced``, ``truncated``) per member that has not (see the module docstring).
    """
    marks = marker_spans(text, prompt.nonce)
    n = len(prompt.members)
    verdicts: dict[int, list[tuple[str, str | None]]] = {}
    for k, (_start, body_start, num) in enumerate(marks):
        # the body starts after the nonce: text on the marker line is the answer's first line
        last = k + 1 == len(marks)
        end = len(text) if last else marks[k + 1][0]
        if last and truncated:
            verdict: tuple[str, str | None] = ("", "truncated")
        elif (num != n) if last else (marks[k + 1][2] != num + 1):
            # not closed by the next task's marker (or, for the last task, by the end of
            # the reply): a marker lost in between would leave another answer in here
            verdict = (text[body_start:end].strip(), "misplaced")
        else:
            verdict = _section(text[body_start:end], prompt.nonce)
        verdicts.setdefault(num, []).append(verdict)
    order = [num for _, _, num in marks]
    if any(a >= b for a, b in itertools.pairwise(order)) and any(
        i not in verdicts for i in range(1, n + 1)
    ):
        # out of order and a task lost its marker: its answer may sit in any section
        return {}, {
            m: "missing" if i not in verdicts else "misplaced"
            for i, m in enumerate(prompt.members, 1)
        }
    answers: dict[str, str] = {}
    problems: dict[str, str] = {}
    for i, member in enumerate(prompt.members, 1):
        spans = verdicts.get(i, [])
        usable = {body for body, problem in spans if problem is None}
        if not spans:
            problems[member] = "missing"
        elif len(usable) > 1:
            problems[member] = "duplicate"
        elif usable:
            body = usable.pop()
            if _copied(body, text, sum(1 for b, _ in spans if b == body)):
                problems[member] = "duplicate"  # a long passage that is also elsewhere
            else:
                answers[member] = body
        else:
            problems[member] = str(spans[0][1]) if len(spans) == 1 else "duplicate"
    return answers, problems


def _copied(body: str, text: str, spans: int) -> bool:
    """Whether a paragraph of at least :data:`MIN_COPY_WORDS` words of ``body`` also
    appears in the reply outside this task's ``spans`` identical sections, or twice in
    ``body`` itself (an answer written twice, or a copy glued on after a lost marker).
    Paragraphs end at blank lines and at decoration-only lines (``****``, ``---``)."""
    for para in _PARA_RE.split("\n" + body):
        p = para.strip()
        if len(p.split()) >= MIN_COPY_WORDS and (
            body.count(p) > 1 or text.count(p) > body.count(p) * spans
        ):
            return True
    return False


_PARA_RE = re.compile(r"\n(?:[ \t]*(?:[-*_#=~`]{3,}[ \t]*)?\n)+")
"""A paragraph break: blank lines, or a line of markdown decoration alone."""


def _section(raw: str, nonce: str) -> tuple[str, str | None]:
    """A section's body and its problem (``empty``, ``malformed``) or None if sound."""
    body = raw.strip()
    while (fenced := _FENCE.match(body)) is not None:
        body = fenced.group(1).strip()
    if non_answer(body):
        return body, "empty"
    if nonce in body.lower() or _LOOSE_MARKER_RE.search(body):
        return body, "malformed"  # it swallowed a broken marker: maybe another task's answer
    return body, None


def non_answer(body: str) -> bool:
    """Empty, the skeleton's placeholder, or a stock non-answer (``N/A``, ``TBD``)."""
    flat = " ".join(body.split()).strip("*_`'\" ")
    core = flat.lower().rstrip(".…")
    return not core or core in _NON_ANSWERS or bool(_PLACEHOLDER_RE.match(flat))


def reply_text(message: Any) -> str:
    """A reply's text: string content as is, list content (content blocks, as Anthropic
    models and langchain-core v1 output give) as its text blocks joined; reasoning,
    tool-use and other non-text blocks are left out."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") in ("text", "output_text"):
            parts.append(str(block.get("text") or ""))
    return "".join(parts)


_LENGTH_REASONS = frozenset({"length", "max_tokens", "max_output_tokens", "MAX_TOKENS"})


def hit_length_limit(message: Any, kwargs: Mapping[str, Any] | None = None) -> bool:
    """Whether a reply stopped at its token limit, by the provider's own stop reason
    (``finish_reason`` of OpenAI-style APIs, ``stop_reason`` of Anthropic's) or, when it
    gives none, by output tokens reaching the call's ``max_tokens``."""
    meta = getattr(message, "response_metadata", None) or {}
    for key in ("finish_reason", "stop_reason"):
        reason = meta.get(key)
        if reason is not None:
            return str(reason) in _LENGTH_REASONS
    limit = (kwargs or {}).get("max_tokens")
    usage = getattr(message, "usage_metadata", None) or {}
    out = usage.get("output_tokens") if isinstance(usage, Mapping) else None
    return isinstance(limit, int) and isinstance(out, int) and limit > 0 and out >= limit


@dataclass(frozen=True)
class ParsedMergedPrompt:
    """A merged prompt read back from its messages (used by the scripted model)."""

    nonce: str
    shared: str
    tasks: tuple[str, ...]


_NONCE_IN_SKELETON = re.compile(r"^### SECTION 1 ([0-9a-f]{6})$", re.M)


_TASK_HEAD_ANY = re.compile(r"^TASK \d{1," + str(MAX_SECTION_DIGITS) + r"} (.+)$", re.M)


def _task_heads(body: str, nonce: str) -> list[re.Match[str]]:
    """The task header lines of ``nonce`` (``TASK <i> <nonce>``, the nonce exact)."""
    return [m for m in _TASK_HEAD_ANY.finditer(body) if m.group(1) == nonce]


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
    shared, tasks = split_tasks(body, m.group(1))
    return ParsedMergedPrompt(nonce=m.group(1), shared=shared, tasks=tasks)


def split_tasks(body: str, nonce: str) -> tuple[str, tuple[str, ...]]:
    """The shared context and each task's text of a merged prompt's body (everything
    before its reply format), cut at the nonce-bearing task headers."""
    shared = ""
    if body.startswith(SHARED_HEAD):
        found = _task_heads(body, nonce)
        cut = found[0].start() if found else len(body)
        shared = body[len(SHARED_HEAD) : cut].strip()
        body = body[cut:]
    heads = _task_heads(body, nonce)
    tasks = tuple(
        body[h.end() : heads[k + 1].start() if k + 1 < len(heads) else len(body)].strip()
        for k, h in enumerate(heads)
    )
    return shared, tasks
