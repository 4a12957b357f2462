"""The quality gate at run time: what a judge sees, the per-task baselines, safe calls.

The controller (``controller/``) only reads quality scores from observations. This
module produces them inside the graph:

* **Task key.** A group's task is the members' inputs. Each member's input is reduced
  to plain data (messages to their type and text, pydantic models and dataclasses to
  dicts; message ids and other volatile fields are dropped) and hashed; the task key
  hashes the sorted (member, digest) pairs. Fine members compute it in their node
  wrapper and the capsule node from the same inputs, so both sides agree.
* **Group output text.** What a member returned, rendered as ``[member]`` blocks of
  ``key: text`` lines, members in name order. The judge compares two such texts.
* **Baselines** (capsules-spec P5). The last fine output *of the same task* is the
  reference a compound run is judged against, not the last fine output of any task.
  Baselines live in a bounded in-process LRU per group; a compound run on a task with
  no baseline gets no score (the controller counts it as an unjudged run, never as 0.0).
* **Safe judging.** A judge that raises or returns something unusable gives *no score*
  with the error kept in the details (P13); its LLM calls carry the run metadata
  ``capsule_judge=True`` so that telemetry counts them apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs, var_child_runnable_config
from pydantic import BaseModel

from langgraph_capsules.judges import Judge, JudgeResult
from langgraph_capsules.judges.llm import JUDGE_METADATA_KEY, JUDGE_TAG
from langgraph_capsules.telemetry import UsageTracker

__all__ = [
    "BASELINES_PER_GROUP",
    "TASK_TEXT_CHARS",
    "Baselines",
    "Judgement",
    "input_digest",
    "output_text",
    "run_judge",
    "task_key",
    "task_text",
]

BASELINES_PER_GROUP = 512
"""How many tasks' fine outputs one group keeps as baselines (least recently used go)."""
TASK_TEXT_CHARS = 6000
"""Cap on the task description handed to the judge."""


def _plain(value: Any) -> Any:
    """Plain, JSON-able data with volatile fields (message ids) dropped."""
    if isinstance(value, BaseMessage):
        return {"type": value.type, "content": _plain(value.content)}
    if isinstance(value, BaseModel):
        return _plain(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def input_digest(value: Any) -> str:
    """A stable digest of one member's input (equal inputs, equal digests)."""
    text = json.dumps(_plain(value), sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def task_key(digests: Mapping[str, str]) -> str:
    """The group's task key from its members' input digests."""
    text = json.dumps(sorted(digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return value.content if isinstance(value.content, str) else _text(value.content)
    if isinstance(value, (list, tuple)):
        return "\n".join(_text(v) for v in value)
    plain = _plain(value)
    if isinstance(plain, str):
        return plain
    return json.dumps(plain, ensure_ascii=False, default=repr)


def task_text(inputs: Mapping[str, Any]) -> str:
    """What the group was asked: the union of the members' input keys, as text."""
    values: dict[str, Any] = {}
    for member in sorted(inputs):
        plain = _plain(inputs[member])
        if isinstance(plain, Mapping):
            for k, v in plain.items():
                values.setdefault(k, v)
        else:
            values.setdefault(member, plain)
    text = "\n".join(f"{k}: {_text(v)}" for k, v in sorted(values.items()))
    return text[:TASK_TEXT_CHARS]


def output_text(outputs: Mapping[str, Any]) -> str:
    """A group's output as text: one ``[member]`` block per member, in name order."""
    blocks = []
    for member in sorted(outputs):
        update = outputs[member]
        if isinstance(update, Mapping):
            body = "\n".join(f"{k}: {_text(v)}" for k, v in update.items())
        else:
            body = _text(update)
        blocks.append(f"[{member}]\n{body}".rstrip())
    return "\n\n".join(blocks)


class Baselines:
    """Fine outputs per task of one group: a thread-safe, bounded LRU."""

    def __init__(self, size: int = BASELINES_PER_GROUP) -> None:
        self._size = size
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, outputs: Mapping[str, Any]) -> None:
        """Keep ``outputs`` (member -> update) as the fine output of task ``key``."""
        with self._lock:
            self._items[key] = dict(outputs)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get(self, key: str) -> dict[str, Any] | None:
        """The fine output of task ``key``, if one is kept."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return None if found is None else dict(found)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclasses.dataclass(frozen=True)
class Judgement:
    """One gate reading: the score (``None``: no score), details and the judge's usage."""

    score: float | None
    details: dict[str, Any]
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary for run records."""
        return {
            "score": self.score,
            "error": self.details.get("error"),
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


def run_judge(
    judge: Judge,
    task: str,
    reference: str,
    candidate: str,
    config: RunnableConfig | None,
) -> Judgement:
    """Call the judge once, never raising; its LLM calls are tagged and counted.

    The judge runs with the node's config as the ambient config, plus the metadata
    ``capsule_judge=True`` and the tag ``capsule:judge``, so any model it calls without
    an explicit config is traced under the node and counted apart by telemetry.
    """
    tracker = UsageTracker(track_runs=False)
    ambient = merge_configs(
        config,
        {"metadata": {JUDGE_METADATA_KEY: True}, "tags": [JUDGE_TAG], "callbacks": [tracker]},
    )
    token = var_child_runnable_config.set(ambient)
    try:
        result = judge(task, reference, candidate)
        if not isinstance(result, JudgeResult):
            result = JudgeResult.no_score(
                f"the judge returned {type(result).__name__}, not a JudgeResult"
            )
    except Exception as e:  # a judge failure is no score, never a crash (P13)
        result = JudgeResult.no_score(f"the judge raised {type(e).__name__}: {e}")
    finally:
        var_child_runnable_config.reset(token)
    billed = [r for r in tracker.records if r["kind"] != "served"]
    return Judgement(
        score=result.score,
        details=dict(result.details),
        calls=len(billed),
        input_tokens=sum(r["input_tokens"] for r in billed),
        output_tokens=sum(r["output_tokens"] for r in billed),
    )
