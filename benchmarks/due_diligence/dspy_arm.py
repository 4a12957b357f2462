"""The DSPy arms of the due-diligence benchmark: the pipeline as a DSPy program.

**Program.** :class:`DueDiligenceProgram` holds one module per agent, in pipeline order:
``dspy.ReAct`` with the two financial tools for each researcher (``dspy.Tool`` over the
very same LangChain tools), ``dspy.ChainOfThought`` for scoping, the analysts and the
writer. Each module's signature has the agent's instructions as its docstring, the
agent's declared reads as input fields and its output key as the output field (read
from the declared pipeline, like the hand-written LangGraph app), so every arm answers
the same questions from the same inputs. The agents of one pipeline step (the three
researchers, the three analysts) run concurrently in threads, as LangGraph runs each
group's nodes, so wall times compare like with like; the steps run in order.

**Models.** :func:`endpoint_lm` points ``dspy.LM("openai/<model>")`` at the same
OpenAI-compatible endpoint as the other arms (the embedded llama.cpp server's base URL,
model name, ``max_tokens``, temperature and sampling). :class:`ScriptedDSPyLM` is a
``dspy.BaseLM`` for offline runs: it reads DSPy's chat-adapter prompt (instructions,
input fields, the ReAct trajectory), asks the project's scripted due-diligence model
(:func:`.scripted.scripted_due_diligence`) what a careful analyst would answer or which
tool it would call next, and writes that in DSPy's field format.

**Token accounting.** Both LMs record every call they make (:attr:`RecordingLM.calls`):
input, cached input and output tokens read from the LiteLLM response's ``usage``
(``prompt_tokens``, ``prompt_tokens_details.cached_tokens``, ``completion_tokens``),
the ``finish_reason``, the ``max_tokens`` sent and the stage (agent) that made it. The
scripted LM answers with a LiteLLM ``ModelResponse`` carrying the scripted model's usage,
so the dry run and the live run are counted by the same code.

**Compilation.** :func:`compile_program` runs ``BootstrapFewShot`` (:class:`CompileBudget`
states the budget) on development companies only: a held-out company
(:data:`.dataset.HELD_OUT`) raises before the optimizer starts. The compiled program is
saved as JSON with a sidecar that records the budget, the companies and what compiling
cost (:func:`save_compiled`, :func:`load_compiled`).

Importing this module imports DSPy and LiteLLM (several seconds): the runner imports it
only when a DSPy arm runs. Import it before DSPy or LiteLLM: it tells LiteLLM to use its
bundled model cost map and fetch nothing (``LITELLM_LOCAL_MODEL_COST_MAP``,
``LITELLM_OFFLINE_MODE``), which LiteLLM reads at import, and puts DSPy's disk cache in
a temporary directory; the LMs run with DSPy's cache off, so every call reaches the
model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from dataclasses import asdict, dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

# LiteLLM reads these when it is imported: its bundled model cost map, no downloads.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("DSPY_CACHEDIR", str(Path(tempfile.gettempdir()) / "capsules-dspy-cache"))

import dspy
import litellm
from dspy.utils.exceptions import AdapterParseError
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import BaseTool

from benchmarks.due_diligence.dataset import (
    DATA_DIR,
    HELD_OUT,
    development_ids,
    find_company,
)
from benchmarks.due_diligence.handwritten import AGENTS, MAX_TOOL_ROUNDS, agent_specs
from benchmarks.due_diligence.judge import score_run
from benchmarks.due_diligence.pipeline import DD_GROUPS, INPUTS, initial_state
from benchmarks.due_diligence.scripted import scripted_due_diligence
from benchmarks.due_diligence.tools import FINANCIAL_TOOLS
from langgraph_capsules.agents import AgentSpec
from langgraph_capsules.testing import ScriptedChatModel

__all__ = [
    "PROGRAMS_DIR",
    "CompileBudget",
    "DueDiligenceProgram",
    "RecordingLM",
    "ScriptedDSPyLM",
    "StaleProgramError",
    "call_record",
    "compile_program",
    "endpoint_lm",
    "load_compiled",
    "program_path",
    "save_compiled",
    "specs_digest",
    "stage",
]

PROGRAMS_DIR: Path = DATA_DIR / "dspy"
"""Where compiled programs are saved (one JSON per model, plus its ``.compile.json``)."""

_STAGE: ContextVar[str | None] = ContextVar("dd_dspy_stage", default=None)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Attribute the LM calls made inside the block to the agent ``name``."""
    token = _STAGE.set(name)
    try:
        yield
    finally:
        _STAGE.reset(token)


# --------------------------------------------------------------------------- accounting


def call_record(response: Any, max_tokens: Any) -> dict[str, Any]:
    """One call as the benchmark counts it, from a LiteLLM (OpenAI-shaped) response."""
    usage = getattr(response, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    choices = getattr(response, "choices", None) or []
    return {
        "node": _STAGE.get(),
        "input_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
        "cached_tokens": int(cached or 0),
        "output_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
        "finish_reason": getattr(choices[0], "finish_reason", None) if choices else None,
        "max_tokens": max_tokens,
    }


class _Recording:
    """Mixin: keep :func:`call_record` of every call (thread-safe)."""

    kwargs: dict[str, Any]

    def _init_log(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()

    def _record(self, response: Any, kwargs: dict[str, Any]) -> Any:
        rec = call_record(response, kwargs.get("max_tokens", self.kwargs.get("max_tokens")))
        with self._log_lock:
            self.calls.append(rec)
        return response


class RecordingLM(dspy.LM, _Recording):  # type: ignore[misc]
    """``dspy.LM`` (LiteLLM) that records each call's usage and finish reason."""

    def __init__(self, model: str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._init_log()

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        return self._record(super().forward(prompt=prompt, messages=messages, **kwargs), kwargs)


def endpoint_lm(llm: BaseChatModel) -> RecordingLM:
    """A DSPy LM on the endpoint, model and generation settings of a ``ChatOpenAI``
    client (what the benchmark's other arms call), with DSPy's cache off.

    Args:
        llm: The ``ChatOpenAI`` (or subclass, e.g. the embedded server's client).

    Returns:
        ``RecordingLM("openai/<model>", api_base=<its base URL>, api_key="local", ...)``;
        without a base URL (``openai:MODEL``) LiteLLM reads the ``OPENAI_*`` variables.
    """
    fields = vars(llm)
    kwargs: dict[str, Any] = {
        "temperature": fields.get("temperature") or 0.0,
        "max_tokens": fields.get("max_tokens") or 512,
        "cache": False,
        "num_retries": 0,
    }
    base = fields.get("openai_api_base")
    if base:
        kwargs.update(api_base=base, api_key="local")
    if fields.get("extra_body"):
        kwargs["extra_body"] = dict(fields["extra_body"])
    return RecordingLM(f"openai/{fields['model_name']}", **kwargs)


# --------------------------------------------------------------------------- scripted LM

_HEADER = re.compile(r"^\[\[ ## (\w+) ## \]\]$", re.M)
_FIELD_LIST = re.compile(r"^\d+\. `(\w+)`", re.M)
_WANTED = re.compile(r"`\[\[ ## (\w+) ## \]\]`")
_OBJECTIVE = "your objective is:"
_STEP = re.compile(r"^\[\[ ## (thought|tool_name|tool_args|observation)_(\d+) ## \]\]$", re.M)


@dataclass
class _Prompt:
    """What a chat-adapter prompt asks: instructions, input values, output fields."""

    instructions: str
    inputs: dict[str, str]
    outputs: list[str]


def _content(message: dict[str, Any]) -> str:
    content = message.get("content", "")
    return content if isinstance(content, str) else str(content)


def parse_prompt(messages: Sequence[dict[str, Any]]) -> _Prompt:
    """Read DSPy's ``ChatAdapter`` prompt: the system message's field lists and
    instructions, and the *last* user message's input values (demos come before it)."""
    system = next((_content(m) for m in messages if m.get("role") == "system"), "")
    last = next((_content(m) for m in reversed(messages) if m.get("role") == "user"), "")
    head, _, tail = system.partition("Your output fields are:")
    input_names = _FIELD_LIST.findall(head)
    instructions = "\n".join(ln.strip() for ln in system.partition(_OBJECTIVE)[2].splitlines())
    body, _, request = last.rpartition("Respond with the corresponding output fields")
    outputs = [f for f in _WANTED.findall(request) if f != "completed"]
    outputs = outputs or [f for f in _FIELD_LIST.findall(tail.partition("All interactions")[0])]
    inputs: dict[str, str] = {}
    marks = [m for m in _HEADER.finditer(body) if m.group(1) in input_names]
    for m, nxt in zip(marks, [*marks[1:], None], strict=False):
        end = nxt.start() if nxt is not None else len(body)
        inputs[m.group(1)] = body[m.end() : end].strip()
    return _Prompt(instructions.strip(), inputs, outputs)


def _trajectory(text: str) -> list[dict[str, str]]:
    """ReAct's trajectory field as steps: thought, tool_name, tool_args, observation."""
    steps: dict[int, dict[str, str]] = {}
    marks = list(_STEP.finditer(text))
    for m, nxt in zip(marks, [*marks[1:], None], strict=False):
        end = nxt.start() if nxt is not None else len(text)
        steps.setdefault(int(m.group(2)), {})[m.group(1)] = text[m.end() : end].strip()
    return [steps[i] for i in sorted(steps)]


def _args(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class ScriptedDSPyLM(dspy.BaseLM, _Recording):  # type: ignore[misc]
    """A ``dspy.BaseLM`` answering from the scripted due-diligence model, offline.

    Each DSPy call is one call of an inner :class:`ScriptedChatModel` (``.chat``) on
    DSPy's real messages, so its usage (tokens estimated over the whole chat-adapter
    prompt, demos included; a simulated prefix cache) and ``finish_reason`` are what the
    scripted model reports; the reply is written in DSPy's field format:

    * a ReAct step (outputs ``next_thought``, ``next_tool_name``, ``next_tool_args``):
      the scripted model's next tool call, one per step (it plans
      ``list_metrics``, then one ``query_financials`` per metric), or ``finish``;
    * any other call: a one-line ``reasoning`` and the scripted answer to the agent's
      instructions and inputs (a ReAct extract step also sees the trajectory's
      observations, i.e. the tool results).

    Example:
        >>> lm = ScriptedDSPyLM()
        >>> with dspy.context(lm=lm):
        ...     out = DueDiligenceProgram()(**initial_state("kelvara"))
        >>> out.memo.splitlines()[0], len(lm.calls) == len(lm.chat.calls)
        ('Investment memo: Kelvara Sensing AB', True)
    """

    def __init__(self, scripted: ScriptedChatModel | None = None, max_tokens: int = 512) -> None:
        super().__init__("scripted-due-diligence", temperature=0.0, max_tokens=max_tokens)
        self.base = scripted or scripted_due_diligence()
        self.chat = ScriptedChatModel(
            respond=self._reply, model_name="scripted-due-diligence (DSPy prompts)"
        )
        self._local = threading.local()
        self._init_log()

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        messages = messages or [{"role": "user", "content": prompt}]
        wire: list[BaseMessage] = []
        for m in messages:
            kind = {"system": SystemMessage, "assistant": AIMessage}.get(m["role"], HumanMessage)
            wire.append(kind(_content(m)))
        self._local.prompt = parse_prompt(messages)
        limit = kwargs.get("max_tokens", self.kwargs.get("max_tokens"))
        reply = self.chat.invoke(wire, max_tokens=limit)
        usage = reply.usage_metadata or {}
        details = usage.get("input_token_details") or {}
        response = litellm.ModelResponse(
            model=self.model,
            choices=[
                litellm.Choices(
                    index=0,
                    finish_reason=reply.response_metadata.get("finish_reason", "stop"),
                    message=litellm.Message(role="assistant", content=str(reply.content)),
                )
            ],
            usage=litellm.Usage(
                prompt_tokens=usage.get("input_tokens", 0),
                completion_tokens=usage.get("output_tokens", 0),
                total_tokens=usage.get("total_tokens", 0),
                prompt_tokens_details={"cached_tokens": details.get("cache_read", 0)},
            ),
        )
        return self._record(response, kwargs)

    # ------------------------------------------------------------------ answering
    def _agent_messages(self, p: _Prompt) -> list[BaseMessage]:
        """The agent's prompt as the scripted model reads it (``## key`` blocks)."""
        blocks = [f"## {k}\n{v}" for k, v in p.inputs.items() if k != "trajectory"]
        steps = _trajectory(p.inputs.get("trajectory", ""))
        seen = [s["observation"] for s in steps if s.get("observation")]
        if seen:
            blocks.append("## tool results\n" + "\n".join(seen))
        return [SystemMessage(p.instructions), HumanMessage("\n\n".join(blocks))]

    def _next_call(self, p: _Prompt) -> dict[str, Any] | None:
        """Replay the trajectory against the scripted model's plan; the first planned
        call not made yet (``None``: finish)."""
        plan = self.base.tool_calls_for
        if plan is None:
            return None
        convo = self._agent_messages(_Prompt(p.instructions, {**p.inputs, "trajectory": ""}, []))
        steps = _trajectory(p.inputs.get("trajectory", ""))
        done = [s for s in steps if s.get("tool_name") != "finish"]
        while True:
            planned = plan(convo) or []
            batch, done = done[: len(planned)], done[len(planned) :]
            if len(batch) < len(planned):
                return planned[len(batch)]
            if not planned:
                return None
            ids = [f"call_{len(convo)}_{i}" for i in range(len(planned))]
            convo.append(
                AIMessage(
                    "",
                    tool_calls=[
                        {"name": c["name"], "args": c["args"], "id": i}
                        for c, i in zip(planned, ids, strict=True)
                    ],
                )
            )
            for step, i in zip(batch, ids, strict=True):
                convo.append(ToolMessage(step.get("observation", ""), tool_call_id=i))

    def _reply(self, _text: str) -> str:
        p: _Prompt = self._local.prompt
        if "next_tool_name" in p.outputs:
            call = self._next_call(p)
            name, args = ("finish", {}) if call is None else (call["name"], call["args"])
            thought = "Every figure is in the trajectory." if call is None else f"Call {name}."
            fields = {"next_thought": thought, "next_tool_name": name}
            fields["next_tool_args"] = json.dumps(args)
        else:
            msgs = self._agent_messages(p)
            answer = self.base.answer_for("\n\n".join(str(m.content) for m in msgs))
            fields = {name: answer for name in p.outputs}
            if "reasoning" in fields:
                fields["reasoning"] = "I follow the instructions with the given inputs."
        parts = [f"[[ ## {k} ## ]]\n{v}" for k, v in fields.items()]
        return "\n\n".join([*parts, "[[ ## completed ## ]]"])


# --------------------------------------------------------------------------- program


def _tool(t: BaseTool) -> dspy.Tool:
    """A DSPy tool over a LangChain tool, called synchronously (``tool.invoke``)."""
    converted = dspy.Tool.from_langchain(t)
    converted.func = lambda **kwargs: t.invoke(kwargs)
    return converted


def _signature(spec: AgentSpec) -> type[dspy.Signature]:
    fields: dict[str, Any] = {k: dspy.InputField() for k in spec.reads}
    fields[spec.writes[0]] = dspy.OutputField()
    return dspy.Signature(fields, spec.instructions)


class DueDiligenceProgram(dspy.Module):  # type: ignore[misc]
    """The due-diligence pipeline as a DSPy program (one module per agent).

    Call it with the input state (:func:`.pipeline.initial_state`: company, mandate and
    the researchers' tasks); it returns a ``dspy.Prediction`` holding every agent's
    output key and ``failed_stages``: the agents whose reply no DSPy adapter could parse
    (their output is empty and the run goes on, so the judge scores what is left, as a
    LangGraph run scores an agent that wrote nothing useful; their calls are counted).
    """

    def __init__(self, max_iters: int = MAX_TOOL_ROUNDS) -> None:
        super().__init__()
        specs = agent_specs()
        tools = [_tool(t) for t in FINANCIAL_TOOLS]
        self.plan = [(name, list(specs[name].reads), specs[name].writes[0]) for name in AGENTS]
        for name in AGENTS:
            spec = specs[name]
            module = (
                dspy.ReAct(_signature(spec), tools=tools, max_iters=max_iters)
                if spec.tools
                else dspy.ChainOfThought(_signature(spec))
            )
            setattr(self, name, module)

    def steps(self) -> list[list[tuple[str, list[str], str]]]:
        """The plan in pipeline steps: each capsule group of :data:`.pipeline.DD_GROUPS`
        (its agents read nothing another member writes) is one step, any other agent a
        step of its own."""

        def step_of(entry: tuple[str, list[str], str]) -> str:
            return next((g for g, members in DD_GROUPS.items() if entry[0] in members), entry[0])

        return [list(entries) for _, entries in groupby(self.plan, key=step_of)]

    def _stage(self, name: str, reads: list[str], state: dict[str, str]) -> Any:
        with stage(name):
            return getattr(self, name)(**{k: state.get(k, "") for k in reads})

    def forward(self, **inputs: str) -> dspy.Prediction:
        missing = [k for k in INPUTS if k not in inputs]
        if missing:
            raise TypeError(f"missing inputs {missing}; pass initial_state(company)")
        state: dict[str, str] = dict(inputs)
        failed: list[str] = []
        for step in self.steps():
            with ThreadPoolExecutor(max_workers=len(step)) as pool:
                # each thread runs in a copy of this context: DSPy's settings (LM, trace)
                # and the stage label travel with it
                futures = [
                    pool.submit(copy_context().run, self._stage, name, reads, dict(state))
                    for name, reads, _ in step
                ]
                for (name, _, writes), future in zip(step, futures, strict=True):
                    try:
                        pred = future.result()
                    except AdapterParseError:  # the reply fit no adapter: nothing
                        failed.append(name)
                        state[writes] = ""
                        continue
                    state[writes] = str(getattr(pred, writes, "") or "")
        outputs = {k: v for k, v in state.items() if k not in inputs}
        return dspy.Prediction(**outputs, failed_stages=failed)


# --------------------------------------------------------------------------- compiling


@dataclass(frozen=True, kw_only=True)
class CompileBudget:
    """The optimizer and its budget (stated in the report)."""

    optimizer: str = "BootstrapFewShot"
    max_bootstrapped_demos: int = 2
    """Demos per predictor, from traces of runs the metric passed (BootstrapFewShot
    stops after this many passing runs)."""
    max_labeled_demos: int = 0
    """No labelled demos: the gold answers stay with the judge."""
    max_rounds: int = 1
    metric_threshold: float = 0.75
    """A run's gold-judge quality must reach this (the paper's quality floor)."""
    companies: tuple[str, ...] = field(default_factory=lambda: tuple(development_ids()))
    """The training companies, in order (development companies only)."""

    def text(self) -> str:
        """One line for the report."""
        return (
            f"{self.optimizer}: up to {self.max_bootstrapped_demos} bootstrapped demos per "
            f"predictor, {self.max_labeled_demos} labelled, {self.max_rounds} round, metric "
            f"gold-judge quality >= {self.metric_threshold}, trainset "
            f"{', '.join(self.companies)}"
        )


def compile_program(
    lm: Any, budget: CompileBudget | None = None
) -> tuple[DueDiligenceProgram, dict[str, Any]]:
    """Compile the program with ``BootstrapFewShot`` on development companies.

    Args:
        lm: The DSPy LM (a :class:`RecordingLM` or :class:`ScriptedDSPyLM`; its calls
            during compiling are counted).
        budget: The budget (default :class:`CompileBudget`).

    Returns:
        The compiled program and a record of the compile: the budget, demos per
        predictor, the companies the teacher ran and their quality (it stops after
        ``max_bootstrapped_demos`` passing runs), calls, tokens and wall time.

    Raises:
        ValueError: when the trainset holds a held-out or unknown company.
    """
    budget = budget or CompileBudget()
    bad = [c for c in budget.companies if c in HELD_OUT or find_company(c) is None]
    if bad:
        raise ValueError(
            f"compile trainset {list(budget.companies)} holds held-out or unknown companies "
            f"{bad}; use development companies only: {development_ids()}"
        )
    trainset = [
        dspy.Example(company_id=c, **initial_state(c)).with_inputs(*INPUTS)
        for c in budget.companies
    ]
    scored: list[tuple[str, float]] = []

    def metric(example: dspy.Example, pred: dspy.Prediction, trace: Any = None) -> float:
        quality = float(score_run(example.company_id, dict(pred.items()))["quality"])
        scored.append((example.company_id, round(quality, 4)))
        return quality

    optimizer = dspy.BootstrapFewShot(
        metric=metric,
        metric_threshold=budget.metric_threshold,
        max_bootstrapped_demos=budget.max_bootstrapped_demos,
        max_labeled_demos=budget.max_labeled_demos,
        max_rounds=budget.max_rounds,
    )
    before = len(lm.calls)
    t0 = time.perf_counter()
    with dspy.context(lm=lm):
        program = optimizer.compile(DueDiligenceProgram(), trainset=trainset)
    calls = lm.calls[before:]
    info = {
        "budget": asdict(budget),
        "budget_text": budget.text(),
        "model": getattr(lm, "model", "?"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "specs_digest": specs_digest(),
        "demos": {name: len(p.demos) for name, p in program.named_predictors()},
        "scored": [{"company": c, "quality": q} for c, q in scored],
        "calls": len(calls),
        "input_tokens": sum(c["input_tokens"] for c in calls),
        "cached_tokens": sum(c["cached_tokens"] for c in calls),
        "output_tokens": sum(c["output_tokens"] for c in calls),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    return program, info


def specs_digest() -> str:
    """A short fingerprint of every agent's instructions, inputs, output and tools.

    A compiled program saves its predictors' instructions; loaded after the pipeline's
    prompts changed, it would run the old prompts. The compile record keeps this digest
    and :func:`load_compiled` refuses a program whose digest differs.
    """
    specs = agent_specs()
    plan = [
        [
            n,
            specs[n].instructions,
            list(specs[n].reads),
            list(specs[n].writes),
            sorted(t.name for t in specs[n].tools),
        ]
        for n in AGENTS
    ]
    return hashlib.sha256(json.dumps(plan).encode()).hexdigest()[:16]


def program_path(model_spec: str, directory: Path = PROGRAMS_DIR) -> Path:
    """``<directory>/<model>.json``, the compiled program of one ``--model``."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", model_spec).strip("-") or "model"
    return directory / f"{slug}.json"


def save_compiled(program: DueDiligenceProgram, info: dict[str, Any], path: Path) -> None:
    """Save the program's state (demos, instructions) as JSON, and ``info`` beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path))
    path.with_suffix(".compile.json").write_text(json.dumps(info, indent=2) + "\n")


class StaleProgramError(RuntimeError):
    """A saved program was compiled for other agent prompts than the pipeline's."""


def load_compiled(path: Path) -> tuple[DueDiligenceProgram, dict[str, Any]] | None:
    """The program saved at ``path`` and its compile record (``None`` if absent).

    Raises:
        StaleProgramError: when the record's :func:`specs_digest` (or the record) is
            missing or differs from the pipeline's: compile again (``--compile``).
    """
    if not path.is_file():
        return None
    sidecar = path.with_suffix(".compile.json")
    info = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    current = specs_digest()
    if info.get("specs_digest") != current:
        raise StaleProgramError(
            f"{path} was compiled for other agent prompts (specs digest "
            f"{info.get('specs_digest')!r}, the pipeline's is {current!r}); "
            "compile it again with --compile"
        )
    program = DueDiligenceProgram()
    program.load(str(path))
    return program, info
