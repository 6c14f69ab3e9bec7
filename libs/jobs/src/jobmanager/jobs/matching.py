"""Trigger matching: conditions evaluated against an event, and an index over many triggers.

Semantics (a user contract; the admin API documents them):

* A **path** is dotted (``data.channel.origin``). Each segment looks up a key in an object; a
  segment of ASCII digits indexes a list (``data.items.0``). A path that cannot be followed is
  *missing*. A key present with the value ``null`` is not missing.
* On a missing path every operator is false except ``not_exists``, which is true. This includes
  ``ne`` and ``not_in``: "origin ne avcm" does not hold for an event without an origin.
* ``eq``, ``ne``, ``in``, ``not_in`` compare JSON values: ``1 == 1.0``, but booleans are not
  numbers (``true != 1``), strings compare exactly, lists and objects compare structurally with
  the same rules (object key order does not matter).
* ``contains``: substring when the event value is a string (the condition value must be a
  string), element when it is a list, key when it is an object; false otherwise.
* ``startswith``, ``endswith``, ``glob`` (case-sensitive shell pattern: ``*``, ``?``, ``[...]``)
  and ``regex`` (RE2, see ``jobmanager.jobs.regex``: found anywhere in the value; anchor with
  ``^``/``$``) apply to string values only; any other value is false.
* ``gt``, ``gte``, ``lt``, ``lte``: numbers (not booleans) compare numerically, strings
  lexicographically (by code point; ISO-8601 timestamps of one format order correctly); a
  number against a string, or anything else, is false.
* The **event type pattern** is a case-sensitive shell pattern over the whole type: ``*``
  also spans dots, so ``channel.*`` matches ``channel.updated`` and ``*`` matches everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final, Generic, TypeVar

from jobmanager.jobs import regex
from jobmanager.jobs.spec import Condition, Trigger

__all__ = [
    "MISSING",
    "Check",
    "Explanation",
    "JobIndex",
    "evaluate",
    "event_type_matches",
    "explain",
    "resolve",
    "value_key",
]

T = TypeVar("T")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What :func:`resolve` returns for a path the document does not have."""


def resolve(document: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` in ``document``, or MISSING."""
    current: Any = document
    for segment in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(segment, MISSING)
        elif isinstance(current, list) and segment.isdigit() and segment.isascii():
            index = int(segment)
            current = current[index] if index < len(current) else MISSING
        else:
            return MISSING
        if current is MISSING:
            return MISSING
    return current


def _canonical(value: Any) -> Any:
    # Integral floats become ints so that [1] and [1.0] serialise alike; bools stay bools.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    return value


def value_key(value: Any) -> tuple[Any, ...]:
    """A hashable key such that two JSON values are equal (in the matching sense) iff keys are.

    Numbers keep their Python value rather than ``float(v)``: Python's int/float equality and
    hashing already agree (``1 == 1.0``, same hash), and large integers neither overflow nor lose
    precision.
    """
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z",)
    if isinstance(value, list | tuple | Mapping):
        text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), default=repr)
        return ("j", text)
    return ("o", type(value).__name__, repr(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list):
        key = value_key(expected)
        return any(value_key(element) == key for element in actual)
    if isinstance(actual, Mapping):
        return isinstance(expected, str) and expected in actual
    return False


def _ordered(actual: Any, expected: Any, compare: Callable[[Any, Any], bool]) -> bool:
    if _is_number(actual) and _is_number(expected):
        return compare(actual, expected)
    if isinstance(actual, str) and isinstance(expected, str):
        return compare(actual, expected)
    return False


def _both_str(actual: Any, expected: Any, test: Callable[[str, str], bool]) -> bool:
    return isinstance(actual, str) and isinstance(expected, str) and test(actual, expected)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, e: value_key(a) == value_key(e),
    "ne": lambda a, e: value_key(a) != value_key(e),
    "in": lambda a, e: value_key(a) in {value_key(v) for v in e},
    "not_in": lambda a, e: value_key(a) not in {value_key(v) for v in e},
    "contains": _contains,
    "startswith": lambda a, e: _both_str(a, e, str.startswith),
    "endswith": lambda a, e: _both_str(a, e, str.endswith),
    "glob": lambda a, e: _both_str(a, e, fnmatchcase),
    "regex": lambda a, e: _both_str(a, e, lambda s, p: regex.search(p, s)),
    "exists": lambda a, e: True,
    "not_exists": lambda a, e: False,
    "gt": lambda a, e: _ordered(a, e, lambda x, y: x > y),
    "gte": lambda a, e: _ordered(a, e, lambda x, y: x >= y),
    "lt": lambda a, e: _ordered(a, e, lambda x, y: x < y),
    "lte": lambda a, e: _ordered(a, e, lambda x, y: x <= y),
}


def evaluate(condition: Condition, document: Mapping[str, Any]) -> bool:
    """Whether ``condition`` holds for the event ``document`` (see the module docstring)."""
    actual = resolve(document, condition.path)
    if actual is MISSING:
        return condition.op == "not_exists"
    return _OPS[condition.op](actual, condition.value)


def event_type_matches(pattern: str, event_type: str) -> bool:
    """Whether an event type matches a trigger's pattern (case-sensitive; ``*`` spans dots)."""
    return fnmatchcase(event_type, pattern)


# ---------------------------------------------------------------- explain (dry runs)


@dataclass(frozen=True)
class Check:
    """The outcome of one condition on one event, with a sentence for humans."""

    condition: Condition
    passed: bool
    reason: str


@dataclass(frozen=True)
class Explanation:
    """Why a trigger matches an event or not: the event type check, then every condition."""

    matched: bool
    event_type_ok: bool
    event_type_reason: str
    checks: list[Check] = field(default_factory=list)


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _expectation(condition: Condition) -> str:
    if condition.op in ("exists", "not_exists"):
        return condition.op
    return f"{condition.op} {_show(condition.value)}"


def _check(condition: Condition, document: Mapping[str, Any]) -> Check:
    actual = resolve(document, condition.path)
    passed = evaluate(condition, document)
    path, expected = condition.path, _expectation(condition)
    if actual is MISSING:
        reason = f"{path} is missing"
        if not passed and condition.op != "exists":
            reason += f", expected {expected}"
    elif condition.op in ("exists", "not_exists"):
        reason = f"{path} exists ({_show(actual)})" + ("" if passed else f", expected {expected}")
    elif passed:
        reason = f"{path} is {_show(actual)}: {expected}"
    else:
        reason = f"{path} is {_show(actual)}, expected {expected}"
    return Check(condition=condition, passed=passed, reason=reason)


def explain(trigger: Trigger, document: Mapping[str, Any]) -> Explanation:
    """Evaluate a trigger against an event, keeping the outcome and reason of every check."""
    event_type = document.get("event_type")
    if not isinstance(event_type, str):
        type_ok, type_reason = False, "the event has no event_type"
    else:
        type_ok = event_type_matches(trigger.event_type, event_type)
        verb = "matches" if type_ok else "does not match"
        type_reason = f"event type {event_type!r} {verb} {trigger.event_type!r}"
    checks = [_check(condition, document) for condition in trigger.conditions]
    matched = type_ok and all(check.passed for check in checks)
    return Explanation(matched, type_ok, type_reason, checks)


# ---------------------------------------------------------------- the index


_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class _Group:
    """The jobs of one event type pattern, bucketed by their first ``eq`` condition."""

    by_eq: dict[str, dict[tuple[Any, ...], list[int]]] = field(default_factory=dict)
    unindexed: list[int] = field(default_factory=list)

    def add(self, position: int, trigger: Trigger) -> None:
        first_eq = next((c for c in trigger.conditions if c.op == "eq"), None)
        if first_eq is None:
            self.unindexed.append(position)
        else:
            buckets = self.by_eq.setdefault(first_eq.path, {})
            buckets.setdefault(value_key(first_eq.value), []).append(position)

    def candidates(self, document: Mapping[str, Any], out: list[int]) -> None:
        out.extend(self.unindexed)
        for path, buckets in self.by_eq.items():
            actual = resolve(document, path)
            if actual is not MISSING:
                out.extend(buckets.get(value_key(actual), ()))


class JobIndex(Generic[T]):
    """Triggers indexed so that matching one event costs what its candidates cost, not the
    catalogue's size.

    Exact event types are looked up in a dict; glob patterns are grouped by their literal
    prefix (the text before the first ``*``, ``?`` or ``[``) and looked up by every prefix of
    the event type. Within a pattern's group, a job with an ``eq`` condition is filed under the
    (path, value) of its first one, so only jobs whose value equals the event's are candidates.
    """

    def __init__(self, entries: Iterable[tuple[Trigger, T]]) -> None:
        self._triggers: list[Trigger] = []
        self._items: list[T] = []
        self._exact: dict[str, _Group] = {}
        self._globs: dict[str, dict[str, _Group]] = {}
        self._longest_prefix = 0
        for position, (trigger, item) in enumerate(entries):
            self._triggers.append(trigger)
            self._items.append(item)
            pattern = trigger.event_type
            wildcard = _GLOB_CHARS.search(pattern)
            if wildcard is None:
                group = self._exact.setdefault(pattern, _Group())
            else:
                prefix = pattern[: wildcard.start()]
                self._longest_prefix = max(self._longest_prefix, len(prefix))
                group = self._globs.setdefault(prefix, {}).setdefault(pattern, _Group())
            group.add(position, trigger)

    def __len__(self) -> int:
        return len(self._items)

    def _candidate_positions(self, document: Mapping[str, Any]) -> list[int]:
        event_type = document.get("event_type")
        if not isinstance(event_type, str):
            return []
        positions: list[int] = []
        exact = self._exact.get(event_type)
        if exact is not None:
            exact.candidates(document, positions)
        for end in range(min(len(event_type), self._longest_prefix) + 1):
            for pattern, group in self._globs.get(event_type[:end], {}).items():
                if fnmatchcase(event_type, pattern):
                    group.candidates(document, positions)
        positions.sort()
        return positions

    def candidates(self, document: Mapping[str, Any]) -> list[T]:
        """The items worth checking for this event: event type matched, first ``eq`` matched.

        Public so that tests (and metrics) can see that the index narrows the search.
        """
        return [self._items[p] for p in self._candidate_positions(document)]

    def match(self, document: Mapping[str, Any]) -> list[T]:
        """The items whose trigger matches the event, in the order they were given."""
        return [
            self._items[p]
            for p in self._candidate_positions(document)
            if all(evaluate(c, document) for c in self._triggers[p].conditions)
        ]
