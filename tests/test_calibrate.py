"""Advisory calibration on the ScriptedChatModel: paired locked fine/compound runs,
per-group quality and scores, a recommended policy that separates a healthy group from a
degraded one, and no change to the controller's state or to any policy."""

from __future__ import annotations

import dataclasses
import json
import operator
from typing import Annotated, Any, TypedDict

import numpy as np
import pytest
from conftest import DOC, KINDS, build_app
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

import langgraph_capsules as lc
from langgraph_capsules.calibrate import (
    MIN_MDD,
    SCORE_MARGIN,
    Calibration,
    calibrate,
)
from langgraph_capsules.testing import ScriptedChatModel

INPUTS = [
    {"doc": DOC},
    {"doc": DOC + "\n\nThe board meets in May."},
    {"doc": "A second source.\n\n" + DOC},
]


def length_recall(task: str, reference: str, candidate: str) -> float:
    """Candidate words per reference word, capped at 1 (a plain-function judge)."""
    return min(1.0, len(candidate.split()) / max(1, len(reference.split())))


class TwoGroups(TypedDict, total=False):
    doc: str
    log: Annotated[list[str], operator.add]
    a1: str
    a2: str
    a3: str
    b1: str
    b2: str


def two_groups(**kw: Any) -> lc.CapsuleGraph:
    """A healthy 3-agent group (compound equals fine) beside a degraded, more verbose
    2-agent group (merged sections keep a fifth of the words)."""
    good = lc.CapsuleChatModel(ScriptedChatModel())
    bad = lc.CapsuleChatModel(ScriptedChatModel(compress=0.2, answer_words=80))

    def node(name: str, llm: lc.CapsuleChatModel) -> Any:
        def run(state: TwoGroups) -> dict[str, Any]:
            msgs = [SystemMessage(f"Answer as analyst {name}."), HumanMessage(state["doc"])]
            return {name: llm.invoke(msgs).content, "log": [name]}

        return run

    b = StateGraph(TwoGroups)
    for name, llm in (("a1", good), ("a2", good), ("a3", good), ("b1", bad), ("b2", bad)):
        b.add_node(name, node(name, llm))
        b.add_edge(START, name)
        b.add_edge(name, END)
    groups = {"good": ["a1", "a2", "a3"], "bad": ["b1", "b2"]}
    return lc.capsulize(b, groups=groups, **kw)


def test_degraded_group_scores_below_the_healthy_one_and_the_policy_separates_them() -> None:
    cal = calibrate(two_groups(), INPUTS, judge=length_recall)
    good, bad = cal.group("good"), cal.group("bad")
    assert good.runs == bad.runs == len(INPUTS)
    assert good.n_judged == bad.n_judged == len(INPUTS)
    assert good.judge_failures == bad.judge_failures == 0
    # quality: the healthy group's compound output equals its fine output
    assert good.quality_mean == good.quality_min == 1.0 and good.quality_std == 0.0
    assert bad.quality_mean is not None and bad.quality_mean < 0.5 < good.quality_mean
    assert (good.held, bad.held) == (True, False)
    # the compound run is the cheaper one in both groups
    assert good.compound_calls == bad.compound_calls == 1.0
    assert good.fine_calls == 3.0 and bad.fine_calls == 2.0
    for row in (good, bad):
        assert row.token_savings is not None and row.token_savings > 0
    # fine composition scores: 0.25 * min(n/4, 1), no overhead, tools or depth
    assert good.scores == pytest.approx([0.1875] * 3)
    assert bad.scores == pytest.approx([0.125] * 3)
    rec = cal.recommended
    # compose_at: above the degraded group's scores, at or below the healthy group's
    assert bad.score_median is not None and good.score_median is not None
    assert bad.score_median < rec.compose_at <= good.score_median
    assert rec.compose_at == pytest.approx((0.125 + 0.1875) / 2, abs=1e-4)
    assert rec.decompose_at < rec.compose_at
    # floor: from the group that held, below its quality, above the degraded group's
    assert rec.quality_floor is not None and 0.0 <= rec.quality_floor <= 1.0
    assert bad.quality_mean < rec.quality_floor < good.quality_mean
    assert rec.quality_floor == pytest.approx(1.0 - MIN_MDD)
    # verbosity: the degraded group is the more verbose one, so sequential sits between
    assert good.output_per_agent is not None and bad.output_per_agent is not None
    assert good.output_per_agent < rec.verbosity_sequential_threshold <= bad.output_per_agent
    assert rec.verbosity_two_phase_threshold < rec.verbosity_sequential_threshold
    assert rec.verbosity_guidance_threshold == cal.base.verbosity_guidance_threshold
    # per group: the healthy group composes on its own scores, the degraded one never
    assert good.recommended.compose_at == pytest.approx(0.1875 - SCORE_MARGIN)
    assert bad.recommended.compose_at == pytest.approx(0.125 + SCORE_MARGIN)
    assert any(r.startswith("compose_at") and "midway" in r for r in cal.reasons)


def test_calibration_never_touches_the_controller_store_or_the_policies() -> None:
    judged: list[str] = []

    def judge(task: str, reference: str, candidate: str) -> float:
        judged.append(candidate)
        return length_recall(task, reference, candidate)

    policy = lc.ControllerPolicy.aggressive(quality_floor=0.75)
    own = policy.replace(compose_at=0.3)
    capsules = two_groups(policy=policy, group_policies={"bad": own}, judge=judge)
    before = {g: capsules.policies[g].to_dict() for g in ("good", "bad")}
    cal = calibrate(capsules, INPUTS)  # the graph's own judge
    assert capsules.observations("good") == [] and capsules.observations("bad") == []
    assert capsules.policy is policy and capsules.policy.to_dict() == policy.to_dict()
    assert {g: capsules.policies[g].to_dict() for g in ("good", "bad")} == before
    # only calibration judged: the gate of a locked run never does
    assert len(judged) == sum(row.n_judged for row in cal.groups) == 2 * len(INPUTS)
    # the runs are in the report's history, the controller's state is a fresh one
    assert len(capsules.history("good")) == 2 * len(INPUTS)
    state = capsules.explain("good").state
    assert state.mode == "fine" and state.revert_count == 0
    capsules.compile().invoke({"doc": DOC})  # an auto run starts from scratch
    assert [o["tier"] for o in capsules.observations("good")] == ["fine"]
    assert cal.base is policy


def test_recommended_policies_are_valid_and_usable() -> None:
    policy = lc.ControllerPolicy.balanced()
    capsules = two_groups(policy=policy, group_policies={"bad": policy.replace(quality_floor=0.9)})
    cal = calibrate(capsules, INPUTS, judge=length_recall)
    policies = [cal.recommended, *cal.group_policies().values()]
    for p in policies:
        assert isinstance(p, lc.ControllerPolicy)
        dataclasses.replace(p)  # re-runs the validation
        assert 0.0 <= p.decompose_at < p.compose_at <= 1.0
        assert p.quality_floor is not None and 0.0 <= p.quality_floor <= 1.0
        assert p.verbosity_two_phase_threshold < p.verbosity_sequential_threshold
    # the group with its own policy is left out of the pipeline recommendation
    assert cal.recommended.compose_at == cal.group("good").recommended.compose_at
    assert all("(bad)" not in r for r in cal.reasons)
    assert cal.group("bad").pass_floor == 0.9 and cal.group("good").pass_floor == 0.75
    # the recommendation plugs straight back into capsulize
    again = two_groups(policy=cal.recommended, group_policies=cal.group_policies())
    assert again.policies["bad"] == cal.group("bad").recommended
    assert capsules.policy == lc.ControllerPolicy.balanced()


def test_floor_follows_the_percentile_and_the_mdd() -> None:
    seen: list[tuple[str, str]] = []

    def graded(task: str, reference: str, candidate: str) -> float:
        """0.8, 0.9 and 1.0 on the three inputs (the task text is the graph input)."""
        seen.append((task, reference))
        return 0.8 if "board meets" in task else 0.9 if "second source" in task else 1.0

    capsules = lc.capsulize(
        build_app(lc.CapsuleChatModel(ScriptedChatModel())), groups={"arm": list(KINDS)}
    )
    row = calibrate(capsules, INPUTS, judge=graded).group("arm")
    assert row.qualities == pytest.approx([1.0, 0.8, 0.9]) and row.held
    # default: 10th percentile minus an MDD of 2.5 x the qualities' std
    std = float(np.std([1.0, 0.8, 0.9]))
    assert row.quality_std == pytest.approx(std)
    expected = np.percentile([1.0, 0.8, 0.9], 10) - 2.5 * std
    assert row.recommended.quality_floor == pytest.approx(expected, abs=1e-3)
    for percentile, floor in ((50, 0.8), (0, 0.7)):
        cal = calibrate(capsules, INPUTS, judge=graded, mdd=0.1, floor_percentile=percentile)
        assert cal.recommended.quality_floor == pytest.approx(floor)
    cal = calibrate(capsules, INPUTS, judge=graded, pass_floor=0.95)  # held no more
    assert cal.group("arm").held is False
    assert cal.recommended.quality_floor == 0.95  # no group held: the pass floor
    assert cal.recommended.compose_at == pytest.approx(0.1875 + SCORE_MARGIN)
    # what the judge saw: the graph input as the task, each member's own keys as the
    # output ("log" is written by every node, so it is no member's output)
    task, reference = seen[0]
    assert task.startswith("doc: ") and DOC[:40] in task
    assert reference.startswith("[claims]\nclaims: ") and "[signals]\nsignals: " in reference
    assert "log:" not in reference and "brief" not in reference


@pytest.mark.parametrize("failure", ["raises", "garbage"])
def test_a_failing_judge_is_counted_not_a_crash(failure: str) -> None:
    def broken(task: str, reference: str, candidate: str) -> Any:
        if failure == "raises":
            raise RuntimeError("judge backend down")
        return "not a score"

    capsules = two_groups()
    cal = calibrate(capsules, INPUTS, judge=broken)
    for row in cal.groups:
        assert row.runs == len(INPUTS)
        assert row.judge_failures == len(INPUTS) and row.n_judged == 0
        assert row.quality_mean is None and row.held is None
        assert row.judge_errors and len(row.judge_errors) <= 3
        assert row.scores  # the runs themselves still count
    if failure == "raises":
        assert "judge backend down" in cal.group("good").judge_errors[0]
    # no judged group: nothing to move compose_at with
    assert cal.recommended.compose_at == cal.base.compose_at
    assert any("no group was judged" in r for r in cal.reasons)


def test_judge_argument_beats_the_graph_judge() -> None:
    def broken(task: str, reference: str, candidate: str) -> float:
        raise RuntimeError("never called")

    cal = calibrate(two_groups(judge=broken), INPUTS[:1], judge=length_recall)
    assert all(row.judge_failures == 0 and row.n_judged == 1 for row in cal.groups)


def test_no_judge_is_a_config_error_before_any_run() -> None:
    capsules = two_groups()
    with pytest.raises(lc.CapsuleConfigError) as info:
        calibrate(capsules, INPUTS)
    assert info.value.code == "bad_judge" and "judge=" in str(info.value)
    assert capsules.history() == []


def test_bad_arguments_are_config_errors() -> None:
    capsules = two_groups()
    cases: list[tuple[Any, Any, dict[str, Any]]] = [
        (capsules.compile(), INPUTS, {}),
        (capsules, [], {}),
        (capsules, INPUTS, {"floor_percentile": 150}),
        (capsules, INPUTS, {"pass_floor": 1.5}),
        (capsules, INPUTS, {"mdd": -0.1}),
    ]
    for graph, inputs, kw in cases:
        with pytest.raises(lc.CapsuleConfigError) as info:
            calibrate(graph, inputs, judge=length_recall, **kw)
        assert info.value.code == "bad_calibration"
    assert capsules.history() == []


def test_result_is_json_data_and_a_readable_table() -> None:
    cal = calibrate(two_groups(), INPUTS, judge=length_recall)
    assert isinstance(cal, Calibration)
    data = json.loads(json.dumps(cal.to_dict()))
    assert data["inputs"] == len(INPUTS)
    assert data["recommended"]["compose_at"] == cal.recommended.compose_at
    assert [g["group"] for g in data["groups"]] == [r.group for r in cal.groups]
    assert data["groups"][0]["held"] in (True, False)
    text = str(cal)
    assert "advisory" in text and "compose_at" in text and "(was 0.23)" in text
    for name in ("good", "bad"):
        assert name in text
    with pytest.raises(KeyError, match="groups"):
        cal.group("nope")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.recommended = cal.base  # type: ignore[misc]
