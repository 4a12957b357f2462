"""The example deployment (``examples/deploy``) served by ``langgraph dev``, end to end.

One ``langgraph dev`` server (LangGraph's in-memory API server, started as a subprocess
on a free loopback port, offline, **without** ``--allow-blocking``: its blockbuster
stays on and turns any blocking call on the event loop into a failed run) serves the
example's compiled capsule graph and its graph factory. The controller's history goes
to a PostgreSQL server the tests start themselves (``pg_server.py``), named to the app
by ``CAPSULES_PG``. Through ``langgraph_sdk`` the tests run both graphs on new inputs
(``runs.wait`` and ``runs.stream``), read the history the server's runs wrote, pause
and resume threads with run-time ``interrupt_before``, and override the mode per run.

A server that cannot start fails the test with its log; nothing here skips.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from pg_server import PgServer, start_server

import langgraph_capsules as lc
from langgraph_capsules.types import Observation

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "examples" / "deploy"
COMPILED = "capsules"
"""The compiled capsule graph's id in ``langgraph.json``."""
FACTORY = "capsules_factory"
"""The graph factory's id in ``langgraph.json``."""
GRAPHS = (COMPILED, FACTORY)
GROUP = "arm"
EXTRACTORS = ("competitors", "financials", "risks")
OUTPUT_KEYS = ("scope", *EXTRACTORS, "brief")
PG_ENV = "CAPSULES_PG"
AUTO_RUNS = 6
"""``auto`` runs per graph: enough for the aggressive policy to switch (shadow) and
then run merged (two fine runs, the switch run, merged runs)."""
START_TIMEOUT_S = 90.0
OBS_TABLE = "langgraph_capsules_observations"

# Environment the server must not inherit: keys and endpoints that would make it (or
# LangSmith tracing inside it) reach the network.
_DROP_ENV = re.compile(r"^(LANGSMITH_|LANGCHAIN_|LANGGRAPH_CLOUD_LICENSE_KEY$|OTEL_EXPORTER_|LSD_)")
_OFFLINE_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",  # langgraph-cli: no usage report
    "LANGGRAPH_NO_VERSION_CHECK": "true",  # langgraph-api: no PyPI version check
    "LANGSMITH_TRACING": "false",  # no tracing, no Studio org lookup
    "LANGCHAIN_TRACING_V2": "false",
    "OTEL_ENABLED": "false",
    "OTEL_SDK_DISABLED": "true",
    "DO_NOT_TRACK": "1",
    "LOG_COLOR": "false",  # a readable log in failure messages
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ------------------------------------------------------------------ the server
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_env(conninfo: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _DROP_ENV.match(k)}
    env.update(_OFFLINE_ENV)
    env[PG_ENV] = conninfo
    return env


@dataclass
class Deployment:
    """A running ``langgraph dev`` server and what the tests need to talk to it."""

    url: str
    conninfo: str
    log: Path
    client: SyncLangGraphClient
    plan_ids: dict[str, str]
    """Per graph id, the capsule plan id its controller history is kept under."""

    def log_text(self, tail: int = 200) -> str:
        """The server's log (its last ``tail`` lines), without color codes."""
        return _log_tail(self.log, tail)


def _log_tail(log: Path, tail: int = 200) -> str:
    try:
        lines = _ANSI.sub("", log.read_text(errors="replace")).splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-tail:])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ok", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_healthy(proc: subprocess.Popen[bytes], log: Path, port: int) -> str:
    """The server's URL once ``/ok`` answers; fail with the log if it never does."""
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"langgraph dev exited with code {proc.returncode} before it was healthy\n"
                f"--- server log ---\n{_log_tail(log)}"
            )
        # langgraph dev quietly moves to another port when ours was taken meanwhile
        found = re.search(r"API: http://127\.0\.0\.1:(\d+)", _log_tail(log, 100))
        if found:
            url = f"http://127.0.0.1:{found.group(1)}"
        if _healthy(url):
            return url
        time.sleep(0.25)
    pytest.fail(
        f"langgraph dev was not healthy within {START_TIMEOUT_S:.0f}s ({url}/ok)\n"
        f"--- server log ---\n{_log_tail(log)}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def _plan_ids(app_dir: Path) -> dict[str, str]:
    """The plan ids of the example's two graphs (imported here, with an in-process store)."""
    spec = importlib.util.spec_from_file_location(
        "capsule_app_under_test", app_dir / "capsule_app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # typing resolves the state's annotations through it
    saved = os.environ.pop(PG_ENV, None)
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is not None:
            os.environ[PG_ENV] = saved
    compiled = module.capsule_graph(module.make_model()).plan.plan_id
    factory = module.capsule_graph(module.make_model(), async_nodes=True).plan.plan_id
    assert compiled != factory  # the two variants differ in shape: two histories
    return {COMPILED: compiled, FACTORY: factory}


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    """A PostgreSQL server for this module (started here; never skipped)."""
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployment(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``langgraph dev`` serving a copy of ``examples/deploy`` (its ``.langgraph_api``
    state goes to a temp dir, not the checkout), stopped at the end, also on failure."""
    conninfo = pg.create_database("capsules_deploy")
    app_dir = tmp_path_factory.mktemp("deploy") / "app"
    shutil.copytree(DEPLOY, app_dir, ignore=shutil.ignore_patterns(".langgraph_api", "__pycache__"))
    cli = Path(sys.executable).parent / "langgraph"
    if not os.access(cli, os.X_OK):
        pytest.fail(f"no langgraph CLI at {cli}: run scripts/bootstrap (langgraph-cli[inmem])")
    port = _free_port()
    log = app_dir.parent / "server.log"
    argv = [
        str(cli),
        "dev",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-browser",
        "--no-reload",
        "--config",
        str(app_dir / "langgraph.json"),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=app_dir,
            env=_server_env(conninfo),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    try:
        url = _wait_healthy(proc, log, port)
        client = get_sync_client(url=url, api_key=None, timeout=60)
        yield Deployment(url, conninfo, log, client, _plan_ids(app_dir))
    finally:
        _stop(proc)


# ------------------------------------------------------------------ helpers
def _doc(i: int) -> str:
    """A new input document per run (a shared source long enough to merge)."""
    lines = [
        f"Halden Optics {i} makes lidar lenses and sells them in {8 + i} countries.",
        f"Revenue rose {i + 3}% in 2026 while the operating margin held at {11 + i % 5}%.",
        f"Its main rival, Skarv Photonics {i}, cut list prices twice this year.",
        f"The board plans {i % 4 + 1} new lines; export rules may cost more in {2027 + i % 3}.",
    ]
    return " ".join(lines * 4)


_docs = iter(range(1_000_000))


def _new_input() -> dict[str, Any]:
    return {"doc": _doc(next(_docs))}


def _assert_no_blocking(dep: Deployment) -> None:
    """blockbuster (on in ``langgraph dev``) logs a ``BlockingError`` for every blocking
    call it caught on the event loop: there must be none."""
    text = _ANSI.sub("", dep.log.read_text(errors="replace"))
    if "BlockingError" in text:
        at = text.index("BlockingError")
        pytest.fail(f"blockbuster caught a blocking call:\n{text[max(0, at - 4000) : at + 4000]}")


def _assert_complete(out: Any, dep: Deployment, what: str) -> None:
    assert isinstance(out, dict), f"{what}: {out!r}\n{dep.log_text()}"
    missing = [k for k in OUTPUT_KEYS if not out.get(k)]
    assert not missing, f"{what}: no {missing} in {sorted(out)}\n--- log ---\n{dep.log_text()}"


def _history(dep: Deployment, graph_id: str) -> list[Observation]:
    store = lc.PostgresControllerStore(dep.conninfo)
    try:
        return store.history(dep.plan_ids[graph_id], GROUP)
    finally:
        store.close()


def _tiers(records: list[Observation]) -> list[str]:
    return [o["tier"] + ("+shadow" if o["shadow"] else "") for o in records]


def _thread(dep: Deployment) -> str:
    return str(dep.client.threads.create()["thread_id"])


def _state_next(dep: Deployment, thread: str) -> list[str]:
    """The nodes the thread would run next (empty: the run finished)."""
    return list(dep.client.threads.get_state(thread)["next"])


def _wait(dep: Deployment, thread: str, graph_id: str, **kwargs: Any) -> Any:
    """``client.runs.wait``; a failed run fails the test with the server's log."""
    try:
        return dep.client.runs.wait(thread, graph_id, **kwargs)
    except Exception as exc:
        pytest.fail(f"{graph_id} run failed: {exc!r}\n--- server log ---\n{dep.log_text()}")


def _caps(mode: str) -> dict[str, Any]:
    return {"configurable": {"capsules": {"mode": mode}}}


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("graph_id", GRAPHS)
def test_auto_runs_complete_and_the_controller_moves(deployment: Deployment, graph_id: str) -> None:
    """New inputs through ``runs.wait`` and ``runs.stream`` (values + updates): every
    output complete, one history record per run in PostgreSQL, and the controller
    switched (a judged shadow of the standard tier, then merged runs)."""
    dep = deployment
    before = len(_history(dep, graph_id))
    for i in range(AUTO_RUNS):
        thread = _thread(dep)
        if i % 2 == 0:
            out = _wait(dep, thread, graph_id, input=_new_input())
            _assert_complete(out, dep, f"{graph_id} runs.wait #{i}")
            continue
        parts = list(
            dep.client.runs.stream(
                thread, graph_id, input=_new_input(), stream_mode=["values", "updates"]
            )
        )
        events = [p.event for p in parts]
        assert "error" not in events, f"{parts[-1]}\n--- log ---\n{dep.log_text()}"
        values = [p.data for p in parts if p.event == "values"]
        _assert_complete(values[-1], dep, f"{graph_id} runs.stream #{i}")
        written: set[str] = set()
        for p in parts:
            if p.event == "updates":
                for update in p.data.values():  # a node's dict, or a list of its writes
                    for write in update if isinstance(update, list) else [update or {}]:
                        written |= set(write)
        assert set(OUTPUT_KEYS) <= written, f"updates wrote {sorted(written)}"
        assert _state_next(dep, thread) == []
    records = _history(dep, graph_id)[before:]
    main = [o for o in records if not o["shadow"]]
    assert len(main) == AUTO_RUNS, _tiers(records)  # one record per run, each run once
    shadows = [o for o in records if o["shadow"]]
    assert shadows and all(o["tier"] == "standard" for o in shadows), _tiers(records)
    assert all(o["quality"] is not None and o["quality"] >= 0.5 for o in shadows)
    merged = [o for o in main if o["tier"] == "standard"]
    assert merged, f"the controller never ran merged: {_tiers(records)}"
    assert all(o.get("merged_members") == len(EXTRACTORS) and o["calls"] == 1 for o in merged)
    if before == 0:
        assert main[0]["tier"] == "fine"  # a new history starts fine, then moves
    _assert_no_blocking(dep)


def test_store_holds_exactly_the_two_graphs(deployment: Deployment) -> None:
    """Every record the server wrote is under one of the example's two plan ids, and
    each graph writes under its own."""
    for graph_id in GRAPHS:
        _assert_complete(
            _wait(deployment, _thread(deployment), graph_id, input=_new_input()),
            deployment,
            f"{graph_id} runs.wait",
        )
    with psycopg.connect(deployment.conninfo, autocommit=True) as conn:
        rows = conn.execute(f"SELECT DISTINCT graph, grp FROM {OBS_TABLE}").fetchall()
    assert sorted(rows) == sorted((plan, GROUP) for plan in deployment.plan_ids.values())


@pytest.mark.parametrize("graph_id", GRAPHS)
@pytest.mark.parametrize("mode", ["compound", "fine"])
def test_per_run_mode_override(deployment: Deployment, graph_id: str, mode: str) -> None:
    """``config={"configurable": {"capsules": {"mode": ...}}}`` through the SDK runs
    that tier (compound: ``capsule__arm`` instead of the members) and, a locked mode,
    leaves the controller's history alone; with ``"record": True`` the run is recorded
    with its tier (compound: all three members from one merged call)."""
    dep = deployment
    before = len(_history(dep, graph_id))
    parts = list(
        dep.client.runs.stream(
            _thread(dep), graph_id, input=_new_input(), config=_caps(mode), stream_mode="updates"
        )
    )
    assert "error" not in [p.event for p in parts], f"{parts[-1]}\n{dep.log_text()}"
    nodes = {node for p in parts if p.event == "updates" for node in p.data}
    merged_path = {"capsule__arm"} if mode == "compound" else set(EXTRACTORS)
    fine_path = set(EXTRACTORS) if mode == "compound" else {"capsule__arm"}
    assert merged_path <= nodes and not fine_path & nodes, sorted(nodes)
    assert {"scoping", "gate__arm", "briefer"} <= nodes
    assert len(_history(dep, graph_id)) == before  # a locked mode is not recorded

    config = {"configurable": {"capsules": {"mode": mode, "record": True}}}
    out = _wait(dep, _thread(dep), graph_id, input=_new_input(), config=config)
    _assert_complete(out, dep, f"{graph_id} mode={mode} record=True")
    records = [o for o in _history(dep, graph_id)[before:] if not o["shadow"]]
    assert [o["tier"] for o in records] == ["standard" if mode == "compound" else "fine"]
    if mode == "compound":
        assert records[0].get("merged_members") == len(EXTRACTORS) and records[0]["calls"] == 1
    _assert_no_blocking(dep)


def _interrupt_and_resume(dep: Deployment, graph_id: str, mode: str, expect: str) -> None:
    thread = _thread(dep)
    config = _caps(mode)
    out = _wait(
        dep, thread, graph_id, input=_new_input(), config=config, interrupt_before=["financials"]
    )
    paused = _state_next(dep, thread)
    assert isinstance(out, dict) and not out.get("brief") and expect in paused, (
        f"{graph_id} mode={mode}: interrupt_before=['financials'] did not pause before "
        f"{expect!r}: next={paused}, the run wrote {sorted(out)}"
    )
    out = _wait(dep, thread, graph_id, input=None, config=config)
    _assert_complete(out, dep, f"{graph_id} mode={mode} resumed")
    assert _state_next(dep, thread) == []
    _assert_no_blocking(dep)


@pytest.mark.parametrize("graph_id", GRAPHS)
def test_interrupt_before_a_member_pauses_and_resumes_on_the_fine_path(
    deployment: Deployment, graph_id: str
) -> None:
    """Run-time ``interrupt_before=["financials"]`` via the SDK on a fine run stops
    before the member; resuming (``input=None``) finishes the run."""
    _interrupt_and_resume(deployment, graph_id, "fine", expect="financials")


@pytest.mark.parametrize("graph_id", GRAPHS)
def test_interrupt_before_a_member_pauses_and_resumes_on_the_merged_path(
    deployment: Deployment, graph_id: str
) -> None:
    """The same on a compound run: the pause must come before ``capsule__arm``."""
    _interrupt_and_resume(deployment, graph_id, "compound", expect="capsule__arm")


@pytest.mark.parametrize("graph_id", GRAPHS)
def test_per_group_mode_override(deployment: Deployment, graph_id: str) -> None:
    """``{"capsules": {"groups": {"arm": "compound"}}}`` is accepted and merges."""
    dep = deployment
    config = {"configurable": {"capsules": {"groups": {GROUP: "compound"}}}}
    parts = list(
        dep.client.runs.stream(
            _thread(dep), graph_id, input=_new_input(), config=config, stream_mode="updates"
        )
    )
    errors = [p.data for p in parts if p.event == "error"]
    assert not errors, f"{graph_id}: the per-group override was refused: {errors}"
    nodes = {node for p in parts if p.event == "updates" for node in p.data}
    assert "capsule__arm" in nodes and not set(EXTRACTORS) & nodes, sorted(nodes)
    _assert_no_blocking(dep)
