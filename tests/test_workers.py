"""Four worker processes run one capsule graph 25 times each over one SQLite controller
store: every observation is stored, and every decision any worker made is the pure
function of the shared history it read."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

from conftest import DOC, KINDS, build_app, overlap

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel

PROCS, RUNS = 4, 25
POLICY = lc.ControllerPolicy.aggressive(quality_floor=0.75)


def _graph(path: str) -> lc.CapsuleGraph:
    return lc.capsulize(
        build_app(lc.CapsuleChatModel(ScriptedChatModel())),
        groups={"arm": list(KINDS)},
        policy=POLICY,
        judge=overlap,
        store=lc.SqliteControllerStore(path),
    )


def _worker(path: str, barrier: Any, results: Any) -> None:
    capsules = _graph(path)
    app = capsules.compile()
    seen: list[tuple[int, str, bool]] = []
    barrier.wait()  # all workers run at once
    for _ in range(RUNS):
        # another worker may append between the two reads: the decision must equal the
        # pure function of some prefix the worker could have read in that window
        n = len(capsules.observations("arm"))
        d = capsules.explain("arm")
        m = len(capsules.observations("arm"))
        seen.append((n, m, d.tier, d.shadow))
        app.invoke({"doc": DOC})
    barrier.wait()  # every worker has finished
    final = capsules.explain("arm").to_dict()
    run_ids = [r["run_key"] for r in capsules.history("arm")]
    results.put((os.getpid(), capsules.plan.plan_id, seen, run_ids, final))


def test_four_processes_share_one_controller_store(tmp_path: Path) -> None:
    path = str(tmp_path / "controller.db")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, barrier, results)) for _ in range(PROCS)]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in range(PROCS)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len({pid for pid, *_ in got}) == PROCS
    plan_ids = {plan for _, plan, *_ in got}
    assert len(plan_ids) == 1  # the same app gives the same plan id in every process

    parent = _graph(path)
    history = parent.observations("arm")
    main = [o for o in history if not o["shadow"]]
    # every run of every worker is stored exactly once
    assert len(main) == PROCS * RUNS
    stored = {o["run_id"] for o in main}
    assert stored == {rid for *_, run_ids, _ in got for rid in run_ids}
    assert all(o["graph"] == parent.plan.plan_id for o in history)
    # the controller did work: a shadow evaluation and compound runs
    assert any(o["shadow"] for o in history)
    assert any(o["tier"] == "standard" for o in main)
    # every decision any worker made equals the pure function of the prefix it read
    for *_, seen, _, _ in got:
        for n, m, tier, shadow in seen:
            options = {
                (d.tier, d.shadow)
                for d in (
                    lc.decide(
                        history[:k],
                        POLICY,
                        mode="auto",
                        n_agents=len(KINDS),
                        built_tiers=frozenset({"fine", "standard"}),
                        judge_active=True,
                    )
                    for k in range(n, m + 1)
                )
            }
            assert (tier, shadow) in options, (n, m)
    # and after the last run all workers (and the parent) agree
    finals = [final for *_, final in got]
    assert all(f == finals[0] for f in finals)
    assert parent.explain("arm").to_dict() == finals[0]
