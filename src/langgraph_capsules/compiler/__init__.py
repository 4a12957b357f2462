"""The capsule pass: validate and plan (``plan``), then rewrite (``rewrite``).

``runtime`` holds the code of the nodes the rewrite adds.
"""

from __future__ import annotations

from langgraph_capsules.compiler.plan import CapsulePlan, GroupPlan, make_plan
from langgraph_capsules.compiler.rewrite import rewrite

__all__ = ["CapsulePlan", "GroupPlan", "make_plan", "rewrite"]
