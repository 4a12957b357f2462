"""The ``CapsuleError`` tree.

Every error the library raises on purpose is a :class:`CapsuleError` with a stable
``code`` (safe to match on), the offending ``node`` and/or ``group`` when there is
one, and a message that names the problem and the fix.

Tree::

    CapsuleError
    ├── CapsuleConfigError      bad input to capsulize() / compile() / a run's config
    ├── CapsuleResumeError      a checkpointed thread that this plan must not resume
    └── CapsuleMergeError       a merged call failed or could not be split (internal:
                                caught by the capsule node, which falls back to the
                                original nodes; surfaced only in telemetry)

Stable codes:

==========================  ===============================================================
code                        meaning
==========================  ===============================================================
``not_a_state_graph``       ``capsulize()`` was given something other than a StateGraph
``unsupported_state``       the graph's state is not a keyed schema (TypedDict, pydantic,
                            dataclass)
``unknown_node``            a name in ``groups``/``exclude`` is not a node of the graph
``node_in_two_groups``      a node is listed in two groups
``group_too_small``         a group has fewer than two members
``edge_within_group``       an edge joins two members of one fan-out group
``mismatched_predecessors`` members of a fan-out group are triggered by different nodes
``ineligible_node``         a node that cannot run merged was placed in a group
``bad_group_name``          a group name is empty, reserved or clashes with a node/channel
``bad_group_members``       a group's members are not a list of node names (e.g. a string)
``successor_routed``        a group's successor may also be triggered at run time (a
                            conditional edge, ``Command``/``Send``) in the members'
                            superstep: the gate's extra superstep would run it twice
``member_routes``           a grouped member returned ``Command(goto=...)`` or ``Send`` at
                            run time (raised by the run, never silently double-run)
``bad_option``              a ``capsulize()`` option is out of range (``section_words``,
                            ``history_size``, ``resume``)
``bad_mode``                an unknown controller mode or tier was requested
``unknown_config_key``      a run's ``configurable.capsules`` has a key other than
                            ``mode``, ``groups`` and ``record``
``unknown_group``           a run's ``configurable.capsules.groups`` names no group of the plan
``bad_policy``              a ControllerPolicy field is out of range or inconsistent
``bad_agent``               lc.agent() got empty instructions/reads/writes, overlapping
                            reads and writes, or writes that do not fit its schema
``bad_judge``               an object that is not a judge was given as a judge
``bad_judge_result``        a judge returned something that is not a score
``bad_judge_model``         LLMJudge was given something that is not a chat model
``bad_judge_option``        an LLMJudge option is out of range
``bad_rubric_version``      an unknown rubric version was requested
``bad_mdd_cases``           measure_mdd() got no cases or malformed ones
``bad_mdd_reps``            measure_mdd() got fewer than 2 repetitions
``bad_observation``         an observation record is invalid or would not survive JSON
``bad_store_query``         an empty graph or group name, or a bad ``since``
``bad_store``               a controller store backend is unusable (corrupt, foreign or
                            newer-version file, bad path, namespace or store argument)
``store_busy``              the SQLite store's write lock, or the Postgres store's group
                            lock, stayed taken past its timeout
``bad_input``               the oracle ablation got no inputs or bad counts
``bad_calibration``         calibrate() got no capsule graph, no groups, no inputs or bad
                            options
``no_mdd``                  no judgement produced a score, so no MDD can be computed
``plan_mismatch``           a thread written by another plan or by the original graph has
                            work in flight this graph cannot continue (a capsule or gate
                            node of that plan pending, a group's staged data, a node due on
                            an edge this graph rewires); ``node``/``group`` name it
``local_model``             the embedded local model could not be installed, found or served
``merge_failed``            the merged LLM call raised
``merge_unparsable``        the merged reply could not be split into sections
==========================  ===============================================================
"""

from __future__ import annotations

__all__ = [
    "CapsuleConfigError",
    "CapsuleError",
    "CapsuleMergeError",
    "CapsuleResumeError",
    "member_routes_error",
]


class CapsuleError(Exception):
    """Root of every error raised on purpose by ``langgraph_capsules``.

    Attributes:
        code: A stable, machine-readable code (see the module docstring).
        node: The node the error is about, if any.
        group: The capsule group the error is about, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        node: str | None = None,
        group: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.node = node
        self.group = group

    def __str__(self) -> str:
        return f"[{self.code}] {super().__str__()}"


class CapsuleConfigError(CapsuleError, ValueError):
    """Bad input: raised early by ``capsulize()``, ``compile()`` or run config parsing."""


class CapsuleResumeError(CapsuleError, RuntimeError):
    """A checkpointed thread that this capsule plan refuses to continue: another graph
    left it paused inside a capsule run (``code="plan_mismatch"``). Finish the thread on
    the graph that wrote it, or start a new ``thread_id``."""


class CapsuleMergeError(CapsuleError, RuntimeError):
    """A merged call failed or its reply could not be split (handled by falling back)."""


def member_routes_error(group: str, member: str | None, routing: str) -> CapsuleConfigError:
    """The error a run raises when a grouped member routes (``Command(goto=...)``, ``Send``).

    The group's gate already triggers the members' successors, so the member's own
    routing would run its targets a second time; the run fails instead."""
    who = f"node {member!r}" if member is not None else "a member"
    return CapsuleConfigError(
        f"{who} of group {group!r} returned {routing}: a grouped member's own routing would "
        "run beside the group's gate, so its targets would run twice. Exclude the node "
        f"(capsulize(..., exclude=[{member or '<node>'!r}]) or leave it out of groups=), or "
        "give it a return type hint that names Command (e.g. Command[Literal[...]]) so the "
        "pass leaves it ungrouped",
        code="member_routes",
        node=member,
        group=group,
    )
