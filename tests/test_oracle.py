"""Oracle ablation: cells recorded per (group, tier), oracle routing, online controller
replay over the same observations, agreement."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest
from conftest import DOC, overlap
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

import langgraph_capsules as lc
from langgraph_capsules.oracle import oracle_tier, replay_controller
from langgraph_capsules.testing import ScriptedChatModel


class S(TypedDict, total=False):
    doc: str
    log: Annotated[list[str], operator.add]
    a1: str
    a2: str
    a3: str
    b1: str
    b2: str
    b3: str


def _two_groups() -> StateGraph[Any, Any, Any, Any]:
    # no simulated prefix cache: the cost is plain tokens
    good = lc.CapsuleChatModel(ScriptedChatModel(cache_min_tokens=10**9))
    bad = lc.CapsuleChatModel(
        ScriptedChatModel(compress=0.2, compress_turns=0.2, cache_min_tokens=10**9)
    )

    def node(name: str, llm: lc.CapsuleChatModel) -> Any:
        def run(state: S) -> dict[str, Any]:
            msgs = [SystemMessage(f"Answer as analyst {name}."), HumanMessage(state["doc"])]
            return {name: llm.invoke(msgs).content, "log": [name]}

        return run

    b = StateGraph(S)
    for name in ("a1", "a2", "a3", "b1", "b2", "b3"):
        b.add_node(name, node(name, good if name.startswith("a") else bad))
        b.add_edge(START, name)
        b.add_edge(name, END)
    return b


GROUPS = {"good": ["a1", "a2", "a3"], "bad": ["b1", "b2", "b3"]}
INPUTS = [{"doc": DOC}, {"doc": DOC + "\n\nSecond task."}]


def test_controller_matches_the_oracle_on_a_healthy_and_a_degraded_group() -> None:
    lines: list[str] = []
    report = lc.oracle_ablation(
        _two_groups(),
        INPUTS,
        groups=GROUPS,
        judge=overlap,
        runs=2,
        steps=20,
        label="scripted",
        progress=lines.append,
    )
    # runs x inputs x (all fine, then each group alone at standard and at sequential)
    assert len(lines) == 2 * len(INPUTS) * 5
    cells = {(c.group, c.tier): c for c in report.cells}
    assert cells[("good", "standard")].quality_mean == 1.0
    assert cells[("good", "standard")].runs == 4 and cells[("good", "standard")].judged == 4
    bad = cells[("bad", "standard")]
    assert bad.quality_mean is not None and bad.quality_mean < 0.75 and not bad.passes
    assert cells[("good", "standard")].tokens_median < cells[("good", "fine")].tokens_median
    rows = {r.group: r for r in report.rows}
    assert (rows["good"].oracle, rows["good"].controller) == ("standard", "standard")
    assert (rows["bad"].oracle, rows["bad"].controller) == ("fine", "fine")
    assert report.agreement == 1.0
    # the controller really tried the bad group: a shadow evaluation that was blocked
    assert "fine+shadow:standard+shadow:sequential" in rows["bad"].path
    assert "standard" not in rows["bad"].path
    text = str(report)
    assert "agreement: 2/2 groups" in text and "oracle / controller" in text
    data = report.to_dict()
    assert data["agreement"] == 1.0 and len(data["cells"]) == 6


def test_oracle_prefers_the_lowest_passing_rung() -> None:
    def cell(tier: Any, q: float, tokens: float) -> Any:
        return lc.oracle.OracleCell("g", tier, 3, q, 0.0, 3, tokens, q >= 0.75)

    assert oracle_tier([cell("fine", 1.0, 1000), cell("standard", 0.9, 600)]) == "standard"
    both = [cell("fine", 1.0, 1000), cell("standard", 0.8, 600), cell("sequential", 0.9, 550)]
    assert oracle_tier(both) == "standard"
    assert oracle_tier([*both[:1], cell("standard", 0.6, 600), both[2]]) == "sequential"
    # a passing rung that costs more than fine is skipped, not the end of the search
    pricey = [cell("fine", 1.0, 100), cell("two_phase", 0.9, 150), cell("sequential", 0.9, 90)]
    assert oracle_tier(pricey) == "sequential"
    assert oracle_tier([cell("fine", 1.0, 1000), cell("standard", 0.7, 600)]) == "fine"
    # a compound tier that costs more than fine is never the oracle's choice
    assert oracle_tier([cell("fine", 1.0, 500), cell("standard", 0.9, 600)]) == "fine"


def test_replay_needs_a_floor_and_fine_observations() -> None:
    with pytest.raises(lc.CapsuleConfigError) as err:
        replay_controller([], {}, lc.ControllerPolicy.aggressive(), n_agents=3, steps=5)
    assert err.value.code == "bad_policy"
    with pytest.raises(lc.CapsuleConfigError) as err:
        replay_controller(
            [], {}, lc.ControllerPolicy.aggressive(quality_floor=0.7), n_agents=3, steps=5
        )
    assert err.value.code == "bad_observation"


def test_bad_arguments_are_refused() -> None:
    for kwargs, code in (
        ({"inputs": []}, "bad_input"),
        ({"inputs": INPUTS, "runs": 0}, "bad_input"),
        ({"inputs": INPUTS, "tiers": ["two_phase"]}, "bad_mode"),
    ):
        with pytest.raises(lc.CapsuleConfigError) as err:
            lc.oracle_ablation(_two_groups(), groups=GROUPS, judge=overlap, **kwargs)
        assert err.value.code == code
