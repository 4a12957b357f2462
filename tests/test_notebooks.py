"""The notebooks in ``notebooks/`` run top to bottom, offline, on the scripted model, and
are committed clean (no outputs, no execution counts) and on the public API only.

Each notebook runs in a fresh kernel on this interpreter (the virtualenv's python),
whatever kernelspecs the machine has installed, with the notebook's folder as its
working directory. Parameters are overridden papermill-style: a cell is inserted right
after the cell tagged ``parameters``.
"""

from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

import langgraph_capsules as lc
from langgraph_capsules import local, testing

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {
    "01_wrap_an_existing_app.ipynb",
    "02_controller_dynamics.ipynb",
    "03_competitive_intelligence.ipynb",
}
BUDGET_S = 60.0
"""Each notebook must run top to bottom in under a minute on the scripted model."""


def _read(path: Path) -> Any:
    return nbformat.read(path, as_version=4)


def _kernel_manager(kernels: Path) -> KernelManager:
    """A kernel manager that starts ipykernel on ``sys.executable`` (this virtualenv's
    python): no user-level or system kernelspec named ``python3`` can point it at
    another interpreter, and nothing is installed into the environment."""
    write_kernel_spec(kernels / "python3")  # ipykernel's own spec, on sys.executable
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _inject(nb: Any, params: dict[str, Any]) -> None:
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in params.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)


def _execute(name: str, tmp_path: Path, **params: Any) -> tuple[Any, float]:
    """Run one notebook in a fresh kernel; returns the executed notebook and its wall time."""
    nb = _read(NOTEBOOK_DIR / name)
    _inject(nb, {"OUT_DIR": str(tmp_path / "out"), **params})  # never write into the repo
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path / "kernels"),
        timeout=BUDGET_S,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # the kernel's cwd
    )
    start = time.perf_counter()
    # We own the kernel manager, so ask nbclient to shut the kernel down afterwards too.
    client.execute(cleanup_kc=True)  # raises CellExecutionError naming the failing cell
    return nb, time.perf_counter() - start


def _outputs(nb: Any) -> list[Any]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _text(nb: Any) -> str:
    return "".join(o.get("text", "") for o in _outputs(nb) if o.output_type == "stream")


def _images(nb: Any) -> int:
    return sum(1 for o in _outputs(nb) if "image/png" in o.get("data", {}))


def test_the_notebooks_are_there() -> None:
    assert {p.name for p in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_offline_on_the_scripted_model(name: str, tmp_path: Path) -> None:
    nb, elapsed = _execute(name, tmp_path)
    print(f"{name}: {elapsed:.1f} s")
    assert elapsed < BUDGET_S
    errors = [o for o in _outputs(nb) if o.output_type == "error"]
    assert not errors
    text = _text(nb)
    if name.startswith("01"):
        assert "fine tier output identical to the original run: True" in text
        assert "capsule__" in text and "gate__" in text  # the capsule graph was drawn
    if name.startswith("02"):
        assert _images(nb) == 1
        # both groups pass the shadow gate and switch; only the finance group's merged
        # answers degrade (from run 20), so only the finance group turns again after that
        assert "market, run 2: switch to standard" in text
        assert "finance, run 2: switch to standard" in text
        later = [(g, int(n)) for g, n in re.findall(r"== (\w+), run (\d+):", text)]
        assert {g for g, n in later if n >= 20} == {"finance"}
        assert not (tmp_path / "out").exists()  # SAVE_PLOTS is off by default
    if name.startswith("03"):
        assert _images(nb) == 2
        assert "2026-11-28-main" in text and "declared fine" in text


def test_controller_notebook_saves_its_plot_when_asked(tmp_path: Path) -> None:
    _execute("02_controller_dynamics.ipynb", tmp_path, SAVE_PLOTS=True)
    assert (tmp_path / "out" / "controller_dynamics.png").stat().st_size > 0


def test_benchmark_notebook_runs_a_fresh_scripted_benchmark(tmp_path: Path) -> None:
    nb, elapsed = _execute(
        "03_competitive_intelligence.ipynb", tmp_path, RUN_BENCHMARK=True, SAVE_PLOTS=True
    )
    print(f"03 with a fresh scripted benchmark: {elapsed:.1f} s")
    assert elapsed < BUDGET_S
    out = tmp_path / "out"
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["model_spec"] == "scripted"
    assert data["meta"]["held_out"] == []  # tests never read held-out companies
    assert data["meta"]["runs"] >= 2 and data["summary"]["mdd"] is not None
    for png in ("nb_quality_vs_input.png", "nb_tokens_per_group.png"):
        assert (out / png).stat().st_size > 0
    assert _images(nb) == 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path: Path) -> None:
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [], f"{path.name}: clear the outputs before committing"
        assert cell.execution_count is None, f"{path.name}: clear the execution counts"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0] is code[0], "one parameter cell, the first code cell"
    assert "MODEL" in params[0].source


def _public(module: Any) -> set[str]:
    return set(module.__all__)


PUBLIC = {
    "langgraph_capsules": _public(lc),
    "langgraph_capsules.testing": _public(testing),
    "langgraph_capsules.local": _public(local),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_only_the_public_api(path: Path) -> None:
    source = "\n".join(c.source for c in _read(path).cells if c.cell_type == "code")
    tree = ast.parse(source)
    used: list[tuple[str, str]] = []
    aliases = {"lc": "langgraph_capsules"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("langgraph_capsules"):
                    assert a.name in PUBLIC, f"{path.name}: imports {a.name}"
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "langgraph_capsules"
        ):
            assert node.module in PUBLIC, f"{path.name}: imports from {node.module}"
            used += [(node.module, a.name) for a in node.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                module = aliases[value.id]
                sub = f"{module}.{chain[0]}"
                if sub in PUBLIC and len(chain) > 1:
                    used.append((sub, chain[1]))
                used.append((module, chain[0]))
    private = sorted({f"{m}.{n}" for m, n in used if n not in PUBLIC[m]})
    assert not private, f"{path.name} uses non-public names: {private}"
