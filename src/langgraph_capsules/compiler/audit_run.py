"""An audit run at run time: the compound tier and fine on the same input, one judged.

The controller marks some compound runs as audits (``controller/audit.py``). The capsule
node then runs fine (the reference, its calls tagged ``capsule_audit`` so telemetry
counts them as ``audit``) and the compound tier, and stages the output that
``policy.audit_serve`` names; the half the user does not get is never streamed. The gate
judges compound against fine and records **one** observation for the compound run: its
own usage, ``quality`` from the judgement, ``audit=True`` and the audit's cost
(``audit_calls`` / ``audit_input_tokens`` / ``audit_output_tokens``: the fine run plus the
judge's calls).

* With ``audit_serve="compound"`` the staging is that of a plain compound run (failed
  sections fall back to their nodes) and the judge sees what the user got.
* With ``audit_serve="fine"`` the user gets fine; the judge sees the compound output, a
  failed section replaced by fine's (what a fallback would have given), and the failed
  sections count as errors of the compound run.
* When fine fails for some member there is no reference: compound is served, no score.
* A reference-free judge (:func:`~langgraph_capsules.judges.is_reference_free`) needs no
  fine run: the compound run is staged as usual and judged with ``reference=""``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs

from langgraph_capsules._compat import TAG_NOSTREAM
from langgraph_capsules.compiler.execution import CapsuleRun, Outcome, complete
from langgraph_capsules.compiler.judging import Judgement, output_text
from langgraph_capsules.judges import Judge, is_reference_free
from langgraph_capsules.telemetry import AUDIT_KEY
from langgraph_capsules.types import AuditSummary, CallRecord, Observation, Tier

if TYPE_CHECKING:
    from langgraph_capsules.compiler.runtime import GroupRuntime

__all__ = [
    "apply_audit",
    "audit_async",
    "audit_judge_args",
    "audit_summary",
    "audit_sync",
]


def _config(config: RunnableConfig, *, reference: bool, served: bool) -> RunnableConfig:
    """One half's config: the reference's calls are tagged ``audit``; the half the user
    does not get never reaches the stream."""
    own: RunnableConfig = {"metadata": {AUDIT_KEY: True} if reference else {}}
    if not served:
        own["tags"] = [TAG_NOSTREAM]
    return merge_configs(config, own)


def audit_sync(
    rt: GroupRuntime, state: Mapping[str, Any], config: RunnableConfig, tier: Tier
) -> dict[str, Any]:
    """The capsule node's work on an audit run (sync graphs)."""
    if is_reference_free(rt.judge):
        run = CapsuleRun(rt, state, config, tier)
        return _stage_free(rt, run.stage(run.execute_sync()))
    fine_served = rt.policy.audit_serve == "fine"
    fine = CapsuleRun(rt, state, _config(config, reference=True, served=fine_served), "fine")
    reference = fine.execute_sync()
    served = not (fine_served and complete(reference))
    comp = CapsuleRun(rt, state, _config(config, reference=False, served=served), tier)
    return _stage(rt, fine, reference, comp, comp.execute_sync())


async def audit_async(
    rt: GroupRuntime, state: Mapping[str, Any], config: RunnableConfig, tier: Tier
) -> dict[str, Any]:
    """Async twin of :func:`audit_sync`."""
    if is_reference_free(rt.judge):
        run = CapsuleRun(rt, state, config, tier)
        return _stage_free(rt, run.stage(await run.execute_async()))
    fine_served = rt.policy.audit_serve == "fine"
    fine = CapsuleRun(rt, state, _config(config, reference=True, served=fine_served), "fine")
    reference = await fine.execute_async()
    served = not (fine_served and complete(reference))
    comp = CapsuleRun(rt, state, _config(config, reference=False, served=served), tier)
    return _stage(rt, fine, reference, comp, await comp.execute_async())


def _stage_free(rt: GroupRuntime, out: dict[str, Any]) -> dict[str, Any]:
    staging = out[rt.plan.channel]["staging"]
    staging["audit"] = {"served": "compound", "reference_free": True, "usage": []}
    return out


def _stage(
    rt: GroupRuntime,
    fine: CapsuleRun,
    reference: Mapping[str, Outcome],
    comp: CapsuleRun,
    candidate: Mapping[str, Outcome],
) -> dict[str, Any]:
    out = comp.stage(candidate)
    staging = out[rt.plan.channel]["staging"]
    audit: dict[str, Any] = {
        "served": "compound",
        "reference": None,
        "usage": list(fine.tracker.records),
    }
    if complete(reference):
        ref = {m: o.update for m, o in reference.items()}
        audit["reference"] = ref
        if rt.policy.audit_serve == "fine":
            audit["served"] = "fine"
            audit["candidate"] = {
                m: (o.update if o.update is not None else ref[m]) for m, o in candidate.items()
            }
            audit["failed"] = [m for m, o in candidate.items() if o.update is None]
            staging["updates"] = [[m, u] for m, u in ref.items()]
            staging["route"] = []  # the user has fine's output: nothing falls back
    staging["audit"] = audit
    return out


def audit_judge_args(
    judge: Judge, staging: Mapping[str, Any], outputs: Mapping[str, Any] | None
) -> tuple[Judge, str, str, str] | None:
    """What the gate judges on an audit run (``None``: no reference, no score).

    Args:
        judge: The gate's judge.
        staging: The run's staging (holds ``audit``).
        outputs: Every member's output as the user got it, or ``None`` if incomplete.
    """
    audit = staging.get("audit") or {}
    text = str(staging.get("task_text") or "")
    if audit.get("reference_free"):
        return None if outputs is None else (judge, text, "", output_text(outputs))
    reference = audit.get("reference")
    candidate = audit.get("candidate") or outputs
    if reference is None or candidate is None:
        return None
    return judge, text, output_text(reference), output_text(candidate)


def _billed(usage: Any) -> list[CallRecord]:
    return [r for r in usage or [] if r["kind"] != "served"]


def apply_audit(obs: Observation, staging: Mapping[str, Any], judgement: Judgement | None) -> None:
    """Add the judge's failure flag and an audit's cost to the run's observation."""
    if judgement is not None:
        obs["judge_error"] = judgement.score is None
    audit = staging.get("audit")
    if not audit:
        return
    billed = _billed(audit.get("usage"))
    judged = judgement if judgement is not None else Judgement(None, {})
    obs["audit"] = True
    obs["audit_calls"] = len(billed) + judged.calls
    obs["audit_input_tokens"] = sum(r["input_tokens"] for r in billed) + judged.input_tokens
    obs["audit_output_tokens"] = sum(r["output_tokens"] for r in billed) + judged.output_tokens
    obs["errors"] += len(audit.get("failed") or [])


def audit_summary(staging: Mapping[str, Any]) -> AuditSummary | None:
    """The run record's view of an audit: what was served and the fine run's usage."""
    audit = staging.get("audit")
    if not audit:
        return None
    billed = _billed(audit.get("usage"))
    return {
        "served": str(audit.get("served", "compound")),
        "calls": len(billed),
        "input_tokens": sum(r["input_tokens"] for r in billed),
        "output_tokens": sum(r["output_tokens"] for r in billed),
    }
