"""Validate observations and turn them into exact JSON text (and back).

Every store keeps an observation as the JSON text produced here, so a record comes
back exactly as it went in (same values, same key order, ``1`` stays ``1`` and
``1.0`` stays ``1.0``) whatever the backend does to JSON documents of its own
(Postgres ``JSONB`` reorders keys and turns floats into ``numeric``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, cast

from langgraph_capsules.errors import CapsuleConfigError
from langgraph_capsules.types import Observation

__all__ = [
    "RECORD_KEY",
    "check_name",
    "check_since",
    "decode_observation",
    "encode_observation",
    "record_key",
]

_FIX = "build it with every field of langgraph_capsules.types.Observation"

# Field -> (accepted types, human name). bool is an int subclass, so int fields reject it
# explicitly below; None is listed where the TypedDict allows it.
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "graph": ((str,), "a non-empty str"),
    "group": ((str,), "a non-empty str"),
    "run_id": ((str,), "a non-empty str"),
    "time": ((int, float), "a number"),
    "tier": ((str,), "a str"),
    "members": ((dict,), "a dict of member name -> MemberUsage"),
    "calls": ((int,), "an int"),
    "input_tokens": ((int,), "an int"),
    "cached_tokens": ((int,), "an int"),
    "output_tokens": ((int,), "an int"),
    "latency_s": ((int, float), "a number"),
    "tool_calls": ((int,), "an int"),
    "coordination_tokens": ((int,), "an int"),
    "errors": ((int,), "an int"),
    "quality": ((int, float, type(None)), "a number or None"),
    "shadow": ((bool,), "a bool"),
}
_NON_EMPTY = ("graph", "group", "run_id")

RECORD_KEY = "record_key"
"""The optional idempotency field: a store appends a record with a ``record_key`` once
per (graph, group); records without it (hand-built, or written by earlier releases)
are always appended."""


def _bad(message: str, *, group: str | None = None) -> CapsuleConfigError:
    return CapsuleConfigError(message, code="bad_observation", group=group)


def _check_json(value: object, path: str, group: str | None) -> None:
    """Raise unless ``value`` survives ``json.dumps`` -> ``json.loads`` unchanged."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(
                f"observation field {path} is {value!r}; JSON has no NaN or infinity. "
                "Store a finite number (or None where the field allows it).",
                group=group,
            )
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", group)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad(
                    f"observation field {path} has the key {key!r} of type "
                    f"{type(key).__name__}; JSON object keys are strings, so it would come "
                    "back changed. Use str keys.",
                    group=group,
                )
            _check_json(item, f"{path}[{key!r}]", group)
        return
    raise _bad(
        f"observation field {path} is a {type(value).__name__} ({value!r:.60}), which does "
        "not round-trip through JSON. Convert it to a plain str, int, float, bool, None, "
        "list or dict (e.g. int(x) for a numpy integer, list(x) for a tuple).",
        group=group,
    )


def encode_observation(obs: object) -> str:
    """Validate an observation and return its exact JSON text.

    Args:
        obs: The record to store; must carry every :class:`Observation` field.

    Returns:
        Compact, ASCII-only JSON text that decodes to a record equal to ``obs`` with the
        same key order.

    Raises:
        CapsuleConfigError: ``bad_observation`` when ``obs`` is not a dict, misses a
            field, has a field of the wrong type, or holds a value JSON cannot
            round-trip (NaN, a tuple, a non-str dict key, a numpy integer, ...).

    Example:
        >>> from langgraph_capsules.stores._codec import encode_observation
        >>> encode_observation({"graph": "g"})  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        CapsuleConfigError: [bad_observation] observation is missing ...
    """
    if not isinstance(obs, Mapping):
        raise _bad(
            f"an observation must be a dict, got {type(obs).__name__}; {_FIX}.",
        )
    raw_group = obs.get("group")
    group = raw_group if isinstance(raw_group, str) and raw_group else None
    missing = [name for name in _FIELDS if name not in obs]
    if missing:
        raise _bad(
            f"observation is missing the field(s) {', '.join(missing)}; {_FIX}.",
            group=group,
        )
    for name, (types, wanted) in _FIELDS.items():
        value = obs[name]
        ok = isinstance(value, types)
        if ok and isinstance(value, bool) and bool not in types:
            ok = False  # True is an int, but not a token count
        if ok and name in _NON_EMPTY and not value:
            ok = False
        if not ok:
            raise _bad(
                f"observation field {name!r} must be {wanted}, got "
                f"{type(value).__name__} {value!r:.60}; {_FIX}.",
                group=group,
            )
    for member, usage in obs["members"].items():
        if not isinstance(usage, dict):
            raise _bad(
                f"observation field members[{member!r}] must be a MemberUsage dict, got "
                f"{type(usage).__name__}; {_FIX}.",
                group=group,
            )
    key = obs.get(RECORD_KEY)
    if RECORD_KEY in obs and (not isinstance(key, str) or not key):
        raise _bad(
            f"observation field {RECORD_KEY!r} must be a non-empty str when present (the "
            f"record's idempotency key), got {type(key).__name__} {key!r:.60}; leave it out "
            "to append the record unconditionally.",
            group=group,
        )
    for name, value in obs.items():
        if not isinstance(name, str):
            raise _bad(
                f"observation has the key {name!r} of type {type(name).__name__}; JSON "
                "object keys are strings. Use str keys.",
                group=group,
            )
        _check_json(value, repr(name), group)
    return json.dumps(obs, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def decode_observation(text: object, *, where: str) -> Observation:
    """Parse stored JSON text back into an :class:`Observation`.

    Args:
        text: The stored text.
        where: Where the text was read from, for the error message (a path or key).

    Returns:
        The record exactly as it was appended.

    Raises:
        CapsuleConfigError: ``bad_store`` when the text is not an observation written
            by this library (the store was edited or shared with another writer).

    Example:
        >>> from langgraph_capsules.stores._codec import decode_observation
        >>> decode_observation("[]", where="x")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        CapsuleConfigError: [bad_store] ...
    """
    try:
        value: Any = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict) or any(name not in value for name in _FIELDS):
        raise CapsuleConfigError(
            f"{where} holds a record that is not a langgraph_capsules observation "
            f"({str(text)[:80]!r}). The store was edited or is shared with another writer; "
            "give the controller store its own file or namespace.",
            code="bad_store",
        )
    return cast(Observation, value)


def record_key(obs: Observation) -> str | None:
    """The record's idempotency key, or ``None`` when it has none.

    Args:
        obs: A record that passed :func:`encode_observation`.

    Returns:
        ``obs["record_key"]`` when present.

    Example:
        >>> record_key({"record_key": "run-1"}), record_key({})  # doctest: +SKIP
        ('run-1', None)
    """
    key = obs.get(RECORD_KEY)
    return key if isinstance(key, str) and key else None


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a non-empty str, else raise ``bad_store_query``.

    Args:
        value: A graph id or group name passed to a store query.
        what: ``"graph"`` or ``"group"``, for the message.

    Returns:
        ``value`` unchanged.

    Raises:
        CapsuleConfigError: ``bad_store_query`` for anything but a non-empty str.

    Example:
        >>> check_name("research", "group")
        'research'
    """
    if not isinstance(value, str) or not value:
        raise CapsuleConfigError(
            f"the {what} of a controller store query must be a non-empty str, got "
            f"{value!r}; pass the {what} exactly as it appears in Observation[{what!r}].",
            code="bad_store_query",
        )
    return value


def check_since(since: object) -> int:
    """Return ``since`` if it is an int >= 0, else raise ``bad_store_query``.

    Args:
        since: The sequence number after which ``history`` starts.

    Returns:
        ``since`` unchanged.

    Raises:
        CapsuleConfigError: ``bad_store_query`` for a negative number or a non-int.

    Example:
        >>> check_since(3)
        3
    """
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        raise CapsuleConfigError(
            f"history(since=...) must be an int >= 0 (the last sequence number already "
            f"read, 0 for everything), got {since!r}.",
            code="bad_store_query",
        )
    return since
