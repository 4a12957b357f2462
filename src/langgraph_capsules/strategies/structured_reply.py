"""Reading a merged structured reply back: one JSON object, one part per member.

The prompt side (specs, the combined schema, the merged prompt) is in
:mod:`langgraph_capsules.strategies.structured`; this module parses the reply, validates
each part against its member's schema and builds what each member is served (the rules
are listed in that module's docstring).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from langgraph_capsules.strategies.standard import MIN_COPY_WORDS, non_answer, reply_text
from langgraph_capsules.strategies.structured import (
    MERGED_TOOL,
    PartSpec,
    StructuredPrompt,
    property_name,
)

__all__ = ["Served", "schema_error", "split_structured", "validate_part"]


# ---------------------------------------------------------------- the reply
@dataclass(frozen=True)
class Served:
    """What a member's own structured call would have returned, to serve it as is."""

    content: str
    tool_calls: tuple[dict[str, Any], ...] = ()
    additional_kwargs: Mapping[str, Any] = field(default_factory=dict)


_FENCED = re.compile(r"^```[\w-]*[ \t]*\n(.*?)(?:\n?```[ \t]*)?$", re.S)
_TASKLIKE = re.compile(r"^\s*task[\s_\-]*\d+\s*$", re.I)


def _scan(text: str) -> tuple[list[tuple[str, Any]], str]:
    """Top-level properties of a JSON object, in order, and how the text ended:
    ``complete`` (one object, nothing after it), ``cut`` (the text stopped; only the
    properties completed before the stop are listed) or ``invalid``."""
    s = text.strip()
    fenced = _FENCED.match(s)
    if fenced is not None:
        s = fenced.group(1).strip()
    dec = json.JSONDecoder()
    n = len(s)

    def ws(i: int) -> int:
        while i < n and s[i] in " \t\r\n":
            i += 1
        return i

    props: list[tuple[str, Any]] = []
    i = ws(0)
    if i >= n:
        return props, "cut"
    if s[i] != "{":
        return props, "invalid"
    i = ws(i + 1)
    if i < n and s[i] == "}":
        return props, "complete" if ws(i + 1) == n else "invalid"
    while True:
        if i >= n:
            return props, "cut"
        try:
            key, i = dec.raw_decode(s, i)
        except json.JSONDecodeError as e:
            return props, "cut" if e.pos >= n - 1 or "Unterminated" in e.msg else "invalid"
        if not isinstance(key, str):
            return props, "invalid"
        i = ws(i)
        if i >= n:
            return props, "cut"
        if s[i] != ":":
            return props, "invalid"
        i = ws(i + 1)
        if i >= n:
            return props, "cut"
        try:
            value, j = dec.raw_decode(s, i)
        except json.JSONDecodeError as e:
            cut = (
                e.pos >= n - 1
                or "Unterminated" in e.msg
                or ("Expecting" in e.msg and ws(e.pos) >= n)
            )
            return props, "cut" if cut else "invalid"
        j = ws(j)
        if j >= n:  # a scalar may have been cut short; nothing closed it
            return props, "cut"
        if s[j] == ",":
            props.append((key, value))
            i = ws(j + 1)
            continue
        if s[j] == "}":
            props.append((key, value))
            return props, "complete" if ws(j + 1) == n else "invalid"
        return props, "invalid"


def _reply_object(reply: Any, prompt: StructuredPrompt) -> tuple[list[tuple[str, Any]], str]:
    if prompt.transport == "tools":
        calls = [
            c for c in getattr(reply, "tool_calls", None) or [] if c.get("name") == MERGED_TOOL
        ]
        if len(calls) == 1 and isinstance(calls[0].get("args"), dict):
            return list(calls[0]["args"].items()), "complete"
        bad = [
            c
            for c in getattr(reply, "invalid_tool_calls", None) or []
            if c.get("name") == MERGED_TOOL
        ]
        if len(calls) + len(bad) == 1 and bad and isinstance(bad[0].get("args"), str):
            return _scan(bad[0]["args"])
        return [], "invalid"
    return _scan(reply_text(reply))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def _empty(value: Any) -> bool:
    """The part has text and every text value is blank or a stock non-answer (numbers
    and flags alone do not make an answer)."""
    texts = [x for x in _leaves(value) if isinstance(x, str)]
    return bool(texts) and all(non_answer(x) for x in texts)


def validate_part(part: Any, spec: PartSpec) -> tuple[Any, str | None]:
    """``(value, problem)``: the pydantic object (or the JSON value) the member's parser
    would give, or why the part does not fit the member's schema."""
    if spec.pydantic is not None:
        if not isinstance(part, dict):
            return None, "not an object"
        try:  # exactly the member's own parser's check
            return spec.pydantic.model_validate(part), None
        except ValidationError as e:
            return None, f"{e.error_count()} validation error(s)"
    if spec.schema is None:
        return (part, None) if isinstance(part, dict) else (None, "not an object")
    err = schema_error(part, spec.schema)
    return (part, None) if err is None else (None, err)


_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    t = _TYPES.get(kind)
    return True if t is None else isinstance(value, t)


def schema_error(value: Any, schema: Any, path: str = "$") -> str | None:
    """The first way ``value`` breaks ``schema`` (a self-contained JSON schema), or None.

    Covers the keywords structured-output schemas use: ``type``, ``properties``,
    ``required``, ``additionalProperties``, ``items``, ``enum``, ``const``, ``anyOf``/
    ``oneOf``/``allOf``, length and range bounds, ``pattern``; others are ignored."""
    if not isinstance(schema, Mapping) or schema is True:
        return None
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        if options and all(schema_error(value, o, path) is not None for o in options):
            return f"{path}: matches no allowed shape"
    for sub in schema.get("allOf") or []:
        if (err := schema_error(value, sub, path)) is not None:
            return err
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_type_ok(value, str(k)) for k in kinds):
            return f"{path}: expected {kind}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: not one of the allowed values"
    if "const" in schema and value != schema["const"]:
        return f"{path}: not the constant"
    if isinstance(value, str):
        if len(value) < int(schema.get("minLength", 0)):
            return f"{path}: too short"
        if "maxLength" in schema and len(value) > int(schema["maxLength"]):
            return f"{path}: too long"
        if "pattern" in schema and re.search(str(schema["pattern"]), value) is None:
            return f"{path}: does not match its pattern"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{path}: below its minimum"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{path}: above its maximum"
    if isinstance(value, list):
        if len(value) < int(schema.get("minItems", 0)):
            return f"{path}: too few items"
        if "maxItems" in schema and len(value) > int(schema["maxItems"]):
            return f"{path}: too many items"
        items = schema.get("items")
        for k, item in enumerate(value):
            if (err := schema_error(item, items, f"{path}[{k}]")) is not None:
                return err
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                return f"{path}: missing {key!r}"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                if (err := schema_error(item, props[key], f"{path}.{key}")) is not None:
                    return err
            elif extra is False:
                return f"{path}: unexpected property {key!r}"
            elif isinstance(extra, Mapping):
                if (err := schema_error(item, extra, f"{path}.{key}")) is not None:
                    return err
    return None


def _serve(value: Any, part: Any, spec: PartSpec, member: str) -> Served:
    text = json.dumps(part, ensure_ascii=False)
    if spec.serve == "tool":
        call = {
            "name": spec.tool_name,
            "args": part,
            "id": f"call_capsule_{member}",
            "type": "tool_call",
        }
        return Served("", (call,))
    extra = {"parsed": value} if spec.parsed and isinstance(value, BaseModel) else {}
    return Served(text, (), extra)


def split_structured(
    reply: Any, prompt: StructuredPrompt, *, truncated: bool = False
) -> tuple[dict[str, Served], dict[str, str]]:
    """Split a merged structured reply, accepting only sound parts (see module doc).

    Returns:
        ``(answers, problems)``: per member with an accepted part, what to serve; per
        member without one, the reason (``invalid``, ``missing``, ``truncated``,
        ``misnumbered``, ``duplicate``, ``invalid_part: ...``, ``empty``).
    """
    members = prompt.members
    props, status = _reply_object(reply, prompt)
    if status == "invalid" or (status == "cut" and not truncated):
        return {}, {m: "invalid JSON reply" for m in members}
    names = {property_name(i): i for i in range(1, len(members) + 1)}
    if any(k not in names and _TASKLIKE.match(k) for k, _ in props):
        return {}, {m: "misnumbered" for m in members}
    seen: dict[str, list[Any]] = {}
    for key, value in props:
        if key in names:
            seen.setdefault(key, []).append(value)
    problems: dict[str, str] = {}
    values: dict[str, tuple[Any, Any]] = {}
    for i, member in enumerate(members, 1):
        got = seen.get(property_name(i))
        if not got:
            problems[member] = "truncated" if status == "cut" else "missing"
        elif len(got) > 1:
            problems[member] = "duplicate"
        elif _empty(got[0]):
            problems[member] = "empty"
        else:
            value, err = validate_part(got[0], prompt.specs[i - 1])
            if err is not None:
                problems[member] = f"invalid_part: {err}"
            else:
                values[member] = (value, got[0])
    _copies(values, problems)
    answers = {
        m: _serve(v, part, prompt.specs[members.index(m)], m) for m, (v, part) in values.items()
    }
    return answers, problems


def _copies(values: dict[str, tuple[Any, Any]], problems: dict[str, str]) -> None:
    """Reject parts that are equal, or share a long string (a copied answer)."""
    long_strings: dict[str, set[str]] = {}
    for m, (_v, part) in values.items():
        for s in _strings(part):
            norm = " ".join(s.split())
            if len(norm.split()) >= MIN_COPY_WORDS:
                long_strings.setdefault(norm, set()).add(m)
    copied = {m for owners in long_strings.values() if len(owners) > 1 for m in owners}
    items = list(values.items())
    for a in range(len(items)):
        for b in range(a + 1, len(items)):
            if items[a][1][1] == items[b][1][1] and _strings(items[a][1][1]):
                copied.update((items[a][0], items[b][0]))
    for m in copied:
        problems[m] = "duplicate"
        del values[m]
