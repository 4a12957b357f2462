"""Why each billed chat-model call ended: ``finish_reason`` per call, so a benchmark can
tell a call that finished from one cut at its ``max_tokens``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

__all__ = ["LENGTH_REASONS", "FinishReasons", "track_finish_reasons"]

LENGTH_REASONS = frozenset({"length", "max_tokens", "max_output_tokens", "MAX_TOKENS"})
"""Stop reasons that mean the reply hit its ``max_tokens`` (OpenAI, Anthropic, Gemini)."""


class FinishReasons(BaseCallbackHandler):
    """Each billed chat-model call's ``finish_reason``, read from the reply's
    ``response_metadata`` (or the generation info), in completion order. Calls answered
    from a merged call (``capsule_served``) are not model calls and are left out, so the
    count matches :func:`lc.track_usage`'s ``calls``."""

    run_inline = True
    raise_error = False

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._open: dict[Any, dict[str, Any]] = {}

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: Any,
        *,
        run_id: Any,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        md = metadata or {}
        name = md.get("capsule_group") if md.get("capsule_merged") else None
        name = name or md.get("capsule_member") or md.get("langgraph_node")
        limit = (invocation_params or {}).get("max_tokens")
        with self._lock:
            self._open[run_id] = {"node": name, "max_tokens": limit}

    def on_llm_end(self, response: LLMResult, *, run_id: Any, **kwargs: Any) -> None:
        with self._lock:
            call = self._open.pop(run_id, {"node": None, "max_tokens": None})
        gen = (
            response.generations[0][0] if response.generations and response.generations[0] else None
        )
        message = getattr(gen, "message", None)
        rmeta = getattr(message, "response_metadata", None) or {}
        if rmeta.get("capsule_served"):
            return
        info = getattr(gen, "generation_info", None) or {}
        reason = rmeta.get("finish_reason") or rmeta.get("stop_reason")
        reason = reason or info.get("finish_reason") or info.get("stop_reason")
        usage = getattr(message, "usage_metadata", None) or {}
        call.update(finish_reason=reason, output_tokens=usage.get("output_tokens"))
        with self._lock:
            self.calls.append(call)

    def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        with self._lock:
            self._open.pop(run_id, None)

    def summary(self) -> dict[str, Any]:
        """``finish_reasons`` (count per reason; ``unknown`` when the model gives none),
        ``truncated_calls`` (ended at ``max_tokens``), ``finished_calls`` (all),
        ``truncated`` (the node or group and budget of each cut call) and
        ``call_finishes`` (every call: node or group, reason, output tokens, budget)."""
        with self._lock:
            calls = list(self.calls)
        counts: dict[str, int] = {}
        for c in calls:
            key = str(c["finish_reason"] or "unknown")
            counts[key] = counts.get(key, 0) + 1
        cut = [c for c in calls if str(c["finish_reason"]) in LENGTH_REASONS]
        return {
            "call_finishes": [
                {k: c[k] for k in ("node", "finish_reason", "output_tokens", "max_tokens")}
                for c in calls
            ],
            "finish_reasons": counts,
            "truncated_calls": len(cut),
            "finished_calls": len(calls),
            "truncated": [
                {
                    "node": c["node"],
                    "max_tokens": c["max_tokens"],
                    "output_tokens": c["output_tokens"],
                }
                for c in cut
            ],
        }


_FINISH: ContextVar[FinishReasons | None] = ContextVar("ci_bench_finish_reasons", default=None)
register_configure_hook(_FINISH, inheritable=True)


@contextlib.contextmanager
def track_finish_reasons() -> Iterator[FinishReasons]:
    """Record the ``finish_reason`` of every chat-model call made inside the block (in
    any graph or thread LangChain's callback context reaches, like :func:`lc.track_usage`)."""
    handler = FinishReasons()
    token = _FINISH.set(handler)
    try:
        yield handler
    finally:
        _FINISH.reset(token)
