"""The quality-gated controller: pure functions from a group's observations to a decision.

Phases, one module each:

* :mod:`~langgraph_capsules.controller.score`: the composition score (spec 3.1);
* :mod:`~langgraph_capsules.controller.switching`: fine <-> compound on scores (3.2);
* :mod:`~langgraph_capsules.controller.tiers`: automatic tier choice and the ladder (3.3);
* :mod:`~langgraph_capsules.controller.gate`: shadow gate, rolling revert, escalation (3.4);
* :mod:`~langgraph_capsules.controller.decide`: replay the history and decide.

Where the paper and the reference code disagree, or the spec is silent:

* r_oh divides by output tokens ([paper]); the [ref] prompt-token variant is reported as
  ``ScoreBreakdown.r_oh_ref`` / ``score_ref`` (P1).
* depth is the longest path in the group DAG, passed in; ``depth=None`` gives [ref]'s
  n-1 (P2).
* The rolling-mean revert flips the group to fine, with back-off (P4).
* Switching reads post-revert observations only (P6) and only fine-tier scores feed the
  switch up; the switch down reads the current compound stint.
* Quality windows are kept per tier (P7) and restart on a revert.
* Tier auto follows §7.5 (tools, verbosity, quality); [ref]'s "any dependency ->
  sequential" rule (P10) is not applied. ``compound_execution_model`` defaults to the
  paper's ``auto``.
* A judge failure is no observation (P13); a shadow run with no score is retried.
* Latency gate as in [ref] (off by default); the [ref] token gate is not implemented.

Example:
    >>> from langgraph_capsules.controller import decide
    >>> from langgraph_capsules.policy import ControllerPolicy
    >>> decide([], ControllerPolicy(), mode="auto", n_agents=3).tier
    'fine'
"""

from __future__ import annotations

from langgraph_capsules.controller.decide import Decision, controller_state, decide
from langgraph_capsules.controller.gate import (
    LadderStep,
    ShadowVerdict,
    gate_active,
    ladder_step,
    latency_gate,
    shadow_verdict,
)
from langgraph_capsules.controller.score import ScoreBreakdown, composition_score, error_rate
from langgraph_capsules.controller.state import ControllerState
from langgraph_capsules.controller.switching import (
    SwitchCheck,
    required_observations,
    switch_down,
    switch_up,
)
from langgraph_capsules.controller.tiers import (
    DEFAULT_BUILT_TIERS,
    TierChoice,
    nearest_built,
    select_tier,
)

__all__ = [
    "DEFAULT_BUILT_TIERS",
    "ControllerState",
    "Decision",
    "LadderStep",
    "ScoreBreakdown",
    "ShadowVerdict",
    "SwitchCheck",
    "TierChoice",
    "composition_score",
    "controller_state",
    "decide",
    "error_rate",
    "gate_active",
    "ladder_step",
    "latency_gate",
    "nearest_built",
    "required_observations",
    "select_tier",
    "shadow_verdict",
    "switch_down",
    "switch_up",
]
