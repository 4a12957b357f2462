"""Integrity tests for the fictional competitive-intelligence benchmark data and its matcher.

Held-out companies: only their metadata (id, name, sector, held_out, gold ids) is looked at
here, except in ``test_held_out_gold_found_in_own_bundles``, a data-integrity check that runs
the matcher inside a helper and reports fact ids only, never any text.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from benchmarks.competitive_intelligence import dataset as ds  # noqa: E402
from benchmarks.competitive_intelligence.dataset import (  # noqa: E402
    KINDS,
    LENSES,
    Company,
    GoldFact,
    company_ids,
    fact_found,
    find_quantities,
    load_companies,
    load_company,
    parse_quantity,
)

DEV_IDS = company_ids(held_out=False)
HELD_OUT_IDS = company_ids(held_out=True)


def _words(text: str) -> int:
    return len(text.split())


def _fact(*groups: list[str]) -> GoldFact:
    return {"id": "t", "text": "t", "match": [list(g) for g in groups]}


def _all_facts(company: Company) -> list[GoldFact]:
    facts: list[GoldFact] = []
    for lens in LENSES:
        for kind in KINDS:
            facts.extend(company["lenses"][lens]["gold"][kind])
    facts.extend(company["gold"]["scoping"])
    facts.extend(company["gold"]["brief"])
    return facts


def _integrity_problems(company_id: str) -> list[str]:
    """Ids (with a short reason) of gold facts not satisfied by their own source text.

    A fact must be found in its source, and so must the first (canonical) alternative of each
    of its groups on its own. Only ids are returned, so that no data text leaves this helper.
    """
    company = load_company(company_id)
    sources: list[tuple[list[GoldFact], str]] = [
        (company["lenses"][lens]["gold"][kind], company["lenses"][lens]["bundle"])
        for lens in LENSES
        for kind in KINDS
    ]
    sources.append((company["gold"]["scoping"], company["overview"]))
    sources.append((company["gold"]["brief"], ds.all_bundles(company)))
    problems: list[str] = []
    for facts, source in sources:
        for fact in facts:
            if not fact_found(fact, source):
                problems.append(f"{fact['id']}: not found")
            for i, group in enumerate(fact["match"]):
                if not fact_found(_fact([group[0]]), source):
                    problems.append(f"{fact['id']}: canonical alternative of group {i} missing")
    return problems


# --------------------------------------------------------------------------- schema


def test_company_counts() -> None:
    companies = load_companies()
    assert len(companies) >= 6
    assert len(HELD_OUT_IDS) == 2
    assert len(DEV_IDS) == len(companies) - 2
    assert [c["id"] for c in load_companies(include_held_out=False)] == DEV_IDS
    assert company_ids() == sorted(DEV_IDS + HELD_OUT_IDS)


def test_ids_unique_and_match_files() -> None:
    ids = [c["id"] for c in load_companies()]
    assert len(ids) == len(set(ids))
    files = sorted(p.stem for p in ds.DATA_DIR.glob("*.json"))
    assert files == sorted(ids)
    names = [c["name"] for c in load_companies()]
    assert len(names) == len(set(names))


def test_raw_schema() -> None:
    for path in sorted(ds.DATA_DIR.glob("*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert set(raw) == {"id", "name", "sector", "held_out", "overview", "lenses", "gold"}
        assert tuple(raw["lenses"]) == LENSES
        for lens in LENSES:
            assert set(raw["lenses"][lens]) == {"bundle", "gold"}
            assert tuple(raw["lenses"][lens]["gold"]) == KINDS
        assert set(raw["gold"]) == {"scoping", "brief"}


def test_fact_ids_unique_and_well_formed() -> None:
    seen: set[str] = set()
    for company in load_companies():
        for fact in _all_facts(company):
            assert fact["id"].startswith(company["id"] + ".")
            assert fact["id"] not in seen
            seen.add(fact["id"])
            assert fact["text"].strip()
            assert fact["match"]
            for group in fact["match"]:
                assert group
                assert all(isinstance(a, str) and a.strip() for a in group)
                assert len({a.lower() for a in group}) == len(group), fact["id"]


def test_gold_counts() -> None:
    for company in load_companies():
        for lens in LENSES:
            gold = company["lenses"][lens]["gold"]
            assert 8 <= len(gold["entities"]) <= 16, (company["id"], lens)
            assert 4 <= len(gold["claims"]) <= 7, (company["id"], lens)
            assert 4 <= len(gold["signals"]) <= 7, (company["id"], lens)
        assert len(company["gold"]["scoping"]) == 4
        assert 6 <= len(company["gold"]["brief"]) <= 10


def test_word_counts() -> None:
    for company in load_companies():
        assert 120 <= _words(company["overview"]) <= 200, company["id"]
        for lens in LENSES:
            n = _words(company["lenses"][lens]["bundle"])
            assert 250 <= n <= 450, (company["id"], lens, n)


def test_loader_returns_independent_copies() -> None:
    first = load_company(DEV_IDS[0])
    first["name"] = "mutated"
    assert load_company(DEV_IDS[0])["name"] != "mutated"


def test_unknown_company() -> None:
    with pytest.raises(KeyError):
        load_company("no-such-company")
    with pytest.raises(KeyError):
        load_company("../README")


def test_all_bundles_joins_lenses_in_order() -> None:
    company = load_company(DEV_IDS[0])
    joined = ds.all_bundles(company)
    positions = [joined.index(company["lenses"][lens]["bundle"]) for lens in LENSES]
    assert positions == sorted(positions)


# --------------------------------------------------------------------------- gold vs. sources


@pytest.mark.parametrize("company_id", DEV_IDS)
def test_dev_gold_found_in_own_sources(company_id: str) -> None:
    company = load_company(company_id)
    for lens in LENSES:
        bundle = company["lenses"][lens]["bundle"]
        for kind in KINDS:
            missing = ds.missing_facts(company["lenses"][lens]["gold"][kind], bundle)
            assert not missing, (lens, kind, missing)
    assert not ds.missing_facts(company["gold"]["scoping"], company["overview"])
    assert not ds.missing_facts(company["gold"]["brief"], ds.all_bundles(company))
    assert _integrity_problems(company_id) == []


@pytest.mark.parametrize("company_id", HELD_OUT_IDS)
def test_held_out_gold_found_in_own_bundles(company_id: str) -> None:
    # Data-integrity only: the helper returns fact ids, never text.
    assert _integrity_problems(company_id) == []


def _reformat_numbers(text: str) -> str:
    """Rewrite numbers the way a model might: 2.1 billion -> 2.1bn, 31% -> 31 percent, ..."""
    text = re.sub(r"(\d+(?:\.\d+)?) million\b", r"\1m", text)
    text = re.sub(r"(\d+(?:\.\d+)?) billion\b", r"\1 bn", text)
    text = re.sub(r"\$(\d+(?:\.\d+)?)m\b", r"USD \1 million", text)
    text = re.sub(r"(\d+(?:\.\d+)?)%", r"\1 per cent", text)
    return re.sub(r"\b(\d{1,3}),(\d{3})\b", r"\1\2", text)


@pytest.mark.parametrize("company_id", DEV_IDS)
def test_dev_gold_survives_number_reformatting(company_id: str) -> None:
    company = load_company(company_id)
    for lens in LENSES:
        bundle = company["lenses"][lens]["bundle"]
        rewritten = _reformat_numbers(bundle)
        assert rewritten != bundle
        for kind in KINDS:
            assert not ds.missing_facts(company["lenses"][lens]["gold"][kind], rewritten)


def test_scoping_gold_covers_name_sector_hq_year() -> None:
    for company in load_companies():
        ids = [f["id"].rsplit(".", 1)[1] for f in company["gold"]["scoping"]]
        assert ids == ["name", "sector", "hq", "founded"]
        year = company["gold"]["scoping"][3]["match"][0][0]
        assert year.isdigit() and 1900 < int(year) < 2030


@pytest.mark.parametrize("company_id", DEV_IDS)
def test_gold_is_specific(company_id: str) -> None:
    # The company name alone, or an unrelated company's bundles, must not satisfy much gold.
    company = load_company(company_id)
    facts = [f for lens in LENSES for kind in KINDS for f in company["lenses"][lens]["gold"][kind]]
    assert ds.recall(facts, company["name"]) < 0.1
    other = next(c for c in load_companies(include_held_out=False) if c["id"] != company_id)
    assert ds.recall(facts, ds.all_bundles(other)) < 0.25


def test_recall_helpers() -> None:
    facts = [_fact(["alpha"]), _fact(["beta"])]
    assert ds.recall(facts, "alpha only") == 0.5
    assert ds.recall([], "anything") == 1.0
    assert ds.missing_facts(facts, "beta") == ["t"]


# --------------------------------------------------------------------------- matcher


def test_every_group_must_match() -> None:
    fact = _fact(["Kelvara"], ["price leader", "cheapest", "lowest price"], ["Nordic"])
    assert fact_found(fact, "In the Nordic market, KELVARA is the   cheapest vendor.")
    assert not fact_found(fact, "Kelvara is the cheapest vendor in Germany.")
    assert not fact_found(fact, "Brontek is the Nordic price leader.")


def test_text_normalisation() -> None:
    assert fact_found(_fact(["Kelvara's battery"]), "Kelvara\u2019s\n  battery life")
    assert fact_found(_fact(["break-even"]), "operating break\u2013even in 2024")
    assert fact_found(_fact(["price  leader"]), "the Price\tLeader")


@pytest.mark.parametrize(
    ("alternative", "candidate"),
    [
        ("48.2 million", "revenue of 48.2m"),
        ("48.2 million", "EUR 48.2 million"),
        ("48.2 million", "48,200,000 euros"),
        ("48.2 million", "€48.2 mn"),
        ("48.2 million", "EUR48.2m"),
        ("EUR 48.2 million", "48.2M"),
        ("$310m", "310 million dollars"),
        ("$310m", "US$ 0.31 billion"),
        ("310 million", "$310m"),
        ("1.4bn", "1.4 billion"),
        ("1.4 billion", "1,400 million"),
        ("1.4 billion", "SEK 1.4bn"),
        ("12.5%", "12.5 percent"),
        ("12.5%", "12.5 per cent"),
        ("12.5%", "a 12.5 % margin"),
        ("2,600", "2600 assets"),
        ("5k", "5,000"),
        ("2019", "founded in 2019."),
        ("0.35%", "a markup of 0.35 percent"),
    ],
)
def test_numbers_match_across_formats(alternative: str, candidate: str) -> None:
    assert parse_quantity(alternative) is not None
    assert fact_found(_fact([alternative]), candidate)


@pytest.mark.parametrize(
    ("alternative", "candidate"),
    [
        ("12.5%", "125"),
        ("12.5%", "12.5"),
        ("12.5", "12.5%"),
        ("48.2 million", "148.2 million"),
        ("48.2 million", "48.2"),
        ("48.2 million", "48.2 billion"),
        ("48.2 million", "48.3m"),
        ("$310m", "$31m"),
        ("1.4bn", "1.4m"),
        ("2019", "FY2019"),
        ("3,100", "3,100k"),
        ("22%", "122%"),
        ("3", "Q3 results"),
    ],
)
def test_different_numbers_do_not_match(alternative: str, candidate: str) -> None:
    assert parse_quantity(alternative) is not None
    assert not fact_found(_fact([alternative]), candidate)


def test_quantity_parsing_details() -> None:
    assert parse_quantity("EUR 48.2 million") == (48_200_000.0, False)
    assert parse_quantity("12.5%") == (12.5, True)
    assert parse_quantity("48,200,000") == (48_200_000.0, False)
    assert parse_quantity("Series C") is None
    assert parse_quantity("K-Sense 300") is None
    assert parse_quantity("7 years") is None
    # One-letter scales only count when glued to the number.
    assert find_quantities("about 3,100 K-Sense units") == [(3100.0, False)]
    assert find_quantities("48.2m and 5 months") == [(48_200_000.0, False), (5.0, False)]
    assert find_quantities("B2B in Q3, 3x faster") == []


def test_mixed_number_and_text_groups() -> None:
    fact = _fact(["Aurivo"], ["$85m"], ["Series C", "funding round"])
    assert fact_found(fact, "Aurivo raised 85 million dollars in a Series C.")
    assert not fact_found(fact, "Aurivo raised 58 million dollars in a Series C.")
    assert not fact_found(fact, "Aurivo raised $85m.")


def test_non_quantity_alternative_is_substring() -> None:
    assert fact_found(_fact(["acqui"]), "is looking at acquisitions")
    assert fact_found(_fact(["K-Sense 500"]), "the k-sense 500 ranked first")
    assert not fact_found(_fact(["K-Sense 500"]), "the K-Sense 5000")
    assert fact_found(_fact(["Insight 4.0"]), "Insight 4.0 was released")
    assert fact_found(_fact(["Insight 4.0"]), "released Insight 4.0.")
    assert not fact_found(_fact(["Insight 4.0"]), "Insight 4.01")
    assert fact_found(_fact(["Q3 2025"]), "ships in Q3 2025, as planned")
