"""The public surface is small and pinned."""

from __future__ import annotations

import langgraph_capsules as lc
from langgraph_capsules import errors, testing


def test_public_names_are_pinned() -> None:
    assert sorted(lc.__all__) == sorted(
        [
            "BaseStoreControllerStore",
            "ControllerStore",
            "InMemoryControllerStore",
            "PostgresControllerStore",
            "SqliteControllerStore",
            "CallRecord",
            "Calibration",
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
            "Decision",
            "FactRecallJudge",
            "GroupCalibration",
            "GroupPlan",
            "GroupRunRecord",
            "Judge",
            "JudgeResult",
            "LLMJudge",
            "MddReport",
            "Mode",
            "OracleReport",
            "SchemaComplianceJudge",
            "ScoreBreakdown",
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
    )
    for name in lc.__all__:
        assert getattr(lc, name) is not None


def test_error_tree_and_testing_module() -> None:
    for cls in (lc.CapsuleConfigError, lc.CapsuleResumeError, lc.CapsuleMergeError):
        assert issubclass(cls, lc.CapsuleError)
    assert issubclass(lc.local.LocalModelError, lc.CapsuleError)
    assert errors.__all__ and "ScriptedChatModel" in testing.__all__
    err = lc.CapsuleConfigError("bad", code="unknown_node", node="x", group="g")
    assert str(err) == "[unknown_node] bad" and err.node == "x" and err.group == "g"
