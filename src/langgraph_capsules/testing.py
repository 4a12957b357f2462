"""Offline fakes for testing capsule graphs: :class:`ScriptedChatModel`.

Shipped so users can test their own capsule configurations without an LLM (like DSPy's
``DummyLM`` or httpx's ``MockTransport``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from langgraph_capsules.prompts import EARLIER_REPLY_LABEL, estimate_tokens, message_text
from langgraph_capsules.strategies.sequential import parse_sequential_turn
from langgraph_capsules.strategies.standard import parse_merged_prompt
from langgraph_capsules.strategies.structured import (
    MERGED_TOOL,
    parse_structured_prompt,
    part_spec,
)

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


def _solo_text(task: str, shared: str) -> str:
    """The lines a merged task (or a sequential turn) is answered from: its own text and
    the shared context, without the labels the merge puts before earlier assistant turns
    (a solo call carries them as roles, which the scripted model does not read)."""
    text = f"{task}\n\n{shared}" if shared else task
    return "\n".join(ln for ln in text.split("\n") if ln.strip() != EARLIER_REPLY_LABEL)


def _norm_units(text: str) -> list[str]:
    return sorted({" ".join(p.split()) for p in re.split(r"\n[ \t]*\n|\n", text) if p.strip()})


class ScriptedChatModel(BaseChatModel):
    """A deterministic, prompt-aware chat model that reports realistic usage.

    * **Answers.** A plain call is answered by ``respond(prompt_text)`` when given, else
      by the first ``rules`` entry whose key occurs in the prompt, else by a default
      answer: ``"<head> :: <digest>"`` followed by ``answer_words`` filler words. Both
      come from the *set* of the prompt's lines (the head is the first eight words of
      the first line in sorted order that starts with a letter or digit), never from
      their order, so a task answered inside a merged prompt, where its shared context
      sits apart from its own text, gets exactly the answer it gets alone.
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
      ``fail_merged`` (every merged call raises), ``honor_max_tokens`` (truncate replies),
      ``rewrite_merged`` (a function given each merged reply ``AIMessage``, returning
      the one to send instead: invalid JSON, a dropped property, list content, ...).
    * **Structured output.** ``with_structured_output(schema, method=...)`` works as in
      ``langchain-openai``: ``"json_schema"`` (``response_format``; a pydantic schema's
      object also in ``additional_kwargs["parsed"]``), ``"json_mode"`` or
      ``"function_calling"`` (the default, as in langchain-core: one forced tool). A
      call asking for a schema gets a JSON object valid for it: ``structured_answers``
      [schema name] when given (an object, or a function of the prompt text), else the
      JSON object a ``respond``/``rules`` answer holds, else an object derived from the
      schema and the prompt's lines. A merged structured call gets, per task, exactly
      the object that task gets alone.

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
    answer in text, or the forced tool's structured answer). Not asked with
    ``tool_choice="none"``: the reply is text, as a provider's is. Each call is
    ``{"name": ..., "args": {...}}``; ids are added."""
    structured_answers: dict[str, Any] = Field(default_factory=dict)
    """Per schema name (pydantic class, ``json_schema`` name or tool name): the object
    to answer, or a function of the prompt text returning it."""
    rewrite_merged: Callable[[AIMessage], AIMessage] | None = None
    """Applied to every merged reply before it is returned (fault injection)."""

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

    def with_structured_output(
        self,
        schema: Any,
        *,
        method: str = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, Any]:
        """Structured output as ``langchain-openai`` builds it (see the class doc)."""
        from langchain_openai.chat_models.base import (
            _convert_to_openai_response_format,
            _oai_structured_outputs_parser,
        )

        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        ls = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(schema, strict=strict)
            name = tool["function"]["name"]
            llm = self.bind(tools=[tool], tool_choice=name, ls_structured_output_format=ls)
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if is_model
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method == "json_mode":
            llm = self.bind(response_format={"type": "json_object"}, ls_structured_output_format=ls)
            parser = (
                PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()
            )
        elif method == "json_schema":
            rf = _convert_to_openai_response_format(schema, strict=strict)
            ls["schema"] = convert_to_openai_tool(schema)
            llm = self.bind(response_format=rf, ls_structured_output_format=ls)
            parser = (
                RunnableLambda(lambda m: _oai_structured_outputs_parser(m, schema))
                if is_model
                else JsonOutputParser()
            )
        else:
            raise ValueError(f"unknown method {method!r}")
        if include_raw:
            assign = RunnablePassthrough.assign(
                parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
            )
            none = RunnablePassthrough.assign(parsed=lambda _: None)
            return RunnableMap(raw=llm) | assign.with_fallbacks(
                [none], exception_key="parsing_error"
            )
        return llm | parser

    def structured_answer(self, schema: Mapping[str, Any] | None, name: str, text: str) -> Any:
        """The JSON object this model answers a call asking for ``schema`` with."""
        given = self.structured_answers.get(name)
        if given is not None:
            return given(text) if callable(given) else given
        if self.respond is not None or any(k in text for k in self.rules):
            found = _json_object(self.answer_for(text))
            if found is not None:
                return found
        digest = hashlib.sha1("\n".join(_norm_units(text)).encode()).hexdigest()[:10]
        if not schema or not (schema.get("properties") or schema.get("anyOf")):
            return {"answer": f"{name} :: {digest}"}
        return _fill(schema, digest, name)

    # -------------------------------------------------------------- answering
    def answer_for(self, text: str) -> str:
        """The answer this model gives to a single (unmerged) prompt text."""
        if self.respond is not None:
            return self.respond(text)
        for key, value in self.rules.items():
            if key in text:
                return value
        units = _norm_units(text)
        words = [u for u in units if u[:1].isalnum()] or units  # no "###" or "---" lines
        head = " ".join(words[0].split()[:8]) if words else ""
        digest = hashlib.sha1("\n".join(units).encode()).hexdigest()[:10]
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
            body = self.answer_for(_solo_text(task, shared))
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
        merged_structured = parse_structured_prompt(messages) if parsed is None else None
        merged = parsed is not None or merged_structured is not None
        tasks = parsed.tasks if parsed else merged_structured.tasks if merged_structured else ()
        n_tasks = len(tasks) if merged else 1
        if index in self.fail_calls or (merged and self.fail_merged):
            with self._lock:  # recorded as what it was asked to be, with no reply
                self._calls[index] = ScriptedCall(
                    list(messages), merged, n_tasks, "", {}, dict(kwargs)
                )
            raise ScriptedError(f"scripted failure on call {index}")
        turn = parse_sequential_turn(messages) if not merged else None
        tool_calls = None
        if (
            kwargs.get("tools")
            and kwargs.get("tool_choice") != "none"  # as providers do: no calls at all
            and self.tool_calls_for is not None
            and not merged
        ):
            tool_calls = self.tool_calls_for(list(messages))
        extra: dict[str, Any] = {}
        if tool_calls:
            text = ""
        elif merged_structured is not None:
            text, tool_calls = self._structured_merged_reply(merged_structured, kwargs)
        elif (answered := self._structured_alone(messages, kwargs)) is not None:
            text, tool_calls, extra = answered
        elif parsed is not None:
            text = self._merged_reply(parsed.nonce, parsed.shared, parsed.tasks)
        elif turn is not None:  # a per-agent call of the sequential tier: answered as alone
            text = self.answer_for(_solo_text(turn.task, turn.shared))
            text = _compress(text, self.compress_turns)
        else:
            text = self.answer_for("\n\n".join(message_text(m) or "" for m in messages))
        limit = kwargs.get("max_tokens")
        cut = self.honor_max_tokens and isinstance(limit, int) and estimate_tokens(text) > limit
        if cut and isinstance(limit, int):
            kept: list[str] = []
            for word in text.split(" "):
                if estimate_tokens(" ".join([*kept, word])) > limit:
                    break
                kept.append(word)
            text = " ".join(kept)
        usage = self._usage(messages, text)
        with self._lock:
            self._calls[index] = ScriptedCall(
                list(messages), merged, n_tasks, text, usage, dict(kwargs)
            )
        msg = AIMessage(
            content=text,
            additional_kwargs=extra,
            usage_metadata=usage,
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": "length" if cut else "stop",
            },
            tool_calls=[
                {"name": c["name"], "args": dict(c.get("args") or {}), "id": f"call_{index}_{i}"}
                for i, c in enumerate(tool_calls or [])
            ],
        )
        if merged and self.rewrite_merged is not None:
            msg = self.rewrite_merged(msg)
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _structured_alone(
        self, messages: list[BaseMessage], kwargs: Mapping[str, Any]
    ) -> tuple[str, list[dict[str, Any]] | None, dict[str, Any]] | None:
        """A single call asking for a schema or JSON: (content, tool calls, extras)."""
        rf = kwargs.get("response_format")
        tools = kwargs.get("tools") or []
        forced = len(tools) == 1 and kwargs.get("tool_choice") not in (None, "auto", "none")
        if rf is None and not forced:
            return None
        text = "\n\n".join(message_text(m) or "" for m in messages)
        probe = dict(kwargs)
        if forced and "ls_structured_output_format" not in probe:
            probe["ls_structured_output_format"] = {"kwargs": {"method": "function_calling"}}
        spec = part_spec(probe)
        if spec is None:
            return None
        obj = self.structured_answer(spec.schema, spec.name, text)
        if spec.serve == "tool":
            return "", [{"name": spec.tool_name, "args": obj}], {}
        extra: dict[str, Any] = {}
        if spec.parsed and spec.pydantic is not None:
            extra["parsed"] = spec.pydantic.model_validate(obj)
        return json.dumps(obj, ensure_ascii=False), None, extra

    def _structured_merged_reply(
        self, parsed: Any, kwargs: Mapping[str, Any]
    ) -> tuple[str, list[dict[str, Any]] | None]:
        """A merged structured reply: per task, the object that task gets alone."""
        combined: Mapping[str, Any] = {}
        rf = kwargs.get("response_format")
        tools = kwargs.get("tools") or []
        if isinstance(rf, Mapping) and isinstance(rf.get("json_schema"), Mapping):
            combined = rf["json_schema"].get("schema") or {}
        elif tools:
            fn = tools[0].get("function") or {}
            combined = fn.get("parameters") or tools[0].get("parameters") or {}
        props = combined.get("properties") or {}
        obj: dict[str, Any] = {}
        for i, task in enumerate(parsed.tasks, 1):
            if i in self.drop_sections:
                continue
            key = f"task_{i}"
            part = props.get(key) or {}
            text = f"{task}\n\n{parsed.shared}" if parsed.shared else task
            name = str(part.get("title") or "json_object")
            schema = None if name == "json_object" else part  # JSON mode: no schema alone
            value = self.structured_answer(schema, name, text)
            if i in self.empty_sections:
                value = {k: "" for k in value} if isinstance(value, dict) else ""
            obj[key] = value
        if tools:
            return "", [{"name": MERGED_TOOL, "args": obj}]
        return json.dumps(obj, ensure_ascii=False), None


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object a text holds (a fenced block unwrapped), or None."""
    body = text.strip()
    fenced = re.match(r"^```[\w-]*\n(.*?)\n?```$", body, re.S)
    if fenced is not None:
        body = fenced.group(1)
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _fill(schema: Any, seed: str, path: str, depth: int = 0) -> Any:
    """A deterministic value valid for ``schema``, derived from ``seed`` and ``path``
    (independent of titles, descriptions and ``required``, so the strict and the plain
    form of one schema give the same value)."""
    h = int(hashlib.sha1(f"{seed}|{path}".encode()).hexdigest()[:8], 16)
    if not isinstance(schema, Mapping) or depth > 8:
        return f"{path} {seed}"
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            opts = [
                o for o in schema[key] if not (isinstance(o, Mapping) and o.get("type") == "null")
            ]
            return _fill(opts[0] if opts else {"type": "null"}, seed, path, depth + 1)
    if schema.get("allOf"):
        return _fill(schema["allOf"][0], seed, path, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][h % len(schema["enum"])]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {
            k: _fill(v, seed, f"{path}.{k}", depth + 1)
            for k, v in (schema.get("properties") or {}).items()
        }
    if kind == "array":
        n = max(int(schema.get("minItems", 0)), min(2, int(schema.get("maxItems", 2))))
        return [_fill(schema.get("items"), seed, f"{path}[{i}]", depth + 1) for i in range(n)]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        high = int(schema.get("maximum", low + 99))
        return low + h % (high - low + 1)
    if kind == "number":
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", lo + 100.0))
        return round(lo + (h % 1000) / 1000 * (hi - lo), 3)
    if kind == "boolean":
        return bool(h % 2)
    if kind == "null":
        return None
    leaf = path.rsplit(".", 1)[-1]
    words = " ".join(_WORDS[(h >> (3 * i)) % len(_WORDS)] for i in range(5))
    return f"{leaf} {seed[:6]} {words}"
