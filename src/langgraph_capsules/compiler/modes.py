"""How a run's config selects each group's mode, and the mode-to-tier mapping."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig

from langgraph_capsules.controller.tiers import compound_tier
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.types import MODES, Tier

__all__ = [
    "RUN_CONFIG_KEYS",
    "check_run_config",
    "record_flag",
    "resolve_mode",
    "tier_for_mode",
]

RUN_CONFIG_KEYS = ("mode", "groups", "record")
"""The keys a run's ``config["configurable"]["capsules"]`` may hold."""


def _close_match(word: str, choices: Collection[str]) -> str:
    near = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _run_options(config: RunnableConfig | None, group: str | None = None) -> Mapping[str, Any]:
    """The run's ``configurable.capsules`` dict, its type and keys checked."""
    caps = ((config or {}).get("configurable") or {}).get("capsules") or {}
    if not isinstance(caps, Mapping):
        raise CapsuleConfigError(
            "config['configurable']['capsules'] must be a dict such as {'mode': 'compound'}; "
            f"got {type(caps).__name__}",
            code="bad_mode",
            group=group,
        )
    for key in caps:
        if key not in RUN_CONFIG_KEYS:
            raise CapsuleConfigError(
                f"config['configurable']['capsules'] has an unknown key {key!r}"
                f"{_close_match(str(key), RUN_CONFIG_KEYS)}; its keys are "
                f"{list(RUN_CONFIG_KEYS)}, e.g. {{'mode': 'compound', 'groups': {{'g': 'fine'}}}}",
                code="unknown_config_key",
                group=group,
            )
    per_group = caps.get("groups")
    if per_group is not None and not isinstance(per_group, Mapping):
        raise CapsuleConfigError(
            "config['configurable']['capsules']['groups'] must map group names to modes, "
            f"e.g. {{'arm': 'fine'}}; got {type(per_group).__name__}",
            code="bad_mode",
            group=group,
        )
    return caps


def resolve_mode(config: RunnableConfig | None, group: str, default_mode: str) -> str:
    """The controller mode of one group for one run.

    Precedence: ``configurable.capsules.groups[group]``, then
    ``configurable.capsules.mode``, then the graph's ``mode``.

    Raises:
        CapsuleConfigError: ``bad_mode`` when the run's capsules config (or its
            ``groups``) is not a dict; ``unknown_config_key`` for a key other than
            ``mode``, ``groups`` and ``record`` (the message suggests the close match).
    """
    caps = _run_options(config, group)
    per_group = caps.get("groups") or {}
    return str(per_group.get(group) or caps.get("mode") or default_mode)


def check_run_config(config: RunnableConfig | None, groups: Collection[str]) -> None:
    """Check a run's ``configurable.capsules`` against a plan's groups, before it runs.

    Raises:
        CapsuleConfigError: ``unknown_config_key`` for a misspelt key, ``unknown_group``
            when ``groups`` names a group the plan does not have, ``bad_mode`` for an
            unknown mode or a malformed value.
    """
    caps = _run_options(config)
    if "mode" in caps and caps["mode"] is not None:
        tier_for_mode(caps["mode"])
    for name, mode in (caps.get("groups") or {}).items():
        if name not in groups:
            raise CapsuleConfigError(
                f"config['configurable']['capsules']['groups'] names {name!r}, which is not a "
                f"group of this plan{_close_match(str(name), groups)}; its groups are "
                f"{sorted(groups)} (print(capsules.plan) lists them)",
                code="unknown_group",
                group=str(name),
            )
        if mode is not None:
            tier_for_mode(mode, str(name))
    record = caps.get("record")
    if record is not None and not isinstance(record, bool):
        raise CapsuleConfigError(
            f"config['configurable']['capsules']['record'] must be True or False; got {record!r}",
            code="bad_mode",
        )


def tier_for_mode(mode: str, group: str | None = None, *, has_tools: bool = False) -> Tier:
    """Map a controller mode or tier name to the tier it runs (``bad_mode`` otherwise).

    ``has_tools``: the group has a declared tool agent (exactly when two_phase is built).
    ``"compound"`` is the merged tier that fits (:func:`compound_tier`: two_phase with
    tools); an explicit ``"standard"`` stays standard."""
    if mode in ("auto", "observe", "fine"):
        return "fine"  # without a controller consulted, auto runs fine
    if mode == "compound":
        return compound_tier(has_tools)
    if mode == "two_phase" and has_tools:
        return "two_phase"
    if mode == "standard":
        return "standard"
    if mode in ("sequential", "two_phase"):
        # two_phase needs declared agents with tools; for captured plain nodes it runs
        # as sequential (the plan says so)
        return "sequential"
    near = _close_match(mode, MODES) if isinstance(mode, str) else ""
    raise CapsuleConfigError(
        f"unknown capsule mode {mode!r}{near}; use one of {list(MODES)}",
        code="bad_mode",
        group=group,
    )


def record_flag(config: RunnableConfig | None) -> bool:
    """``configurable.capsules.record``: record (and, with a judge, judge) a run of a
    locked mode too."""
    caps = ((config or {}).get("configurable") or {}).get("capsules") or {}
    return isinstance(caps, Mapping) and caps.get("record") is True
