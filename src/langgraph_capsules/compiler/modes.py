"""How a run's config selects each group's mode, and the mode-to-tier mapping."""

from __future__ import annotations

from collections.abc import Mapping

from langchain_core.runnables import RunnableConfig

from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.types import MODES, Tier

__all__ = ["record_flag", "resolve_mode", "tier_for_mode"]


def resolve_mode(config: RunnableConfig | None, group: str, default_mode: str) -> str:
    """The controller mode of one group for one run.

    Precedence: ``configurable.capsules.groups[group]``, then
    ``configurable.capsules.mode``, then the graph's ``mode``.

    Raises:
        CapsuleConfigError: ``bad_mode`` when the run's capsules config is not a dict.
    """
    caps = ((config or {}).get("configurable") or {}).get("capsules") or {}
    if not isinstance(caps, Mapping):
        raise CapsuleConfigError(
            "config['configurable']['capsules'] must be a dict such as {'mode': 'compound'}; "
            f"got {type(caps).__name__}",
            code="bad_mode",
            group=group,
        )
    per_group = caps.get("groups") or {}
    return str(per_group.get(group) or caps.get("mode") or default_mode)


def tier_for_mode(mode: str, group: str | None = None) -> Tier:
    """Map a controller mode or tier name to the tier it runs (``bad_mode`` otherwise)."""
    if mode in ("auto", "observe", "fine"):
        return "fine"  # without a controller consulted, auto runs fine
    if mode in ("compound", "standard"):
        return "standard"
    if mode in ("sequential", "two_phase"):
        # two_phase needs declared agents with tools; for captured plain nodes it runs
        # as sequential (the plan says so)
        return "sequential"
    raise CapsuleConfigError(
        f"unknown capsule mode {mode!r}; use one of {list(MODES)}",
        code="bad_mode",
        group=group,
    )


def record_flag(config: RunnableConfig | None) -> bool:
    """``configurable.capsules.record``: record (and, with a judge, judge) a run of a
    locked mode too."""
    caps = ((config or {}).get("configurable") or {}).get("capsules") or {}
    return isinstance(caps, Mapping) and caps.get("record") is True
