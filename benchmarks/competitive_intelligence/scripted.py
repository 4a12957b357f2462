"""A deterministic stand-in analyst for ``--model scripted`` runs and tests.

It answers each kind of prompt in the pipeline by copying sentences from the source it
was given (entities: sentences with numbers; claims: judgements; signals: outlook), so
the gold-fact judge gives it a meaningful, non-trivial score without any LLM.
"""

from __future__ import annotations

import re

from langgraph_capsules.testing import ScriptedChatModel

__all__ = ["scripted_analyst"]

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CLAIM = re.compile(
    r"\b(lead|leader|analyst|sees|seen|regard|consider|view|rank|praise|criticis|behind"
    r"|ahead|reputation|perceive)",
    re.I,
)
_SIGNAL = re.compile(
    r"\b(plan|will|expect|could|may|intend|aim|target|hiring|risk|threat|opportunit|launch"
    r"|expand|pilot|by 20)",
    re.I,
)


_DECLARED_SOURCE = re.compile(r"## bundle_\w+\n(.*?)(?=\n\n## |\n\nYou |\Z)", re.S)
"""The lens source in a declared agent's prompt (a ``## bundle_<lens>`` block)."""
_DECLARED_OVERVIEW = re.compile(r"## overview\n(.*?)(?=\n\n## |\n\nYou |\Z)", re.S)


def _sentences(text: str) -> list[str]:
    declared = _DECLARED_SOURCE.search(text)
    if declared is not None:
        body = declared.group(1)
    else:
        body = text.split(" source:", 1)[-1] if " source:" in text else text
    lines = [
        ln
        for ln in body.splitlines()
        if ln.strip() and not ln.lstrip().startswith(("List ", "Do the "))
    ]
    return [s.strip() for s in _SENT.split(" ".join(lines)) if len(s.split()) > 3]


def _numbered(sents: list[str], limit: int = 6) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(sents[:limit], 1))


def _pick(text: str, kind: str) -> str:
    sents = _sentences(text)
    if kind == "entities":
        chosen = [s for s in sents if re.search(r"\d", s)]
    elif kind == "claims":
        chosen = [s for s in sents if _CLAIM.search(s)]
    else:
        chosen = [f"{s} (explicit)" for s in sents if _SIGNAL.search(s)]
    return _numbered(chosen or sents)


def _respond(text: str) -> str:
    if "ENTITIES:, CLAIMS: and SIGNALS:" in text:
        return "\n\n".join(
            f"{k.upper()}:\n{_pick(text, k)}" for k in ("entities", "claims", "signals")
        )
    if "competitive-intelligence brief" in text:
        findings = [ln for ln in text.splitlines() if re.match(r"\d+\. ", ln)]
        facts = [re.sub(r"^\d+\. |\s*\((explicit|implied)\)$", "", f) for f in findings]
        parts = ["Executive summary", " ".join(facts[:3])]
        for title in (
            "Competitive landscape",
            "Product portfolio",
            "Financial signals",
            "Risk and regulation",
        ):
            parts.append(f"{title}: " + " ".join(facts[3:5]))
        parts.append("Key takeaways")
        parts.extend(f"- {f}" for f in facts[5:8])
        return "\n".join(parts)
    if "You extract stated facts" in text:
        return _pick(text, "entities")
    if "You extract qualitative claims" in text:
        return _pick(text, "claims")
    if "You extract forward-looking signals" in text:
        return _pick(text, "signals")
    declared = _DECLARED_OVERVIEW.search(text)
    if declared is not None:
        overview = declared.group(1)
    else:
        overview = text.split("Use only facts from the overview.", 1)[-1]
    return " ".join(_sentences(overview)[:2])


def scripted_analyst(**knobs: object) -> ScriptedChatModel:
    """A :class:`ScriptedChatModel` that answers the pipeline's prompts from its sources."""
    # A stand-in for a model that writes within its budget: replies are never cut at
    # max_tokens (a real model's truncation is measured by the benchmark's records).
    knobs.setdefault("honor_max_tokens", False)
    return ScriptedChatModel(respond=_respond, model_name="scripted-analyst", **knobs)  # type: ignore[arg-type]
