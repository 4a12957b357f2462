"""Tool calls that a model wrote as text, turned into LangChain tool calls.

Small local models such as Qwen2.5-Coder often answer a request with bound tools by
*writing* the call, ``{"name": "get_revenue", "arguments": {"company": "Acme"}}``, bare,
in a ```json fence or between ``<tool_call>`` tags, instead of emitting it in the
provider's ``tool_calls`` field. `parse_tool_calls` finds such JSON objects in a reply
and keeps those that name a bound tool with arguments valid under that tool's JSON
schema; everything else stays text. `ToolTextChatOpenAI` is a ``ChatOpenAI`` that does
this to its replies when tools are bound and the server returned no ``tool_calls``, so
LangGraph tool loops (``ToolNode``, ``tools_condition``) work on such models.

Example:
    >>> tools = [{"name": "get_revenue", "parameters": {
    ...     "type": "object", "properties": {"year": {"type": "integer"}},
    ...     "required": ["year"]}}]
    >>> text, calls = parse_tool_calls(
    ...     'Sure.\\n```json\\n{"name": "get_revenue", "arguments": {"year": 2024}}\\n```',
    ...     tools)
    >>> text, [(c["name"], c["args"]) for c in calls]
    ('Sure.', [('get_revenue', {'year': 2024})])
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI

__all__ = [
    "MAX_CALLS",
    "MAX_TEXT_CHARS",
    "ToolTextChatOpenAI",
    "answered_calls",
    "forced_call_schema",
    "parse_tool_calls",
    "schema_error",
    "tool_schemas",
]

MAX_TEXT_CHARS = 100_000
"""Longer replies are not searched for calls (returned unchanged): a bound on the work."""
MAX_CALLS = 32
"""At most this many calls are taken from one reply; later ones stay text."""
_MAX_ATTEMPTS = 2_000  # JSON decode attempts per reply
_MAX_SCHEMA_DEPTH = 64  # nesting of schemas (and $ref hops) followed by the validator

_META_KEYS = frozenset({"name", "id", "type", "index"})
_ARG_KEYS = ("arguments", "parameters", "args", "input")
_WRAPPER_KEYS = ("function", "function_call", "tool_call")
_CANDIDATE = re.compile(r'\{\s*"|\[\s*\{')
_FENCE_OPEN = re.compile(r"```[\w+.-]*[ \t]*\Z")
_FENCE_CLOSE = re.compile(r"```")
_TAG_OPEN = re.compile(r"<tool_call>\Z")
_TAG_CLOSE = re.compile(r"</tool_call>")
_DECODER = json.JSONDecoder()


# --------------------------------------------------------------------------- schemas


def tool_schemas(tools: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Map each tool's name to the JSON schema of its arguments.

    Accepts OpenAI tool dicts (``{"type": "function", "function": {...}}``, what
    ``bind_tools`` sends), bare function dicts (``{"name", "parameters"}``), Anthropic
    style dicts (``{"name", "input_schema"}``), and anything
    ``langchain_core.utils.function_calling.convert_to_openai_tool`` accepts (LangChain
    tools, pydantic models, functions). Entries that cannot be read are skipped; a tool
    without a parameter schema takes no arguments but tolerates any.

    Args:
        tools: The bound tools.

    Returns:
        ``{name: parameters schema}``, in the tools' order.
    """
    out: dict[str, dict[str, Any]] = {}
    try:
        items = list(tools)
    except Exception:
        return out
    for item in items:
        try:
            spec = _function_spec(item)
        except Exception:
            continue
        if spec is None:
            continue
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            continue
        params = spec.get("parameters", spec.get("input_schema"))
        out[name] = dict(params) if isinstance(params, Mapping) else {"type": "object"}
    return out


def forced_call_schema(tools: Iterable[Any], tool_choice: Any) -> dict[str, Any] | None:
    """The JSON schema of one written call that ``tool_choice`` forces, or None.

    ``"required"`` and ``"any"`` force a call of any bound tool; a tool name, or
    ``{"type": "function", "function": {"name": ...}}``, forces that tool. The schema
    describes the object the parser reads, ``{"name": <tool>, "arguments": {...}}``,
    with each tool's own argument schema (its ``$defs`` moved to the root so references
    still resolve). A server that constrains decoding to a JSON schema (llama.cpp's
    ``json_schema`` request field) then cannot answer with anything but such a call.

    Args:
        tools: The bound tools (anything :func:`tool_schemas` reads).
        tool_choice: The request's ``tool_choice``.

    Returns:
        The schema; None when ``tool_choice`` forces nothing (absent, ``"auto"``,
        ``"none"``), names no bound tool, or the tools' ``$defs`` clash.

    Example:
        >>> tools = [{"name": "lookup", "parameters": {
        ...     "type": "object", "properties": {"q": {"type": "string"}}}}]
        >>> forced_call_schema(tools, "required")["properties"]["name"]
        {'const': 'lookup'}
        >>> forced_call_schema(tools, "auto") is None
        True
    """
    if not isinstance(tool_choice, (str, Mapping)) or tool_choice in ("auto", "none"):
        return None
    forced = _forced_name(tool_choice)
    schemas = tool_schemas(tools)
    if forced is not None:
        schemas = {n: p for n, p in schemas.items() if n == forced}
    defs: dict[str, Any] = {}
    alternatives = []
    for name, params in schemas.items():
        args = dict(params)
        for key in ("$defs", "definitions"):
            for def_name, body in (args.pop(key, None) or {}).items():
                if defs.setdefault(def_name, body) != body:
                    return None  # two tools define one name differently
        alternatives.append(
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": args},
                "required": ["name", "arguments"],
            }
        )
    if not alternatives:
        return None
    schema: dict[str, Any] = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    if defs:
        schema = {**schema, "$defs": defs}
    return _defs_at_root(schema)


def _forced_name(choice: Any) -> Any:
    """The tool a ``tool_choice`` names (a name, or an OpenAI/Anthropic dict), else None."""
    if isinstance(choice, Mapping):
        fn = choice.get("function")
        return fn.get("name") if isinstance(fn, Mapping) else choice.get("name")
    if isinstance(choice, str) and choice not in ("auto", "none", "required", "any"):
        return choice
    return None


def _defs_at_root(schema: dict[str, Any]) -> dict[str, Any]:
    """Point ``#/definitions/X`` references at ``#/$defs/X`` (where the defs now are)."""
    text = json.dumps(schema).replace('"#/definitions/', '"#/$defs/')
    out: dict[str, Any] = json.loads(text)
    return out


def _function_spec(item: Any) -> Mapping[str, Any] | None:
    if isinstance(item, Mapping):
        fn = item.get("function")
        if isinstance(fn, Mapping) and "name" in fn:
            return fn
        if "name" in item:
            return item
    from langchain_core.utils.function_calling import convert_to_openai_tool

    converted = convert_to_openai_tool(item)
    fn = converted.get("function")
    return fn if isinstance(fn, Mapping) else None


def schema_error(value: Any, schema: Any) -> str | None:
    """Check a JSON value against the commonly used part of JSON Schema.

    Checked: ``type`` (string, number, integer, boolean, array, object, null, or a
    list of them), ``enum``, ``const``, ``properties``, ``required``,
    ``additionalProperties`` (``false`` or a schema), ``items``, ``minItems``/
    ``maxItems``, ``minLength``/``maxLength``, ``minimum``/``maximum`` and their
    exclusive forms, ``anyOf``/``oneOf``/``allOf`` and local ``$ref``s
    (``#/$defs/...``). Other keywords are ignored. Booleans are not numbers; an
    integral float (``2024.0``) is an integer. Never raises.

    Args:
        value: The decoded JSON value, e.g. a call's arguments.
        schema: The JSON schema.

    Returns:
        ``None`` when the value conforms, else a short description of the first problem.

    Example:
        >>> schema_error({"year": "2024"}, {"properties": {"year": {"type": "integer"}}})
        'year: expected integer, got str'
    """
    try:
        return _check(value, schema, schema, "", 0)
    except Exception as exc:  # a hostile schema or value: treat as not conforming
        return f"cannot validate: {type(exc).__name__}"


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "number": lambda v: (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
    ),
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _resolve(ref: Any, root: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return True  # a remote reference: not followed, anything goes
    node = root
    for raw in ref[1:].split("/"):
        if not raw:
            continue
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return True  # unresolvable: not checked
    return node


def _check(value: Any, schema: Any, root: Any, where: str, depth: int) -> str | None:
    if depth > _MAX_SCHEMA_DEPTH:
        return f"{where or 'value'}: schema nested too deeply"
    if schema is False:
        return f"{where or 'value'}: not allowed"
    if not isinstance(schema, Mapping):
        return None
    label = where or "value"
    if "$ref" in schema:
        err = _check(value, _resolve(schema["$ref"], root), root, where, depth + 1)
        if err:
            return err
    enum = schema.get("enum")
    if isinstance(enum, list) and not any(_same(value, e) for e in enum):
        return f"{label}: not one of {enum!r}"[:200]
    if "const" in schema and not _same(value, schema["const"]):
        return f"{label}: not {schema['const']!r}"[:200]
    types = schema.get("type")
    if isinstance(types, str):
        types = [types]
    if isinstance(types, list):
        known = [t for t in types if isinstance(t, str) and t in _TYPE_CHECKS]
        if known and not any(_TYPE_CHECKS[t](value) for t in known):
            return f"{label}: expected {' or '.join(known)}, got {type(value).__name__}"
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            passed = sum(_check(value, o, root, where, depth + 1) is None for o in options)
            if passed == 0 or (key == "oneOf" and passed > 1):
                return f"{label}: does not match {key}"
    all_of = schema.get("allOf")
    if isinstance(all_of, list):
        for sub in all_of:
            err = _check(value, sub, root, where, depth + 1)
            if err:
                return err
    if isinstance(value, dict):
        return _check_object(value, schema, root, where, depth)
    if isinstance(value, list):
        return _check_array(value, schema, root, where, depth)
    if isinstance(value, str):
        lo, hi = _num(schema.get("minLength")), _num(schema.get("maxLength"))
        if lo is not None and len(value) < lo:
            return f"{label}: shorter than {lo:g}"
        if hi is not None and len(value) > hi:
            return f"{label}: longer than {hi:g}"
    elif _TYPE_CHECKS["number"](value):
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            bound = _num(schema.get(key))
            if bound is None:
                continue
            bad = {
                "minimum": value < bound,
                "maximum": value > bound,
                "exclusiveMinimum": value <= bound,
                "exclusiveMaximum": value >= bound,
            }[key]
            if bad:
                return f"{label}: violates {key} {bound:g}"
    return None


def _num(x: Any) -> float | None:
    """``x`` as a bound, or None when it is not a finite number."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def _check_object(
    value: dict[str, Any], schema: Mapping[str, Any], root: Any, where: str, depth: int
) -> str | None:
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    required = schema.get("required")
    if isinstance(required, list):
        for key in required:
            if isinstance(key, str) and key not in value:
                return f"{where + '.' if where else ''}{key}: required"
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        path = f"{where}.{key}" if where else str(key)
        if key in props:
            err = _check(item, props[key], root, path, depth + 1)
        elif extra is False and "patternProperties" not in schema:
            err = f"{path}: unknown key"
        elif isinstance(extra, Mapping):
            err = _check(item, extra, root, path, depth + 1)
        else:
            err = None
        if err:
            return err
    return None


def _check_array(
    value: list[Any], schema: Mapping[str, Any], root: Any, where: str, depth: int
) -> str | None:
    label = where or "value"
    lo, hi = _num(schema.get("minItems")), _num(schema.get("maxItems"))
    if lo is not None and len(value) < lo:
        return f"{label}: fewer than {lo:g} items"
    if hi is not None and len(value) > hi:
        return f"{label}: more than {hi:g} items"
    items = schema.get("items")
    if isinstance(items, Mapping) or items is False:
        for i, item in enumerate(value):
            err = _check(item, items, root, f"{label}[{i}]", depth + 1)
            if err:
                return err
    return None


# --------------------------------------------------------------------------- parsing


def _call_key(name: str, args: Any) -> str:
    try:
        return name + "\x00" + json.dumps(args, sort_keys=True, default=str)
    except Exception:
        return name + "\x00" + repr(args)


def answered_calls(messages: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls in a conversation that already have a result.

    Args:
        messages: The conversation (LangChain messages; other items are ignored).

    Returns:
        ``(name, args)`` of every ``AIMessage`` tool call answered by a later
        ``ToolMessage`` with its id, in order.
    """
    try:
        done = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
        return [
            (c["name"], dict(c["args"]))
            for m in messages
            if isinstance(m, AIMessage)
            for c in m.tool_calls
            if c.get("id") in done
        ]
    except Exception:
        return []


def _one_call(obj: Mapping[str, Any], schemas: Mapping[str, Any]) -> tuple[str, Any] | None:
    """``(name, args)`` if ``obj`` is a valid call of a bound tool, else None."""
    for key in _WRAPPER_KEYS:  # {"function": {...}} (OpenAI's shape) and kin
        inner = obj.get(key)
        if isinstance(inner, Mapping) and set(obj) <= _META_KEYS | {key}:
            return _one_call(inner, schemas)
    name = obj.get("name")
    if not isinstance(name, str) or name not in schemas or "description" in obj:
        return None  # not a bound tool, or a tool *definition* echoed back
    present = [k for k in _ARG_KEYS if k in obj]
    if present:
        args = obj[present[0]]
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except Exception:
                return None
        elif args is None:
            args = {}
    else:  # arguments written next to the name: {"name": "f", "x": 1}
        args = {k: v for k, v in obj.items() if k not in _META_KEYS}
    if not isinstance(args, dict) or schema_error(args, schemas[name]) is not None:
        return None
    return name, args


def _calls_in(value: Any, schemas: Mapping[str, Any]) -> list[tuple[str, Any]] | None:
    """Every call a decoded JSON value holds, or None unless it is calls only."""
    if isinstance(value, dict):
        batch = value.get("tool_calls")
        if isinstance(batch, (list, dict)) and set(value) <= {"tool_calls", "role", "content"}:
            return _calls_in(batch, schemas)
        call = _one_call(value, schemas)
        return None if call is None else [call]
    if isinstance(value, list) and value:
        out: list[tuple[str, Any]] = []
        for item in value:
            calls = _calls_in(item, schemas) if isinstance(item, dict) else None
            if calls is None:
                return None
            out.extend(calls)
        return out
    return None


def _expand(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a call's span over its wrappers: fences, ``<tool_call>`` tags, extra braces."""
    for _ in range(8):
        left = start
        while left > 0 and text[left - 1].isspace():
            left -= 1
        right = end
        while right < len(text) and text[right].isspace():
            right += 1
        opened = left > 0 and text[left - 1] == "{"
        closed = right < len(text) and text[right] == "}"
        if opened or closed:  # {{...}}, or one stray brace of a doubled pair
            start = left - 1 if opened else start
            end = right + 1 if closed else end
            continue
        grown = False
        m = _TAG_OPEN.search(text, max(0, left - 11), left)
        if m:
            start, grown = m.start(), True
        m = _TAG_CLOSE.match(text, right)
        if m:
            end, grown = m.end(), True
        m = _FENCE_OPEN.search(text, max(0, left - 40), left)
        if m and text.count("```", 0, m.start()) % 2 == 0:  # it opens a block
            start, grown = m.start(), True
        m = _FENCE_CLOSE.match(text, right)
        if m and text.count("```", 0, right) % 2 == 1:  # it closes a block
            end, grown = m.end(), True
        if not grown:
            break
    return start, end


def _join(pieces: list[str]) -> str:
    out = ""
    for piece in pieces:
        if not out:
            out = piece
            continue
        left, right = out.rstrip(" \t"), piece.lstrip(" \t")
        glue = "" if not left or not right or left[-1] == "\n" or right[0] == "\n" else " "
        if left != out or right != piece:
            out = left + glue + right
        else:
            out = out + piece
    return out.strip()


def parse_tool_calls(
    text: str,
    tools: Iterable[Any],
    *,
    answered: Iterable[tuple[str, Mapping[str, Any]]] = (),
) -> tuple[str, list[ToolCall]]:
    """Turn tool calls written in a reply into LangChain ``ToolCall`` dicts.

    Finds JSON objects ``{"name": ..., "arguments": {...}}`` in ``text`` (the
    arguments may also be under ``parameters``, ``args`` or ``input``, be a JSON
    string, or sit next to ``name``; OpenAI's ``{"function": {...}}`` shape, a
    ``{"tool_calls": [...]}`` object and JSON arrays of calls are read too), bare or
    wrapped in ```json / ``` fences, ``<tool_call>...</tool_call>`` tags or doubled
    braces ``{{...}}``. A call is kept when its name is a bound tool and its arguments
    validate against that tool's schema (see `schema_error`); every other piece of
    text stays, untouched. Identical calls in one reply are taken once, at most
    `MAX_CALLS` are taken, and text longer than `MAX_TEXT_CHARS` is not searched.
    Never raises.

    Args:
        text: The reply's text.
        tools: The bound tools (see `tool_schemas` for the accepted forms).
        answered: ``(name, args)`` of calls the conversation already has results
            for (see `answered_calls`); a written call equal to one of them stays
            text, so a model that repeats its last call ends a tool loop instead of
            running it again.

    Returns:
        The remaining text (the reply without the calls and their wrappers,
        stripped; ``text`` unchanged when no call was found) and the calls, each
        ``{"name", "args", "id": "call_<hex>", "type": "tool_call"}``.
    """
    try:
        if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS or "{" not in text:
            return text, []
        schemas = tool_schemas(tools)
        if not schemas:
            return text, []
        seen: set[str] = set()
        for item in answered:
            try:
                name, args = item
                seen.add(_call_key(str(name), dict(args)))
            except Exception:  # not a (name, args) pair: ignored
                continue
        return _parse(text, schemas, seen)
    except Exception:
        return text, []


def _parse(text: str, schemas: Mapping[str, Any], answered: set[str]) -> tuple[str, list[ToolCall]]:
    spans: list[tuple[int, int]] = []
    calls: list[ToolCall] = []
    keys: set[str] = set()
    pos, attempts = 0, 0
    while len(calls) < MAX_CALLS and attempts < _MAX_ATTEMPTS:
        m = _CANDIDATE.search(text, pos)
        if m is None:
            break
        attempts += 1
        start = m.start()
        try:
            value, end = _DECODER.raw_decode(text, start)
        except Exception:  # not JSON here (prose braces, truncated, too deep)
            pos = start + 1
            continue
        found = _calls_in(value, schemas)
        if found is None or any(_call_key(n, a) in answered for n, a in found):
            # JSON that is not (only) calls: an object stays whole; look inside an array
            pos = start + 1 if isinstance(value, list) else end
            continue
        spans.append(_expand(text, start, end))
        for name, args in found[: MAX_CALLS - len(calls)]:
            key = _call_key(name, args)
            if key not in keys:
                keys.add(key)
                calls.append(tool_call(name=name, args=args, id=f"call_{secrets.token_hex(12)}"))
        pos = end
    if not calls:
        return text, []
    pieces: list[str] = []
    cursor = 0
    for start, end in sorted(spans):
        if start > cursor:
            pieces.append(text[cursor:start])
        cursor = max(cursor, end)
    pieces.append(text[cursor:])
    return _join(pieces), calls


# --------------------------------------------------------------------------- client


@dataclass
class _Plan:
    """What to parse a reply against: the tools and the calls already answered."""

    tools: list[dict[str, Any]]
    answered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        return parse_tool_calls(text, self.tools, answered=self.answered)


def _plan_for(
    messages: Sequence[BaseMessage], kwargs: Mapping[str, Any], *, repeats: bool
) -> _Plan | None:
    """The parse plan of a request, or None when nothing is to be parsed."""
    tools = kwargs.get("tools")
    if not tools or not isinstance(tools, (list, tuple)):
        return None
    choice = kwargs.get("tool_choice")
    if choice == "none":
        return None
    bound = [{"name": n, "parameters": s} for n, s in tool_schemas(tools).items()]
    forced = _forced_name(choice)
    if isinstance(forced, str) and any(t["name"] == forced for t in bound):
        bound = [t for t in bound if t["name"] == forced]
    if not bound:
        return None
    return _Plan(bound, [] if repeats else answered_calls(messages))


def _with_calls(message: AIMessage, plan: _Plan) -> AIMessage:
    """``message`` with its written calls parsed, when the server returned none."""
    if message.tool_calls or message.invalid_tool_calls or not isinstance(message.content, str):
        return message
    rest, calls = plan.parse(message.content)
    if not calls:
        return message
    meta = {**message.response_metadata, "tool_text": {"raw_content": message.content}}
    return message.model_copy(
        update={"content": rest, "tool_calls": calls, "response_metadata": meta}
    )


def _apply(result: ChatResult, plan: _Plan | None) -> ChatResult:
    if plan is None:
        return result
    generations: list[ChatGeneration] = []
    for gen in result.generations:
        msg = gen.message
        new = _with_calls(msg, plan) if isinstance(msg, AIMessage) else msg
        generations.append(
            gen if new is msg else ChatGeneration(message=new, generation_info=gen.generation_info)
        )
    return ChatResult(generations=generations, llm_output=result.llm_output)


_HOLD = re.compile(r"[{\[`<]")


class _StreamShaper:
    """Streams text as it comes until a call could start, then holds the rest.

    From the first character that can open a written call (``{ [ ` <``) on, text is
    held back (chunks still pass on with their usage and metadata, without content);
    at the end the held text is parsed and comes out as one chunk with the remaining
    text and the calls as ``tool_call_chunks``, or unchanged when it holds no call.
    """

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.native = False  # the server streams tool calls itself: pass everything on
        self.holding = False
        self.emitted: list[str] = []
        self.held: list[str] = []
        self.pending = ""  # trailing whitespace not yet emitted

    def feed(self, chunk: ChatGenerationChunk) -> list[ChatGenerationChunk]:
        msg = chunk.message
        if self.native:
            return [chunk]
        if (
            not isinstance(msg, AIMessageChunk)
            or not isinstance(msg.content, str)
            or msg.tool_call_chunks
        ):
            self.native = True
            return [*self._flush(), chunk]
        text = msg.content
        if self.holding:
            self.held.append(text)
            return [self._copy(chunk, "")] if self._has_meta(chunk) else []
        combined = self.pending + text
        m = _HOLD.search(combined)
        if m is None:
            visible = combined.rstrip()
            self.pending = combined[len(visible) :]
        else:
            visible = combined[: m.start()].rstrip()
            self.held.append(combined[len(visible) :])
            self.pending, self.holding = "", True
        self.emitted.append(visible)
        if not visible and not self._has_meta(chunk):
            return []
        return [self._copy(chunk, visible)]

    def finish(self) -> list[ChatGenerationChunk]:
        if self.native or not self.holding:
            return self._flush()
        held = "".join(self.held)
        prefix = "".join(self.emitted)
        self.held = []
        rest, calls = self.plan.parse(prefix + held)
        if not calls:
            return [_text_chunk(held)]
        lead = prefix.lstrip()
        if rest.startswith(lead):
            tail = rest[len(lead) :]
        else:  # not expected: the prefix cannot hold a call; keep the held text's rest
            tail = self.plan.parse(held)[0]
        chunks = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(calls)
        ]
        message = AIMessageChunk(
            content=tail,
            tool_call_chunks=chunks,
            response_metadata={"tool_text": {"raw_content": prefix + held}},
        )
        return [ChatGenerationChunk(message=message)]

    def _flush(self) -> list[ChatGenerationChunk]:
        text = "".join(self.held) + self.pending
        self.held, self.pending = [], ""
        return [_text_chunk(text)] if text else []

    @staticmethod
    def _has_meta(chunk: ChatGenerationChunk) -> bool:
        msg = chunk.message
        return bool(
            chunk.generation_info or getattr(msg, "usage_metadata", None) or msg.id is not None
        )

    @staticmethod
    def _copy(chunk: ChatGenerationChunk, content: str) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=chunk.message.model_copy(update={"content": content}),
            generation_info=chunk.generation_info,
        )


def _text_chunk(text: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content=text))


class ToolTextChatOpenAI(ChatOpenAI):
    """A ``ChatOpenAI`` that reads tool calls the model wrote as text.

    When tools are bound (``bind_tools``; not with ``tool_choice="none"``) and the
    server's reply carries no ``tool_calls``, the reply text is parsed with
    `parse_tool_calls`: valid calls of bound tools become ``AIMessage.tool_calls`` and
    the content becomes the remaining text (the original is kept in
    ``response_metadata["tool_text"]["raw_content"]``). A forced ``tool_choice`` limits
    the parse to that tool. Without bound tools it behaves exactly like ``ChatOpenAI``.

    ``invoke``/``ainvoke`` parse the whole reply. ``stream``/``astream`` stream text until
    a call could start (``{``, ``[``, a backtick or ``<``), hold the rest and, at the
    end, send the remaining text and the calls (as ``tool_call_chunks``) in one chunk,
    so the aggregated message equals ``invoke``'s (up to surrounding whitespace).
    """

    parse_tool_text: bool = True
    """Parse written tool calls (set False for plain ``ChatOpenAI`` behaviour)."""
    constrain_forced_calls: bool = False
    """Send a forced ``tool_choice`` (``"required"``, ``"any"`` or a tool name) also as a
    JSON-schema constraint on the reply (:func:`forced_call_schema` in llama.cpp's
    ``json_schema`` request field), so that a model which ignores ``tool_choice`` must
    still write one call of a bound tool. Only for servers that read that field:
    ``lc.local`` turns it on for the embedded llama.cpp server, which (measured on
    Qwen2.5-Coder with xllamacpp 2026.10) answers ``tool_choice="required"`` with prose."""
    allow_repeated_calls: bool = False
    """Take a written call even when the conversation already holds a result for the
    same call (same name and arguments). Off by default: the small models tend to
    repeat their last call after its result, which would loop forever; such a repeat
    stays text, so the loop ends with it as the answer."""

    def _get_request_payload(
        self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        extra = payload.get("extra_body") or {}
        if (
            self.constrain_forced_calls
            and payload.get("tools")
            and "response_format" not in payload
            and not {"json_schema", "grammar"} & set(extra)
        ):
            schema = forced_call_schema(payload["tools"], payload.get("tool_choice"))
            if schema is not None:
                payload["extra_body"] = {**extra, "json_schema": schema}
                # the server's own tool grammar would clash with the schema: the schema
                # forces the call, the client's parser reads it
                payload.pop("tool_choice", None)
        return payload

    def _plan(self, messages: Sequence[BaseMessage], kwargs: Mapping[str, Any]) -> _Plan | None:
        if not self.parse_tool_text:
            return None
        try:
            return _plan_for(messages, kwargs, repeats=self.allow_repeated_calls)
        except Exception:
            return None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        return _apply(result, self._plan(messages, kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = await super()._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
        return _apply(result, self._plan(messages, kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        plan = self._plan(messages, kwargs)
        if plan is None:
            yield from super()._stream(messages, stop=stop, run_manager=run_manager, **kwargs)
            return
        shaper = _StreamShaper(plan)
        # The callbacks hear the shaped chunks, not the raw tokens.
        for raw in super()._stream(messages, stop=stop, run_manager=None, **kwargs):
            for chunk in shaper.feed(raw):
                if run_manager is not None:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        for chunk in shaper.finish():
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        plan = self._plan(messages, kwargs)
        if plan is None:
            async for chunk in super()._astream(
                messages, stop=stop, run_manager=run_manager, **kwargs
            ):
                yield chunk
            return
        shaper = _StreamShaper(plan)
        async for raw in super()._astream(messages, stop=stop, run_manager=None, **kwargs):
            for chunk in shaper.feed(raw):
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        for chunk in shaper.finish():
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
