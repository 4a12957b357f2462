"""Structured output in the standard tier: one merged call answers many schema calls.

A member that calls ``with_structured_output`` (a pydantic class, a JSON-schema dict or
a ``TypedDict``) or asks for JSON mode makes a call whose options say what it expects:
``response_format`` (OpenAI-style ``json_schema`` or ``json_object``, or a pydantic
class as ``langchain-openai`` passes it) or one forced tool (``method=
"function_calling"``, marked by langchain-core's ``ls_structured_output_format``).
:func:`part_spec` reads those options into a :class:`PartSpec`.

Such calls are merged apart from plain-text calls. The merged call asks for **one JSON
object with a property per task** (``"task_1"``, ``"task_2"``, ...), each holding that
task's answer under that task's own schema; the combined schema goes to the provider
the way the members' calls did (``response_format={"type": "json_schema", ...}``, with
``"strict": True`` when every member's own call was strict, or one forced tool). The
prompt keeps the standard layout: the shared context once, then one task per member
under a header carrying a per-call nonce.

**A part is accepted only when it is sound** (:func:`split_structured`):

* the reply is one JSON object (a fenced block is unwrapped; text blocks of list
  content are joined); anything else rejects every part (``invalid``);
* a reply that hit its length limit keeps only the properties that were complete
  before the cut (a scalar needs its closing ``,`` or ``}``); the rest are
  ``truncated``;
* a property named like a task that does not exist (``task_0``, ``task_4`` of three)
  means the numbering slipped: every part is rejected (``misnumbered``); other extra
  properties are ignored;
* a property given twice is ``duplicate``; so are two parts that are equal, or share a
  string of at least ``standard.MIN_COPY_WORDS`` words (one task's answer copied
  into another's);
* a part must validate against its member's schema (a pydantic class validates it
  exactly as the member's own parser would); one that does not is ``invalid_part``;
  a part that has text values, all of them empty or a stock non-answer, is ``empty``.

Each accepted part is served as exactly what the member's own call would have
returned (:class:`Served`): JSON text content (plus ``additional_kwargs["parsed"]``
holding the validated pydantic object, as ``langchain-openai`` gives), or one tool call
for ``method="function_calling"``. The member's own output parser then runs on it. A
member whose part is not accepted is aborted and re-run as its original node.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.utils.function_calling import convert_to_openai_function
from langchain_core.utils.json_schema import dereference_refs
from pydantic import BaseModel

from langgraph_capsules.prompts import split_shared
from langgraph_capsules.strategies.standard import (
    SHARED_HEAD,
    new_nonce,
    prompt_stats,
    split_tasks,
)

__all__ = [
    "MERGED_TOOL",
    "STRUCTURE_KWARGS",
    "CallShape",
    "ParsedStructuredPrompt",
    "PartSpec",
    "StructuredPrompt",
    "build_structured_prompt",
    "call_shape",
    "parse_structured_prompt",
    "part_spec",
    "property_name",
]

MERGED_TOOL = "capsule_tasks"
"""Name of the combined schema (``json_schema.name``, or the forced tool's name)."""
STRUCTURE_KWARGS = frozenset(
    {
        "response_format",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "ls_structured_output_format",
        "strict",
        "parallel_tool_calls",
    }
)
"""Call options that describe a call's output shape (never copied to a merged call)."""

Transport = Literal["json_schema", "json_object", "tools"]

_PREAMBLE = (
    "Answer the {n} independent tasks below in one reply. Follow each task's own "
    "instructions as if it were the only task, and never refer to another task. Reply "
    "with one JSON object and nothing else: property {names} holds the answer to TASK 1, "
    "TASK 2, ... in that order, each a complete, full-depth answer in the JSON form its "
    "task asks for."
)
_TASK_HEAD = "TASK {i} {nonce}"
_FORMAT_HEAD = "Reply with exactly one JSON object of this shape ({nonce}):"
_SCHEMA_LINE = 'The value of "{prop}" must follow this JSON schema: {schema}'


def property_name(i: int) -> str:
    """The merged reply's property for task ``i`` (1-based)."""
    return f"task_{i}"


# ---------------------------------------------------------------- call shapes
@dataclass(frozen=True)
class CallShape:
    """What a call's options ask for: ``text``, ``structured`` or ``tools``."""

    kind: Literal["text", "structured", "tools"]
    reason: str = ""
    """For ``tools``: why the call cannot be merged."""


def _ls_method(kwargs: Mapping[str, Any]) -> str | None:
    ls = kwargs.get("ls_structured_output_format")
    if not isinstance(ls, Mapping):
        return None
    method = (ls.get("kwargs") or {}).get("method")
    return str(method) if method else "function_calling"


def _tool_name(tool: Any) -> str | None:
    if not isinstance(tool, Mapping):
        return None
    fn = tool.get("function")
    if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
        return str(fn["name"])
    name = tool.get("name")
    return name if isinstance(name, str) else None


def _tool_parameters(tool: Mapping[str, Any]) -> Any:
    fn = tool.get("function")
    if isinstance(fn, Mapping):
        return fn.get("parameters")
    return tool.get("input_schema") or tool.get("parameters")


def call_shape(kwargs: Mapping[str, Any]) -> CallShape:
    """Classify a call by its options (see :func:`part_spec` for what merges)."""
    if "functions" in kwargs or "function_call" in kwargs:
        return CallShape("tools", "legacy function calling")
    if kwargs.get("tools"):
        if part_spec(kwargs) is not None:
            return CallShape("structured")
        return CallShape("tools", "binds tools for tool use (tool-calling agents are not merged)")
    if kwargs.get("response_format") is not None:
        if part_spec(kwargs) is not None:
            return CallShape("structured")
        return CallShape("tools", "a response_format the structured merge does not read")
    return CallShape("text")


# ---------------------------------------------------------------- part specs
@dataclass(frozen=True)
class PartSpec:
    """One member's expected part: its schema and how its answer is served."""

    name: str
    schema: dict[str, Any] | None
    """Self-contained JSON schema of the part (None: any JSON object, JSON mode)."""
    pydantic: type[BaseModel] | None
    """The pydantic class the member's parser builds, when known."""
    serve: Literal["content", "tool"]
    transport: Transport
    strict: bool
    """The member's own call was in the provider's strict schema mode."""
    tool_name: str | None = None
    tool_choice: Any = None
    parsed: bool = False
    """Serve ``additional_kwargs["parsed"]`` (a pydantic ``response_format``)."""


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _strict_schema(cls: type[BaseModel]) -> dict[str, Any]:
    """The schema a strict provider enforces for a pydantic ``response_format``."""
    try:
        from openai.lib._pydantic import to_strict_json_schema

        schema: dict[str, Any] = dict(to_strict_json_schema(cls))
    except Exception:
        schema = convert_to_openai_function(cls, strict=True)["parameters"]
    return _self_contained(schema)


def _self_contained(schema: Mapping[str, Any]) -> dict[str, Any]:
    out = dereference_refs(dict(schema))
    out = {k: v for k, v in out.items() if k not in ("$defs", "definitions")}
    return out


def _schema_of(obj: Any, *, strict: bool) -> dict[str, Any] | None:
    if obj is None:
        return None
    if _is_model(obj):
        return _strict_schema(obj) if strict else _self_contained(obj.model_json_schema())
    try:
        params = convert_to_openai_function(obj, strict=True if strict else None)
    except Exception:
        return None
    return _self_contained(params.get("parameters") or {})


def part_spec(kwargs: Mapping[str, Any]) -> PartSpec | None:
    """The part a structured call expects, or None if it cannot be merged."""
    ls = kwargs.get("ls_structured_output_format")
    ls_schema = ls.get("schema") if isinstance(ls, Mapping) else None
    tools = kwargs.get("tools")
    rf = kwargs.get("response_format")
    if tools:
        if rf is not None or _ls_method(kwargs) != "function_calling" or len(tools) != 1:
            return None  # tools for tool use (or both at once): not a schema call
        name = _tool_name(tools[0])
        params = _tool_parameters(tools[0]) if isinstance(tools[0], Mapping) else None
        if name is None or not isinstance(params, Mapping):
            return None
        strict = kwargs.get("strict") is True or (
            isinstance(tools[0].get("function"), Mapping)
            and tools[0]["function"].get("strict") is True
        )
        return PartSpec(
            name=name,
            schema=_self_contained(params),
            pydantic=ls_schema if _is_model(ls_schema) else None,
            serve="tool",
            transport="tools",
            strict=strict,
            tool_name=name,
            tool_choice=kwargs.get("tool_choice"),
        )
    if isinstance(rf, type) and issubclass(rf, BaseModel):
        return PartSpec(
            rf.__name__, _strict_schema(rf), rf, "content", "json_schema", True, parsed=True
        )
    if not isinstance(rf, Mapping):
        return None
    kind = rf.get("type")
    if kind == "json_object":
        pyd = ls_schema if _is_model(ls_schema) else None
        schema = _schema_of(ls_schema, strict=False) if ls_schema is not None else None
        return PartSpec("json_object", schema, pyd, "content", "json_object", False)
    if kind == "json_schema" and isinstance(rf.get("json_schema"), Mapping):
        js = rf["json_schema"]
        if not isinstance(js.get("schema"), Mapping):
            return None
        strict = js.get("strict") is True
        return PartSpec(
            str(js.get("name") or "answer"),
            _self_contained(js["schema"]),
            ls_schema if _is_model(ls_schema) else None,
            "content",
            "json_schema",
            strict,
        )
    return None


# ---------------------------------------------------------------- the prompt
@dataclass(frozen=True)
class StructuredPrompt:
    """A merged structured prompt ready to send, with what is needed to split its reply."""

    messages: list[BaseMessage]
    nonce: str
    members: tuple[str, ...]
    specs: tuple[PartSpec, ...]
    transport: Transport
    strict: bool
    combined: dict[str, Any]
    """The combined JSON schema: one required property per task."""
    payload_tokens: int
    coordination_tokens: int
    floor_tokens: int
    naive_tokens: int
    structured: bool = field(default=True)

    def request_kwargs(self, inner: Any) -> dict[str, Any]:
        """Call options asking ``inner`` for the combined object."""
        if self.transport == "json_object":
            return {"response_format": {"type": "json_object"}}
        if self.transport == "json_schema":
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": MERGED_TOOL,
                        "schema": self.combined,
                        "strict": self.strict,
                    },
                }
            }
        tool = {
            "type": "function",
            "function": {
                "name": MERGED_TOOL,
                "description": "Submit the answers to every task at once.",
                "parameters": self.combined,
            },
        }
        choice = self.specs[0].tool_choice
        if choice == self.specs[0].tool_name or isinstance(choice, Mapping):
            choice = MERGED_TOOL
        extra: dict[str, Any] = {"strict": True} if self.strict else {}
        try:
            bound = inner.bind_tools([tool], tool_choice=choice, **extra)
            kwargs = dict(getattr(bound, "kwargs", {}) or {})
        except Exception:
            kwargs = {}
        if not kwargs.get("tools"):
            kwargs = {"tools": [tool], "tool_choice": choice, **extra}
        return kwargs


def _transport(specs: Sequence[PartSpec]) -> Transport:
    kinds = {s.transport for s in specs}
    if "json_schema" in kinds:
        return "json_schema"
    if "tools" in kinds:
        return "tools"
    return "json_object"


def build_structured_prompt(
    members: Sequence[str],
    calls: Sequence[Sequence[BaseMessage]],
    specs: Sequence[PartSpec],
    *,
    nonce: str | None = None,
) -> StructuredPrompt | None:
    """Build one merged structured prompt (None if some call cannot be merged as text)."""
    split = split_shared(calls)
    if split is None:
        return None
    transport = _transport(specs)
    strict = transport != "json_object" and all(s.strict and s.schema is not None for s in specs)
    props: dict[str, Any] = {}
    for i, spec in enumerate(specs, 1):
        part = dict(spec.schema) if spec.schema is not None else {"type": "object"}
        part["title"] = spec.name
        props[property_name(i)] = part
    combined = {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }
    nonce = nonce or new_nonce(list(split.full))
    names = ", ".join(f'"{property_name(i)}"' for i in range(1, len(members) + 1))
    system = _PREAMBLE.format(n=len(members), names=names)
    parts: list[str] = []
    if split.shared:
        parts.append(SHARED_HEAD + "\n" + "\n\n".join(split.shared))
    heads = range(1, len(split.tasks) + 1)
    for i, task in enumerate(split.tasks, 1):
        parts.append(_TASK_HEAD.format(i=i, nonce=nonce) + "\n" + task)
    shape = ", ".join(
        f'"{property_name(i)}": <answer to task {i}>' for i in range(1, len(members) + 1)
    )
    tail = _FORMAT_HEAD.format(nonce=nonce) + "\n{" + shape + "}"
    if transport == "json_object":  # no schema reaches the provider: state it
        tail += "".join(
            "\n"
            + _SCHEMA_LINE.format(prop=property_name(i), schema=json.dumps(props[property_name(i)]))
            for i in range(1, len(members) + 1)
        )
    parts.append(tail)
    human = "\n\n".join(parts)
    coordination = [system, tail, *(_TASK_HEAD.format(i=i, nonce=nonce) for i in heads)]
    if split.shared:
        coordination.append(SHARED_HEAD)
    stats = prompt_stats(split, coordination)
    return StructuredPrompt(
        messages=[SystemMessage(system), HumanMessage(human)],
        nonce=nonce,
        members=tuple(members),
        specs=tuple(specs),
        transport=transport,
        strict=strict,
        combined=combined,
        payload_tokens=stats["payload_tokens"],
        coordination_tokens=stats["coordination_tokens"],
        floor_tokens=stats["floor_tokens"],
        naive_tokens=stats["naive_tokens"],
    )


@dataclass(frozen=True)
class ParsedStructuredPrompt:
    """A merged structured prompt read back from its messages (used by the scripted model)."""

    nonce: str
    shared: str
    tasks: tuple[str, ...]


_FORMAT_RE = re.compile(
    r"^Reply with exactly one JSON object of this shape \(([0-9a-f]{6})\):$", re.M
)


def parse_structured_prompt(messages: Sequence[BaseMessage]) -> ParsedStructuredPrompt | None:
    """Recognise a prompt built by :func:`build_structured_prompt`; None otherwise."""
    if len(messages) != 2 or not isinstance(messages[1], HumanMessage):
        return None
    human = messages[1].content
    if not isinstance(human, str):
        return None
    found = list(_FORMAT_RE.finditer(human))
    if not found:
        return None
    nonce = found[-1].group(1)
    body = human[: found[-1].start()].rstrip()
    shared, tasks = split_tasks(body, nonce)
    return ParsedStructuredPrompt(nonce=nonce, shared=shared, tasks=tasks)
