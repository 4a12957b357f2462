"""The capsule session: how a member's own LLM call is parked and answered later.

The capsule node runs each member's original function in a context copy where
``SESSION`` holds that member's :class:`Slot`. The member's first plain call on a
:class:`~langgraph_capsules.CapsuleChatModel` *parks* on the slot (its messages are
handed to the capsule node) and blocks until the capsule node answers it with text
cut from the merged reply, tells it to pass through, or aborts it. Sessions are
one-shot: a member's later calls pass straight through to the real model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage

__all__ = [
    "PASS_THROUGH",
    "SESSION",
    "MergeAbort",
    "Parked",
    "Slot",
    "await_future",
    "until_either",
]


class _PassThrough:
    def __repr__(self) -> str:
        return "PASS_THROUGH"


PASS_THROUGH: Any = _PassThrough()
"""Answer telling a parked call to make its own real call (nothing to merge it with)."""


class MergeAbort(BaseException):
    """Raised inside a member whose parked call cannot be answered from the merged reply.

    A ``BaseException`` so that a member's own ``except Exception:`` cannot swallow it
    and hand back a bogus update; the capsule node re-runs that member as its original
    node instead.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Parked:
    """A member's LLM call waiting for the merged answer."""

    messages: list[BaseMessage]
    kwargs: dict[str, Any]
    model: Any  # the CapsuleChatModel the call was made on
    """The proxy the member called. Calls merge when they go to the same model
    configuration (``model.config_key``), not only when they share this object; the
    merged call is made on the first such member's model."""


@dataclass
class Slot:
    """One member's session inside one capsule run."""

    group: str
    member: str
    tier: str
    parked: concurrent.futures.Future[Parked] = field(default_factory=concurrent.futures.Future)
    answer: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    unmergeable: list[str] = field(default_factory=list)
    """Why calls of this member passed through without parking (tool use, ...)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def open(self) -> bool:
        """True until the member's first mergeable call has parked (one-shot)."""
        return not self.parked.done()

    def aborted(self) -> MergeAbort | None:
        """The abort this slot's parked call received, if any.

        The capsule node reads it after the member returns: a member whose call was
        aborted is re-run as its original node whatever it returned (it may have caught
        the abort, or an error it turned into, and returned a default)."""
        if not self.answer.done():
            return None
        exc = self.answer.exception()
        return exc if isinstance(exc, MergeAbort) else None

    def park(self, messages: list[BaseMessage], kwargs: dict[str, Any], model: Any) -> bool:
        """Park a call; False if this slot was already used (the call must pass through)."""
        with self._lock:
            if self.parked.done():
                return False
            self.parked.set_result(Parked(list(messages), dict(kwargs), model))
            return True


SESSION: ContextVar[Slot | None] = ContextVar("langgraph_capsules_session", default=None)


def _waker(waiter: asyncio.Future[None]) -> Any:
    """A done-callback that wakes ``waiter``: directly when it runs on the waiter loop's
    thread (a future resolved by the capsule node on an async run), through the loop's
    thread-safe queue from any other thread (a sync member in a worker thread)."""
    loop = waiter.get_loop()
    thread = threading.get_ident()

    def wake(_: Any) -> None:
        if threading.get_ident() == thread:
            if not waiter.done():
                waiter.set_result(None)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_set_once, waiter)

    return wake


def _set_once(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def await_future(fut: concurrent.futures.Future[Any]) -> Any:
    """Await a session future from the event loop, as ``asyncio.wrap_future`` would
    (its result, or its exception raised, cancelling it if the awaiting task is
    cancelled), without a cross-thread wake-up when it is resolved on the loop's
    own thread."""
    if not fut.done():
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_waker(waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            fut.cancel()
            raise
    return fut.result()


async def until_either(fut: concurrent.futures.Future[Any], task: asyncio.Future[Any]) -> None:
    """Wait until ``fut`` or ``task`` is done (neither is cancelled on the way out)."""
    if fut.done() or task.done():
        return
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    wake = _waker(waiter)
    fut.add_done_callback(wake)
    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        task.remove_done_callback(wake)
