"""Which parked calls of a capsule run merge, and the merged requests they make.

Parked calls merge when they go to the same model configuration with the same call
shape (plain text or structured output), in merges that fit the model's input limit;
each merge gets its prompt (standard, structured or a sequential conversation), its call
options and an output budget equal to its members' own. Why a call did not merge is
noted in ``merge_stats``. :class:`MergePlanning` is the part of
:class:`~langgraph_capsules.compiler.execution.CapsuleRun` that decides this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig

from langgraph_capsules._session import PASS_THROUGH, Parked, Slot
from langgraph_capsules.prompts import estimate_tokens
from langgraph_capsules.strategies.sequential import SequentialPlan, build_sequential
from langgraph_capsules.strategies.standard import (
    build_merged_prompt,
    context_limit,
    merged_max_tokens,
    output_limit,
    pack_within,
)
from langgraph_capsules.strategies.structured import (
    STRUCTURE_KWARGS,
    build_structured_prompt,
    call_shape,
    part_spec,
)
from langgraph_capsules.telemetry import UsageTracker
from langgraph_capsules.types import Tier

if TYPE_CHECKING:
    from langgraph_capsules.compiler.runtime import GroupRuntime

__all__ = ["MergePlanning"]


class MergePlanning:
    """The merge-planning half of a capsule run (a mixin of ``CapsuleRun``, which sets
    the attributes below)."""

    rt: GroupRuntime
    config: RunnableConfig
    tier: Tier
    shadow: bool
    members: list[str]
    tracker: UsageTracker
    callbacks: Any
    slots: dict[str, Slot]
    merge_stats: dict[str, Any]

    def _buckets(self) -> list[list[str]]:
        """Parked members grouped by model configuration and call shape: calls to the
        same configuration (:func:`~langgraph_capsules.model.config_key`, whichever
        ``CapsuleChatModel`` object they went through) merge, plain-text and structured
        calls apart. A call alone in its bucket passes through; why any member did not
        merge is noted (``merge_stats["unmerged"]`` and ``["notes"]``)."""
        from langgraph_capsules.model import config_key

        buckets: dict[tuple[str, str], list[str]] = {}
        unmerged: dict[str, str] = {}
        keys: list[tuple[Any, dict[str, Any], str]] = []
        for m in self.members:
            slot = self.slots[m]
            if not slot.parked.done():
                for reason in dict.fromkeys(slot.unmergeable):
                    unmerged[m] = f"its call {reason}"
                continue
            parked = slot.parked.result()
            kind = call_shape(parked.kwargs).kind
            if kind == "structured" and self.tier == "sequential":
                slot.answer.set_result(PASS_THROUGH)
                unmerged[m] = "structured output merges in the standard tier only"
                continue
            # members calling one model object with equal options share one key
            key = next(
                (k for mod, kw, k in keys if mod is parked.model and kw == parked.kwargs), None
            )
            if key is None:
                key = config_key(parked.model, parked.kwargs)
                keys.append((parked.model, parked.kwargs, key))
            buckets.setdefault((key, kind), []).append(m)
        out: list[list[str]] = []
        for (key, shape), bucket in buckets.items():
            if len(bucket) >= 2:
                fits, alone = self._within_context(bucket)
                out.extend(fits)
                for m, why in alone.items():
                    self.slots[m].answer.set_result(PASS_THROUGH)
                    unmerged[m] = why
                continue
            for m in bucket:
                self.slots[m].answer.set_result(PASS_THROUGH)
                if any(k != key and kd == shape for k, kd in buckets):
                    unmerged[m] = "a different model configuration than the group's other calls"
                else:
                    what = "structured-output" if shape == "structured" else "plain-text"
                    unmerged[m] = f"the only {what} call of the group (nothing to merge it with)"
        if unmerged:
            self.merge_stats["unmerged"] = dict(unmerged)
            notes = self.merge_stats.setdefault("notes", [])
            notes.extend(f"{m}: not merged: {r}" for m, r in unmerged.items())
        return out

    def _within_context(self, bucket: list[str]) -> tuple[list[list[str]], dict[str, str]]:
        """``bucket`` split into consecutive merges that fit the model's input limit
        (its profile's ``max_input_tokens``): each member counts its prompt's tokens plus
        its output budget, shared content included, so a merge that fits the estimate
        fits the model. A member left alone passes through, with the reason."""
        parked = [self.slots[m].parked.result() for m in bucket]
        model = parked[0].model
        limit = context_limit(getattr(model, "inner", model))
        if limit is None:
            return [bucket], {}
        budgets = _member_budgets(parked, model)
        sizes = [
            sum(estimate_tokens(str(msg.content)) for msg in p.messages) + (b or 0)
            for p, b in zip(parked, budgets, strict=True)
        ]
        fits: list[list[str]] = []
        alone: dict[str, str] = {}
        for part in pack_within(sizes, limit):
            if len(part) >= 2:
                fits.append([bucket[i] for i in part])
                continue
            (i,) = part
            alone[bucket[i]] = (
                f"no room to merge it within the model's input limit ({limit} tokens; "
                f"this call needs about {sizes[i]} with its output budget)"
            )
        return fits, alone

    def _prepare(self, bucket: list[str]) -> tuple[Any, Any, dict[str, Any]] | None:
        parked: list[Parked] = [self.slots[m].parked.result() for m in bucket]
        model = parked[0].model
        if call_shape(parked[0].kwargs).kind == "structured":
            return self._prepare_structured(bucket, parked, model)
        kwargs = _merged_kwargs(parked, model)
        budgets = _member_budgets(parked, model)
        # the same output room as the separate calls, within the model's own limit
        merged = merged_max_tokens(budgets, output_limit(getattr(model, "inner", model)))
        if merged is not None:
            kwargs["max_tokens"] = merged
        prompt = build_merged_prompt(
            bucket,
            [p.messages for p in parked],
            budgets=budgets,
            section_words=self.rt.section_words,
        )
        if prompt is None:
            for m in bucket:
                self.slots[m].answer.set_result(PASS_THROUGH)
            return None
        self._add_stats(prompt)
        return prompt, model, kwargs

    def _prepare_structured(
        self, bucket: list[str], parked: list[Parked], model: Any
    ) -> tuple[Any, Any, dict[str, Any]] | None:
        """A bucket of structured-output calls: one call asking for a JSON object with
        a property per member, each under its member's schema."""
        specs = [part_spec(p.kwargs) for p in parked]
        prompt = None
        if all(s is not None for s in specs):
            prompt = build_structured_prompt(
                bucket, [p.messages for p in parked], [s for s in specs if s is not None]
            )
        if prompt is None:
            for m in bucket:
                self.slots[m].answer.set_result(PASS_THROUGH)
            return None
        kwargs = _merged_kwargs(parked, model)
        budgets = _member_budgets(parked, model)
        merged = merged_max_tokens(budgets, output_limit(getattr(model, "inner", model)))
        if merged is not None:
            kwargs["max_tokens"] = merged
        kwargs.update(prompt.request_kwargs(getattr(model, "inner", model)))
        self._add_stats(prompt)
        return prompt, model, kwargs

    def _add_stats(self, prompt: Any) -> None:
        """Add one merged prompt's token statistics (summed over a run's merged calls)."""
        for key in ("payload_tokens", "coordination_tokens", "floor_tokens", "naive_tokens"):
            self.merge_stats[key] = self.merge_stats.get(key, 0) + getattr(prompt, key)

    def _prepared(self) -> list[tuple[list[str], Any, Any, dict[str, Any], RunnableConfig]]:
        """Per merge bucket: members, prompt, model, call options and config."""
        out = []
        for bucket in self._buckets():
            prepared = self._prepare(bucket)
            if prepared is not None:
                cfg = self.rt._merged_config(
                    self.config, bucket, self.tier, self.callbacks, shadow=self.shadow
                )
                out.append((bucket, *prepared, cfg))
        return out

    # ------------------------------------------------ the sequential calls
    def _sequential(self) -> list[tuple[list[str], SequentialPlan, Any]]:
        """Per bucket: members, the conversation and the model (sequential tier)."""
        out = []
        hint = self.rt.guidance()
        context = self.rt.policy.sequential_context_strategy
        for bucket in self._buckets():
            parked = [self.slots[m].parked.result() for m in bucket]
            plan = build_sequential(
                bucket, [p.messages for p in parked], context=context, hint=hint
            )
            if plan is None:
                for m in bucket:
                    self.slots[m].answer.set_result(PASS_THROUGH)
                continue
            # summed over the run's merges, beside the why-not-merged notes
            for key in ("payload_tokens", "coordination_tokens"):
                self.merge_stats[key] = self.merge_stats.get(key, 0) + getattr(plan, key)
            out.append((bucket, plan, parked[0].model))
        return out


def _merged_kwargs(parked: Sequence[Parked], model: Any) -> dict[str, Any]:
    """Call options for the merged call: the options every member used alike, budgets
    left out (the capsule node sets ``max_tokens`` from :func:`_member_budgets`)."""
    budget_keys = ("max_tokens", "max_completion_tokens")
    first = parked[0].kwargs
    return {
        k: v
        for k, v in first.items()
        if v is not None
        and k not in budget_keys
        and k not in STRUCTURE_KWARGS  # a structured call asks for the combined shape
        and all(p.kwargs.get(k) == v for p in parked)
    }


def _member_budgets(parked: Sequence[Parked], model: Any) -> list[int | None]:
    """Each member's own output budget: its call's ``max_tokens`` (or
    ``max_completion_tokens``), else the model's default, else ``None``."""
    inner = getattr(model, "inner", None)
    default = getattr(inner, "max_tokens", None) or getattr(inner, "max_completion_tokens", None)
    out: list[int | None] = []
    for p in parked:
        b = p.kwargs.get("max_tokens") or p.kwargs.get("max_completion_tokens") or default
        out.append(b if isinstance(b, int) and b > 0 else None)
    return out
