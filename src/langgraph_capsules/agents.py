"""Declared agents: :func:`agent` builds an ordinary LangGraph node from what an agent
reads, writes and is told to do.

A declared agent's prompt is built from its declared ``reads`` only, so it never sees a
state key it did not ask for (siblings never see each other's outputs unless they say
so). The prompt is cache-aligned (capsules-spec 3.8)::

    system:  CONTEXT: the shared inputs, one labelled block per key, in sorted key order
    system:  the agent's instructions
    human:   its own inputs (labelled), then the output hint when guidance is on

Standalone, every read is "shared" (stable content first). Inside a capsule group the
pass tells each declared member which keys every declared member of the group reads
(run metadata ``capsule_shared_reads``): those form the first message, byte-identical
across the group, so a prefix cache serves it after the first call, and the merged
tiers send it once; each agent's other reads go to its own tail.

Tiers (read from the capsule session; outside one the agent runs ``fine``):

* ``fine``: tools bound, the tool loop runs to a final answer; structured output via
  the model's ``with_structured_output``; the provider's prompt-cache hint on the shared
  block (:mod:`langgraph_capsules.cache_hints`);
* ``standard``: one plain call without tools (tool loss is by design: tool groups
  belong in two_phase, which mode ``"compound"`` picks for them), parked and answered
  from the group's merged call;
* ``two_phase``: a tool-using agent first runs its tool loop with a gather-only
  instruction (phase A, a compact summary of the data), then makes one plain call with
  the gathered data in its tail (phase B, merged with the group); tool-free agents go
  straight to phase B;
* ``sequential``: like fine (each agent keeps its own calls and tools); its first plain
  call is answered in the group's shared conversation.

With ``output_schema`` the compound tiers ask for JSON in text and validate it; a reply
that does not validate raises, and the capsule node re-runs the agent as its own node.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.tools import tool as as_tool
from pydantic import BaseModel

from langgraph_capsules._session import SESSION
from langgraph_capsules.cache_hints import cache_hints
from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.model import CapsuleChatModel

__all__ = [
    "AGENT_ATTR",
    "ANSWER_PROMPT",
    "GATHER_INSTRUCTION",
    "MAX_TOOL_ROUNDS",
    "AgentNode",
    "AgentSpec",
    "agent",
    "build_messages",
]

AGENT_ATTR = "capsule_agent"
"""Attribute holding the :class:`AgentSpec` on a node function made by :func:`agent`."""
HIDDEN_READS_KEY = "capsule_hidden_reads"
"""Run metadata: declared reads the capsule pass hides (linear chains, predecessor-only)."""
SHARED_READS_KEY = "capsule_shared_reads"
"""Run metadata: the keys every declared member of the agent's group reads."""
GUIDANCE_KEY = "capsule_guidance"
"""Run metadata: the output hint for this run's fine calls (set by the capsule pass)."""
MAX_TOOL_ROUNDS = 8
"""Most model turns of one tool loop before the agent stops calling tools."""
GATHER_INSTRUCTION = (
    "Gather only: use the tools to collect the data this task needs, then reply with a "
    "compact summary of the data you found (numbers and names exactly as returned). Do "
    "not analyse it yet."
)
ANSWER_PROMPT = "Write your answer now, from the tool results above."
"""The last turn of a ``tool_choice="required"`` tool loop, sent with tool use off."""
TOOL_CHOICES = ("auto", "required")
"""How a declared agent's tool loop asks for tool calls (see :func:`agent`)."""
_CONTEXT_HEAD = "CONTEXT:"
_JSON_HINT = "Reply with one JSON object only, matching this JSON schema:\n{schema}"


class AgentNode(Protocol):
    """The node :func:`agent` returns: a plain function ``(state, config) -> update``."""

    capsule_agent: AgentSpec
    __name__: str

    def __call__(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        """Run the agent on ``state`` and return its state update."""
        ...


@dataclass(frozen=True)
class AgentSpec:
    """What a declared agent reads, writes and does."""

    name: str
    instructions: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    tools: tuple[BaseTool, ...] = ()
    output_schema: type[BaseModel] | None = None
    llm: BaseChatModel | None = None
    max_tokens: int | None = None
    context: str = "predecessor_only"
    """In a linear chain inside a capsule graph: ``predecessor_only`` hides declared reads
    written further up the chain; ``full`` keeps them (:mod:`langgraph_capsules.context`)."""
    tool_choice: str = "auto"
    """``auto``: the model decides when to call; ``required``: it must call until a turn
    brings nothing new, then answers with tool use off (:func:`agent`)."""


def _block(key: str, value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump_json(indent=1)
    elif not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str, indent=1)
    return f"## {key}\n{value}"


def build_messages(
    spec: AgentSpec,
    state: Mapping[str, Any],
    *,
    shared: Sequence[str] | None = None,
    hint: str | None = None,
    gathered: str | None = None,
    extra_instruction: str | None = None,
) -> list[BaseMessage]:
    """The agent's cache-aligned prompt (see the module docstring).

    Args:
        spec: The agent.
        state: The graph state (only the declared reads are looked at).
        shared: Keys shared with the group (default: every read).
        hint: Output-guidance line for the tail.
        gathered: Phase-A data (two_phase) for the tail.
        extra_instruction: A line appended to the instructions (gather-only, JSON).

    Returns:
        ``[system: context, system: instructions, human: own inputs]`` (empty parts left
        out).
    """
    present = [k for k in spec.reads if k in state]
    shared_keys = sorted(k for k in present if shared is None or k in shared)
    own = [k for k in present if k not in shared_keys]
    out: list[BaseMessage] = []
    if shared_keys:
        body = "\n\n".join(_block(k, state[k]) for k in shared_keys)
        out.append(SystemMessage(f"{_CONTEXT_HEAD}\n\n{body}"))
    instructions = spec.instructions.strip()
    if extra_instruction:
        instructions += "\n\n" + extra_instruction
    out.append(SystemMessage(instructions))
    tail = [_block(k, state[k]) for k in own]
    if gathered:
        tail.append(_block("gathered data", gathered))
    if hint:
        tail.append(hint)
    tail.append(f"Write your answer for: {', '.join(spec.writes)}.")
    out.append(HumanMessage("\n\n".join(tail)))
    return out


def _text(message: Any) -> str:
    content = getattr(message, "content", message)
    return content if isinstance(content, str) else str(content)


def _tool_loop(
    llm: Any,
    tools: Sequence[BaseTool],
    messages: list[BaseMessage],
    kwargs: dict[str, Any],
    tool_choice: str = "auto",
) -> tuple[AIMessage, list[BaseMessage]]:
    """Run the model with tools until it answers in text (or :data:`MAX_TOOL_ROUNDS`).

    With ``tool_choice="required"`` every turn must call a tool; the loop gathers until
    a turn brings no call it has not run yet (or one turn before the limit), then asks
    for the answer (:data:`ANSWER_PROMPT`) in one turn with ``tool_choice="none"``.
    """
    by_name = {t.name: t for t in tools}
    forced = tool_choice == "required"
    bound = llm.bind_tools(list(tools), **({"tool_choice": "required"} if forced else {}))
    convo = list(messages)
    reply: AIMessage = AIMessage("")
    ran: set[str] = set()
    for _ in range(MAX_TOOL_ROUNDS - 1 if forced else MAX_TOOL_ROUNDS):
        reply = bound.invoke(convo, **kwargs)
        keys = {_call_key(c) for c in reply.tool_calls}
        if forced and not keys - ran:
            break  # nothing new to fetch: the answer comes next
        ran |= keys
        convo.append(reply)
        if not reply.tool_calls:
            return reply, convo
        for call in reply.tool_calls:
            convo.append(ToolMessage(_run_tool(by_name, call), tool_call_id=call["id"] or ""))
    if not forced:
        return reply, convo
    answer = llm.bind_tools(list(tools), tool_choice="none")
    convo.append(HumanMessage(ANSWER_PROMPT))
    reply = answer.invoke(convo, **kwargs)
    convo.append(reply)
    return reply, convo


def _call_key(call: Mapping[str, Any]) -> str:
    return json.dumps([call["name"], call["args"]], sort_keys=True, default=str)


def _run_tool(by_name: Mapping[str, BaseTool], call: Mapping[str, Any]) -> str:
    found = by_name.get(call["name"])
    if found is None:
        return f"error: no tool named {call['name']!r}"
    try:
        return str(found.invoke(call["args"]))
    except Exception as e:  # a failing tool is reported to the model
        return f"error: {type(e).__name__}: {e}"


def _outputs(spec: AgentSpec, text: str | None, parsed: Any) -> dict[str, Any]:
    if spec.output_schema is None:
        return {spec.writes[0]: text}
    if len(spec.writes) == 1:
        return {spec.writes[0]: parsed}
    data = parsed.model_dump() if isinstance(parsed, BaseModel) else dict(parsed)
    return {k: data.get(k) for k in spec.writes}


def _run(spec: AgentSpec, state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
    llm = spec.llm
    if llm is None:
        raise CapsuleConfigError(
            f"agent {spec.name!r} has no model: pass llm= to lc.agent()", code="bad_agent"
        )
    slot = SESSION.get()
    tier = slot.tier if slot is not None else "fine"
    md = config.get("metadata") or {}
    hidden = md.get(HIDDEN_READS_KEY) or ()
    if hidden:
        state = {k: v for k, v in state.items() if k not in hidden}
    shared = md.get(SHARED_READS_KEY)
    kwargs: dict[str, Any] = {}
    if spec.max_tokens is not None:
        kwargs["max_tokens"] = spec.max_tokens
    hint = md.get(GUIDANCE_KEY) if tier == "fine" else None
    schema = spec.output_schema
    json_hint = None
    if schema is not None and tier != "fine":
        json_hint = _JSON_HINT.format(schema=json.dumps(schema.model_json_schema()))

    if tier in ("standard", "two_phase"):
        gathered = None
        if tier == "two_phase" and spec.tools:
            gather = build_messages(
                spec, state, shared=shared, extra_instruction=GATHER_INSTRUCTION
            )
            reply, _ = _tool_loop(llm, spec.tools, gather, kwargs, spec.tool_choice)
            gathered = _text(reply)
        msgs = build_messages(
            spec, state, shared=shared, gathered=gathered, extra_instruction=json_hint
        )
        text = _text(llm.invoke(msgs, **kwargs))
        return _outputs(spec, text, _parsed(schema, text))

    # fine and sequential: the agent's own calls and tools
    msgs = build_messages(spec, state, shared=shared, hint=hint, extra_instruction=json_hint)
    if tier == "fine" and _has_context(msgs):  # a sequential call is re-laid by the capsule
        msgs, extra = cache_hints(llm, msgs, shared_messages=1)
        kwargs.update(extra)
    if schema is not None and tier == "fine" and not spec.tools:
        structured = llm.with_structured_output(schema).invoke(msgs, **kwargs)
        return _outputs(spec, None, structured)
    if spec.tools:
        reply, _ = _tool_loop(llm, spec.tools, msgs, kwargs, spec.tool_choice)
        text = _text(reply)
    else:
        text = _text(llm.invoke(msgs, **kwargs))
    return _outputs(spec, text, _parsed(schema, text))


def _has_context(messages: Sequence[BaseMessage]) -> bool:
    first = messages[0].content if messages else ""
    return isinstance(first, str) and first.startswith(_CONTEXT_HEAD)


def _parsed(schema: type[BaseModel] | None, text: str) -> BaseModel | None:
    """The reply validated against ``schema`` (the JSON object in it; code fences and
    prose around it dropped); raises when it does not validate."""
    if schema is None:
        return None
    start, end = text.find("{"), text.rfind("}")
    return schema.model_validate_json(text[start : end + 1] if 0 <= start < end else text)


def agent(
    instructions: str,
    *,
    reads: Sequence[str],
    writes: str | Sequence[str],
    tools: Sequence[Any] = (),
    output_schema: type[BaseModel] | None = None,
    llm: BaseChatModel | None = None,
    name: str | None = None,
    max_tokens: int | None = None,
    context: str = "predecessor_only",
    tool_choice: str = "auto",
) -> AgentNode:
    """Declare an agent; returns an ordinary LangGraph node function.

    The node works in any graph, capsulized or not: ``builder.add_node(node)`` (its
    name is ``name``, else the first key it writes). Its prompt holds only the state
    keys in ``reads``; see the module docstring for the layout and the tiers.

    Args:
        instructions: What the agent does (its own system message).
        reads: State keys it reads, in the order its own tail lists them.
        writes: The state key it writes (or keys: with ``output_schema``, one per field).
        tools: LangChain tools (``@tool`` functions or ``BaseTool``); plain functions
            are turned into tools.
        output_schema: A pydantic model for a structured answer.
        llm: The chat model (wrapped in :class:`CapsuleChatModel` if it is not one, so
            a capsule group can answer its calls).
        name: Node name (default: the first key it writes).
        max_tokens: Output budget of each of its calls.
        context: In a linear chain inside a capsule graph, ``predecessor_only`` (the
            default) hides declared reads written by agents further up the chain;
            ``full`` keeps every declared read.
        tool_choice: How the tool loop asks for calls. ``auto`` (the default): the
            model calls tools until it answers in text. ``required``: every turn must
            call a tool, until a turn brings no call not yet run; then one more turn,
            with tool use off, asks for the answer. For models that answer from memory
            instead of calling (the embedded models do; their client forces the call).

    Returns:
        The node function; its :class:`AgentSpec` is at ``node.capsule_agent``.

    Raises:
        CapsuleConfigError: ``bad_agent`` for empty instructions, reads or writes, a
            key both read and written, several writes without a schema, or write keys
            that are not fields of the schema.

    Example:
        >>> from langgraph_capsules.testing import ScriptedChatModel
        >>> node = agent("Summarise the document.", reads=["doc"], writes="summary",
        ...              llm=ScriptedChatModel(rules={"Summarise": "A summary."}))
        >>> node({"doc": "Some text."}, {})
        {'summary': 'A summary.'}
    """
    reads_t = (reads,) if isinstance(reads, str) else tuple(reads)
    writes_t = (writes,) if isinstance(writes, str) else tuple(writes)
    problems = []
    if not instructions or not instructions.strip():
        problems.append("instructions are empty")
    if not reads_t:
        problems.append("reads is empty (declare the state keys the agent reads)")
    if not writes_t:
        problems.append("writes is empty (declare the state key the agent writes)")
    if set(reads_t) & set(writes_t):
        problems.append(f"keys both read and written: {sorted(set(reads_t) & set(writes_t))}")
    if len(writes_t) > 1 and output_schema is None:
        problems.append("several writes need an output_schema with one field per key")
    if output_schema is not None:
        missing = [k for k in writes_t if k not in output_schema.model_fields]
        if len(writes_t) > 1 and missing:
            problems.append(f"writes {missing} are not fields of {output_schema.__name__}")
    if max_tokens is not None and max_tokens < 1:
        problems.append("max_tokens must be >= 1")
    if context not in ("predecessor_only", "full"):
        problems.append(f"context must be 'predecessor_only' or 'full', got {context!r}")
    if tool_choice not in TOOL_CHOICES:
        problems.append(f"tool_choice must be 'auto' or 'required', got {tool_choice!r}")
    elif tool_choice == "required" and not tools:
        problems.append("tool_choice='required' needs tools")
    node_name = name or (writes_t[0] if writes_t else "agent")
    if problems:
        raise CapsuleConfigError(
            f"agent {node_name!r}: " + "; ".join(problems), code="bad_agent", node=node_name
        )
    model = llm
    if model is not None and not isinstance(model, CapsuleChatModel):
        model = CapsuleChatModel(model)
    spec = AgentSpec(
        name=node_name,
        instructions=instructions,
        reads=reads_t,
        writes=writes_t,
        tools=tuple(t if isinstance(t, BaseTool) else as_tool(t) for t in tools),
        output_schema=output_schema,
        llm=model,
        max_tokens=max_tokens,
        context=context,
        tool_choice=tool_choice,
    )

    def node(state: Any, config: RunnableConfig) -> dict[str, Any]:
        values = state.model_dump() if isinstance(state, BaseModel) else state
        return _run(spec, values, config)

    node.__name__ = node_name
    node.__qualname__ = node_name
    node.__doc__ = f"Declared agent {node_name!r}: reads {list(reads_t)}, writes {list(writes_t)}."
    setattr(node, AGENT_ATTR, spec)
    return cast(AgentNode, node)


def agent_spec(node: Any) -> AgentSpec | None:
    """The :class:`AgentSpec` of a node made by :func:`agent` (``None`` otherwise)."""
    func = getattr(node, "func", node)  # a RunnableCallable wraps the function
    spec = getattr(func, AGENT_ATTR, None)
    return spec if isinstance(spec, AgentSpec) else None
