"""Small shared vocabulary: tiers, controller modes and persisted records."""

from __future__ import annotations

from typing import Literal, TypedDict

from typing_extensions import NotRequired

__all__ = [
    "COMPOUND_TIERS",
    "MODES",
    "TIERS",
    "AuditSummary",
    "CallRecord",
    "GroupRunRecord",
    "MemberUsage",
    "Mode",
    "Observation",
    "Tier",
]

Tier = Literal["fine", "standard", "two_phase", "sequential"]
"""How a group runs in one run.

* ``fine``: every member runs as its own node, one LLM call each (the original app).
* ``standard``: one merged LLM call answers every member's call.
* ``two_phase``: tool-using agents gather with their tools first, then one merged call
  without tools (declared agents only; captured plain nodes run it as sequential).
* ``sequential``: one call per member in a shared, cache-aligned conversation.
"""

Mode = Literal["auto", "observe", "fine", "compound", "standard", "two_phase", "sequential"]
"""Controller mode of a capsule graph or of one run.

* ``auto``: the controller picks the tier per group, run by run.
* ``observe``: run fine and only record.
* ``fine`` / ``compound``: locked; ``compound`` means the merged tier that fits each
  group: ``two_phase`` where a declared member has tools (``standard`` would drop
  them), ``standard`` elsewhere.
* ``standard`` / ``two_phase`` / ``sequential``: lock one compound tier explicitly.
"""

TIERS: tuple[Tier, ...] = ("fine", "standard", "two_phase", "sequential")
COMPOUND_TIERS: tuple[Tier, ...] = ("standard", "two_phase", "sequential")
MODES: tuple[str, ...] = (
    "auto",
    "observe",
    "fine",
    "compound",
    "standard",
    "two_phase",
    "sequential",
)


class CallRecord(TypedDict):
    """One LLM call seen by telemetry (persistable, JSON-safe)."""

    run_id: str | None
    """Root run (one graph invocation) the call belongs to."""
    group: str | None
    member: str | None
    node: str | None
    kind: Literal["real", "merged", "served", "unmergeable"]
    """``merged``: the one call that answered a group; ``served``: a member's call answered
    from it (zero usage); ``unmergeable``: a tool/structured-output call that passed through
    inside a session; ``real``: any other call."""
    purpose: Literal["run", "shadow", "judge", "audit"]
    """``shadow``: a call of a shadow evaluation (a compound tier run beside fine on the
    switch run, its output discarded); ``judge``: a quality-gate judge call; ``audit``: a
    call of the fine reference run of an audit (a compound run also run fine to be
    judged; the user gets it when ``audit_serve="fine"``); ``run``: every other call
    that produced the user's output. All four are billed."""
    tier: str | None
    model: str | None
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    latency_s: float
    tool_calls: int
    error: str | None


class GroupRunRecord(TypedDict):
    """What one group did in one run, written by the group's gate."""

    group: str
    tier: str
    run_key: str
    time: float
    members: list[str]
    fallback: list[str]
    """Members re-run through their original node after a missing or bad section."""
    fallback_reasons: dict[str, str]
    calls: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    latency_s: float
    error: str | None
    quality: float | None
    """The judge's score of this run against the task's fine baseline (compound runs
    with a judge and a baseline; ``None`` otherwise)."""
    shadow: list[ShadowSummary]
    """Compound tiers shadow-evaluated beside this (fine) run: the switch run."""
    judge_calls: int
    """LLM calls the judge made for this run (not included in ``calls``)."""
    judge_input_tokens: int
    judge_output_tokens: int
    store_errors: NotRequired[int]
    """Controller-store operations of this group that failed without failing the run
    since the group's previous record: appends dropped after their retries, plus reads
    whose decision fell back to the last known one (or to fine). 0 when the store is
    healthy."""
    audit: NotRequired[AuditSummary | None]
    """The audit of this compound run (its fine reference run), else None."""
    notes: NotRequired[list[str]]
    """What the capsule node noticed, e.g. why nothing merged (no call went through a
    ``CapsuleChatModel``)."""


class AuditSummary(TypedDict):
    """The fine reference run of an audit (its calls are not in the run's ``calls``)."""

    served: str
    """Which output the user got: ``fine`` or ``compound``."""
    calls: int
    input_tokens: int
    output_tokens: int


class ShadowSummary(TypedDict):
    """One shadow-evaluated tier of a switch run (its calls are not in the run's ``calls``)."""

    tier: str
    quality: float | None
    calls: int
    input_tokens: int
    output_tokens: int


class MemberUsage(TypedDict):
    """One member's usage in one run of its group."""

    input_tokens: int
    cached_tokens: int
    output_tokens: int
    calls: int
    tool_calls: int
    latency_s: float


class Observation(TypedDict):
    """What one group did in one run: the controller's only input (append-only).

    Written by the group's gate node; decisions are a deterministic function of a
    group's observation history, so every worker sharing a store agrees.
    """

    graph: str
    """Plan id of the capsule graph (a store may hold several graphs)."""
    group: str
    run_id: str
    time: float
    tier: str
    """The tier that produced the user's output in this run."""
    members: dict[str, MemberUsage]
    calls: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    latency_s: float
    tool_calls: int
    coordination_tokens: int
    """Estimated tokens the tier adds to the members' own prompt content (the estimate of
    :func:`langgraph_capsules.prompts.estimate_tokens`). Standard and two_phase: the
    merged call's preamble, task headers, structural hint and reply skeleton (everything
    but the shared units and the tasks' own text). Sequential: the preamble, shared-
    context label and task headers of every call (the shared units themselves are the
    members' content, and repeating them is the tier's cost in ``input_tokens``). Fine:
    0. Earlier turns replayed under ``full`` context are not counted here."""
    errors: int
    """Failed calls plus members that fell back (missing, empty or malformed section)."""
    quality: float | None
    """Judge score in [0, 1] if this run was judged, else None: a compound run against
    the fine output of the same task, a shadow record against its run's fine output."""
    shadow: bool
    """True when a compound tier ran beside fine on the same input only to be judged."""
    record_key: NotRequired[str]
    """Idempotency key of the record within (graph, group): a store ignores a second
    append of a record with the same key and returns the first one's sequence number.
    The gate derives it from LangGraph's task id, so a gate that re-runs on resume
    writes nothing new: ``run_id`` for the run's main record, ``run_id + "/shadow/" +
    tier`` for each shadow record. Absent in hand-built records and in records written
    before keys existed: those are always appended."""
    merged_members: NotRequired[int]
    """Compound runs: members answered from a merged call (or a sequential turn). 0 means
    nothing merged (every call passed through or fell back): ``auto`` then goes back to
    fine. Absent in fine runs and in records written before it existed."""
    audit: NotRequired[bool]
    """True on an audit run: a compound run also run fine (or, with a reference-free
    judge, judged alone) so that the gate has a reading on a unique input. Absent in
    records written before audits existed (read as False)."""
    audit_calls: NotRequired[int]
    """Calls the audit added (the fine reference run plus the judge's calls)."""
    audit_input_tokens: NotRequired[int]
    audit_output_tokens: NotRequired[int]
    judge_error: NotRequired[bool]
    """True when a judgement was attempted and gave no score (the judge raised or
    returned garbage); consecutive ones pause the judge. Absent: not recorded."""
