"""``capsules bench oracle``: the oracle ablation on a benchmark app.

For each ``--model``, every (group, tier) cell of the 14-node app runs ``--runs`` times
per company (a fine run, then each built compound tier on the same input, each compound
run judged against that company's fine output by :class:`lc.FactRecallJudge`). The
oracle routes each group to the cheapest tier whose mean quality reaches the floor,
else fine; the controller is replayed online over the same observations
(:func:`lc.oracle_ablation`), and agreement is printed per group and model. Writes
``oracle.json`` and ``oracle.md``. ``--pipeline dd`` runs the tool-using due-diligence
app instead (``benchmarks/due_diligence``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

import langgraph_capsules as lc
from benchmarks.competitive_intelligence.dataset import load_company
from benchmarks.competitive_intelligence.pipeline import ARM_GROUPS, build_lg14, initial_state
from benchmarks.competitive_intelligence.runner import DEFAULT_MODEL, _choose_companies, open_model

__all__ = ["add_cli", "main", "run_oracle"]


def _dd_model(spec: str) -> Any:
    """The due-diligence app's offline model (tool calls scripted), or None for others."""
    from benchmarks.due_diligence.scripted import scripted_due_diligence

    if spec == "scripted":
        return scripted_due_diligence()
    if spec == "scripted-degraded":
        return scripted_due_diligence(compress=0.3)
    return None


@contextlib.contextmanager
def _app(pipeline: str, spec: str, companies: int, company_ids: list[str] | None) -> Any:
    """(label, builder, inputs, groups) of one pipeline on one model."""
    if pipeline == "dd":
        from benchmarks.due_diligence.dataset import company_ids as dd_ids
        from benchmarks.due_diligence.pipeline import DD_GROUPS, build_due_diligence
        from benchmarks.due_diligence.pipeline import initial_state as dd_state

        ids = company_ids or dd_ids()[:companies]
        inputs = [dd_state(c) for c in ids]
        scripted = _dd_model(spec)
        if scripted is not None:
            yield f"due diligence, {spec}", build_due_diligence(scripted), inputs, DD_GROUPS
            return
        with open_model(spec) as opened:
            builder = build_due_diligence(opened.llm)
            yield f"due diligence, {opened.label}", builder, inputs, DD_GROUPS
        return
    chosen = [load_company(c) for c in company_ids] if company_ids else _choose_companies(companies)
    with open_model(spec) as opened:
        builder = build_lg14(lc.CapsuleChatModel(opened.llm))
        yield opened.label, builder, [initial_state(c) for c in chosen], ARM_GROUPS


def run_oracle(
    *,
    models: list[str],
    companies: int,
    runs: int,
    floor: float,
    steps: int,
    out: Path,
    company_ids: list[str] | None = None,
    pipeline: str = "ci",
    console: Any = None,
) -> list[lc.OracleReport]:
    """Run the ablation for each model and write ``oracle.json`` and ``oracle.md``."""
    from rich.console import Console

    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    n_inputs = 0
    for spec in models:
        with _app(pipeline, spec, companies, company_ids) as (label, builder, inputs, groups):
            n_inputs = len(inputs)
            report = lc.oracle_ablation(
                builder,
                inputs,
                groups=groups,
                judge=lc.FactRecallJudge(),
                policy=lc.ControllerPolicy.aggressive(quality_floor=floor),
                runs=runs,
                steps=steps,
                label=label,
                progress=lambda line, m=spec: console.log(f"{m}: {line}"),
            )
        print(str(report), flush=True)
        reports.append(report)
    data = {"pipeline": pipeline, "inputs": n_inputs, "reports": [r.to_dict() for r in reports]}
    (out / "oracle.json").write_text(json.dumps(data, indent=2))
    lines = ["# Oracle ablation", ""]
    for r in reports:
        lines += ["```", str(r), "```", ""]
    total = sum(len(r.rows) for r in reports)
    agree = sum(sum(row.agree for row in r.rows) for r in reports)
    lines.append(f"Controller = oracle on {agree}/{total} (model, group) cells.")
    (out / "oracle.md").write_text("\n".join(lines) + "\n")
    console.print(f"agreement {agree}/{total}; wrote {out / 'oracle.json'}, {out / 'oracle.md'}")
    return reports


def add_cli(sub: Any) -> None:
    """Register ``oracle`` under the ``bench`` command."""
    p = sub.add_parser("oracle", help="oracle ablation: controller routing vs the oracle's")
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        help=f"repeatable; scripted | scripted-degraded | local name (default {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--pipeline",
        choices=["ci", "dd"],
        default="ci",
        help="ci: the 14-agent competitive-intelligence app; dd: the tool-using "
        "due-diligence app (its scripted models make real tool calls)",
    )
    p.add_argument("--companies", type=int, default=1)
    p.add_argument("--company", action="append", dest="company_ids")
    p.add_argument("--runs", type=int, default=3, help="runs per (company, tier)")
    p.add_argument("--floor", type=float, default=0.75)
    p.add_argument("--steps", type=int, default=30, help="controller runs replayed per group")
    p.add_argument("--out", type=Path, default=Path("bench-out/oracle"))
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``capsules bench oracle``."""
    run_oracle(
        models=args.models or [DEFAULT_MODEL],
        companies=args.companies,
        runs=args.runs,
        floor=args.floor,
        steps=args.steps,
        out=args.out,
        company_ids=args.company_ids,
        pipeline=args.pipeline,
    )
    return 0
