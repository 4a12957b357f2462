"""Provider prompt-cache hints for a cache-aligned prompt (capsules-spec 3.8).

A declared agent's first message is its group's shared block, byte-identical across
the members. Each provider caches such a prefix its own way:

* **OpenAI** caches automatically from 1,024 tokens; ``prompt_cache_key`` routes calls
  that share a prefix to the same machine. We derive the key from the shared block, so
  a group's members (and later runs of the same task) share it. Only sent to OpenAI's
  own endpoint: an OpenAI-compatible server may reject unknown fields.
* **Anthropic** caches only at explicit breakpoints: the shared block gets
  ``cache_control: {"type": "ephemeral"}`` when it is long enough to be cached (below
  the model's minimum nothing is cached and no error is raised, so we skip it).
* **llama.cpp** (the embedded model) keeps a prompt cache per slot on the server side;
  :func:`langgraph_capsules.local.server` turns it on, so no per-call hint is needed.

Merged calls carry no breakpoints: they rely on the shared-content hoist instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage

from langgraph_capsules.prompts import estimate_tokens

__all__ = ["ANTHROPIC_MIN_CACHE_TOKENS", "cache_hints", "provider_of"]

ANTHROPIC_MIN_CACHE_TOKENS = {"haiku-4-5": 4096, "opus-4-5": 4096, "opus-4-6": 4096}
"""Minimum cacheable prefix per Anthropic model family where it is not 1,024 tokens
(capsules-spec 3.8); Haiku 3/3.5 need 2,048."""
_OPENAI_HOSTS = ("api.openai.com",)


def provider_of(model: Any) -> str:
    """``openai``, ``anthropic`` or ``other`` for a chat model (the one a proxy wraps)."""
    inner = getattr(model, "inner", model)
    # the class or a base it extends (e.g. the embedded client's ChatOpenAI subclass)
    names = {c.__name__ for c in type(inner).__mro__}
    name = next((n for n in ("ChatOpenAI", "AzureChatOpenAI", "ChatAnthropic") if n in names), "")
    if name in ("ChatOpenAI", "AzureChatOpenAI"):
        base = str(getattr(inner, "openai_api_base", None) or "")
        if not base or any(h in base for h in _OPENAI_HOSTS):
            return "openai"
        return "other"  # an OpenAI-compatible server (llama.cpp, vLLM, ...)
    if name == "ChatAnthropic":
        return "anthropic"
    return "other"


def _anthropic_minimum(model: Any) -> int:
    inner = getattr(model, "inner", model)
    name = str(getattr(inner, "model", "") or getattr(inner, "model_name", "") or "")
    for family, minimum in ANTHROPIC_MIN_CACHE_TOKENS.items():
        if family in name:
            return minimum
    if "haiku-3" in name or "3-haiku" in name or "3-5-haiku" in name:
        return 2048
    return 1024


def cache_hints(
    model: Any, messages: Sequence[BaseMessage], *, shared_messages: int = 1
) -> tuple[list[BaseMessage], dict[str, Any]]:
    """Add the provider's cache hint for the first ``shared_messages`` messages.

    Args:
        model: The chat model the call goes to (a proxy is looked through).
        messages: The cache-aligned prompt.
        shared_messages: How many leading messages form the shared block.

    Returns:
        The messages (a breakpoint added for Anthropic) and extra call options
        (``prompt_cache_key`` for OpenAI); unchanged for other providers.

    Example:
        >>> from langgraph_capsules.testing import ScriptedChatModel
        >>> msgs = [SystemMessage("shared"), SystemMessage("own")]
        >>> cache_hints(ScriptedChatModel(), msgs) == (msgs, {})
        True
    """
    out = list(messages)
    shared = out[:shared_messages]
    if not shared:
        return out, {}
    provider = provider_of(model)
    text = "\n".join(str(m.content) for m in shared)
    if provider == "openai":
        key = "capsule-" + hashlib.sha256(text.encode()).hexdigest()[:16]
        return out, {"prompt_cache_key": key}
    if provider == "anthropic" and estimate_tokens(text) >= _anthropic_minimum(model):
        last = shared[-1]
        if isinstance(last, SystemMessage) and isinstance(last.content, str):
            block = {"type": "text", "text": last.content, "cache_control": {"type": "ephemeral"}}
            out[shared_messages - 1] = SystemMessage(content=[block])
    return out, {}
