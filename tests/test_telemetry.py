"""track_usage(): attribution per run, group and member; totals equal langchain-core's."""

from __future__ import annotations

from conftest import COMPOUND, DOC, KINDS, build_app
from langchain_core.callbacks import UsageMetadataCallbackHandler

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel


def test_totals_equal_usage_metadata_callback_handler() -> None:
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel(cache_min_tokens=8)))
    capsules = lc.capsulize(builder, groups={"arm": list(KINDS)})
    app = capsules.compile()
    handler = UsageMetadataCallbackHandler()
    with lc.track_usage() as usage:
        for cfg in ({}, COMPOUND, COMPOUND):
            app.invoke({"doc": DOC}, {**cfg, "callbacks": [handler]})
    (per_model,) = handler.usage_metadata.values()
    totals = usage.totals()
    assert totals["input_tokens"] == per_model["input_tokens"]
    assert totals["output_tokens"] == per_model["output_tokens"]
    assert totals["cached_tokens"] == per_model["input_token_details"]["cache_read"] > 0
    assert totals["calls"] == 5 + 3 + 3
    assert len(usage.by_run()) == 3


def test_attribution_per_group_member_and_kind() -> None:
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()))
    app = lc.capsulize(builder, groups={"arm": list(KINDS)}).compile()
    with lc.track_usage() as usage:
        app.invoke({"doc": DOC})
        app.invoke({"doc": DOC}, COMPOUND)
    runs = list(usage.by_run().values())
    assert [r["calls"] for r in runs] == [5, 3]
    fine_run, compound_run = usage.by_run()
    rows = [r for r in usage.calls if r["run_id"] == compound_run and r["group"] == "arm"]
    assert sorted((r["kind"], r["member"]) for r in rows) == [
        ("merged", None),
        *sorted(("served", k) for k in KINDS),
    ]
    assert all(r["tier"] == "standard" for r in rows)
    fine_rows = [r for r in usage.calls if r["run_id"] == fine_run and r["group"] == "arm"]
    assert sorted(r["member"] for r in fine_rows) == sorted(KINDS)
    assert all(r["kind"] == "real" for r in fine_rows)
    per_member = usage.by_member()
    assert per_member[("arm", None)]["calls"] == 1
    assert per_member[("arm", "claims")]["calls"] == 1  # its fine-tier call
    table = usage.table()
    assert "(merged call)" in table and "claims" in table


def test_report_shows_recent_runs_per_group() -> None:
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel(drop_sections={3})))
    capsules = lc.capsulize(builder, groups={"arm": list(KINDS)})
    app = capsules.compile()
    app.invoke({"doc": DOC})
    app.invoke({"doc": DOC}, COMPOUND)
    report = capsules.report(print_=False)
    runs = report.data["groups"]["arm"]["runs"]
    assert [r["tier"] for r in runs] == ["fine", "standard"]
    # merged + the missing member's re-run + the one whose section section 3 should close
    assert runs[0]["calls"] == 3 and runs[1]["calls"] == 3
    assert runs[1]["fallback"] == ["claims", "signals"]
    assert "section missing" in report.text and "standard" in report.text
