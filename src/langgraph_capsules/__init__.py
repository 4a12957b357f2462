"""langgraph_capsules: quality-gated merging of LLM calls for LangGraph apps.

Wrap the app's chat model in :class:`CapsuleChatModel`, pass its ``StateGraph``
builder to :func:`capsulize`, and compile the result: groups of sibling agents can
then be answered by one merged LLM call per run.
"""

from __future__ import annotations

from langgraph_capsules import local
from langgraph_capsules.compiler.plan import CapsulePlan, GroupPlan
from langgraph_capsules.errors import (
    CapsuleConfigError,
    CapsuleError,
    CapsuleMergeError,
    CapsuleResumeError,
)
from langgraph_capsules.graph import CapsuleGraph, CapsuleReport, capsulize
from langgraph_capsules.model import CapsuleChatModel
from langgraph_capsules.telemetry import UsageReport, track_usage
from langgraph_capsules.types import CallRecord, GroupRunRecord, Mode, Tier

__all__ = [
    "CallRecord",
    "CapsuleChatModel",
    "CapsuleConfigError",
    "CapsuleError",
    "CapsuleGraph",
    "CapsuleMergeError",
    "CapsulePlan",
    "CapsuleReport",
    "CapsuleResumeError",
    "GroupPlan",
    "GroupRunRecord",
    "Mode",
    "Tier",
    "UsageReport",
    "capsulize",
    "local",
    "track_usage",
]

__version__ = "0.1.0"
