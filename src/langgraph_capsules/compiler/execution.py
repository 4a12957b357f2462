"""Execution of one group's members inside the capsule node: run, park, merge, split.

:class:`CapsuleRun` runs every member's own function concurrently; with a compound tier
each member's first LLM call parks on its session slot, the parked calls are answered
from one merged call (standard) or a shared conversation (sequential), and a member
whose answer is missing or bad gets an uncatchable abort and is re-run as its
original node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import copy_context
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    merge_configs,
    patch_config,
    var_child_runnable_config,
)
from langgraph.errors import GraphBubbleUp

from langgraph_capsules._compat import TAG_NOSTREAM, RunnableCallable, node_runnable
from langgraph_capsules._session import (
    PASS_THROUGH,
    SESSION,
    MergeAbort,
    Slot,
    until_either,
)
from langgraph_capsules.compiler.judging import Judgement, input_digest, task_key, task_text
from langgraph_capsules.compiler.merge_plan import MergePlanning
from langgraph_capsules.strategies.standard import (
    hit_length_limit,
    non_answer,
    reply_text,
    split_reply,
)
from langgraph_capsules.strategies.structured import (
    StructuredPrompt,
)
from langgraph_capsules.strategies.structured_reply import split_structured
from langgraph_capsules.telemetry import SHADOW_KEY, UsageTracker
from langgraph_capsules.types import Tier

if TYPE_CHECKING:
    from langgraph_capsules.compiler.runtime import GroupRuntime

__all__ = [
    "CapsuleRun",
    "Outcome",
    "borrow_pool",
    "complete",
    "derived_config",
    "in_thread",
    "return_pool",
    "tracked_callbacks",
    "with_handler",
]


@dataclass
class Outcome:
    update: dict[str, Any] | None = None
    reason: str | None = None


def complete(outcomes: Mapping[str, Outcome]) -> bool:
    """Every member produced an update (a shadow evaluation needs the whole fine output)."""
    return all(o.update is not None for o in outcomes.values())


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call in a worker thread with the current context."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, copy_context().run, fn, *args)


class CapsuleRun(MergePlanning):
    """One run of one group's members inside the capsule node.

    With a compound ``tier`` every member runs under a session and the parked calls are
    answered from one merged call; with ``tier="fine"`` (the fine half of a shadow
    evaluation) the members run with no session, one real call each. ``shadow`` marks
    the calls of a shadow evaluation (metadata ``capsule_shadow``, never streamed).
    """

    def __init__(
        self,
        rt: GroupRuntime,
        state: Mapping[str, Any],
        config: RunnableConfig,
        tier: Tier,
        *,
        shadow: bool = False,
    ) -> None:
        self.rt = rt
        self.config = config
        self.tier = tier
        self.shadow = shadow
        self.members = list(rt.plan.members)
        self.tracker = UsageTracker()
        # one copy of the node's callback manager, with the tracker, shared by every
        # config of this run (a run configures its own manager from it, never mutates it)
        self.callbacks = tracked_callbacks(config, self.tracker)
        self.slots = {m: Slot(rt.plan.name, m, tier) for m in self.members}
        self.inputs = {m: rt._member_input(m, state) for m in self.members}
        self.configs = {
            m: rt._member_config(m, config, tier, self.callbacks, shadow=shadow)
            for m in self.members
        }
        self.problems: dict[str, str] = {}
        self.started = time.perf_counter()
        self.merge_stats: dict[str, Any] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -------------------------------------------------- running the members
    def _member_sync(self, member: str) -> Any:
        cfg = self.configs[member]
        manager = get_callback_manager_for_config(cfg)
        run = manager.on_chain_start(None, self.inputs[member], name=member)
        child = patch_config(cfg, callbacks=run.get_child())
        var_child_runnable_config.set(child)
        try:
            out = node_runnable(self.rt.specs[member]).invoke(self.inputs[member], child)
        except BaseException as e:
            run.on_chain_error(e)
            raise
        run.on_chain_end(out if isinstance(out, dict) else {"output": out})
        return out

    async def _member_async(self, member: str) -> Any:
        cfg = self.configs[member]
        manager = get_async_callback_manager_for_config(cfg)
        run = await manager.on_chain_start(None, self.inputs[member], name=member)
        child = patch_config(cfg, callbacks=run.get_child())
        var_child_runnable_config.set(child)
        runnable = node_runnable(self.rt.specs[member])
        try:
            if _sync_only(runnable):
                # A parked sync member blocks its thread until the merged answer comes: run
                # it on this run's own threads, never on the loop's shared default executor
                # (12 parked members of 4 groups would exhaust it and deadlock).
                loop = asyncio.get_running_loop()
                ctx = copy_context()
                out = await loop.run_in_executor(
                    self._threads(), ctx.run, runnable.invoke, self.inputs[member], child
                )
            else:
                out = await runnable.ainvoke(self.inputs[member], child)
        except BaseException as e:
            await run.on_chain_error(e)
            raise
        await run.on_chain_end(out if isinstance(out, dict) else {"output": out})
        return out

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = borrow_pool(len(self.members))
        return self._pool

    def _context(self, member: str) -> Any:
        ctx = copy_context()
        ctx.run(var_child_runnable_config.set, self.configs[member])
        if self.tier != "fine":
            ctx.run(SESSION.set, self.slots[member])
        return ctx

    def execute_sync(self) -> dict[str, Outcome]:
        """Run the members (and the merged call); each member's outcome."""
        pool = borrow_pool(len(self.members))
        futures: dict[str, concurrent.futures.Future[Any]] = {}
        try:
            futures = {
                m: pool.submit(self._context(m).run, self._member_sync, m) for m in self.members
            }
            for m in self.members:
                concurrent.futures.wait(
                    [self.slots[m].parked, futures[m]],
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
            try:
                self._answer_sync()
            finally:
                self._abort_unanswered("capsule node stopped before answering")
            concurrent.futures.wait(list(futures.values()))
        finally:
            if len(futures) == len(self.members) and all(f.done() for f in futures.values()):
                return_pool(pool)  # every member returned: its threads are idle
            else:
                pool.shutdown(wait=True)
        return self._settled({m: self._outcome_of_future(futures[m]) for m in self.members})

    async def execute_async(self) -> dict[str, Outcome]:
        """Async twin of :meth:`execute_sync`."""
        tasks = {
            m: self._context(m).run(asyncio.ensure_future, self._member_async(m))
            for m in self.members
        }
        for m in self.members:
            await until_either(self.slots[m].parked, tasks[m])
        try:
            await self._answer_async()
        finally:
            self._abort_unanswered("capsule node stopped before answering")
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        if self._pool is not None:
            return_pool(self._pool)  # every member returned: its threads are idle
            self._pool = None
        return self._settled({m: self._outcome(r) for m, r in zip(tasks, results, strict=True)})

    # --------------------------------------------------- the merged call(s)
    def _turn_config(self, member: str) -> RunnableConfig:
        md: dict[str, Any] = {
            "capsule_group": self.rt.plan.name,
            "capsule_member": member,
            "capsule_tier": self.tier,
            "langgraph_node": member,
        }
        if self.shadow:
            md[SHADOW_KEY] = True
        return derived_config(
            self.config,
            metadata=md,
            callbacks=self.callbacks,
            tags=("capsule:sequential", TAG_NOSTREAM),
            run_name=f"{self.rt.plan.capsule_node}:{member}",
        )

    def _turn_kwargs(self, member: str) -> dict[str, Any]:
        parked = self.slots[member].parked.result()
        return {k: v for k, v in parked.kwargs.items() if v is not None}

    def _turn_done(self, member: str, reply: Any, answers: list[str | None]) -> None:
        if isinstance(reply, BaseException):
            self.problems[member] = f"sequential call failed: {type(reply).__name__}: {reply}"
            self.slots[member].answer.set_exception(MergeAbort(self.problems[member]))
            answers.append(None)
            return
        text = reply_text(reply)
        if non_answer(text):
            self.problems[member] = "sequential call gave no answer"
            self.slots[member].answer.set_exception(MergeAbort(self.problems[member]))
            answers.append(None)
            return
        self.slots[member].answer.set_result(text)  # the member goes on at once
        answers.append(text)

    def _answer_sequential_sync(self) -> None:
        for bucket, plan, model in self._sequential():
            answers: list[str | None] = []
            for k, m in enumerate(bucket):
                try:
                    reply: Any = model.inner.invoke(
                        plan.messages(k, answers), self._turn_config(m), **self._turn_kwargs(m)
                    )
                except Exception as e:
                    reply = e
                self._turn_done(m, reply, answers)

    async def _answer_sequential_async(self) -> None:
        for bucket, plan, model in self._sequential():
            answers: list[str | None] = []
            for k, m in enumerate(bucket):
                try:
                    reply: Any = await model.inner.ainvoke(
                        plan.messages(k, answers), self._turn_config(m), **self._turn_kwargs(m)
                    )
                except Exception as e:
                    reply = e
                self._turn_done(m, reply, answers)

    def _answer_sync(self) -> None:
        if self.tier == "sequential":
            self._answer_sequential_sync()
            return
        replies = []
        for bucket, prompt, model, kwargs, cfg in self._prepared():
            try:
                reply: Any = model.inner.invoke(prompt.messages, cfg, **kwargs)
            except Exception as e:  # the merged call failed: every member falls back
                reply = e
            replies.append((bucket, prompt, kwargs, reply))
        self._distribute(replies)

    async def _answer_async(self) -> None:
        if self.tier == "sequential":
            await self._answer_sequential_async()
            return
        replies = []
        for bucket, prompt, model, kwargs, cfg in self._prepared():
            try:
                reply: Any = await model.inner.ainvoke(prompt.messages, cfg, **kwargs)
            except Exception as e:
                reply = e
            replies.append((bucket, prompt, kwargs, reply))
        self._distribute(replies)

    def _distribute(self, replies: list[tuple[list[str], Any, dict[str, Any], Any]]) -> None:
        for bucket, prompt, kwargs, reply in replies:
            if isinstance(reply, BaseException):
                reason = f"merged call failed: {type(reply).__name__}: {reply}"
                for m in bucket:
                    self.problems[m] = reason
                    self.slots[m].answer.set_exception(MergeAbort(reason))
                continue
            truncated = hit_length_limit(reply, kwargs)
            what = "section"
            answers: Mapping[str, Any]
            if isinstance(prompt, StructuredPrompt):
                answers, problems = split_structured(reply, prompt, truncated=truncated)
                what = "part"
            else:
                answers, problems = split_reply(reply_text(reply), prompt, truncated=truncated)
            for m in bucket:
                if m in answers:
                    self.slots[m].answer.set_result(answers[m])
                else:
                    self.problems[m] = f"{what} {problems[m]}"
                    self.slots[m].answer.set_exception(MergeAbort(self.problems[m]))

    def _abort_unanswered(self, reason: str) -> None:
        for slot in self.slots.values():
            if slot.parked.done() and not slot.answer.done():
                slot.answer.set_exception(MergeAbort(reason))

    # -------------------------------------------------------------- results
    def _settled(self, outcomes: dict[str, Outcome]) -> dict[str, Outcome]:
        """Outcomes with every aborted member marked for a re-run, whatever it returned.

        A member may catch the abort (``except BaseException``), or an error it was
        turned into, and return a default value; that value must never be committed."""
        for m in self.members:
            aborted = self.slots[m].aborted()
            if aborted is not None:
                outcomes[m] = Outcome(reason=self.problems.get(m) or aborted.reason)
        return outcomes

    def _outcome_of_future(self, fut: concurrent.futures.Future[Any]) -> Outcome:
        exc = fut.exception()
        return self._outcome(exc if exc is not None else fut.result())

    def _outcome(self, result: Any) -> Outcome:
        """One member's outcome from what its function returned or raised.

        A returned ``Command(goto=...)``/``Send`` fails the run (``member_routes``): the
        gate already triggers the successors, so the member's own routing would run
        them twice. After a compound run in which members made real calls without
        parking one, ``merge_stats["notes"]`` says why nothing merged for them (their
        model is not a ``CapsuleChatModel``)."""
        from langgraph_capsules.errors import member_routes_error
        from langgraph_capsules.topology import returned_routing

        unparked = [
            m
            for m in self.members
            if self.tier != "fine"
            and not self.slots[m].parked.done()
            and any(r["member"] == m and r["kind"] == "real" for r in self.tracker.records)
        ]
        if unparked:
            who = "no call" if len(unparked) == len(self.members) else "no call of a member"
            self.merge_stats["notes"] = [
                f"{who} went through a CapsuleChatModel, so nothing was merged for "
                f"{', '.join(unparked)}: wrap the model with lc.CapsuleChatModel"
            ]
        routing = None if isinstance(result, BaseException) else returned_routing(result)
        if routing is not None:
            raise member_routes_error(self.rt.plan.name, None, routing)
        if isinstance(result, MergeAbort):
            return Outcome(reason=result.reason)
        if isinstance(result, GraphBubbleUp):
            return Outcome(reason=f"{type(result).__name__} (interrupt or parent command)")
        if isinstance(result, BaseException):
            return Outcome(reason=f"raised {type(result).__name__}: {result}")
        if result is None:
            return Outcome(update={})
        if isinstance(result, dict):
            return Outcome(update=result)
        return Outcome(reason=f"returned {type(result).__name__}; only dict updates are staged")

    def served(self) -> int:
        """Members whose call was answered from a merged call or a sequential turn."""
        return sum(
            1
            for slot in self.slots.values()
            if slot.answer.done()
            and slot.answer.exception() is None
            and slot.answer.result() is not PASS_THROUGH
        )

    def stage(
        self,
        outcomes: Mapping[str, Outcome],
        *,
        shadow_runs: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """The capsule node's write: staged updates, members to re-run as nodes, usage
        (and, with a judge, the task key and text the gate judges against)."""
        updates = [[m, o.update] for m, o in outcomes.items() if o.update is not None]
        route = [m for m, o in outcomes.items() if o.update is None]
        staging: dict[str, Any] = {
            "tier": self.tier,
            "updates": updates,
            "route": route,
            "reasons": self._reasons(outcomes),
            "usage": list(self.tracker.records),
            "merge": self.merge_stats,
            "elapsed_s": time.perf_counter() - self.started,
            "served": self.served(),
        }
        if self.rt.judge is not None:
            staging["task"] = task_key({m: input_digest(v) for m, v in self.inputs.items()})
            staging["task_text"] = task_text(self.inputs)
        if shadow_runs:
            staging["shadow_runs"] = list(shadow_runs)
        return {self.rt.plan.channel: {"staging": staging}}

    def shadow_record(
        self,
        outcomes: Mapping[str, Outcome],
        judgement: Judgement,
    ) -> dict[str, Any]:
        """What the gate needs to write this shadow tier's observation."""
        return {
            "tier": self.tier,
            "route": [m for m, o in outcomes.items() if o.update is None],
            "reasons": self._reasons(outcomes),
            "usage": list(self.tracker.records),
            "merge": self.merge_stats,
            "elapsed_s": time.perf_counter() - self.started,
            "judgement": judgement.summary(),
        }

    def _reasons(self, outcomes: Mapping[str, Outcome]) -> dict[str, str]:
        return {
            m: self.problems.get(m) or o.reason or ""
            for m, o in outcomes.items()
            if o.update is None
        }


_IDLE_POOLS: dict[int, list[concurrent.futures.ThreadPoolExecutor]] = {}
_IDLE_LOCK = threading.Lock()
MAX_IDLE_POOLS = 32
"""Idle pools kept per size; a pool returned beyond that is shut down."""


def _forget_pools_after_fork() -> None:
    # a forked child has none of the parent's worker threads: its idle pools would take
    # work and never run it
    global _IDLE_LOCK
    _IDLE_POOLS.clear()
    _IDLE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_after_fork)


def borrow_pool(size: int) -> concurrent.futures.ThreadPoolExecutor:
    """A thread pool of ``size`` workers lent to one capsule run alone.

    Each run gets as many threads as it has members, since a parked member blocks its
    thread until the merged answer comes (a shared, smaller pool could deadlock); the
    pool goes back to an idle list when every member has returned, so a process does
    not create and join a pool per group per run."""
    with _IDLE_LOCK:
        idle = _IDLE_POOLS.get(size)
        if idle:
            return idle.pop()
    return concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix="capsules")


def return_pool(pool: concurrent.futures.ThreadPoolExecutor) -> None:
    """Give back a pool from :func:`borrow_pool` whose every task has finished."""
    size = pool._max_workers
    with _IDLE_LOCK:
        idle = _IDLE_POOLS.setdefault(size, [])
        if len(idle) < MAX_IDLE_POOLS:
            idle.append(pool)
            return
    pool.shutdown(wait=False)


def _sync_only(runnable: Any) -> bool:
    """A node made from a plain ``def`` (LangGraph would run its ``ainvoke`` in a thread)."""
    if not isinstance(runnable, RunnableCallable) or runnable.func is None:
        return False
    afunc = runnable.afunc
    return afunc is None or getattr(afunc, "__wrapped__", None) is runnable.func


def tracked_callbacks(config: RunnableConfig, handler: Any) -> Any:
    """A node config's callbacks plus ``handler``, for configs derived from it.

    What ``merge_configs(config, {"callbacks": [handler]})`` gives, made once: the
    configs of one capsule run share it (each child run configures its own manager
    from it and never mutates it), where a ``merge_configs`` per member and per merged
    call copied the manager every time."""
    callbacks = config.get("callbacks")
    if callbacks is None:
        return [handler]
    if isinstance(callbacks, list):
        return [*callbacks, handler]
    manager = callbacks.copy()
    manager.add_handler(handler, inherit=True)
    return manager


def derived_config(
    config: RunnableConfig,
    *,
    metadata: Mapping[str, Any],
    callbacks: Any,
    tags: Sequence[str] = (),
    run_name: str | None = None,
) -> RunnableConfig:
    """``config`` with ``metadata`` merged over its own, ``tags`` added (sorted, as
    ``merge_configs`` leaves them), these ``callbacks`` (see :func:`tracked_callbacks`)
    and a run name: a copy of the config and its mappings, where ``merge_configs`` also
    copied the callback manager every time."""
    out: dict[str, Any] = dict(config)
    out["metadata"] = {**(config.get("metadata") or {}), **metadata}
    # each derived config owns its mappings, as merge_configs gave them
    out["configurable"] = dict(config.get("configurable") or {})
    if tags:
        out["tags"] = sorted({*(config.get("tags") or ()), *tags})
    else:
        out["tags"] = list(config.get("tags") or ())
    out["callbacks"] = callbacks
    if run_name is not None:
        out["run_name"] = run_name
    return out  # type: ignore[return-value]


def with_handler(config: RunnableConfig, handler: Any) -> RunnableConfig:
    """Add a callback handler to a node run's config.

    The callback manager in a node's config is created for that node run alone
    (LangGraph's ``RunnableSeq`` makes a child manager per run), and the ambient
    config that calls without ``config=`` read is this same dict, so adding the
    handler in place reaches every LLM call of the node at no copying cost.
    """
    callbacks = config.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        callbacks.add_handler(handler, inherit=True)
        return config
    cfg = merge_configs(config, {"callbacks": [handler]})
    var_child_runnable_config.set(cfg)
    return cfg
