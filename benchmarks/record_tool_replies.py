"""Record the embedded models' raw replies to tool-calling prompts.

Each embedded model (0.5B and 1.5B by default) is served with ``lc.local.server`` and
asked a few prompts with two tools bound: one that needs one call, two that need two
(two tools; one tool for two years), one that needs no tool, a follow-up turn that
already holds a tool result (in a tool loop the model should now answer in text), and
the one-call prompt with ``tool_choice="required"``. The replies are read through a plain
``ChatOpenAI`` client, so the recorded ``content`` is exactly what the server returned,
before `langgraph_capsules.tool_text` parses written tool calls. ``tests/test_tool_text.py``
replays the recordings through the parser.

    python benchmarks/record_tool_replies.py [--models qwen2.5-coder-0.5b ...]
        [--cases one_call ...] [--max-tokens 256] [--out tests/data/tool_replies.json]

With ``--cases``, only those cases are asked and their rows replace the ones in an
existing ``--out`` file (the other rows are kept).

Takes a few minutes on two cores (greedy decoding, so a rerun reproduces the file as
long as the model files and the llama.cpp build are unchanged).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

import langgraph_capsules as lc

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "data" / "tool_replies.json"
SYSTEM = "You are a financial research assistant. Use the tools when they help."


@tool
def get_revenue(company: str, year: int) -> str:
    """Return a company's reported revenue for one fiscal year."""
    return f"{company} reported revenue of NOK 482 million in {year}."


@tool
def search_filings(query: str) -> str:
    """Search the regulatory filings for a query and return the best passage."""
    return f"Top filing passage for {query!r}: the company plans a plant in Gdansk in 2026."


TOOLS = [get_revenue, search_filings]


def prompts() -> dict[str, list[BaseMessage]]:
    """The recorded conversations, by case name."""
    one_call: list[BaseMessage] = [
        SystemMessage(SYSTEM),
        HumanMessage("What was the revenue of Nordvik Sensors in 2024?"),
    ]
    return {
        "one_call": one_call,
        "two_calls": [
            SystemMessage(SYSTEM),
            HumanMessage(
                "Get the 2024 revenue of Nordvik Sensors, and search the filings for "
                "'Gdansk plant'. Call both tools."
            ),
        ],
        "two_years": [
            SystemMessage(SYSTEM),
            HumanMessage(
                "Compare the revenue of Nordvik Sensors in 2023 with its revenue in 2024."
            ),
        ],
        "no_tool": [
            SystemMessage(SYSTEM),
            HumanMessage("Say hello in French. Answer in one word, no tool is needed."),
        ],
        "after_tool_result": [
            SystemMessage(SYSTEM),
            HumanMessage("What was the revenue of Nordvik Sensors in 2024?"),
            AIMessage(
                "",
                tool_calls=[
                    {
                        "name": "get_revenue",
                        "args": {"company": "Nordvik Sensors", "year": 2024},
                        "id": "call_0",
                        "type": "tool_call",
                    }
                ],
            ),
            ToolMessage(
                "Nordvik Sensors reported revenue of NOK 482 million in 2024.",
                tool_call_id="call_0",
            ),
        ],
        "required": one_call,
    }


BIND_OPTIONS: dict[str, dict[str, Any]] = {"required": {"tool_choice": "required"}}
"""Extra ``bind_tools`` options per case."""


def _message_record(m: BaseMessage) -> dict[str, Any]:
    record: dict[str, Any] = {"role": m.type, "content": m.content}
    if isinstance(m, AIMessage) and m.tool_calls:
        record["tool_calls"] = [{"name": c["name"], "args": c["args"]} for c in m.tool_calls]
    return record


def record(model: str, max_tokens: int, cases: list[str] | None = None) -> list[dict[str, Any]]:
    """Serve ``model`` and return one record per prompt (all cases, or ``cases``)."""
    rows: list[dict[str, Any]] = []
    with lc.local.server(model, n_parallel=1) as srv:
        # A plain client: the recorded content is the server's, before any parsing.
        raw = ChatOpenAI(
            base_url=srv.base_url,
            api_key=SecretStr("sk-local"),
            model=srv.model_name,
            max_completion_tokens=max_tokens,
            temperature=0.0,
        )
        for case, messages in prompts().items():
            if cases is not None and case not in cases:
                continue
            options = BIND_OPTIONS.get(case, {})
            start = time.perf_counter()
            reply = raw.bind_tools(TOOLS, **options).invoke(messages)
            seconds = time.perf_counter() - start
            assert isinstance(reply, AIMessage)
            rows.append(
                {
                    "model": model,
                    "case": case,
                    "bind_options": options,
                    "messages": [_message_record(m) for m in messages],
                    "content": reply.content,
                    "provider_tool_calls": [
                        {"name": c["name"], "args": c["args"]} for c in reply.tool_calls
                    ],
                    "finish_reason": reply.response_metadata.get("finish_reason"),
                    "output_tokens": (reply.usage_metadata or {}).get("output_tokens"),
                    "seconds": round(seconds, 1),
                }
            )
            print(f"{model} {case} ({seconds:.1f} s): {reply.content!r}", flush=True)
    return rows


def main() -> None:
    """Record the replies and write the JSON file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=[lc.local.FAST_MODEL, lc.local.DEFAULT_MODEL])
    ap.add_argument("--cases", nargs="+", choices=list(prompts()), default=None)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for model in args.models:
        rows.extend(record(model, args.max_tokens, args.cases))
    if args.cases is not None and args.out.is_file():
        kept = json.loads(args.out.read_text(encoding="utf-8"))["replies"]
        new = {(r["model"], r["case"]): r for r in rows}
        merged = [new.pop((r["model"], r["case"]), r) for r in kept]
        for r in merged:
            r.setdefault("bind_options", {})
        rows = merged + list(new.values())
        order = {case: i for i, case in enumerate(prompts())}
        rows.sort(key=lambda r: (r["model"] != lc.local.FAST_MODEL, order.get(r["case"], 99)))
    data = {
        "about": "Raw replies of the embedded models with tools bound "
        "(benchmarks/record_tool_replies.py); temperature 0.",
        "max_tokens": args.max_tokens,
        "python": platform.python_version(),
        "xllamacpp": importlib.metadata.version("xllamacpp"),
        "tools": [convert_to_openai_tool(t) for t in TOOLS],
        "replies": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} replies to {args.out}")


if __name__ == "__main__":
    main()
