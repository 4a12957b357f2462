"""ControllerPolicy: presets, validation, replace/coerce and per-group precedence."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.policy import (
    DEFAULT_SCORE_WEIGHTS,
    PRESETS,
    ControllerPolicy,
    coerce_group_policies,
    resolve_policy,
)

WEIGHTS = (0.45, 0.25, 0.0, 0.25, 0.05)


def test_bare_constructor_is_the_balanced_preset() -> None:
    assert ControllerPolicy() == ControllerPolicy.balanced()
    p = ControllerPolicy()
    assert (p.compose_at, p.decompose_at, p.confidence, p.min_observations, p.window_size) == (
        0.23,
        0.10,
        0.80,
        3,
        10,
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("aggressive", (0.18, 0.14, 0.65, 2, 5)),
        ("balanced", (0.23, 0.10, 0.80, 3, 10)),
        ("conservative", (0.35, 0.10, 0.90, 5, 10)),
    ],
)
def test_presets_match_table_3_2(name: str, expected: tuple[float, ...]) -> None:
    p = getattr(ControllerPolicy, name)()
    assert (p.compose_at, p.decompose_at, p.confidence, p.min_observations, p.window_size) == (
        expected
    )
    assert p.score_weights == WEIGHTS == DEFAULT_SCORE_WEIGHTS
    assert p.quality_floor is None  # the floor is deliberately outside the presets
    assert ControllerPolicy.coerce(name) == p
    assert name in PRESETS


def test_spec_defaults_of_the_other_fields() -> None:
    p = ControllerPolicy()
    assert p.error_rate_threshold == 0.15
    assert p.context_util_threshold == 0.85
    assert p.latency_threshold_ms is None
    assert p.compound_execution_model == "auto"  # [paper]; [ref] uses "standard"
    assert p.compound_tool_budget == 0
    assert p.compound_min_output_words is None
    assert p.compound_prompt_style == "standard"
    assert (p.verbosity_two_phase_threshold, p.verbosity_sequential_threshold) == (1500, 3500)
    assert p.verbosity_guidance_threshold == 1500
    assert p.merged_output_structure == "budgeted"
    assert p.output_guidance == "auto"
    assert p.sequential_context_strategy == "predecessor_only"
    assert p.cache_aligned_prompts is True
    assert p.escalation_enabled is True
    assert (p.escalation_min_failures, p.escalation_decay_window) == (2, 5)


def test_preset_overrides_and_replace_return_validated_copies() -> None:
    p = ControllerPolicy.aggressive(quality_floor=0.75)
    assert (p.compose_at, p.quality_floor) == (0.18, 0.75)
    q = p.replace(quality_floor=0.85, window_size=7)
    assert (q.quality_floor, q.window_size, q.compose_at) == (0.85, 7, 0.18)
    assert p.quality_floor == 0.75  # original untouched
    with pytest.raises(CapsuleConfigError) as err:
        p.replace(decompose_at=0.5)
    assert err.value.code == "bad_policy"
    assert "decompose_at" in str(err.value) and "compose_at" in str(err.value)


def test_policy_is_frozen_and_keyword_only() -> None:
    p = ControllerPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.compose_at = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        ControllerPolicy(0.3)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("changes", "field", "fix"),
    [
        ({"decompose_at": 0.23}, "decompose_at", "lower decompose_at"),
        (
            {"verbosity_sequential_threshold": 1500},
            "verbosity_sequential_threshold",
            "raise verbosity_sequential_threshold",
        ),
        ({"score_weights": (0.45, 0.25, 0.25, 0.05)}, "score_weights", "exactly 5 numbers"),
        ({"score_weights": (0.45, 0.25, 0.0, 0.25, -0.05)}, "score_weights", ">= 0"),
        ({"score_weights": "abcde"}, "score_weights", "5 numbers or None"),
        ({"compose_at": 1.2}, "compose_at", "[0, 1]"),
        ({"confidence": -0.1}, "confidence", "[0, 1]"),
        ({"confidence": True}, "confidence", "[0, 1]"),
        ({"error_rate_threshold": float("nan")}, "error_rate_threshold", "[0, 1]"),
        ({"context_util_threshold": 2}, "context_util_threshold", "[0, 1]"),
        ({"quality_floor": 1.5}, "quality_floor", "[0, 1]"),
        ({"min_observations": 0}, "min_observations", "positive integer"),
        ({"window_size": 2.5}, "window_size", "positive integer"),
        ({"escalation_min_failures": True}, "escalation_min_failures", "positive integer"),
        ({"escalation_decay_window": 0}, "escalation_decay_window", "positive integer"),
        ({"latency_threshold_ms": 0}, "latency_threshold_ms", "latency gate off"),
        ({"compound_tool_budget": -2}, "compound_tool_budget", "-1 or a positive number"),
        ({"compound_min_output_words": 0}, "compound_min_output_words", "positive integer"),
        ({"compound_execution_model": "merged"}, "compound_execution_model", "two_phase"),
        ({"merged_output_structure": "long"}, "merged_output_structure", "budgeted_adaptive"),
        ({"output_guidance": "short"}, "output_guidance", "concise"),
        ({"compound_prompt_style": "terse"}, "compound_prompt_style", "compact"),
        ({"sequential_context_strategy": "all"}, "sequential_context_strategy", "full"),
        ({"escalation_enabled": 1}, "escalation_enabled", "bool"),
    ],
)
def test_validation_names_the_field_and_the_fix(
    changes: dict[str, Any], field: str, fix: str
) -> None:
    with pytest.raises(CapsuleConfigError) as err:
        ControllerPolicy.balanced(**changes)
    message = str(err.value)
    assert err.value.code == "bad_policy"
    assert message.startswith(f"[bad_policy] ControllerPolicy.{field} ")
    assert fix in message


def test_weights_are_normalised_and_none_means_raw_overhead() -> None:
    p = ControllerPolicy(score_weights=[1, 0, 0, 0, 0])  # type: ignore[arg-type]
    assert p.score_weights == (1.0, 0.0, 0.0, 0.0, 0.0)
    assert ControllerPolicy(score_weights=None).score_weights is None


def test_unknown_fields_are_refused_with_the_valid_names() -> None:
    builds: tuple[Callable[[], ControllerPolicy], ...] = (
        lambda: ControllerPolicy.balanced(floor=0.7),
        lambda: ControllerPolicy().replace(floor=0.7),
        lambda: ControllerPolicy.coerce({"floor": 0.7}),
    )
    for build in builds:
        with pytest.raises(CapsuleConfigError) as err:
            build()
        assert err.value.code == "bad_policy"
        assert "['floor']" in str(err.value) and "quality_floor" in str(err.value)


def test_coerce_shorthands() -> None:
    assert ControllerPolicy.coerce(None) == ControllerPolicy.balanced()
    p = ControllerPolicy.conservative(quality_floor=0.8)
    assert ControllerPolicy.coerce(p) is p
    assert ControllerPolicy.coerce({"quality_floor": 0.7}) == ControllerPolicy(quality_floor=0.7)
    assert ControllerPolicy.coerce({"preset": "aggressive", "window_size": 8}) == (
        ControllerPolicy.aggressive(window_size=8)
    )
    with pytest.raises(CapsuleConfigError, match="unknown policy preset 'fast'") as err:
        ControllerPolicy.coerce("fast")
    assert err.value.code == "bad_policy"
    with pytest.raises(CapsuleConfigError, match="cannot make a ControllerPolicy from int"):
        ControllerPolicy.coerce(3)  # type: ignore[arg-type]
    with pytest.raises(CapsuleConfigError, match="preset"):
        ControllerPolicy.coerce({"preset": 1})


def test_to_dict_is_json_safe_and_round_trips() -> None:
    p = ControllerPolicy.aggressive(quality_floor=0.75)
    data = json.loads(json.dumps(p.to_dict()))
    assert data["score_weights"] == list(WEIGHTS)
    assert ControllerPolicy(**{**data, "score_weights": tuple(data["score_weights"])}) == p


def test_group_policy_precedence_over_pipeline_policy() -> None:
    base = ControllerPolicy.balanced(quality_floor=0.65)
    groups: dict[str, ControllerPolicy | str] = {
        "synthesis": base.replace(quality_floor=0.85),
        "gather": "aggressive",
    }
    assert resolve_policy("synthesis", base, groups).quality_floor == 0.85
    assert resolve_policy("gather", base, groups) == ControllerPolicy.aggressive()
    assert resolve_policy("analysis", base, groups) is base
    assert resolve_policy("analysis", "conservative", None) == ControllerPolicy.conservative()
    assert resolve_policy("analysis", None) == ControllerPolicy()


def test_group_policies_must_be_complete() -> None:
    with pytest.raises(CapsuleConfigError) as err:
        coerce_group_policies({"synthesis": {"quality_floor": 0.85}})  # type: ignore[dict-item]
    assert err.value.code == "bad_policy"
    assert err.value.group == "synthesis"
    assert "base_policy.replace(" in str(err.value)
    with pytest.raises(CapsuleConfigError, match="must be a dict group"):
        coerce_group_policies([("synthesis", ControllerPolicy())])  # type: ignore[arg-type]
    assert coerce_group_policies(None) == {}
