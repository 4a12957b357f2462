"""Bad configuration is refused with a stable code and a message naming the fix, or it
is a documented behaviour the plan and the report state."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from conftest import DOC, KINDS, build_app
from langchain_core.runnables import RunnableConfig

import langgraph_capsules as lc
from langgraph_capsules.testing import ScriptedChatModel


def _capsules(**kwargs: Any) -> tuple[lc.CapsuleGraph, ScriptedChatModel]:
    scripted = ScriptedChatModel()
    builder = build_app(lc.CapsuleChatModel(scripted))
    return lc.capsulize(builder, groups={"arm": list(KINDS)}, **kwargs), scripted


def _refused(config: RunnableConfig) -> lc.CapsuleConfigError:
    """Run with a bad config: refused before any node (and any LLM call) runs."""
    capsules, scripted = _capsules()
    app = capsules.compile()
    with pytest.raises(lc.CapsuleConfigError) as e:
        app.invoke({"doc": DOC}, config)
    assert scripted.calls == []
    return e.value


# ------------------------------------------------------------------ run config


def test_misspelt_run_config_key_is_refused_with_the_close_match() -> None:
    err = _refused({"configurable": {"capsules": {"mdoe": "compound"}}})
    assert err.code == "unknown_config_key"
    assert "'mdoe'" in str(err) and "did you mean 'mode'?" in str(err)


@pytest.mark.asyncio
async def test_misspelt_run_config_key_is_refused_on_async_runs_too() -> None:
    capsules, scripted = _capsules()
    with pytest.raises(lc.CapsuleConfigError) as e:
        await capsules.compile().ainvoke(
            {"doc": DOC}, {"configurable": {"capsules": {"grups": {"arm": "fine"}}}}
        )
    assert e.value.code == "unknown_config_key" and "did you mean 'groups'?" in str(e.value)
    assert scripted.calls == []


def test_unknown_group_in_run_config_is_refused_naming_the_groups() -> None:
    err = _refused({"configurable": {"capsules": {"groups": {"amr": "fine"}}}})
    assert err.code == "unknown_group" and err.group == "amr"
    assert "did you mean 'arm'?" in str(err) and "['arm']" in str(err)


@pytest.mark.parametrize(
    "caps",
    [
        {"mode": "compund"},
        {"groups": {"arm": "turbo"}},
        {"groups": ["arm"]},
        {"record": "yes"},
    ],
    ids=["mode", "group_mode", "groups_not_a_dict", "record_not_bool"],
)
def test_bad_run_config_values_are_refused_before_anything_runs(caps: dict[str, Any]) -> None:
    err = _refused({"configurable": {"capsules": caps}})
    assert err.code == "bad_mode"


def test_unknown_mode_suggests_the_close_match() -> None:
    err = _refused({"configurable": {"capsules": {"mode": "compund"}}})
    assert "did you mean 'compound'?" in str(err)


def test_a_good_run_config_still_runs() -> None:
    capsules, _ = _capsules()
    config: RunnableConfig = {
        "configurable": {"capsules": {"mode": "compound", "groups": {"arm": "fine"}}}
    }
    out = capsules.compile().invoke({"doc": DOC}, config)
    assert out["brief"]
    assert capsules.history("arm")[-1]["tier"] == "fine"


# ------------------------------------------------------------ capsulize options


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("section_words", -5),
        ("section_words", 0),
        ("section_words", "200"),
        ("history_size", -1),
        ("history_size", True),
    ],
)
def test_out_of_range_options_are_refused(option: str, value: Any) -> None:
    with pytest.raises(lc.CapsuleConfigError) as e:
        _capsules(**{option: value})
    assert e.value.code == "bad_option"
    assert option in str(e.value) and "Pass a positive int" in str(e.value)


def test_group_members_given_as_a_string_are_refused_with_the_list_fix() -> None:
    builder = build_app(lc.CapsuleChatModel(ScriptedChatModel()))
    with pytest.raises(lc.CapsuleConfigError) as e:
        lc.capsulize(builder, groups={"g": "claims"})
    assert e.value.code == "bad_group_members" and e.value.group == "g"
    assert "['claims', ...]" in str(e.value)
    with pytest.raises(lc.CapsuleConfigError) as e:
        lc.capsulize(builder, groups={"g": ["claims", 3]})  # type: ignore[list-item]
    assert e.value.code == "bad_group_members"


def test_empty_groups_mean_no_groups_and_the_plan_and_report_say_so() -> None:
    scripted = ScriptedChatModel()
    builder = build_app(lc.CapsuleChatModel(scripted))
    original = builder.compile().invoke({"doc": DOC})
    capsules = lc.capsulize(builder, groups={})
    assert capsules.plan.groups == ()
    assert "groups={} declares no groups" in str(capsules.plan)
    assert "omit groups=" in capsules.plan.notes[0]
    assert capsules.plan.to_dict()["notes"] == list(capsules.plan.notes)
    assert "groups={} declares no groups" in capsules.report(print_=False).text
    compound: RunnableConfig = {"configurable": {"capsules": {"mode": "compound"}}}
    assert capsules.compile().invoke({"doc": DOC}, compound) == original
    # omitting groups= still infers the fan-out group
    assert [g.members for g in lc.capsulize(builder).plan.groups] == [KINDS]


# --------------------------------------------------- models not wrapped for merging


def test_members_calling_an_unwrapped_model_are_noted_in_the_plan_and_report() -> None:
    builder = build_app(ScriptedChatModel())  # the app's model is not a CapsuleChatModel
    capsules = lc.capsulize(builder, groups={"arm": list(KINDS)})
    notes = capsules.plan.group("arm").notes
    assert len(notes) == 3 and all("ScriptedChatModel" in n for n in notes)
    assert "wrap the model with lc.CapsuleChatModel" in notes[0]
    assert "note: entities calls a chat model not wrapped" in str(capsules.plan)
    assert "wrap the model with lc.CapsuleChatModel" in capsules.report(print_=False).text
    assert capsules.plan.to_dict()["groups"][0]["notes"] == list(notes)
    # a wrapped model: no note
    wrapped = lc.capsulize(build_app(lc.CapsuleChatModel(ScriptedChatModel())))
    assert all(g.notes == () for g in wrapped.plan.groups)


def test_a_compound_run_where_no_call_parked_says_why_nothing_merged() -> None:
    """The model hides where the plan cannot see it; the run notices."""
    hidden = {"llm": ScriptedChatModel()}
    builder = build_app(_Lookup(hidden))
    capsules = lc.capsulize(builder, groups={"arm": list(KINDS)})
    assert capsules.plan.group("arm").notes == ()
    rt = capsules.runtimes["arm"]
    config: RunnableConfig = {"configurable": {"capsules": {"mode": "compound"}}}
    state = {"doc": DOC, "scope": "Nordvik Sensors, a sensor maker."}
    staging = rt.capsule_sync(state, config)[rt.plan.channel]["staging"]
    notes = staging["merge"]["notes"]
    assert notes == [
        "no call went through a CapsuleChatModel, so nothing was merged for "
        "entities, claims, signals: wrap the model with lc.CapsuleChatModel"
    ]
    # with the model wrapped, the same run merges and notes nothing
    hidden["llm"] = lc.CapsuleChatModel(ScriptedChatModel())  # type: ignore[assignment]
    staging = rt.capsule_sync(state, config)[rt.plan.channel]["staging"]
    assert "notes" not in staging["merge"]
    # through the graph, the note reaches the run record and the report
    hidden["llm"] = ScriptedChatModel()
    capsules.compile().invoke({"doc": DOC}, config)
    assert capsules.history("arm")[-1]["notes"] == notes
    assert "wrap the model with lc.CapsuleChatModel" in capsules.report(print_=False).text


class _Lookup:
    """A model looked up at call time (out of the plan's static sight)."""

    def __init__(self, table: dict[str, Any]) -> None:
        self._table = table

    def invoke(self, *args: Any, **kwargs: Any) -> Any:
        return self._table["llm"].invoke(*args, **kwargs)

    async def ainvoke(self, *args: Any, **kwargs: Any) -> Any:
        return await self._table["llm"].ainvoke(*args, **kwargs)


def test_auto_never_settles_on_a_tier_in_which_nothing_merges() -> None:
    """Members call a model that is not wrapped: a compound run merges nothing, so auto
    goes back to fine at once and says why (it never stays on a tier that saves nothing)."""
    capsules = lc.capsulize(
        build_app(ScriptedChatModel()), groups={"arm": list(KINDS)}, policy="aggressive"
    )
    app = capsules.compile()
    tiers = []
    for i in range(8):
        app.invoke({"doc": f"{DOC} Run {i}."})
        tiers.append(capsules.observations("arm")[-1]["tier"])
    compound = [o for o in capsules.observations("arm") if o["tier"] != "fine"]
    assert compound and all(o.get("merged_members") == 0 for o in compound)
    # every compound attempt is followed by fine runs (backoff), never by another one
    assert all(b == "fine" for a, b in itertools.pairwise(tiers) if a != "fine")
    first = tiers.index(compound[0]["tier"])
    why = capsules.explain("arm", at=first + 1)
    assert any("nothing merged on this standard run" in r for r in why.reasons)
