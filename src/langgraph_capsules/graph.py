"""``capsulize()`` and :class:`CapsuleGraph`: the public face of the pass."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from langgraph_capsules._compat import clone_builder
from langgraph_capsules.compiler.modes import check_run_config
from langgraph_capsules.compiler.plan import CapsulePlan, make_plan
from langgraph_capsules.compiler.resume import RESUME_POLICIES, resume_hazard
from langgraph_capsules.compiler.rewrite import rewrite
from langgraph_capsules.compiler.runtime import GroupRuntime, tier_for_mode
from langgraph_capsules.controller import Decision
from langgraph_capsules.errors import CapsuleConfigError, CapsuleResumeError
from langgraph_capsules.judges import Judge, as_judge
from langgraph_capsules.policy import ControllerPolicy, coerce_group_policies, resolve_policy
from langgraph_capsules.stores import ControllerStore, InMemoryControllerStore
from langgraph_capsules.strategies.standard import DEFAULT_SECTION_WORDS
from langgraph_capsules.topology import Topology, read_topology
from langgraph_capsules.types import GroupRunRecord, Observation

__all__ = ["CapsuleCompiledStateGraph", "CapsuleGraph", "CapsuleReport", "capsulize"]

_PROCESS_STORES: dict[str, InMemoryControllerStore] = {}
_PROCESS_LOCK = threading.Lock()


def _process_store(plan_id: str) -> InMemoryControllerStore:
    """The in-memory store this process keeps for ``plan_id`` (``store="process"``):
    every capsule graph of that plan built in this process shares it."""
    with _PROCESS_LOCK:
        return _PROCESS_STORES.setdefault(plan_id, InMemoryControllerStore())


PLAN_KEY = "capsule_plan"
"""Checkpoint metadata key holding the plan id of the graph that wrote a checkpoint."""


class CapsuleCompiledStateGraph(CompiledStateGraph):  # type: ignore[type-arg]
    """A ``CompiledStateGraph`` that refuses to continue a thread another graph left
    paused inside a capsule run (see :func:`~langgraph_capsules.compiler.resume.resume_hazard`).

    Everything else is inherited unchanged: invoke, ainvoke, stream, astream, batch,
    get_state, update_state, get_graph and drawing. Every run's
    ``configurable.capsules`` is checked against the plan before anything runs.
    """

    _capsule_groups: tuple[str, ...] = ()
    """The plan's group names (set by :meth:`CapsuleGraph.compile`)."""
    _capsule_added: frozenset[str] = frozenset()
    """The nodes the plan added (``capsule__*``, ``gate__*``)."""
    _capsule_resume: str = "check"
    """``capsulize(resume=...)``: ``check`` or ``allow``."""
    _capsule_members: Mapping[str, str] = {}
    """Per member of a static group, its group."""
    _capsule_paths: Mapping[str, tuple[str, str]] = {}
    """Per member of a static group, its group's capsule and gate nodes (where an
    interrupt before / after the member also stops on the merged path)."""

    _CAPSULE_ATTRS = (
        "_capsule_groups",
        "_capsule_added",
        "_capsule_resume",
        "_capsule_members",
        "_capsule_paths",
    )

    def copy(self, update: dict[str, Any] | None = None) -> CapsuleCompiledStateGraph:
        """LangGraph's copy (``with_config``; the LangGraph server copies every graph it
        serves to attach its checkpointer and store), keeping the plan's settings: the
        base class rebuilds the object from its constructor arguments and would drop
        them, silently turning off group overrides, interrupt remapping and the thread
        check."""
        out = super().copy(update)
        for name in self._CAPSULE_ATTRS:
            if name in self.__dict__:
                setattr(out, name, self.__dict__[name])
        return out

    def _check_run(self, config: RunnableConfig | None) -> None:
        check_run_config(merge_configs(self.config, config), self._capsule_groups)

    def _plan_id(self) -> str | None:
        return ((self.config or {}).get("metadata") or {}).get(PLAN_KEY)

    def _thread_config(self, config: RunnableConfig | None) -> RunnableConfig | None:
        if self.checkpointer in (None, True, False):
            return None
        conf = merge_configs(self.config, config).get("configurable") or {}
        if not conf.get("thread_id") or conf.get("checkpoint_ns"):
            return None
        keep = {k: conf[k] for k in ("thread_id", "checkpoint_id") if conf.get(k)}
        return {"configurable": {**keep, "checkpoint_ns": ""}}

    def _refuse(self, config: RunnableConfig, saved: CheckpointTuple) -> None:
        """Raise when the latest checkpoint, written by another graph, has work in flight
        that this graph would not run (or would run on another plan's staging)."""
        stamp = (saved.metadata or {}).get(PLAN_KEY)
        mine = self._plan_id()
        if stamp == mine:
            return
        original = frozenset(n for n in self.nodes if n not in self._capsule_added)
        hazard = resume_hazard(
            saved.checkpoint,
            saved.pending_writes,
            triggers={name: tuple(node.triggers) for name, node in self.nodes.items()},
            original=original,
            members=self._capsule_members,
            channels=frozenset(self.channels),
        )
        if hazard is None:
            return
        writer = "the original (uncapsulized) graph" if stamp is None else f"capsule plan {stamp}"
        thread = config["configurable"]["thread_id"]
        raise CapsuleResumeError(
            f"thread {thread!r} was written by {writer} and {hazard.reason}; this graph runs "
            f"capsule plan {mine}. Finish the thread on the graph that wrote it ({writer}), "
            "or start a new thread_id",
            code="plan_mismatch",
            node=hazard.node,
            group=hazard.group,
        )

    def _skip_thread_check(self) -> bool:
        # a plan with no groups is the original graph: it refuses nothing
        return self._capsule_resume == "allow" or not self._capsule_groups

    def _check_thread(self, config: RunnableConfig | None) -> None:
        cfg = None if self._skip_thread_check() else self._thread_config(config)
        if cfg is None:
            return
        saved = self.checkpointer.get_tuple(cfg)  # type: ignore[union-attr]
        if saved is not None:
            self._refuse(cfg, saved)

    async def _acheck_thread(self, config: RunnableConfig | None) -> None:
        cfg = None if self._skip_thread_check() else self._thread_config(config)
        if cfg is None:
            return
        try:
            saved = await self.checkpointer.aget_tuple(cfg)  # type: ignore[union-attr]
        except NotImplementedError:
            saved = self.checkpointer.get_tuple(cfg)  # type: ignore[union-attr]
        if saved is not None:
            self._refuse(cfg, saved)

    def _interrupts(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Run-time ``interrupt_before`` / ``interrupt_after`` (what ``langgraph dev``
        and the SDK pass) remapped as at compile time: before a member also means before
        its group's capsule node, after a member also after its gate."""
        for key, at in (("interrupt_before", 0), ("interrupt_after", 1)):
            names = kwargs.get(key)
            if names is None or names == "*" or isinstance(names, str):
                continue
            out = list(names)
            for n in list(out):
                path = self._capsule_paths.get(n)
                if path is not None and path[at] not in out:
                    out.append(path[at])
            kwargs = {**kwargs, key: out}
        return kwargs

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        self._check_run(config)
        self._check_thread(config)
        yield from super().stream(input, config, **self._interrupts(kwargs))

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        self._check_run(config)
        await self._acheck_thread(config)
        async for chunk in super().astream(input, config, **self._interrupts(kwargs)):
            yield chunk


class CapsuleReport:
    """The result of :meth:`CapsuleGraph.report`: ``.text`` (a table) and ``.data``."""

    def __init__(self, text: str, data: dict[str, Any]) -> None:
        self.text = text
        self.data = data

    def __str__(self) -> str:
        return self.text


class CapsuleGraph:
    """The rewritten graph, before compilation. Create it with :func:`capsulize`.

    Attributes:
        plan: What the pass did (groups, untouched nodes and why, plan id).
        builder: The rewritten ``StateGraph`` (a new object; the caller's is untouched).
        mode: The default controller mode of every run.
    """

    def __init__(
        self,
        source: StateGraph[Any, Any, Any, Any],
        plan: CapsulePlan,
        *,
        mode: str,
        section_words: int | None,
        history_size: int,
        policy: ControllerPolicy,
        store: ControllerStore,
        group_policies: Mapping[str, ControllerPolicy] | None = None,
        judge: Judge | None = None,
        resume: str = "check",
        topology: Topology | None = None,
    ) -> None:
        self.plan = plan
        self.resume = resume
        self.mode = mode
        self.policy = policy
        self.store = store
        self.judge = judge
        self.policies = {
            name: resolve_policy(name, policy, group_policies) for name in plan.group_names
        }
        self._history: deque[GroupRunRecord] = deque(maxlen=history_size)
        self._lock = threading.Lock()
        topo = read_topology(source) if topology is None else topology
        self.builder, self._runtimes = rewrite(
            source,
            topo,
            plan,
            default_mode=mode,
            record=self._record,
            section_words=section_words,
            policies=self.policies,
            store=store,
            judge=judge,
            policy=policy,
        )
        self._private = {g.channel for g in plan.groups}

    def _record(self, rec: GroupRunRecord) -> None:
        with self._lock:
            # a gate re-run on resume writes its run again (same run key): keep one
            for i in range(len(self._history) - 1, max(len(self._history) - 64, 0) - 1, -1):
                old = self._history[i]
                if old["run_key"] == rec["run_key"] and old["group"] == rec["group"]:
                    self._history[i] = rec
                    return
            self._history.append(rec)

    @property
    def runtimes(self) -> Mapping[str, GroupRuntime]:
        """Per group, the runtime object behind its added nodes (advanced use)."""
        return dict(self._runtimes)

    def history(self, group: str | None = None) -> list[GroupRunRecord]:
        """Recent per-group run records written by the gates, oldest first."""
        with self._lock:
            rows = list(self._history)
        return [r for r in rows if group is None or r["group"] == group]

    def observations(self, group: str) -> list[Observation]:
        """The group's observation history in the controller store, oldest first."""
        self.plan.group(group)  # KeyError naming the groups
        return self.store.history(self.plan.plan_id, group)

    def explain(self, group: str, *, at: int | None = None) -> Decision:
        """The controller's decision for the group's next ``auto`` run, with its state
        and reasons (``str()`` for text, ``.to_dict()`` for data).

        Args:
            group: The group name.
            at: Explain the decision as it stood after the group's first ``at``
                observations (``None``: now). Observations of one run share a
                ``run_id``; a switch run has a fine and one or more shadow records.

        Raises:
            KeyError: For an unknown group.
            ValueError: For a negative ``at``.
        """
        self.plan.group(group)
        runtime = self._runtimes[group]
        if at is None:
            return runtime.decide()
        if at < 0:
            raise ValueError(f"at must be >= 0, got {at}")
        return runtime.decide_over(self.observations(group)[:at])

    def compile(
        self,
        checkpointer: Any = None,
        *,
        cache: Any = None,
        store: Any = None,
        interrupt_before: Sequence[str] | str | None = None,
        interrupt_after: Sequence[str] | str | None = None,
        debug: bool = False,
        name: str | None = None,
    ) -> CompiledStateGraph:  # type: ignore[type-arg]
        """Compile to an ordinary ``CompiledStateGraph`` (same arguments as LangGraph's).

        Interrupts named on a group member also apply to the merged path: before a
        member means also before ``capsule__<group>``; after a member, after
        ``gate__<group>`` (here, and likewise when a run passes them to ``invoke``,
        ``stream`` and their async twins, as ``langgraph dev`` does). Every checkpoint
        is stamped with the plan id. A thread written by the original graph or another
        plan is continued when nothing of that graph is in flight (finished, or paused
        before original nodes); one paused inside another plan's capsule run is refused
        (``CapsuleResumeError``, ``plan_mismatch``) unless
        ``capsulize(..., resume="allow")``.
        """
        ib = self._remap(interrupt_before, after=False)
        ia = self._remap(interrupt_after, after=True)
        compiled = clone_builder(self.builder).compile(
            checkpointer=checkpointer,
            cache=cache,
            store=store,
            interrupt_before=ib,
            interrupt_after=ia,
            debug=debug,
            name=name,
        )
        compiled.stream_channels = [
            c for c in compiled.stream_channels_list if c not in self._private
        ]
        compiled.config = merge_configs(
            compiled.config, {"metadata": {PLAN_KEY: self.plan.plan_id}}
        )
        compiled.__class__ = CapsuleCompiledStateGraph
        compiled._capsule_groups = self.plan.group_names  # type: ignore[attr-defined]
        compiled._capsule_added = frozenset(  # type: ignore[attr-defined]
            [*(n for g in self.plan.groups for n in (g.capsule_node, g.gate_node))]
            + [d.capsule_node for d in self.plan.dynamic]
        )
        compiled._capsule_resume = self.resume  # type: ignore[attr-defined]
        compiled._capsule_members = {  # type: ignore[attr-defined]
            m: g.name for g in self.plan.groups for m in g.members
        }
        compiled._capsule_paths = {  # type: ignore[attr-defined]
            m: (g.capsule_node, g.gate_node) for g in self.plan.groups for m in g.members
        }
        return compiled

    def _remap(self, names: Sequence[str] | str | None, *, after: bool) -> Any:
        if names is None or names == "*":
            return names
        out = list(names)
        for n in list(out):
            g = self.plan.group_of(n)
            if g is not None:
                extra = g.gate_node if after else g.capsule_node
                if extra not in out:
                    out.append(extra)
        return out

    def report(self, *, last: int = 10, print_: bool = True) -> CapsuleReport:
        """A per-group table of recent runs (tier, calls, tokens, fallbacks) and what the
        controller will run next in ``auto`` mode, with its first reason.

        Args:
            last: How many recent runs per group to show.
            print_: Also print the table.
        """
        data: dict[str, Any] = {
            "plan_id": self.plan.plan_id,
            "mode": self.mode,
            "groups": {},
            "notes": list(self.plan.notes),
        }
        lines = [f"capsule plan {self.plan.plan_id} (mode={self.mode})"]
        lines += [f"note: {n}" for n in self.plan.notes]
        head = (
            f"  {'run':>4} {'tier':<9} {'calls':>5} {'input':>8} {'cached':>7} "
            f"{'output':>7} {'quality':>7}  notes"
        )
        for g in self.plan.groups:
            rows = self.history(g.name)[-last:]
            decision = self._runtimes[g.name].decide()
            data["groups"][g.name] = {
                "members": list(g.members),
                "runs": rows,
                "next_auto_run": decision.to_dict(),
                "notes": list(g.notes),
            }
            lines.append(f"group {g.name}: {', '.join(g.members)}")
            lines += [f"  note: {n}" for n in g.notes]
            why = decision.reasons[0] if decision.reasons else ""
            lines.append(f"  next auto run: {decision.tier} ({why})")
            lines += _run_lines(rows, head)
        for d in self.plan.dynamic:
            rows = self.history(d.name)[-last:]
            data["groups"][d.name] = {
                "members": list(d.members),
                "routers": [list(r) for r in d.routers],
                "runs": rows,
                "notes": list(d.notes),
            }
            routers = ", ".join(f"{src}.{path}" for src, path in d.routers)
            lines.append(f"dynamic group {d.name}: {', '.join(d.members)} (router {routers})")
            lines += [f"  note: {n}" for n in d.notes]
            lines += _run_lines(rows, head)
        if self.plan.untouched:
            lines.append("left as they are: " + ", ".join(sorted(self.plan.untouched)))
        report = CapsuleReport("\n".join(lines), data)
        if print_:
            print(report.text)
        return report


def _run_lines(rows: list[GroupRunRecord], head: str) -> list[str]:
    """A group's recent runs as table lines under ``head``."""
    if not rows:
        return ["  (no runs yet)"]
    return [head] + [
        f"  {i:>4} {r['tier']:<9} {r['calls']:>5} {r['input_tokens']:>8} "
        f"{r['cached_tokens']:>7} {r['output_tokens']:>7} "
        f"{_quality(r.get('quality')):>7}  {_notes(r)}"
        for i, r in enumerate(rows, 1)
    ]


def _quality(q: float | None) -> str:
    return "-" if q is None else f"{q:.2f}"


def _notes(r: GroupRunRecord) -> str:
    notes = [
        f"shadow {s['tier']}: q {_quality(s['quality'])}, {s['calls']} call(s), "
        f"{s['input_tokens']} in"
        for s in r.get("shadow") or []
    ]
    audit = r.get("audit")
    if audit:
        notes.append(
            f"audit (served {audit['served']}): fine {audit['calls']} call(s), "
            f"{audit['input_tokens']} in"
        )
    if r.get("judge_calls"):
        notes.append(f"judge {r['judge_calls']} call(s)")
    notes += [f"fallback {m} ({r['fallback_reasons'].get(m, '')})" for m in r["fallback"]]
    notes += [str(n) for n in r.get("notes") or []]
    if r.get("store_errors"):
        notes.append(f"{r.get('store_errors')} controller-store error(s), run unaffected")
    return "; ".join(notes) or "-"


def _check_count(name: str, value: Any, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CapsuleConfigError(
            f"{name} must be a whole number >= 1 ({meaning}); got {value!r}. Pass a positive "
            f"int, or leave {name} out for the default",
            code="bad_option",
        )


def capsulize(
    builder: StateGraph[Any, Any, Any, Any],
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    exclude: Sequence[str] = (),
    mode: str = "auto",
    section_words: int | None = DEFAULT_SECTION_WORDS,
    history_size: int = 1000,
    policy: ControllerPolicy | str | Mapping[str, Any] | None = None,
    group_policies: Mapping[str, ControllerPolicy | str] | None = None,
    judge: Any = None,
    store: ControllerStore | str | None = None,
    resume: str = "check",
) -> CapsuleGraph:
    """Rewrite a LangGraph ``StateGraph`` so groups of agents can share one LLM call.

    The caller's builder is not modified; it still compiles and runs. Every original
    node is kept. Per group the pass adds ``capsule__<group>`` and ``gate__<group>``.

    Args:
        builder: An uncompiled (or already compiled) ``StateGraph`` builder whose nodes
            call a :class:`~langgraph_capsules.CapsuleChatModel`.
        groups: ``{"name": ["node", ...]}``; default (``None``): infer fan-out groups
            (siblings sharing their predecessors, 2+ each). ``{}`` declares no groups:
            the graph runs as the original and the plan says so.
        exclude: Nodes never to group.
        mode: Default controller mode: ``"auto"``,
            ``"observe"``, ``"fine"``, ``"compound"`` or a tier (``"standard"``,
            ``"two_phase"``, ``"sequential"``). ``"compound"`` is the merged tier that
            fits each group: ``two_phase`` where a declared member has tools (standard
            would drop them), ``standard`` elsewhere.
            ``auto`` asks the controller each run (:meth:`CapsuleGraph.explain`).
            A run may override it with
            ``config={"configurable": {"capsules": {"mode": ..., "groups": {g: ...}}}}``.
        section_words: ``None`` (default): a merged prompt sets no length target of its
            own; each task keeps its own instructions, and a task whose member has a
            ``max_tokens`` budget is told its limit. An int >= 1 asks for about that
            many words per task without a budget of its own.
        history_size: How many per-group run records :meth:`CapsuleGraph.report` keeps
            (an int >= 1).
        policy: The controller policy for ``auto`` runs: a :class:`ControllerPolicy`,
            a preset name (``"aggressive"``, ``"balanced"``, ``"conservative"``) or a
            dict of overrides; default balanced. Without a judge the quality gate is
            inactive and the controller switches on the composition score alone.
        group_policies: Per group, a complete policy (``base.replace(...)``) or a
            preset name that replaces ``policy`` for that group.
        judge: The quality-gate judge: a :class:`~langgraph_capsules.Judge` such as
            :class:`FactRecallJudge` or :class:`LLMJudge`, a function
            ``(task, reference, candidate) -> JudgeResult | float``, or an openevals
            evaluator. The gate is active when a judge is given **and** the policy
            sets ``quality_floor``: the switch run then shadow-evaluates the compound
            tier beside fine (the user gets fine; the compound calls and the judge's
            calls are extra), and every later compound run is judged against the fine
            output of the same task (kept per task, in process). A judge failure is no
            score, never a crash.
        store: Where every group's observations go (append-only); default an
            in-memory store of this graph object. ``"process"``: one in-memory store
            per plan id in this process, shared by every graph of the plan built here
            (a graph factory, as ``langgraph dev`` calls per run, keeps its history).
            Share a :class:`SqliteControllerStore` (one machine) or a Postgres store
            between processes so that they decide alike.
        resume: How the compiled graph treats a checkpointed thread written by the
            original graph or another plan. ``"check"`` (default): continue it when
            nothing of that graph is in flight (a finished thread, e.g. a chat's next
            turn, or one paused before original nodes); refuse one paused inside a
            capsule run of another plan (``CapsuleResumeError``, code ``plan_mismatch``,
            naming the fix). ``"allow"``: never check. A plan with no groups never
            refuses.

    Returns:
        A :class:`CapsuleGraph`; call ``.compile()`` for the runnable graph.

    Raises:
        CapsuleConfigError: bad input, naming the node or group and the fix.

    Example:
        >>> import langgraph_capsules as lc
        >>> groups = {"arm": ["entities", "claims"]}
        >>> capsules = lc.capsulize(builder, groups=groups)  # doctest: +SKIP
        >>> app = capsules.compile()  # doctest: +SKIP
    """
    if not isinstance(builder, StateGraph):
        got = type(builder).__name__
        hint = ""
        if isinstance(builder, CompiledStateGraph):
            hint = " (you passed a compiled graph: pass its builder, e.g. app.builder)"
        raise CapsuleConfigError(
            f"capsulize() needs a langgraph StateGraph builder; got {got}{hint}",
            code="not_a_state_graph",
        )
    if "__root__" in builder.channels:
        raise CapsuleConfigError(
            "capsulize() needs a keyed state schema (TypedDict, pydantic model or dataclass); "
            "this graph's state is a single root value",
            code="unsupported_state",
        )
    tier_for_mode(mode)  # validates the mode early
    if section_words is not None:
        _check_count("section_words", section_words, "the word target per task of a merged call")
    _check_count("history_size", history_size, "how many run records report() keeps")
    if not isinstance(resume, str) or resume not in RESUME_POLICIES:
        raise CapsuleConfigError(
            f'resume must be one of {list(RESUME_POLICIES)} ("check": continue another '
            'graph\'s thread only when safe; "allow": never check); got '
            f"{resume!r}",
            code="bad_option",
        )
    if isinstance(exclude, str):
        exclude = (exclude,)
    topo = read_topology(builder)
    plan = make_plan(builder, topo, groups, exclude)
    for g in plan.groups:
        if g.channel in builder.channels:
            raise CapsuleConfigError(
                f"state key {g.channel!r} is reserved for group {g.name!r}; rename the group",
                code="bad_group_name",
                group=g.name,
            )
    gp = coerce_group_policies(group_policies)
    unknown = sorted(set(gp) - set(plan.group_names))
    if unknown:
        raise CapsuleConfigError(
            f"group_policies names unknown group(s) {unknown}; groups of this plan: "
            f"{list(plan.group_names)}",
            code="bad_policy",
        )
    if store == "process":
        store = _process_store(plan.plan_id)
    if store is not None and not isinstance(store, ControllerStore):
        raise CapsuleConfigError(
            f"store must be a ControllerStore (InMemoryControllerStore, "
            f"SqliteControllerStore(path), BaseStoreControllerStore(store)) or "
            f'"process"; got {store!r}',
            code="bad_store",
        )
    return CapsuleGraph(
        builder,
        plan,
        mode=mode,
        section_words=section_words,
        history_size=history_size,
        policy=ControllerPolicy.coerce(policy),
        group_policies=gp,
        judge=None if judge is None else as_judge(judge),
        store=store if store is not None else InMemoryControllerStore(),
        resume=resume,
        topology=topo,
    )
