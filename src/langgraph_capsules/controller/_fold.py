"""Internal: fold a growing observation history into the replay state, run by run.

``replay`` folds a whole history from scratch, so deciding from it costs time in
proportion to the history. A :class:`Fold` keeps the replay's working state and the
number of observations it has consumed, and folds only the records appended since, so
each new run costs the same however long the history is. Its state equals the full
replay's after every record (pinned by a randomised test against ``replay``):

* **Runs in order of first record.** A new ``run_id`` is folded as a new run as soon as
  its first record arrives.
* **Runs that were still open.** A run's records (the fine record, then its shadow
  records) are appended one by one, and other workers' records may come between them,
  so a record can arrive for a run that is already folded. The fold keeps, for its last
  ``undo_runs`` runs, the state before each and the run's records; a late record for
  one of them rewinds to the state before that run and folds it and every later run
  again. A late record for an older run makes :meth:`Fold.extend` return False and the
  caller rebuilds from the whole history (what ``replay`` would do anyway).
* **Bounded state.** Score lists that the controller reads only through their length
  and their last ``window_size`` entries are kept as :class:`Recent` (the count plus
  the newest entries), and the other lists are trimmed to their window, so a snapshot
  costs the same at 100 observations as at 100,000.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, SupportsIndex, cast, overload

from langgraph_capsules.controller._replay import Context, Work, _replay_run
from langgraph_capsules.types import Observation

__all__ = ["DEFAULT_UNDO_RUNS", "Fold", "Recent", "clone", "compact"]

DEFAULT_UNDO_RUNS = 16
"""Recent runs a fold can re-open when a late record arrives for them."""


class Recent(list[float]):
    """Scores that remember how many were appended but keep only the newest.

    ``len()`` counts every score ever appended; indexing and slicing address that whole
    sequence, and only the kept tail can be read (a dropped score raises IndexError).
    Iteration yields the kept scores. The controller reads its score lists only as
    ``len(scores)`` and ``scores[-window_size:]``, which stay exact as long as at least
    ``window_size`` scores are kept.

    Example:
        >>> r = Recent([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
        >>> r.trim(2)
        >>> len(r), r[-2:], r[-1]
        (7, [0.6, 0.7], 0.7)
    """

    __slots__ = ("dropped",)

    def __init__(self, items: Iterable[float] = (), dropped: int = 0) -> None:
        super().__init__(items)
        self.dropped = dropped
        """Scores appended and no longer kept."""

    def __len__(self) -> int:
        return self.dropped + super().__len__()

    @overload
    def __getitem__(self, index: SupportsIndex) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> list[float]: ...

    def __getitem__(self, index: SupportsIndex | slice) -> float | list[float]:
        total = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(total)
            if step != 1:
                raise ValueError("Recent supports contiguous slices only")
            if stop <= start:
                return []
            if start < self.dropped:
                raise IndexError(f"scores before #{self.dropped} were dropped")
            return list(super().__getitem__(slice(start - self.dropped, stop - self.dropped)))
        i = index.__index__()
        i = i + total if i < 0 else i
        if not self.dropped <= i < total:
            raise IndexError(f"score #{i} was dropped or does not exist (length {total})")
        return super().__getitem__(i - self.dropped)

    def trim(self, keep: int) -> None:
        """Drop all but the newest ``keep`` scores (amortised: only past ``2 * keep``)."""
        kept = super().__len__()
        if kept > 2 * keep:
            extra = kept - keep
            del self[:extra]
            self.dropped += extra

    def copy(self) -> Recent:
        """An independent copy (same count, same kept scores)."""
        return Recent(super().__iter__(), self.dropped)


def compact(work: Work, window: int) -> None:
    """Bound the working state's lists without changing anything the controller reads.

    ``fresh_fine`` and ``stint_scores`` are read as their length and last ``window``
    entries (they become :class:`Recent`); ``fine_outputs`` and ``stint_latency`` only
    as their last ``window`` entries and whether they hold 2 or more.
    """
    keep = max(window, 2)
    for name in ("fresh_fine", "stint_scores"):
        scores = getattr(work, name)
        if list.__len__(scores) > 2 * keep:
            if not isinstance(scores, Recent):
                scores = Recent(scores)
                setattr(work, name, scores)
            scores.trim(keep)
    for name in ("fine_outputs", "stint_latency"):
        values = getattr(work, name)
        if len(values) > 2 * keep:
            del values[:-keep]


_IMMUTABLE: frozenset[type] = frozenset({int, float, str, bool, type(None), tuple, frozenset})
_DATACLASS_FIELDS: dict[type, tuple[str, ...] | None] = {}


def clone(value: Any) -> Any:
    """A copy of a working state that shares nothing mutable with ``value``.

    Handles what the replay state is made of: mutable dataclasses (copied field by
    field, so a field added to ``Work`` is copied too), lists, :class:`Recent`, dicts,
    and immutable values (shared: numbers, strings, tuples, frozen dataclasses).
    """
    cls = type(value)
    if cls in _IMMUTABLE:
        return value
    if cls is list:
        return [clone(v) for v in value] if value and _mutable(value[0]) else list(value)
    if cls is Recent:
        return value.copy()
    if cls is dict:
        return {k: clone(v) for k, v in value.items()}
    names = _mutable_fields(cls)
    if names is not None:
        copied = object.__new__(cls)
        for name in names:
            object.__setattr__(copied, name, clone(getattr(value, name)))
        return copied
    if isinstance(value, (list, dict)):
        raise TypeError(f"clone() cannot copy a {cls.__name__}")
    return value


def _mutable_fields(cls: type) -> tuple[str, ...] | None:
    """The field names of a mutable dataclass (``None`` for anything else)."""
    if cls not in _DATACLASS_FIELDS:
        params = getattr(cls, "__dataclass_params__", None)
        mutable = params is not None and not params.frozen
        _DATACLASS_FIELDS[cls] = tuple(f.name for f in fields(cls)) if mutable else None
    return _DATACLASS_FIELDS[cls]


def _mutable(value: Any) -> bool:
    cls = type(value)
    if cls in _IMMUTABLE:
        return False
    return cls in (list, dict, Recent) or _mutable_fields(cls) is not None


@dataclass
class _Step:
    """One folded run that may still be re-opened."""

    key: str
    before: Work
    """The state before this run (never mutated)."""
    records: list[Observation]
    end: int
    """Position just past the run's last record."""


class Fold:
    """A replay that folds an append-only history incrementally.

    Feed it the records in store order with :meth:`extend`; :attr:`work` is then what
    ``replay(history, ctx)`` returns for the records fed so far.

    Example:
        >>> from langgraph_capsules.controller._replay import make_context, replay
        >>> from langgraph_capsules.controller.tiers import DEFAULT_BUILT_TIERS
        >>> from langgraph_capsules.policy import ControllerPolicy
        >>> ctx = make_context(ControllerPolicy(), 2, 0, False, DEFAULT_BUILT_TIERS, False)
        >>> fold = Fold(ctx)
        >>> fold.extend([{"run_id": "r1", "tier": "fine", "output_tokens": 90}])
        True
        >>> fold.consumed, fold.work.runs
        (1, 1)
    """

    def __init__(self, ctx: Context, *, undo_runs: int = DEFAULT_UNDO_RUNS) -> None:
        if undo_runs < 1:
            raise ValueError(f"undo_runs must be >= 1, got {undo_runs}")
        self.ctx = ctx
        """The replay's fixed inputs."""
        self.work = Work()
        """The state after the records consumed so far."""
        self.consumed = 0
        """Records consumed (the last sequence number read)."""
        self.last: Observation | None = None
        """The last record consumed (to check that a store's order did not shift)."""
        self._folded: set[str] = set()
        self._steps: deque[_Step] = deque(maxlen=undo_runs)

    def extend(self, records: Sequence[Observation]) -> bool:
        """Fold the records that follow the ones consumed so far.

        Args:
            records: The next records of the history, in store order.

        Returns:
            True when folded; False when a record belongs to a run folded more than
            ``undo_runs`` runs ago. The fold is then unusable: build a new one over the
            whole history.
        """
        if not records:
            return True
        position = self.consumed
        new: dict[str, _Step] = {}
        reopened: int | None = None
        steps = self._steps
        for obs in records:
            position += 1
            key = str(obs.get("run_id"))
            step = new.get(key)
            if step is None and key in self._folded:
                found = next(
                    (i for i in range(len(steps) - 1, -1, -1) if steps[i].key == key), None
                )
                if found is None:
                    return False
                step = steps[found]
                reopened = found if reopened is None else min(reopened, found)
            if step is None:
                new[key] = _Step(key, self.work, [obs], position)
            else:
                step.records.append(obs)
                step.end = position
        self.consumed = position
        self.last = records[-1]
        if reopened is not None:
            self._refold(reopened)
        fresh = list(new.values())
        # Only the last ``undo_runs`` runs can be re-opened, so only they need a snapshot
        # (a rebuild over a long history takes none for the rest).
        snap_from = len(fresh) - (steps.maxlen or 0)
        for i, step in enumerate(fresh):
            if i >= snap_from:
                step.before = clone(self.work)
                steps.append(step)
            self._fold(step)
            self._folded.add(step.key)
        return True

    def _fold(self, step: _Step) -> None:
        _replay_run(self.work, self.ctx, step.end, step.records)
        compact(self.work, self.ctx.policy.window_size)

    def _refold(self, start: int) -> None:
        """Rewind to the state before the ``start``-th kept run and fold from there."""
        steps = self._steps
        self.work = cast(Work, clone(steps[start].before))
        for i in range(start, len(steps)):
            if i > start:
                steps[i].before = clone(self.work)
            self._fold(steps[i])
