"""``CapsuleChatModel``: the proxy that lets one merged call answer many nodes' calls."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableConfig,
    RunnableParallel,
    RunnableSequence,
)
from langchain_core.runnables.config import ensure_config, merge_configs
from pydantic import BaseModel, SecretStr

from langgraph_capsules._session import PASS_THROUGH, SESSION, Slot, await_future
from langgraph_capsules.strategies.structured import STRUCTURE_KWARGS, call_shape
from langgraph_capsules.strategies.structured_reply import Served

__all__ = ["BUDGET_KWARGS", "UNMERGEABLE_KWARGS", "CapsuleChatModel", "config_key"]

UNMERGEABLE_KWARGS = frozenset(
    {
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "response_format",
        "ls_structured_output_format",
    }
)
"""Call options that describe a call's output shape. A call with them merges only as a
structured-output or JSON-mode call (see ``strategies/structured.py``); one that binds
tools for tool use passes through even inside a session."""

BUDGET_KWARGS = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "max_tokens_to_sample",
        "max_new_tokens",
        "num_predict",
        "n_predict",
    }
)
"""Budget options: calls that differ only in these still merge (budgets are summed)."""

_KEY_SKIP = frozenset(
    {"callbacks", "callback_manager", "cache", "rate_limiter", "verbose", "tags", "metadata"}
)

_LS_FORMAT: ContextVar[Any] = ContextVar("langgraph_capsules_ls_format", default=None)
"""The ``ls_structured_output_format`` of the call being generated (langchain-core pops
it before ``_generate``; a structured call made by function calling needs it to merge)."""

_ZERO_USAGE = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}

_ANSWERED: ContextVar[tuple[Slot, Any] | None] = ContextVar(
    "langgraph_capsules_answered", default=None
)
"""An answer the async entry point already awaited for this call (see ``agenerate``)."""


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class CapsuleChatModel(BaseChatModel):
    """Wrap the chat model your app already uses; nothing else in the app changes.

    Outside a capsule session (the original graph, or a capsule graph running a group
    ``fine``) every call is an exact pass-through to ``inner``: ``invoke``, ``ainvoke``,
    ``stream``, ``astream`` and ``batch`` go to the inner model's own methods, so its
    callbacks, cache, rate limiter and usage reporting are unchanged. One model object
    can serve the original graph and the capsule graph in the same process.

    Inside a session (set by a group's ``capsule__<group>`` node for each member) the
    member's first plain call is parked and later answered with an ``AIMessage`` cut
    from the group's merged reply. Served messages carry zero ``usage_metadata`` and
    ``response_metadata`` naming ``capsule_group``, ``capsule_member`` and
    ``capsule_tier``; the merged call itself carries the real usage, so nothing is
    counted twice. Calls merge when they go to the same model configuration
    (:func:`config_key`), whichever ``CapsuleChatModel`` object they were made on, so a
    ``get_model()`` factory that wraps a new model per call merges too. Structured-output
    and JSON-mode calls (``with_structured_output``, ``response_format``) merge in a
    merged call of their own and are served exactly what their own call returns (JSON
    content, the parsed object, or the tool call of ``method="function_calling"``).
    Calls that bind tools for tool use pass through unmerged and telemetry records
    them as ``unmergeable``.

    Args:
        inner: The real chat model (``ChatOpenAI``, a local model, ...).

    Example:
        >>> from langgraph_capsules.testing import ScriptedChatModel
        >>> llm = CapsuleChatModel(ScriptedChatModel())
        >>> llm.invoke("Say hi").content  # no session: a plain call to the inner model
        'Say hi ...'
    """

    inner: BaseChatModel
    """The wrapped model that makes every real call."""
    cache: bool = False  # served answers must never be written to or read from an LLM cache

    def __init__(self, inner: BaseChatModel | None = None, /, **kwargs: Any) -> None:
        if inner is not None:
            kwargs["inner"] = inner
        super().__init__(**kwargs)

    @property
    def _llm_type(self) -> str:
        return f"capsule[{self.inner._llm_type}]"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"inner": self.inner._identifying_params}

    # ------------------------------------------------------------------ routing
    def _session_for(self, kwargs: dict[str, Any]) -> Slot | None:
        """The open session slot this call should park on, or None to pass through."""
        slot = SESSION.get()
        if slot is None or not slot.open:
            return None
        shape = call_shape(kwargs)
        if shape.kind != "tools":
            return slot
        slot.unmergeable.append(shape.reason)
        return None

    @staticmethod
    def _tag_unmergeable(config: RunnableConfig | None, kwargs: dict[str, Any]) -> Any:
        slot = SESSION.get()
        if slot is None or call_shape(kwargs).kind != "tools":
            return config
        return merge_configs(
            ensure_config(config),
            {
                "metadata": {
                    "capsule_unmergeable": True,
                    "capsule_group": slot.group,
                    "capsule_member": slot.member,
                    "capsule_tier": slot.tier,
                }
            },
        )

    def _sync_slot(self, kwargs: dict[str, Any]) -> Slot | None:
        slot = self._session_for(kwargs)
        if slot is not None and _in_event_loop():
            # A sync call from async code would block the loop the capsule node needs.
            slot.unmergeable.append("sync_call_in_event_loop")
            return None
        return slot

    # ------------------------------------------------------------ pass-through API
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        if self._sync_slot(kwargs) is None:
            cfg = self._tag_unmergeable(config, kwargs)
            return self.inner.invoke(input, cfg, stop=stop, **kwargs)
        return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        if self._session_for(kwargs) is None:
            cfg = self._tag_unmergeable(config, kwargs)
            return await self.inner.ainvoke(input, cfg, stop=stop, **kwargs)
        return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        if self._sync_slot(kwargs) is None:
            cfg = self._tag_unmergeable(config, kwargs)
            yield from self.inner.stream(input, cfg, stop=stop, **kwargs)
            return
        yield from super().stream(input, config, stop=stop, **kwargs)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        if self._session_for(kwargs) is None:
            cfg = self._tag_unmergeable(config, kwargs)
            async for chunk in self.inner.astream(input, cfg, stop=stop, **kwargs):
                yield chunk
            return
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield chunk

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        if SESSION.get() is None:
            return self.inner.batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        if SESSION.get() is None:
            return await self.inner.abatch(
                inputs, config, return_exceptions=return_exceptions, **kwargs
            )
        return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, Any]:
        """Bind tools with the inner model's own formatting, keeping the proxy in the chain."""
        bound = self.inner.bind_tools(tools, **kwargs)
        if isinstance(bound, RunnableBinding) and bound.bound is self.inner:
            return self.bind(**bound.kwargs)
        return bound

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Runnable[Any, Any]:
        """The inner model's structured output, re-pointed at the proxy where possible."""
        structured = self.inner.with_structured_output(schema, **kwargs)
        swapped: Runnable[Any, Any] = _swap_model(structured, self.inner, self)
        return swapped

    def generate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Any = None,
        *,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        run_name: str | None = None,
        run_id: Any = None,
        **kwargs: Any,
    ) -> LLMResult:
        """langchain-core's ``generate``, keeping the call's structured-output format
        (which it pops before ``_generate``) visible to the session."""
        opts = {"tags": tags, "metadata": metadata, "run_name": run_name, "run_id": run_id}
        token = _LS_FORMAT.set(kwargs.get("ls_structured_output_format"))
        try:
            return super().generate(messages, stop, callbacks, **opts, **kwargs)
        finally:
            _LS_FORMAT.reset(token)

    async def agenerate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Any = None,
        *,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        run_name: str | None = None,
        run_id: Any = None,
        **kwargs: Any,
    ) -> LLMResult:
        """langchain-core's ``agenerate``, with the session's park-and-wait done first.

        langchain-core runs each prompt of ``agenerate`` in ``asyncio.gather(...,
        return_exceptions=True)`` and then treats only ``Exception`` as a failure, so a
        :class:`MergeAbort` (a ``BaseException``) raised inside ``_agenerate`` would
        come out as an ``AttributeError`` that a member's ``except Exception`` swallows.
        Here the call parks and awaits its answer *before* that machinery: an abort is
        raised from this frame, unchanged; an answer is handed to ``_agenerate`` through
        a context variable (one per call, so concurrent calls never see each other's).
        """
        opts = {"tags": tags, "metadata": metadata, "run_name": run_name, "run_id": run_id}
        slot = SESSION.get()
        token = None
        if (
            slot is not None
            and len(messages) == 1
            and self._session_for(kwargs) is not None
            and slot.park(messages[0], {"stop": stop, **kwargs}, self)
        ):
            answer = await await_future(slot.answer)  # MergeAbort is raised here
            token = _ANSWERED.set((slot, answer))
        try:
            return await super().agenerate(messages, stop, callbacks, **opts, **kwargs)
        except AttributeError:
            # several prompts in one agenerate: one of them was aborted inside gather
            aborted = slot.aborted() if slot is not None else None
            if aborted is not None:
                raise aborted from None
            raise
        finally:
            if token is not None:
                _ANSWERED.reset(token)

    # ------------------------------------------------------- served (inside a session)
    @staticmethod
    def _served(slot: Slot, answer: str | Served) -> AIMessage:
        meta = {
            "capsule_served": True,
            "capsule_group": slot.group,
            "capsule_member": slot.member,
            "capsule_tier": slot.tier,
        }
        if isinstance(answer, Served):  # what the member's own structured call returns
            return AIMessage(
                content=answer.content,
                tool_calls=[dict(c) for c in answer.tool_calls],
                additional_kwargs=dict(answer.additional_kwargs),
                usage_metadata=dict(_ZERO_USAGE),
                response_metadata=meta,
            )
        return AIMessage(content=answer, usage_metadata=dict(_ZERO_USAGE), response_metadata=meta)

    @staticmethod
    def _park_kwargs(stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = {"stop": stop, **kwargs}
        ls = _LS_FORMAT.get()
        if ls is not None and "ls_structured_output_format" not in out:
            out["ls_structured_output_format"] = ls
        return out

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        slot = SESSION.get()
        if slot is not None and slot.park(messages, self._park_kwargs(stop, kwargs), self):
            answer = slot.answer.result()
            if answer is not PASS_THROUGH:
                return ChatResult(generations=[ChatGeneration(message=self._served(slot, answer))])
        return self.inner._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answered = _ANSWERED.get()
        if answered is not None:  # parked and answered by ``agenerate`` for this very call
            _ANSWERED.set(None)
            served_slot, served = answered
            if served is not PASS_THROUGH:
                message = self._served(served_slot, served)
                return ChatResult(generations=[ChatGeneration(message=message)])
            return await self.inner._agenerate(
                messages, stop=stop, run_manager=run_manager, **kwargs
            )
        slot = SESSION.get()
        if slot is not None and slot.park(messages, self._park_kwargs(stop, kwargs), self):
            answer = await await_future(slot.answer)
            if answer is not PASS_THROUGH:
                return ChatResult(generations=[ChatGeneration(message=self._served(slot, answer))])
        return await self.inner._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        result = self._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        yield _as_chunk(result)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        result = await self._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
        yield _as_chunk(result)


def _as_chunk(result: ChatResult) -> ChatGenerationChunk:
    msg = result.generations[0].message
    chunk = AIMessageChunk(
        content=msg.content,
        additional_kwargs=msg.additional_kwargs,
        usage_metadata=getattr(msg, "usage_metadata", None),
        response_metadata=msg.response_metadata,
        tool_calls=getattr(msg, "tool_calls", []),
        id=msg.id,
    )
    return ChatGenerationChunk(message=chunk)


def _swap_model(r: Any, old: Any, new: Any) -> Any:
    """Rebuild ``r`` with ``old`` replaced by ``new`` in bindings, sequences and maps."""
    if r is old:
        return new
    if isinstance(r, RunnableBinding):
        inner = _swap_model(r.bound, old, new)
        return r if inner is r.bound else r.model_copy(update={"bound": inner})
    if isinstance(r, RunnableSequence):
        steps = [_swap_model(s, old, new) for s in r.steps]
        if all(a is b for a, b in zip(steps, r.steps, strict=True)):
            return r
        return r.model_copy(update={"first": steps[0], "middle": steps[1:-1], "last": steps[-1]})
    if isinstance(r, RunnableParallel):
        swapped = {k: _swap_model(v, old, new) for k, v in r.steps__.items()}
        if all(swapped[k] is v for k, v in r.steps__.items()):
            return r
        return r.model_copy(update={"steps__": swapped})
    return r


def config_key(model: Any, kwargs: Mapping[str, Any] | None = None) -> str:
    """The model configuration a call goes to: calls with equal keys merge.

    Built from the inner model's class, ``_llm_type``, its declared fields (model name,
    base URL, sampling settings such as temperature; secrets by digest; fields a model
    excludes from serialisation, such as clients, and callbacks, cache and tags left
    out), its ``_identifying_params``, and the call's own options. Budget options
    (:data:`BUDGET_KWARGS`) and output-shape options (``response_format``, tools) are
    left out: the merged call sums the budgets and asks for the combined shape. So two
    ``CapsuleChatModel`` objects made by one ``get_model()`` factory give equal keys,
    and a second model, or the same one at another temperature, does not."""
    inner = getattr(model, "inner", model)
    cls = type(inner)
    fields: dict[str, Any] = {}
    for name, info in getattr(cls, "model_fields", {}).items():
        if info.exclude or name in _KEY_SKIP or name in BUDGET_KWARGS:
            continue
        fields[name] = _stable(getattr(inner, name, None))
    try:
        ident = dict(inner._identifying_params)
    except Exception:
        ident = {}
    try:
        llm_type = str(inner._llm_type)
    except Exception:
        llm_type = ""
    skip = BUDGET_KWARGS | STRUCTURE_KWARGS
    data = {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "llm_type": llm_type,
        "fields": fields,
        "identifying": {k: _stable(v) for k, v in ident.items() if k not in skip},
        "call": {
            k: _stable(v) for k, v in (kwargs or {}).items() if k not in skip and v is not None
        },
    }
    return json.dumps(data, sort_keys=True, default=str)


def _stable(value: Any, depth: int = 0) -> Any:
    """A comparable rendering of a configuration value (identity for opaque objects)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, SecretStr):
        return "secret:" + hashlib.sha256(value.get_secret_value().encode()).hexdigest()[:16]
    if depth > 4:
        return f"{type(value).__qualname__}@{id(value)}"
    if isinstance(value, Mapping):
        return {str(k): _stable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(repr(_stable(v, depth + 1)) for v in value)
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, BaseModel):
        return {
            "__class__": type(value).__qualname__,
            **{
                k: _stable(getattr(value, k, None), depth + 1)
                for k, f in type(value).model_fields.items()
                if not f.exclude
            },
        }
    return f"{type(value).__qualname__}@{id(value)}"
