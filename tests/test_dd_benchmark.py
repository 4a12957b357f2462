"""``capsules bench dd``: the due-diligence pipeline against DSPy, offline.

The scripted dry run of every arm (through the ``capsules`` command), the hand-written
LangGraph app, DSPy's token accounting (scripted replies and LiteLLM responses), the
compile path (save, reload, the saved program used by the runner) and the rule that
held-out companies never reach the compiler. No network and no model: DSPy's LMs are the
scripted ``ScriptedDSPyLM``, or a ``RecordingLM`` calling a fake endpoint on localhost.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
from langchain_core.messages import ToolMessage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import langgraph_capsules as lc  # noqa: E402
from benchmarks.due_diligence import runner  # noqa: E402
from benchmarks.due_diligence.dataset import HELD_OUT, development_ids  # noqa: E402
from benchmarks.due_diligence.handwritten import (  # noqa: E402
    AGENTS,
    ANSWER_PROMPT,
    agent_specs,
    build_handwritten,
)
from benchmarks.due_diligence.judge import score_run  # noqa: E402
from benchmarks.due_diligence.pipeline import (  # noqa: E402
    ANALYSTS,
    DD_GROUPS,
    RESEARCHERS,
    initial_state,
)
from benchmarks.due_diligence.report import ARMS  # noqa: E402
from benchmarks.due_diligence.scripted import scripted_due_diligence  # noqa: E402
from langgraph_capsules.cli import main as capsules_main  # noqa: E402
from langgraph_capsules.testing import ScriptedChatModel  # noqa: E402

DSPY_CALLS_PER_RUN = 1 + 3 * (4 + 1) + 3 + 1
"""Scoping; per researcher 4 ReAct steps (list_metrics, two queries, finish) and the
extract call; three analysts; the writer."""


@pytest.fixture(scope="module")
def dspy_arm() -> ModuleType:
    """The DSPy arm module (imports DSPy and LiteLLM once, for the tests that use them;
    it must come first: it tells LiteLLM to stay offline before LiteLLM is imported)."""
    from benchmarks.due_diligence import dspy_arm as module

    return module


def _tiny_budget(dspy_arm: ModuleType, *companies: str) -> Any:
    return dspy_arm.CompileBudget(max_bootstrapped_demos=1, companies=companies or ("corvanta",))


# ------------------------------------------------------------------------ the dry run
def test_scripted_dry_run_of_every_arm_writes_results_and_report(
    tmp_path: Path, dspy_arm: ModuleType
) -> None:
    out, programs = tmp_path / "dd", tmp_path / "programs"
    argv = ["bench", "dd", "--model", "scripted", "--out", str(out), "--runs", "2"]
    argv += ["--arms", "all", "--programs-dir", str(programs)]
    argv += ["--compile-demos", "1", "--compile-company", "corvanta"]
    assert capsules_main(argv) == 0

    data = json.loads((out / "results.json").read_text())
    records = data["records"]
    assert len(records) == 2 * 2 * len(ARMS)  # runs x held-out companies x arms
    assert {r["arm"] for r in records} == set(ARMS)
    assert {r["company"] for r in records} == set(HELD_OUT)
    assert all(r["held_out"] and r["error"] is None for r in records)
    columns = {
        "arm", "label", "company", "held_out", "run", "model", "calls", "input_tokens",
        "cached_tokens", "output_tokens", "call_tokens", "call_finishes", "finish_reasons",
        "truncated_calls", "finished_calls", "wall_s", "quality", "quality_parts",
        "tokens_per_group", "group_tiers", "failed_stages", "error",
    }  # fmt: skip
    for r in records:
        assert columns <= set(r), columns - set(r)
        # the per-call records add up to the run's totals, for every arm alike
        assert len(r["call_tokens"]) == r["calls"] == r["finished_calls"]
        assert [sum(c[i] for c in r["call_tokens"]) for i in range(3)] == [
            r["input_tokens"],
            r["cached_tokens"],
            r["output_tokens"],
        ]
        assert r["finish_reasons"] == {"stop": r["calls"]} and r["failed_stages"] == []

    by_arm = {a: [r for r in records if r["arm"] == a] for a in ARMS}
    # what the scripted model does: tools kept -> every figure, in every arm: declared
    # compound merges its tool group in two_phase (its researchers gather with their
    # tools first), not in standard, which would drop them
    for arm in ("lg", "capsules_fine", "capsules_compound", "declared_fine", "declared_compound"):
        assert all(r["quality"] == 1.0 for r in by_arm[arm]), arm
    assert all(r["quality"] == 1.0 for r in by_arm["dspy"])
    declared = by_arm["declared_compound"]
    assert {(r["group_tiers"]["research"], r["group_tiers"]["analysis"]) for r in declared} == {
        ("two_phase", "standard")
    }
    # scoping, 3 gather loops x 4 turns, one merged call per group, the writer
    assert {r["calls"] for r in declared} == {1 + 3 * 4 + 2 + 1}
    # 1 + 3 x (3 gather turns, the last with nothing new, + the answer) + 3 + 1
    assert {r["calls"] for r in by_arm["lg"]} == {17}
    assert {r["calls"] for r in by_arm["dspy"]} == {DSPY_CALLS_PER_RUN}
    assert {r["calls"] for r in by_arm["dspy_compiled"]} == {DSPY_CALLS_PER_RUN}
    assert set(by_arm["dspy"][0]["tokens_per_group"]) == {
        "scoping",
        "research",
        "analysis",
        "writer",
    }
    # the compiled program's demos are in its prompts
    for plain, compiled in zip(by_arm["dspy"], by_arm["dspy_compiled"], strict=True):
        assert compiled["input_tokens"] > plain["input_tokens"]
    assert {r["group_tiers"]["research"] for r in by_arm["capsules_compound"]} == {"standard"}

    summary = data["summary"]
    assert summary["references"] == ["dspy", "dspy_compiled", "lg"]
    versus = summary["versus"]["dspy"]["capsules_fine"]
    assert versus["total_ratio"] is not None and versus["total_ratio"] < 1.0
    assert summary["mdd"] == 0.0  # the scripted model repeats itself exactly
    assert any(g["goal"].startswith("declared compound vs DSPy") for g in summary["goals"])
    assert data["meta"]["dspy_compile"]["budget"]["companies"] == ["corvanta"]

    report = (out / "report.md").read_text()
    header = next(ln for ln in report.splitlines() if ln.startswith("| arm | input tok |"))
    assert header.startswith("| arm | input tok | cached tok | output tok | total tok | calls |")
    assert "| openai gpt-4.1-mini $/run | anthropic claude-sonnet-4-6 $/run |" in header
    assert "| total vs DSPy uncompiled / DSPy compiled / LG hand-written |" in header
    for label in ARMS.values():
        assert f"\n| {label} | " in report
    assert "BootstrapFewShot: up to 1 bootstrapped demos per predictor" in report
    assert "trainset corvanta" in report and "Goals (issue 13)" in report
    assert "runs per arm and company: 2\n" in report
    assert (out / "quality_vs_tokens.png").stat().st_size > 0
    assert (programs / "scripted.json").is_file()  # compiled once, saved for the next run


def test_the_auto_arm_reports_the_tier_each_group_settles_on(tmp_path: Path) -> None:
    """Issue 13's goal names the tier the controller settles on: the auto arm's report
    gives each group's tier run by run (fine, the shadow switch run, then standard with
    its gate reading) and the input tokens of each run, shadow calls included."""
    out = tmp_path / "dd"
    argv = ["bench", "dd", "--model", "scripted", "--out", str(out), "--runs", "4"]
    assert capsules_main([*argv, "--arms", "auto", "--company", "quorvia"]) == 0
    records = json.loads((out / "results.json").read_text())["records"]
    tiers = [r["group_tiers"]["research"] for r in records]
    assert tiers == ["fine", "fine", "fine+shadow:standard", "standard"]
    report = (out / "report.md").read_text()
    assert "Auto arm, quorvia: tier per group over runs" in report
    for group in ("research", "analysis"):
        assert f"| {group} | fine | fine | fine+shadow:standard | standard (1.00) |" in report
    tokens = " | ".join(f"{r['input_tokens']:,}" for r in records)
    assert f"| input tokens | {tokens} |" in report
    shadow_run = records[2]["input_tokens"]
    assert shadow_run > records[0]["input_tokens"] > records[3]["input_tokens"]


def test_a_goal_needs_the_quality_interval_inside_the_mdd_too() -> None:
    from benchmarks.due_diligence import report

    def goal(mean: float, ci: list[float] | None, ratio: float = 0.5) -> Any:
        paired = {"mean": mean, "ci95": ci}
        versus = {"dspy": {"capsules_compound": {"total_ratio": ratio, "paired": paired}}}
        (only,) = report._goals({"mdd": 0.05, "versus": versus})
        return only["met"]

    assert goal(-0.03, [-0.04, -0.01]) is True
    assert goal(-0.03, [-0.14, +0.09]) is False  # the mean is inside, its interval is not
    assert goal(-0.06, [-0.07, -0.05]) is False
    assert goal(+0.02, None) is True  # one company: no interval, the mean decides
    assert goal(+0.02, [0.0, 0.04], ratio=0.8) is False  # tokens above the 0.75 share


# ------------------------------------------------------------------------ LangGraph arm
def test_the_hand_written_app_has_one_node_per_agent_and_a_tool_loop() -> None:
    llm = scripted_due_diligence()
    builder = build_handwritten(llm)
    assert set(builder.nodes) == set(AGENTS)
    out = builder.compile().invoke(initial_state("quorvia"))
    assert score_run("quorvia", out)["quality"] == 1.0
    tool_results = {
        str(m.content)
        for c in llm.calls
        for m in c.messages
        if isinstance(m, ToolMessage)  # executed by ToolNode inside the researcher
    }
    assert "Quorvia Health GmbH cash 2023: CHF 61.4 million" in "\n".join(tool_results)
    specs = agent_specs()
    researcher_calls = [c for c in llm.calls if c.kwargs.get("tools")]
    assert len(researcher_calls) == 3 * 4  # per researcher: 3 gather turns + the answer
    choices = [c.kwargs.get("tool_choice") for c in researcher_calls]
    assert choices.count("required") == 9 and choices.count("none") == 3
    answers = [c for c in researcher_calls if c.kwargs.get("tool_choice") == "none"]
    assert all(str(c.messages[-1].content) == ANSWER_PROMPT for c in answers)
    assert str(llm.calls[0].messages[0].content) == specs["scoping"].instructions
    # each researcher's task (its metrics) is in its user turn, not its instructions
    for name, (_, metrics) in RESEARCHERS.items():
        own = specs[name].instructions
        first = next(c for c in researcher_calls if c.messages[0].content == own)
        assert "Metrics to query" not in specs[name].instructions
        assert f"Metrics to query: {', '.join(metrics)}." in str(first.messages[1].content)
    # capsules fine over the same builder gives exactly the same outputs
    capsules = lc.capsulize(build_handwritten(scripted_due_diligence()), groups=DD_GROUPS)
    fine = capsules.compile().invoke(
        initial_state("quorvia"), {"configurable": {"capsules": {"mode": "fine"}}}
    )
    assert fine == out


def test_the_shipped_scripted_program_matches_the_pipelines_prompts(
    dspy_arm: ModuleType,
) -> None:
    """The committed program of the offline dry run was compiled for today's prompts
    (recompile it with ``capsules bench dd --model scripted --compile`` when they change)."""
    loaded = dspy_arm.load_compiled(dspy_arm.program_path("scripted"))
    assert loaded is not None
    program, info = loaded
    assert not set(info["budget"]["companies"]) & set(HELD_OUT)
    react = program.balance_sheet_researcher.react
    own = agent_specs()["balance_sheet_researcher"].instructions
    assert react.signature.instructions.startswith(own)


# ------------------------------------------------------------------------ DSPy accounting
def test_dspy_token_accounting_equals_the_scripted_replies_usage(dspy_arm: ModuleType) -> None:
    lm = dspy_arm.ScriptedDSPyLM()
    arm = runner._dspy_arm("dspy", lm, dspy_arm.DueDiligenceProgram())
    rec = runner.run_one(arm, "fjordane", 1, "scripted")
    replies = lm.chat.calls  # one scripted call per DSPy LM call
    assert rec["error"] is None and rec["quality"] == 1.0
    assert rec["calls"] == len(replies) == DSPY_CALLS_PER_RUN
    assert rec["input_tokens"] == sum(c.usage["input_tokens"] for c in replies)
    assert rec["output_tokens"] == sum(c.usage["output_tokens"] for c in replies)
    cached = sum(c.usage["input_token_details"]["cache_read"] for c in replies)
    assert rec["cached_tokens"] == cached > 0
    usage = [c.usage for c in replies]
    # a step's agents run concurrently: the two logs hold the same calls, maybe reordered
    assert sorted(rec["call_tokens"]) == sorted(
        [u["input_tokens"], u["input_token_details"]["cache_read"], u["output_tokens"]]
        for u in usage
    )
    # the usage is over DSPy's whole chat-adapter prompt, not a paraphrase of it
    assert all("[[ ## completed ## ]]" in str(c.messages[0].content) for c in replies)
    nodes = rec["call_nodes"]
    assert nodes[0] == "scoping" and nodes[-1] == "investment_writer"
    assert set(nodes) == set(AGENTS)
    assert rec["tokens_per_group"]["research"]["input"] == sum(
        c[0] for c, n in zip(rec["call_tokens"], rec["call_nodes"], strict=True) if "research" in n
    )


def test_the_agents_of_a_step_run_concurrently_and_their_calls_keep_their_stage(
    dspy_arm: ModuleType,
) -> None:
    """The researchers (and the analysts) run at once, as LangGraph runs a group's
    nodes; every call is attributed to the agent whose prompt it carries; steps stay in
    order (no analyst call before the last research call)."""
    in_flight: list[str] = []
    seen: list[tuple[str, str]] = []
    overlaps: set[frozenset[str]] = set()
    changed = threading.Condition()
    steps = (frozenset(RESEARCHERS), frozenset(ANALYSTS))

    class SlowLM(dspy_arm.ScriptedDSPyLM):  # type: ignore[misc,name-defined]
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            node = dspy_arm._STAGE.get()
            system = next((m["content"] for m in messages if m["role"] == "system"), "")
            step = next((s for s in steps if node in s), frozenset({node}))
            with changed:
                seen.append((node, str(system)))
                in_flight.append(node)
                overlaps.add(frozenset(in_flight))
                changed.notify_all()
                # hold the call until the whole step has been in flight at once (a
                # loaded machine may start the siblings late); if the runner ran them
                # one after another, this times out and the assertion below fails
                changed.wait_for(lambda: step in overlaps, timeout=10)
            try:
                return super().forward(prompt=prompt, messages=messages, **kwargs)
            finally:
                with changed:
                    in_flight.remove(node)
                    changed.notify_all()

    lm = SlowLM()
    arm = runner._dspy_arm("dspy", lm, dspy_arm.DueDiligenceProgram())
    rec = runner.run_one(arm, "kelvara", 1, "scripted")
    assert rec["error"] is None and rec["quality"] == 1.0
    assert frozenset(RESEARCHERS) in overlaps and frozenset(ANALYSTS) in overlaps
    # never two steps at once: whatever overlaps lies within one step
    assert all(len(k) == 1 or k <= set(RESEARCHERS) or k <= set(ANALYSTS) for k in overlaps)
    nodes = rec["call_nodes"]
    last_research = max(i for i, n in enumerate(nodes) if n in RESEARCHERS)
    assert min(i for i, n in enumerate(nodes) if n in ANALYSTS) > last_research
    roles = {name: role for name, (role, _) in {**RESEARCHERS, **ANALYSTS}.items()}
    assert len(seen) == rec["calls"]
    for node, system in seen:  # each call carries the instructions of the agent it is billed to
        if node in roles:
            assert f"due-diligence {roles[node]}" in system
            assert not any(f"due-diligence {r}." in system for n, r in roles.items() if n != node)


def test_a_provider_fault_in_one_concurrent_stage_is_recorded_and_ends_the_run(
    dspy_arm: ModuleType,
) -> None:
    """A researcher whose call raises (the endpoint refused it) while its siblings run:
    the run ends with the error recorded (not hung, not hidden), the calls made so far
    counted, and no analyst ran after the failed step."""

    class FaultyLM(dspy_arm.ScriptedDSPyLM):  # type: ignore[misc,name-defined]
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            if dspy_arm._STAGE.get() == "growth_researcher":
                raise ConnectionError("endpoint refused the connection")
            return super().forward(prompt=prompt, messages=messages, **kwargs)

    lm = FaultyLM()
    arm = runner._dspy_arm("dspy", lm, dspy_arm.DueDiligenceProgram())
    rec = runner.run_one(arm, "fjordane", 1, "scripted")
    assert rec["error"] is not None and "ConnectionError" in rec["error"]
    assert rec["calls"] == len(lm.calls) > 1
    assert not set(rec["call_nodes"]) & set(ANALYSTS)
    assert {"financial_researcher", "balance_sheet_researcher"} <= set(rec["call_nodes"])


def test_cut_replies_are_counted_and_unparsable_stages_give_nothing(
    dspy_arm: ModuleType,
) -> None:
    lm = dspy_arm.ScriptedDSPyLM(max_tokens=12)  # too small for any answer
    arm = runner._dspy_arm("dspy", lm, dspy_arm.DueDiligenceProgram())
    rec = runner.run_one(arm, "fjordane", 1, "scripted")
    # every reply is cut before its fields: each stage fails to parse (both adapters
    # tried), is left empty and the run goes on to be judged
    assert rec["error"] is None and rec["failed_stages"] == list(AGENTS)
    assert rec["quality"] == 0.0
    cut = [c for c in lm.calls if c["finish_reason"] == "length"]
    assert cut and rec["truncated_calls"] == len(cut) == rec["calls"]
    assert rec["calls"] == len(lm.calls) == len(lm.chat.calls)
    assert rec["input_tokens"] == sum(c.usage["input_tokens"] for c in lm.chat.calls)
    assert all(t["max_tokens"] == 12 for t in rec["truncated"])


class _Endpoint(BaseHTTPRequestHandler):
    """A fake OpenAI-compatible chat endpoint on localhost: one canned reply with usage
    (prompt, cached prompt, completion tokens) and a finish reason; keeps the bodies."""

    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append({"path": self.path, **body})
        reply = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "message": {
                        "role": "assistant",
                        "content": "[[ ## answer ## ]]\nfive\n\n[[ ## completed ## ]]",
                    },
                }
            ],
            "usage": {
                "prompt_tokens": 120,
                "completion_tokens": 30,
                "total_tokens": 150,
                "prompt_tokens_details": {"cached_tokens": 64},
            },
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_endpoint_lm_counts_litellm_usage_and_sends_the_arms_settings(
    dspy_arm: ModuleType,
) -> None:
    """The live path against a fake endpoint on localhost: DSPy's LM goes through
    LiteLLM to the same URL with the same generation settings as the LangChain client,
    and each call's usage and finish reason are counted."""
    from langchain_openai import ChatOpenAI

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Endpoint.bodies.clear()
    try:
        chat = ChatOpenAI(
            base_url=f"http://127.0.0.1:{server.server_port}/v1",
            api_key="sk-local",
            model="qwen2.5-coder-1.5b",
            max_tokens=256,
            temperature=0.0,
            extra_body={"repeat_penalty": 1.1},
        )
        lm = dspy_arm.endpoint_lm(chat)
        dspy = dspy_arm.dspy
        with dspy.context(lm=lm), dspy_arm.stage("scoping"):
            assert dspy.Predict("question -> answer")(question="2 + 3?").answer == "five"
            dspy.Predict("question -> answer")(question="2 + 3?")  # no cache: called again
        chat.invoke("2 + 3?")
    finally:
        server.shutdown()
    *from_dspy, from_langchain = _Endpoint.bodies
    assert len(from_dspy) == 2
    settings = ("path", "model", "temperature", "repeat_penalty")
    assert {k: from_dspy[0].get(k) for k in settings} == {
        k: from_langchain.get(k) for k in settings
    }
    assert from_langchain["max_completion_tokens"] == 256  # langchain-openai's name for it
    assert from_dspy[0]["path"] == "/v1/chat/completions"
    assert from_dspy[0]["repeat_penalty"] == 1.1 and from_dspy[0]["max_tokens"] == 256
    call = {
        "node": "scoping",
        "input_tokens": 120,
        "cached_tokens": 64,
        "output_tokens": 30,
        "finish_reason": "length",
        "max_tokens": 256,
    }
    assert lm.calls == [call, call]


# ------------------------------------------------------------------------ compiling
def test_compile_saves_and_reloads_a_program(tmp_path: Path, dspy_arm: ModuleType) -> None:
    lm = dspy_arm.ScriptedDSPyLM()
    program, info = dspy_arm.compile_program(lm, _tiny_budget(dspy_arm))
    assert info["demos"] and set(info["demos"].values()) == {1}
    assert info["calls"] == DSPY_CALLS_PER_RUN == len(lm.calls)  # one passing run
    assert info["scored"] == [{"company": "corvanta", "quality": 1.0}]
    path = dspy_arm.program_path("qwen2.5-coder-1.5b", tmp_path)
    assert path.name == "qwen2.5-coder-1.5b.json"
    dspy_arm.save_compiled(program, info, path)

    loaded = dspy_arm.load_compiled(path)
    assert loaded is not None
    again, saved_info = loaded
    assert saved_info["budget"]["companies"] == ["corvanta"]
    demos = {n: [dict(d) for d in p.demos] for n, p in program.named_predictors()}
    assert {n: [dict(d) for d in p.demos] for n, p in again.named_predictors()} == demos
    assert "Corvanta Materials S.A." in demos["investment_writer.predict"][0]["memo"]
    assert dspy_arm.load_compiled(tmp_path / "absent.json") is None
    # a program compiled for other prompts is refused, naming the fix
    sidecar = path.with_suffix(".compile.json")
    record = json.loads(sidecar.read_text())
    assert record["specs_digest"] == dspy_arm.specs_digest()
    sidecar.write_text(json.dumps({**record, "specs_digest": "0" * 16}))
    with pytest.raises(dspy_arm.StaleProgramError, match=r"other agent prompts.*--compile"):
        dspy_arm.load_compiled(path)
    with pytest.raises(dspy_arm.StaleProgramError):
        runner.compiled_program(lm, "qwen2.5-coder-1.5b", programs_dir=tmp_path)
    sidecar.write_text(json.dumps(record))

    # the runner loads the saved program, and recompiles only when told to
    found, note = runner.compiled_program(lm, "qwen2.5-coder-1.5b", programs_dir=tmp_path)
    assert note["source"].startswith("loaded from")
    assert {n: len(p.demos) for n, p in found.named_predictors()} == info["demos"]
    _, fresh = runner.compiled_program(
        lm,
        "qwen2.5-coder-1.5b",
        programs_dir=tmp_path,
        recompile=True,
        budget=_tiny_budget(dspy_arm, "kelvara"),
    )
    assert fresh["source"].startswith("compiled in this sitting")
    assert json.loads(path.with_suffix(".compile.json").read_text())["budget"]["companies"] == [
        "kelvara"
    ]


def test_a_compile_that_finds_no_demos_saves_no_program(
    tmp_path: Path, dspy_arm: ModuleType
) -> None:
    lm = dspy_arm.ScriptedDSPyLM()
    budget = dspy_arm.CompileBudget(
        max_bootstrapped_demos=1, metric_threshold=1.01, companies=("corvanta",)
    )
    with pytest.raises(SystemExit, match=r"no demos.*threshold 1.01 \(corvanta 1.000\).*--compile"):
        runner.compiled_program(lm, "qwen2.5-coder-1.5b", programs_dir=tmp_path, budget=budget)
    path = dspy_arm.program_path("qwen2.5-coder-1.5b", tmp_path)
    assert not path.exists() and dspy_arm.load_compiled(path) is None
    record = json.loads(path.with_suffix(".no-demos.json").read_text())
    assert record["scored"] == [{"company": "corvanta", "quality": 1.0}]
    assert not any(record["demos"].values())


def test_held_out_companies_never_reach_the_compiler(
    dspy_arm: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(HELD_OUT).isdisjoint(development_ids())
    assert dspy_arm.CompileBudget().companies == tuple(development_ids())
    lm = dspy_arm.ScriptedDSPyLM()
    for bad in (*HELD_OUT, "acme"):
        with pytest.raises(ValueError, match="held-out or unknown"):
            dspy_arm.compile_program(lm, _tiny_budget(dspy_arm, "corvanta", bad))
    assert lm.calls == []  # refused before the optimizer started

    seen: list[str] = []
    real = dspy_arm.dspy.BootstrapFewShot.compile

    def spy(self: Any, student: Any, *, teacher: Any = None, trainset: Any) -> Any:
        seen.extend(x.company_id for x in trainset)
        return real(self, student, teacher=teacher, trainset=trainset)

    monkeypatch.setattr(dspy_arm.dspy.BootstrapFewShot, "compile", spy)
    dspy_arm.compile_program(lm, dspy_arm.CompileBudget())
    assert seen == development_ids()
    prompts = "\n".join(str(m.content) for c in lm.chat.calls for m in c.messages)
    assert "Corvanta" in prompts
    for held in HELD_OUT:
        assert held not in prompts.lower()


# ------------------------------------------------------------------------ offline imports
def test_the_command_imports_no_dspy_and_dspy_imports_without_network() -> None:
    """``capsules`` and the runner do not import DSPy; importing the DSPy arm (which
    imports LiteLLM) tries no network: LiteLLM uses its bundled model cost map."""
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k):\n"
        "    raise OSError('network refused by the test')\n"
        "socket.socket.connect = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "import benchmarks.due_diligence.runner, langgraph_capsules.cli\n"
        "print('dspy' in sys.modules, 'litellm' in sys.modules)\n"
        "from benchmarks.due_diligence import dspy_arm\n"
        "import litellm\n"
        "print(len(litellm.model_cost) > 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard (a network wait), not a speed check: loaded machines are slow
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT / ".no-home")},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True"]
    assert "cost map" not in done.stderr and "network refused" not in done.stderr


# ------------------------------------------------------------------------ live (slow)
@pytest.mark.slow
@pytest.mark.local_model
def test_dspy_and_langchain_are_counted_alike_on_the_embedded_model(
    dspy_arm: ModuleType,
) -> None:
    """On the real embedded 0.5B server: the same messages sent through DSPy's LM
    (LiteLLM) and through the benchmark's LangChain client are counted with the same
    prompt tokens; one DSPy stage's calls are all recorded with usage and a finish
    reason."""
    from langchain_core.messages import HumanMessage, SystemMessage

    spec = agent_specs()["scoping"]
    state = initial_state("fjordane")
    text = "\n\n".join(f"## {k}\n{state[k]}" for k in spec.reads)
    with lc.local.serve(lc.local.FAST_MODEL, max_tokens=64) as chat:
        lm = dspy_arm.endpoint_lm(chat)
        lm(
            messages=[
                {"role": "system", "content": spec.instructions},
                {"role": "user", "content": text},
            ]
        )
        reply = chat.invoke([SystemMessage(spec.instructions), HumanMessage(text)])
        program = dspy_arm.DueDiligenceProgram()
        with dspy_arm.dspy.context(lm=lm), dspy_arm.stage("scoping"):
            program.scoping(company=state["company"], mandate=state["mandate"])
    assert reply.usage_metadata is not None
    assert lm.calls[0]["input_tokens"] == reply.usage_metadata["input_tokens"] > 50
    staged = lm.calls[1:]
    assert staged and all(c["node"] == "scoping" for c in staged)
    assert all(c["input_tokens"] > 0 and c["output_tokens"] > 0 for c in staged)
    assert all(c["finish_reason"] in ("stop", "length") and c["max_tokens"] == 64 for c in staged)


def test_a_researcher_forced_to_call_stops_gathering_at_its_first_repeat() -> None:
    # A provider that honours tool_choice="required" never answers in text while it is
    # forced: this model lists the metrics, queries one metric per turn, then repeats
    # its last query forever. The researcher must stop at the repeat, run no call twice,
    # and write its report in one more turn with tool use off.
    plan = [
        {"name": "list_metrics", "args": {"company": "kelvara"}},
        {"name": "query_financials", "args": {"company": "kelvara", "metric": "revenue"}},
        {"name": "query_financials", "args": {"company": "kelvara", "metric": "headcount"}},
    ]

    def calls_for(messages: list[Any]) -> list[dict[str, Any]]:
        done = sum(isinstance(m, ToolMessage) for m in messages)
        return [plan[min(done, len(plan) - 1)]]

    llm = ScriptedChatModel(
        tool_calls_for=calls_for, respond=lambda text: "report: " + str(text.count("kelvara"))
    )
    out = build_handwritten(llm).compile().invoke(initial_state("kelvara"))
    growth = [c for c in llm.calls if "growth researcher" in str(c.messages[0].content)]
    assert [c.kwargs.get("tool_choice") for c in growth] == ["required"] * 4 + ["none"]
    executed = [m for m in growth[-1].messages if isinstance(m, ToolMessage)]
    assert len(executed) == 3  # each call ran once; the repeat was not executed
    assert "Kelvara Sensing AB headcount 2024" in str(executed[-1].content)
    assert out["growth_findings"].startswith("report: ")


def test_the_committed_programs_load_with_the_current_prompts(dspy_arm: ModuleType) -> None:
    """Every program committed in data/dspy was compiled for today's agent prompts (a
    prompt change without a recompile would make `capsules bench dd` refuse it), and
    the 1.5B one holds demos for every predictor, as its record says."""
    saved = sorted(dspy_arm.PROGRAMS_DIR.glob("*.compile.json"))
    models = {p.name.removesuffix(".compile.json") for p in saved}
    assert {"scripted", "qwen2.5-coder-1.5b"} <= models
    for model in models:
        loaded = dspy_arm.load_compiled(dspy_arm.program_path(model, dspy_arm.PROGRAMS_DIR))
        assert loaded is not None, model
        program, info = loaded
        demos = {n: len(p.demos) for n, p in program.named_predictors()}
        assert demos == info["demos"] and all(demos.values()), model
    info = json.loads((dspy_arm.PROGRAMS_DIR / "qwen2.5-coder-1.5b.compile.json").read_text())
    assert info["budget"]["metric_threshold"] == 0.3
    assert all(s["quality"] >= 0.3 for s in info["scored"][-1:])


def test_the_committed_study_reports_runs_per_arm_not_the_last_run_number() -> None:
    """docs/results/dd-1.5b was built over seven sittings, each numbering its runs after
    the company's last: its highest run number (10) is not how many runs an arm had."""
    from benchmarks.due_diligence import report

    data = json.loads((ROOT / "docs/results/dd-1.5b/results.json").read_text())
    text = report.render_report(data["meta"], report.summarize(data["records"]), data["records"])
    assert data["meta"]["runs"] == 10
    assert "runs per arm and company: 1 to 4 (see the per-company table)" in text
