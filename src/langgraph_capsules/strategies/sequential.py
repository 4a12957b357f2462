"""The sequential tier: one call per member in a shared, cache-aligned conversation.

Each member keeps its own call (its own budget and options), so nothing is compressed
and no section can go missing; the calls share one byte-identical prefix, so a prefix
cache (llama.cpp's prompt cache, OpenAI's automatic caching) serves it after the first::

    system:  the preamble + SHARED CONTEXT <each shared unit once>   (identical prefix)
    human:   TASK 1 <member 1's own text>
    ai:      <member 1's answer>              (``full`` context only)
    human:   TASK 2 <member 2's own text> [+ the output hint, when guidance is on]
    ...

Context (``ControllerPolicy.sequential_context_strategy``):

* ``full``: member k's call holds the whole conversation so far (tasks and answers of
  members 1..k-1), so each call's prefix is the previous call plus its answer;
* ``predecessor_only`` (default): member k's call holds the shared prefix, the previous
  member's task and answer, then its own task (capsules-spec 3.7: "the previous
  agent's output + group input"); the first member sees only the prefix.

A member whose call fails is re-run through its original node; the conversation goes
on without its turn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langgraph_capsules.prompts import estimate_tokens, split_shared
from langgraph_capsules.strategies.standard import SHARED_HEAD

__all__ = ["SequentialPlan", "SequentialTurn", "build_sequential", "parse_sequential_turn"]

_PREAMBLE = (
    "You will receive {n} tasks, one after another. Answer each task on its own, "
    "following its instructions and format as if it were the only task."
)
_TASK_HEAD = "TASK {i}"
_TASK_HEAD_RE = re.compile(r"^TASK \d+\n")
_PREAMBLE_START = _PREAMBLE.split("{n}", 1)[0]


@dataclass(frozen=True)
class SequentialPlan:
    """The conversation of one sequential run, ready to send call by call."""

    members: tuple[str, ...]
    system: SystemMessage
    tasks: tuple[HumanMessage, ...]
    context: str
    payload_tokens: int
    """Estimated tokens of the shared units plus every task's own text."""
    coordination_tokens: int
    """Estimated tokens of the preamble, headers and hints, summed over the calls."""

    def messages(self, k: int, answers: Sequence[str | None]) -> list[BaseMessage]:
        """The messages of member ``k``'s call (0-based), given the answers so far
        (``None`` for a member whose call failed: its turn is left out)."""
        out: list[BaseMessage] = [self.system]
        earlier = range(k) if self.context == "full" else range(max(k - 1, 0), k)
        for j in earlier:
            if answers[j] is not None:
                out += [self.tasks[j], AIMessage(str(answers[j]))]
        out.append(self.tasks[k])
        return out


def build_sequential(
    members: Sequence[str],
    calls: Sequence[Sequence[BaseMessage]],
    *,
    context: str = "predecessor_only",
    hint: str | None = None,
) -> SequentialPlan | None:
    """Build the sequential conversation from the members' captured calls.

    Args:
        members: Member names, in call order.
        calls: Each member's captured messages, same order.
        context: ``full`` or ``predecessor_only`` (see the module docstring).
        hint: An output-guidance line appended to every task (``None``: no guidance).

    Returns:
        The plan, or None if some call cannot be rendered as text (tool results).
    """
    split = split_shared(calls)
    if split is None:
        return None
    system_text = _PREAMBLE.format(n=len(members))
    if split.shared:
        system_text += "\n\n" + SHARED_HEAD + "\n" + "\n\n".join(split.shared)
    tasks = []
    for i, task in enumerate(split.tasks, 1):
        text = _TASK_HEAD.format(i=i) + "\n" + task
        if hint:
            text += "\n\n" + hint
        tasks.append(HumanMessage(text))
    payload = sum(estimate_tokens(s) for s in split.shared) + sum(
        estimate_tokens(t) for t in split.tasks
    )
    sent = estimate_tokens(system_text) * len(members) + sum(
        estimate_tokens(str(t.content)) for t in tasks
    )
    shared_repeats = sum(estimate_tokens(s) for s in split.shared) * (len(members) - 1)
    return SequentialPlan(
        members=tuple(members),
        system=SystemMessage(system_text),
        tasks=tuple(tasks),
        context=context,
        payload_tokens=payload,
        coordination_tokens=max(sent - payload - shared_repeats, 0),
    )


@dataclass(frozen=True)
class SequentialTurn:
    """One call of a sequential conversation read back (used by the scripted model)."""

    shared: str
    task: str
    """The current task's own text (its hint, if any, included)."""


def parse_sequential_turn(messages: Sequence[BaseMessage]) -> SequentialTurn | None:
    """Recognise a call built by :func:`build_sequential`; None for any other call."""
    if len(messages) < 2 or not isinstance(messages[0], SystemMessage):
        return None
    system, last = messages[0].content, messages[-1]
    if not isinstance(system, str) or not system.startswith(_PREAMBLE_START):
        return None
    if not isinstance(last, HumanMessage) or not isinstance(last.content, str):
        return None
    head = _TASK_HEAD_RE.match(last.content)
    if head is None:
        return None
    _, _, shared = system.partition(SHARED_HEAD + "\n")
    return SequentialTurn(shared=shared.strip(), task=last.content[head.end() :])
