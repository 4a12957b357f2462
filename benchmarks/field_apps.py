"""The field apps (tests/field_apps.py) on the scripted model: calls and input tokens
per run, the original app vs capsules compound, and whether capsules fine returns the
original app's final state; the last column says whether compound returned the same
contents as the original (message ids and metadata aside).

Each app runs once per arm on its first input, on a fresh scripted model (reset before
every arm, so the simulated prefix cache starts alike; an app whose nodes are async
only runs with ``ainvoke``). "calls" are real LLM calls
(served answers are not calls), counted with ``lc.track_usage()``.

    python benchmarks/field_apps.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import langgraph_capsules as lc

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from field_apps import (  # noqa: E402
    COMPOUND,
    FIELD_APPS,
    FINE,
    FieldApp,
    comparable,
    run_app_arm,
    scripted_model,
)


def measure(app: FieldApp) -> dict[str, Any]:
    """One run of the original app, capsules fine and capsules compound."""
    inputs = app.inputs[0]
    model = scripted_model()
    builder = app.build(model)
    original = run_app_arm(app, builder.compile(), inputs)
    graph = lc.capsulize(builder).compile()
    model.reset()
    fine = run_app_arm(app, graph, inputs, FINE)
    model.reset()
    compound = run_app_arm(app, graph, inputs, COMPOUND)
    return {
        "original": original,
        "compound": compound,
        "fine_equal": comparable(fine.state) == comparable(original.state)
        and fine.calls == original.calls,
        "compound_equal": comparable(compound.state, content_only=True)
        == comparable(original.state, content_only=True),
    }


def main() -> None:
    table = Table(title="Field apps on the scripted model (one run per arm, first input)")
    for col in ("app", "pattern"):
        table.add_column(col)
    for col in ("calls orig", "calls compound", "input tok orig", "input tok compound"):
        table.add_column(col, justify="right")
    table.add_column("fine == original")
    table.add_column("compound output == original")
    for app in FIELD_APPS:
        m = measure(app)
        o, c = m["original"], m["compound"]
        table.add_row(
            app.name,
            app.pattern,
            str(o.calls),
            str(c.calls),
            f"{o.input_tokens:,}",
            f"{c.input_tokens:,}",
            "yes" if m["fine_equal"] else "NO",
            "yes" if m["compound_equal"] else "no",
        )
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
