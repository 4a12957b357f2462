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
  string of at least :data:`MIN_COPY_WORDS` words (one task's answer copied into
  another's);
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
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.utils.function_calling import convert_to_openai_function
from langchain_core.utils.json_schema import dereference_refs
from pydantic import BaseModel, ValidationError

from langgraph_capsules.prompts import estimate_tokens, split_shared
from langgraph_capsules.strategies.standard import non_answer, reply_text

__all__ = [
    "MERGED_TOOL",
    "MIN_COPY_WORDS",
    "STRUCTURE_KWARGS",
    "CallShape",
    "ParsedStructuredPrompt",
    "PartSpec",
    "Served",
    "StructuredPrompt",
    "build_structured_prompt",
    "call_shape",
    "parse_structured_prompt",
    "part_spec",
    "property_name",
    "split_structured",
    "validate_part",
]

MERGED_TOOL = "capsule_tasks"
"""Name of the combined schema (``json_schema.name``, or the forced tool's name)."""
MIN_COPY_WORDS = 8
"""A string of at least this many words found in two members' parts rejects both."""
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
_SHARED_HEAD = "SHARED CONTEXT (applies to every task):"
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


def _new_nonce(texts: Sequence[str]) -> str:
    while True:
        nonce = secrets.token_hex(3)
        if not any(nonce in t.lower() for t in texts):
            return nonce


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
    nonce = nonce or _new_nonce(list(split.full))
    names = ", ".join(f'"{property_name(i)}"' for i in range(1, len(members) + 1))
    system = _PREAMBLE.format(n=len(members), names=names)
    parts: list[str] = []
    if split.shared:
        parts.append(_SHARED_HEAD + "\n" + "\n\n".join(split.shared))
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
    payload = sum(estimate_tokens(s) for s in split.shared) + sum(
        estimate_tokens(t) for t in split.tasks
    )
    total = estimate_tokens(system) + estimate_tokens(human)
    return StructuredPrompt(
        messages=[SystemMessage(system), HumanMessage(human)],
        nonce=nonce,
        members=tuple(members),
        specs=tuple(specs),
        transport=transport,
        strict=strict,
        combined=combined,
        payload_tokens=payload,
        coordination_tokens=max(total - payload, 0),
        floor_tokens=payload,
        naive_tokens=sum(estimate_tokens(f) for f in split.full),
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
    head = re.compile(rf"^TASK \d{{1,6}} {re.escape(nonce)}$", re.M)
    shared = ""
    if body.startswith(_SHARED_HEAD):
        first = head.search(body)
        cut = first.start() if first else len(body)
        shared = body[len(_SHARED_HEAD) : cut].strip()
        body = body[cut:]
    heads = list(head.finditer(body))
    tasks = tuple(
        body[h.end() : heads[k + 1].start() if k + 1 < len(heads) else len(body)].strip()
        for k, h in enumerate(heads)
    )
    return ParsedStructuredPrompt(nonce=nonce, shared=shared, tasks=tasks)


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
