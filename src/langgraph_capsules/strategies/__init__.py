"""Compound strategies: how a group's captured calls become merged calls and back."""

from __future__ import annotations

from langgraph_capsules.strategies.standard import (
    MergedPrompt,
    ParsedMergedPrompt,
    build_merged_prompt,
    parse_merged_prompt,
    split_reply,
)

__all__ = [
    "MergedPrompt",
    "ParsedMergedPrompt",
    "build_merged_prompt",
    "parse_merged_prompt",
    "split_reply",
]
