"""langgraph_capsules: quality-gated merging of LLM calls for LangGraph apps.

Wrap the app's chat model in :class:`CapsuleChatModel`, pass its ``StateGraph``
builder to :func:`capsulize`, and compile the result: groups of sibling agents can
then be answered by one merged LLM call per run.
"""

from __future__ import annotations

from langgraph_capsules import local, oracle
from langgraph_capsules.agents import agent
from langgraph_capsules.calibrate import Calibration, GroupCalibration, calibrate
from langgraph_capsules.compiler.plan import CapsulePlan, GroupPlan
from langgraph_capsules.controller import ControllerState, Decision, ScoreBreakdown, decide
from langgraph_capsules.errors import (
    CapsuleConfigError,
    CapsuleError,
    CapsuleMergeError,
    CapsuleResumeError,
)
from langgraph_capsules.graph import CapsuleGraph, CapsuleReport, capsulize
from langgraph_capsules.judges import (
    ConsistencyJudge,
    FactRecallJudge,
    Judge,
    JudgeResult,
    LLMJudge,
    MddReport,
    SchemaComplianceJudge,
    as_judge,
    measure_mdd,
)
from langgraph_capsules.model import CapsuleChatModel
from langgraph_capsules.oracle import OracleReport, oracle_ablation
from langgraph_capsules.policy import ControllerPolicy
from langgraph_capsules.stores import (
    BaseStoreControllerStore,
    ControllerStore,
    InMemoryControllerStore,
    PostgresControllerStore,
    SqliteControllerStore,
)
from langgraph_capsules.telemetry import UsageReport, track_usage
from langgraph_capsules.types import CallRecord, GroupRunRecord, Mode, Tier

__all__ = [
    "BaseStoreControllerStore",
    "Calibration",
    "CallRecord",
    "CapsuleChatModel",
    "CapsuleConfigError",
    "CapsuleError",
    "CapsuleGraph",
    "CapsuleMergeError",
    "CapsulePlan",
    "CapsuleReport",
    "CapsuleResumeError",
    "ConsistencyJudge",
    "ControllerPolicy",
    "ControllerState",
    "ControllerStore",
    "Decision",
    "FactRecallJudge",
    "GroupCalibration",
    "GroupPlan",
    "GroupRunRecord",
    "InMemoryControllerStore",
    "Judge",
    "JudgeResult",
    "LLMJudge",
    "MddReport",
    "Mode",
    "OracleReport",
    "PostgresControllerStore",
    "SchemaComplianceJudge",
    "ScoreBreakdown",
    "SqliteControllerStore",
    "Tier",
    "UsageReport",
    "agent",
    "as_judge",
    "calibrate",
    "capsulize",
    "decide",
    "local",
    "measure_mdd",
    "oracle",
    "oracle_ablation",
    "track_usage",
]

__version__ = "0.1.0"
