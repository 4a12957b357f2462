"""The shared-content rule of merged prompts (:func:`split_shared`): what is hoisted into
the shared context, what stays with each task, and that no text is ever lost."""

from __future__ import annotations

import random

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langgraph_capsules.prompts import split_shared
from langgraph_capsules.strategies.standard import build_merged_prompt

SOURCE = (
    "Solvarra operates three battery parks and has two more under construction, "
    "with 310 MW in operation at the end of 2023."
)
FRAME = "Company frame:\nSolvarra Energy Storage is an Australian battery company in Brisbane."


def _call(task: str, *, heading: str = "Product portfolio source:") -> list[BaseMessage]:
    """An extractor's call as the benchmark app writes it: a frame, a labelled source,
    the ask."""
    return [
        SystemMessage(f"You extract {task}. Write a numbered list."),
        HumanMessage(f"{FRAME}\n\n{heading}\n\n{SOURCE}\n\nList the {task} in the source above."),
    ]


def _norm(text: str) -> str:
    return " ".join(text.split())


def test_a_heading_goes_with_the_shared_paragraph_it_labels() -> None:
    split = split_shared([_call("entities"), _call("claims"), _call("signals")])
    assert split is not None
    assert split.shared == (FRAME, "Product portfolio source:", SOURCE)
    assert all("Product portfolio source:" not in t for t in split.tasks)
    assert split.tasks[1] == (
        "You extract claims. Write a numbered list.\n\nList the claims in the source above."
    )
    prompt = build_merged_prompt(["a", "b", "c"], [_call("entities"), _call("claims")])
    assert prompt is not None
    human = str(prompt.messages[1].content)
    assert human.count("Product portfolio source:") == 1
    assert human.index("Product portfolio source:") < human.index(SOURCE)


def test_a_heading_stays_with_its_task_unless_every_call_labels_the_shared_text() -> None:
    # one call labels the source differently: the headings stay with their tasks
    split = split_shared([_call("entities"), _call("claims", heading="Landscape source:")])
    assert split is not None
    assert split.shared == (FRAME, SOURCE)
    assert "Product portfolio source:" in split.tasks[0]
    assert "Landscape source:" in split.tasks[1]
    # the same short line followed by each task's own text is a cue, not a heading
    calls: list[list[BaseMessage]] = [
        [HumanMessage(f"{SOURCE}\n\nAnswer:\n\nList the {t}.")] for t in ("entities", "claims")
    ]
    split = split_shared(calls)
    assert split is not None
    assert split.shared == (SOURCE,)
    assert split.tasks == ("Answer:\n\nList the entities.", "Answer:\n\nList the claims.")


def test_a_heading_repeated_before_two_shared_paragraphs_is_kept_for_each() -> None:
    other = "Brolga Analytics estimated 2.3 GW of grid-scale battery capacity in 2023."
    text = f"Source:\n\n{SOURCE}\n\nSource:\n\n{other}\n\nList the facts."
    split = split_shared([[HumanMessage(text)], [HumanMessage(text.replace("facts", "risks"))]])
    assert split is not None
    assert split.shared == ("Source:", SOURCE, "Source:", other)
    assert split.tasks == ("List the facts.", "List the risks.")
    # a shared paragraph sent twice in one call goes once, and its heading with it
    twice = f"Source:\n\n{SOURCE}\n\nSource:\n\n{SOURCE}\n\nList the facts."
    split = split_shared([[HumanMessage(twice)], [HumanMessage(f"Source:\n\n{SOURCE}\n\nGo.")]])
    assert split is not None
    assert split.shared == ("Source:", SOURCE)
    assert split.tasks == ("List the facts.", "Go.")


_WORDS = ["Source:", "Answer:", "alpha", "beta", "42", "Oslo", "n/a", "é", "SECTION 1"]


def _paragraph(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.choice([1, 2, 3, 7, 12])))


def test_no_paragraph_is_lost_and_shared_ones_appear_in_every_call() -> None:
    """Fuzz: random calls built from shared paragraphs, headings and own text; every
    paragraph of a call is in the shared context or in its own task, and every shared
    unit is in every call."""
    rng = random.Random(7)
    for _ in range(500):
        pool = [_paragraph(rng) for _ in range(rng.randint(1, 6))]
        calls: list[list[BaseMessage]] = []
        for _k in range(rng.randint(2, 4)):
            paras = [rng.choice(pool) for _ in range(rng.randint(1, 6))]
            paras.append(_paragraph(rng))
            rng.shuffle(paras)
            calls.append([HumanMessage("\n\n".join(paras))])
        split = split_shared(calls)
        assert split is not None
        shared = {_norm(u) for u in split.shared}
        for full, task in zip(split.full, split.tasks, strict=True):
            own = {_norm(p) for p in task.split("\n\n")} | {_norm(ln) for ln in task.splitlines()}
            for p in full.split("\n\n"):
                key = _norm(p)
                lines = {_norm(ln) for ln in p.splitlines() if ln.strip()}
                assert key in shared or key in own or lines <= shared | own, (p, split)
            assert all(u in _norm(full) for u in shared)
