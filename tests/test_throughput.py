"""Guards for the throughput work (issue 12): caches and shortcuts keep behaviour.

Merge statistics count each distinct unit once, markers and task headers are matched by
one pattern per nonce length; both are checked against the direct computation. Parking
on async runs and reused thread pools are checked with concurrent runs whose nonces and
outputs must never mix.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import string
import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langgraph_capsules._session import MergeAbort, await_future, until_either
from langgraph_capsules.prompts import estimate_tokens, split_shared
from langgraph_capsules.strategies.standard import (
    _marker_re,
    build_merged_prompt,
    marker_spans,
    parse_merged_prompt,
    split_tasks,
)
from langgraph_capsules.strategies.structured import PartSpec, build_structured_prompt

ROOT = Path(__file__).resolve().parents[1]

_WORDS = ["alpha", "beta", "Gamma", "d3lta", "x", "revenue", "42", "Oslo", "n/a"]
_PUNCT = [",", ".", ":", "-", "(", ")", "'", "é", "—", "%"]


def _text(rng: random.Random, words: int) -> str:
    out: list[str] = []
    for _ in range(words):
        r = rng.random()
        if r < 0.1:
            out.append(rng.choice(_PUNCT))
        elif r < 0.15:
            out.append(rng.choice(["\n", "\n\n", "\n \t\n", "  "]))
        else:
            out.append(rng.choice(_WORDS) + rng.choice(["", "", ",", "."]))
    return " ".join(out).strip() or "word"


def _calls(rng: random.Random, n: int) -> list[list[BaseMessage]]:
    shared = [_text(rng, rng.randint(6, 40)) for _ in range(rng.randint(0, 3))]
    calls: list[list[BaseMessage]] = []
    for k in range(n):
        own = _text(rng, rng.randint(1, 30))
        paras = [*shared, own] if rng.random() < 0.5 else [own, *shared]
        if rng.random() < 0.3 and shared:
            paras.append(shared[0])  # a shared paragraph twice in one call
        human = "\n\n".join(paras)
        msgs: list[BaseMessage] = [HumanMessage(human)]
        if rng.random() < 0.7:
            msgs.insert(0, SystemMessage(f"Task {k}: " + _text(rng, rng.randint(1, 12))))
        calls.append(msgs)
    return calls


def _direct(system: str, human: str, calls: list[list[BaseMessage]]) -> dict[str, int]:
    """The statistics as computed before: every text tokenised whole."""
    split = split_shared(calls)
    assert split is not None
    payload = sum(estimate_tokens(s) for s in split.shared) + sum(
        estimate_tokens(t) for t in split.tasks
    )
    total = estimate_tokens(system) + estimate_tokens(human)
    return {
        "payload_tokens": payload,
        "coordination_tokens": max(total - payload, 0),
        "floor_tokens": payload,
        "naive_tokens": sum(estimate_tokens(f) for f in split.full),
    }


def _stats(prompt: Any) -> dict[str, int]:
    keys = ("payload_tokens", "coordination_tokens", "floor_tokens", "naive_tokens")
    return {k: getattr(prompt, k) for k in keys}


def test_merge_statistics_equal_the_direct_count() -> None:
    rng = random.Random(12)
    spec = PartSpec("Part", {"type": "object"}, None, "content", "json_object", False)
    for _ in range(300):
        n = rng.randint(2, 5)
        calls = _calls(rng, n)
        members = [f"m{k}" for k in range(n)]
        budgets = [rng.choice([None, 100, 300]) for _ in range(n)]
        prompt = build_merged_prompt(members, calls, budgets=budgets)
        assert prompt is not None
        system, human = (str(m.content) for m in prompt.messages)
        assert _stats(prompt) == _direct(system, human, calls)
        structured = build_structured_prompt(members, calls, [spec] * n)
        assert structured is not None
        system, human = (str(m.content) for m in structured.messages)
        assert _stats(structured) == _direct(system, human, calls)


def _marker_lines(rng: random.Random, nonce: str) -> str:
    other = "".join(rng.choice("0123456789abcdef") for _ in range(len(nonce)))
    lines: list[str] = []
    for _ in range(rng.randint(1, 12)):
        num = str(rng.randint(0, 12)) if rng.random() < 0.9 else "1234567"
        nn = rng.choice([nonce, nonce.upper(), other, nonce + "0", nonce[:-1], "x" + nonce])
        sep = rng.choice(["", " ", ": ", " - ", "[", " (", "_", "\t"])
        deco = rng.choice(["", "### ", "**", "> ", "  #", "`"])
        tail = rng.choice(["", "]", ":", "**", ". answer", "#", " text", "a"])
        word = rng.choice(["SECTION", "section", "Section", "SECTON", "SECTION\t"])
        head = rng.choice([" ", "  ", ""])
        lines.append(f"{deco}{word}{head}{num}{sep}{nn}{tail}")
        lines.append(_text(rng, rng.randint(0, 6)).replace("\n", " "))
    return "\n".join(lines)


def test_marker_spans_match_the_per_nonce_pattern() -> None:
    rng = random.Random(4)
    seen = 0
    for _ in range(3000):
        nonce = rng.choice(
            [
                "".join(rng.choice("0123456789abcdef") for _ in range(6)),
                "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(4)),
                "7abc12",
                "a-b.c",  # not alphanumeric: its own pattern
            ]
        )
        text = _marker_lines(rng, nonce)
        want = [(m.start(), m.start(2), int(m.group(1))) for m in _marker_re(nonce).finditer(text)]
        assert marker_spans(text, nonce) == want, (nonce, text)
        seen += len(want)
    assert seen > 1000  # the fuzz reaches real markers, not only rejects


def test_task_headers_are_cut_at_the_exact_nonce() -> None:
    rng = random.Random(5)
    for _ in range(200):
        n = rng.randint(2, 4)
        calls = _calls(rng, n)
        prompt = build_merged_prompt([f"m{k}" for k in range(n)], calls)
        assert prompt is not None
        parsed = parse_merged_prompt(prompt.messages)
        assert parsed is not None and parsed.nonce == prompt.nonce
        split = split_shared(calls)
        assert split is not None
        assert parsed.tasks == tuple(t.strip() for t in split.tasks)
    body = "TASK 1 abc123\none\nTASK 2 abc1234\nstill one\nTASK 2 ABC123\nstill\nTASK 2 abc123\ntwo"
    assert split_tasks(body, "abc123") == (
        "",
        ("one\nTASK 2 abc1234\nstill one\nTASK 2 ABC123\nstill", "two"),
    )


# ------------------------------------------------ concurrent runs never mix outputs
def _graphs(async_nodes: bool) -> tuple[Any, Any]:
    import sys

    sys.path.insert(0, str(ROOT))
    import langgraph_capsules as lc
    from benchmarks.load import build_async
    from benchmarks.overhead import KINDS, LENSES, build
    from langgraph_capsules.testing import ScriptedChatModel

    llm = lc.CapsuleChatModel(ScriptedChatModel(answer_words=6, cache_min_tokens=10**9))
    builder = (build_async if async_nodes else build)(llm)
    groups = {lens: [f"{lens}_{k}" for k in KINDS] for lens in LENSES}
    return builder.compile(), lc.capsulize(builder, groups=groups).compile()


_COMPOUND = {"configurable": {"capsules": {"mode": "compound"}}}


def _inputs(i: int) -> dict[str, str]:
    return {"overview": f"Company {i} makes sensor model {i * 17} in town {i % 7}. " * 3}


def _same(out: dict[str, Any], ref: dict[str, Any]) -> bool:
    return out["scope"] == ref["scope"] and sorted(out["outputs"]) == sorted(ref["outputs"])


@pytest.mark.parametrize("async_nodes", [False, True], ids=["def-nodes", "async-nodes"])
def test_concurrent_ainvoke_runs_keep_their_own_outputs(async_nodes: bool) -> None:
    plain, app = _graphs(async_nodes)

    async def main() -> tuple[list[Any], list[Any]]:
        n = 24
        refs = await asyncio.gather(*(plain.ainvoke(_inputs(i)) for i in range(n)))
        outs = await asyncio.gather(*(app.ainvoke(_inputs(i), _COMPOUND) for i in range(n)))
        return list(refs), list(outs)

    refs, outs = asyncio.run(main())
    assert all(_same(o, r) for o, r in zip(outs, refs, strict=True))
    assert len({r["scope"] for r in refs}) == len(refs)  # every run's answers differ


def test_concurrent_invoke_runs_keep_their_own_outputs_and_reuse_pools() -> None:
    from langgraph_capsules.compiler import execution

    plain, app = _graphs(False)
    n = 16
    refs = [plain.invoke(_inputs(i)) for i in range(n)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        outs = list(pool.map(lambda i: app.invoke(_inputs(i), _COMPOUND), range(n)))
    assert all(_same(o, r) for o, r in zip(outs, refs, strict=True))
    idle = len(execution._IDLE_POOLS.get(3, []))
    assert 1 <= idle <= execution.MAX_IDLE_POOLS
    for i in range(n):  # one run at a time borrows one idle pool: none is created
        assert _same(app.invoke(_inputs(i), _COMPOUND), refs[i])
    assert len(execution._IDLE_POOLS.get(3, [])) == idle


# -------------------------------------------------------- async parking primitives
def test_await_future_from_the_loop_and_from_threads() -> None:
    async def main() -> None:
        # resolved on the loop's own thread
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, "here")
        assert await await_future(fut) == "here"
        # resolved from another thread, with an uncatchable abort
        fut = concurrent.futures.Future()
        threading.Timer(0.01, fut.set_exception, [MergeAbort("gone")]).start()
        with pytest.raises(MergeAbort, match="gone"):
            await await_future(fut)
        # already done
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        done.set_result(3)
        assert await await_future(done) == 3
        # the awaiting task is cancelled: the future is cancelled, as wrap_future does
        fut = concurrent.futures.Future()
        task = asyncio.ensure_future(await_future(fut))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fut.cancelled()
        # until_either: the task finishing first ends the wait; the future stays pending
        fut = concurrent.futures.Future()
        quick = asyncio.ensure_future(asyncio.sleep(0.01))
        await asyncio.wait_for(until_either(fut, quick), 2)
        assert quick.done() and not fut.done()
        slow = asyncio.ensure_future(asyncio.sleep(5))
        threading.Timer(0.01, fut.set_result, [1]).start()
        await asyncio.wait_for(until_either(fut, slow), 2)
        assert fut.done() and not slow.done()
        slow.cancel()

    asyncio.run(main())


def test_load_benchmark_quick_prints_every_arm_and_goal() -> None:
    """``benchmarks/load.py --quick`` runs and prints each arm and each goal (its timings
    are not checked: a smoke test on a tiny load)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for arm in (
        "langgraph",
        "capsules fine (locked)",
        "capsules compound (locked)",
        "capsules auto, 20 obs/group",
        "capsules fine",
        "capsules standard",
    ):
        assert arm in out
    for goal in (
        "compound throughput / plain",
        "fine throughput / plain",
        "compound CPU per run / plain",
        "fine CPU per run / plain",
        "auto CPU per run / locked fine",
        "overhead.py fine wall / plain",
        "overhead.py standard wall / plain",
    ):
        assert goal in out
    # calls per run: 14 in plain, fine and auto (kept fine), 6 in compound
    rows = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.count("│") > 5}
    assert rows["capsules compound (locked)"].split("│")[6].strip() == "6.0"
    assert rows["langgraph"].split("│")[6].strip() == "14.0"


def test_a_forked_child_does_not_reuse_the_parents_idle_pools() -> None:
    import multiprocessing
    import sys

    from langgraph_capsules.compiler import execution

    if sys.platform == "win32":
        pytest.skip("no fork")
    pool = execution.borrow_pool(2)
    assert pool.submit(lambda: 1).result() == 1
    execution.return_pool(pool)
    assert execution._IDLE_POOLS.get(2)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as workers:
        # in the child: no idle pool inherited, and a fresh one runs work
        assert workers.apply(_child_pools, ()) == (0, 7)


def _child_pools() -> tuple[int, int]:
    from langgraph_capsules.compiler import execution

    idle = len(execution._IDLE_POOLS.get(2, []))
    pool = execution.borrow_pool(2)
    return idle, pool.submit(lambda: 7).result(timeout=10)
