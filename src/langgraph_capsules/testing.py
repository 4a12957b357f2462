"""Offline fakes for testing capsule graphs: :class:`ScriptedChatModel`.

Shipped so users can test their own capsule configurations without an LLM (like DSPy's
``DummyLM`` or httpx's ``MockTransport``).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from langgraph_capsules.prompts import estimate_tokens, message_text
from langgraph_capsules.strategies.sequential import parse_sequential_turn
from langgraph_capsules.strategies.standard import parse_merged_prompt

__all__ = ["ScriptedCall", "ScriptedChatModel", "ScriptedError"]

_WORDS = (
    "market share growth revenue margin product platform customers region pricing "
    "partners risk regulation supply demand segment expansion contract launch hiring"
).split()


class ScriptedError(RuntimeError):
    """The error a :class:`ScriptedChatModel` raises when told to fail."""


@dataclass
class ScriptedCall:
    """One call the scripted model answered (for assertions in tests)."""

    messages: list[BaseMessage]
    merged: bool
    tasks: int
    text: str
    usage: dict[str, Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


def _compress(text: str, share: float | None) -> str:
    if share is None:
        return text
    words = text.split()
    return " ".join(words[: max(1, int(len(words) * share))])


def _norm_units(text: str) -> list[str]:
    return sorted({" ".join(p.split()) for p in re.split(r"\n[ \t]*\n|\n", text) if p.strip()})


class ScriptedChatModel(BaseChatModel):
    """A deterministic, prompt-aware chat model that reports realistic usage.

    * **Answers.** A plain call is answered by ``respond(prompt_text)`` when given, else
      by the first ``rules`` entry whose key occurs in the prompt, else by a default
      answer: ``"<first instruction line> :: <digest>"`` followed by ``answer_words``
      filler words. The digest covers the *set* of the prompt's lines, so a task
      answered inside a merged prompt gets exactly the answer it gets alone.
    * **Merged prompts** (built by the standard tier) are answered section by section
      with the same rule applied to each task's own text plus the shared context; a
      call of the sequential tier is answered from its current task plus the shared
      context, so both give the answer the call gets alone.
    * **Usage.** ``input_tokens`` = the estimate of
      :func:`langgraph_capsules.prompts.estimate_tokens` (words + punctuation) over all
      messages plus 4 per message; ``output_tokens`` the same estimate of the reply.
      ``cache_read`` simulates a prefix cache: the longest common token prefix with any
      of the last 8 prompts, when it reaches ``cache_min_tokens``.
    * **Knobs** for failure modes: ``drop_sections`` / ``garble_sections`` /
      ``empty_sections`` (1-based task numbers, merged replies only), ``compress``
      (keep only this share of each merged section's words), ``compress_turns`` (the
      same for calls of the sequential tier), ``latency`` (seconds per
      call), ``fail_calls`` (0-based call numbers that raise :class:`ScriptedError`),
      ``fail_merged`` (every merged call raises), ``honor_max_tokens`` (truncate replies).

    Example:
        >>> llm = ScriptedChatModel(rules={"capital": "Paris"})
        >>> llm.invoke("What is the capital of France?").content
        'Paris'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = "scripted-1"
    rules: dict[str, str] = Field(default_factory=dict)
    respond: Callable[[str], str] | None = None
    answer_words: int = 24
    drop_sections: frozenset[int] = frozenset()
    garble_sections: frozenset[int] = frozenset()
    empty_sections: frozenset[int] = frozenset()
    compress: float | None = None
    compress_turns: float | None = None
    latency: float = 0.0
    fail_calls: frozenset[int] = frozenset()
    fail_merged: bool = False
    cache_min_tokens: int = 32
    honor_max_tokens: bool = True
    tool_calls_for: Callable[[list[BaseMessage]], list[dict[str, Any]] | None] | None = None
    """With tools bound: the tool calls to emit for these messages (``None`` or ``[]``:
    answer in text). Each call is ``{"name": ..., "args": {...}}``; ids are added."""

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: list[ScriptedCall] = PrivateAttr(default_factory=list)
    _recent: list[list[str]] = PrivateAttr(default_factory=list)

    def __init__(self, **kwargs: Any) -> None:
        for knob in ("drop_sections", "garble_sections", "empty_sections", "fail_calls"):
            if knob in kwargs and not isinstance(kwargs[knob], frozenset):
                kwargs[knob] = frozenset(kwargs[knob])
        super().__init__(**kwargs)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, AIMessage]:
        """Bind tools (OpenAI format); the model emits ``tool_calls_for(messages)``."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    @property
    def calls(self) -> list[ScriptedCall]:
        """Every call answered so far, in order."""
        with self._lock:
            return list(self._calls)

    @property
    def merged_calls(self) -> list[ScriptedCall]:
        """The calls that were merged prompts."""
        return [c for c in self.calls if c.merged]

    def reset(self) -> None:
        """Forget recorded calls and the simulated prefix cache."""
        with self._lock:
            self._calls.clear()
            self._recent.clear()

    # -------------------------------------------------------------- answering
    def answer_for(self, text: str) -> str:
        """The answer this model gives to a single (unmerged) prompt text."""
        if self.respond is not None:
            return self.respond(text)
        for key, value in self.rules.items():
            if key in text:
                return value
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        head = " ".join(first.split()[:8])
        digest = hashlib.sha1("\n".join(_norm_units(text)).encode()).hexdigest()[:10]
        seed = int(digest, 16)
        filler = " ".join(
            _WORDS[(seed >> (i % 32)) % len(_WORDS) - (i % 3)] for i in range(self.answer_words)
        )
        return f"{head} :: {digest} {filler}".strip()

    def _merged_reply(self, nonce: str, shared: str, tasks: Iterable[str]) -> str:
        out: list[str] = []
        for i, task in enumerate(tasks, 1):
            if i in self.drop_sections:
                continue
            body = self.answer_for(f"{task}\n\n{shared}" if shared else task)
            body = _compress(body, self.compress)
            if i in self.empty_sections:
                body = ""
            marker = f"### SECTION {i} {nonce}"
            if i in self.garble_sections:
                marker = f"### SECTON {i} {nonce}"  # broken marker: the splitter must reject it
            out.append(f"{marker}\n{body}")
        return "\n\n".join(out)

    def _usage(self, messages: list[BaseMessage], text: str) -> dict[str, Any]:
        toks: list[str] = []
        for m in messages:
            toks.extend(re.findall(r"\w+|[^\w\s]", message_text(m) or ""))
            toks.extend(["<m>"] * 4)
        cached = 0
        with self._lock:
            for prev in self._recent:
                k = 0
                for a, b in zip(prev, toks, strict=False):
                    if a != b:
                        break
                    k += 1
                cached = max(cached, k)
            self._recent = [*self._recent[-7:], toks]
        if cached < self.cache_min_tokens:
            cached = 0
        n_in, n_out = len(toks), estimate_tokens(text)
        return {
            "input_tokens": n_in,
            "output_tokens": n_out,
            "total_tokens": n_in + n_out,
            "input_token_details": {"cache_read": cached},
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._lock:
            index = len(self._calls)
            self._calls.append(ScriptedCall(list(messages), False, 1, "", {}, dict(kwargs)))
        if self.latency:
            time.sleep(self.latency)
        parsed = parse_merged_prompt(messages)
        if index in self.fail_calls or (parsed is not None and self.fail_merged):
            raise ScriptedError(f"scripted failure on call {index}")
        turn = parse_sequential_turn(messages) if parsed is None else None
        tool_calls = None
        if kwargs.get("tools") and self.tool_calls_for is not None:
            tool_calls = self.tool_calls_for(list(messages))
        if tool_calls:
            text = ""
        elif parsed is not None:
            text = self._merged_reply(parsed.nonce, parsed.shared, parsed.tasks)
        elif turn is not None:  # a per-agent call of the sequential tier: answered as alone
            text = self.answer_for(f"{turn.task}\n\n{turn.shared}" if turn.shared else turn.task)
            text = _compress(text, self.compress_turns)
        else:
            text = self.answer_for("\n\n".join(message_text(m) or "" for m in messages))
        limit = kwargs.get("max_tokens")
        if self.honor_max_tokens and isinstance(limit, int) and estimate_tokens(text) > limit:
            kept: list[str] = []
            for word in text.split(" "):
                if estimate_tokens(" ".join([*kept, word])) > limit:
                    break
                kept.append(word)
            text = " ".join(kept)
        usage = self._usage(messages, text)
        with self._lock:
            self._calls[index] = ScriptedCall(
                list(messages),
                parsed is not None,
                len(parsed.tasks) if parsed else 1,
                text,
                usage,
                dict(kwargs),
            )
        msg = AIMessage(
            content=text,
            usage_metadata=usage,
            response_metadata={"model_name": self.model_name},
            tool_calls=[
                {"name": c["name"], "args": dict(c.get("args") or {}), "id": f"call_{index}_{i}"}
                for i, c in enumerate(tool_calls or [])
            ],
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])
