"""Condition semantics, dry-run explanations, and the index (checked against a naive scan)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobmanager.jobs.matching import (
    MISSING,
    JobIndex,
    evaluate,
    event_type_matches,
    explain,
    resolve,
    value_key,
)
from jobmanager.jobs.spec import Condition, Op, Trigger

EVENT: dict[str, Any] = {
    "event_id": "4b1f",
    "event_type": "channel.updated",
    "source": "channel-manager",
    "occurred_at": "2026-11-24T10:00:00Z",
    "data": {
        "channel": {
            "channel_id": "ESPN-HD",
            "origin": "avcm",
            "pod_service": "pod-7",
            "valid": True,
            "bitrate": 8000,
            "ratio": 1.5,
            "note": None,
            "tags": ["hd", "sports", 1, True, {"k": 1}],
            "attrs": {"region": "eu"},
        },
        "changes": {"pod_service": {"old": "pod-3", "new": "pod-7"}},
        "items": [{"id": "a"}, {"id": "b"}],
    },
}


def holds(path: str, op: Op, value: Any = None, document: dict[str, Any] = EVENT) -> bool:
    return evaluate(Condition(path=path, op=op, value=value), document)


def test_resolve_walks_dicts_and_lists() -> None:
    assert resolve(EVENT, "data.channel.origin") == "avcm"
    assert resolve(EVENT, "data.items.1.id") == "b"
    assert resolve(EVENT, "data.channel.note") is None
    assert resolve(EVENT, "data.items.2") is MISSING
    assert resolve(EVENT, "data.items.id") is MISSING
    assert resolve(EVENT, "data.channel.origin.x") is MISSING
    assert resolve(EVENT, "data.channel.note.x") is MISSING
    assert resolve({"d": {"0": "key"}}, "d.0") == "key"  # digits on an object are a key


def test_value_key_equality() -> None:
    assert value_key(1) == value_key(1.0)
    assert value_key(True) != value_key(1)
    assert value_key(False) != value_key(0)
    assert value_key(None) != value_key("")
    assert value_key("1") != value_key(1)
    assert value_key({"a": 1, "b": [1.0]}) == value_key({"b": [1], "a": 1.0})
    assert value_key([True]) != value_key([1])
    assert value_key(2**53 + 1) != value_key(2**53)  # no precision lost to float()
    assert value_key(10**400) == value_key(10**400)  # no OverflowError


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        ("data.channel.origin", "eq", "avcm", True),
        ("data.channel.origin", "eq", "AVCM", False),
        ("data.channel.bitrate", "eq", 8000.0, True),
        ("data.channel.valid", "eq", True, True),
        ("data.channel.valid", "eq", 1, False),
        ("data.channel.note", "eq", None, True),
        ("data.channel.attrs", "eq", {"region": "eu"}, True),
        ("data.items.0.id", "eq", "a", True),
        ("data.channel.origin", "ne", "xyz", True),
        ("data.channel.origin", "ne", "avcm", False),
        ("data.channel.valid", "ne", 1, True),
        ("data.channel.origin", "in", ["avcm", "other"], True),
        ("data.channel.origin", "in", [], False),
        ("data.channel.valid", "in", [1, 0], False),
        ("data.channel.bitrate", "in", [8000.0], True),
        ("data.channel.origin", "not_in", ["x", "y"], True),
        ("data.channel.origin", "not_in", ["avcm"], False),
        ("data.channel.origin", "contains", "vc", True),
        ("data.channel.origin", "contains", "zz", False),
        ("data.channel.origin", "contains", 1, False),
        ("data.channel.tags", "contains", "hd", True),
        ("data.channel.tags", "contains", 1.0, True),
        ("data.channel.tags", "contains", {"k": 1}, True),
        ("data.channel.tags", "contains", "h", False),
        ("data.channel.tags", "contains", False, False),
        ("data.channel.attrs", "contains", "region", True),
        ("data.channel.attrs", "contains", "eu", False),
        ("data.channel.bitrate", "contains", 8, False),
        ("data.channel.pod_service", "startswith", "pod-", True),
        ("data.channel.pod_service", "startswith", "-7", False),
        ("data.channel.pod_service", "endswith", "-7", True),
        ("data.channel.bitrate", "endswith", "0", False),
        ("data.channel.channel_id", "glob", "ESPN-*", True),
        ("data.channel.channel_id", "glob", "espn-*", False),
        ("data.channel.channel_id", "glob", "ESPN-H?", True),
        ("data.channel.pod_service", "regex", r"pod-\d+$", True),
        ("data.channel.pod_service", "regex", "7", True),
        ("data.channel.pod_service", "regex", "^7", False),
        ("data.channel.bitrate", "regex", "8", False),
        ("data.channel.note", "exists", None, True),
        ("data.channel.note", "not_exists", None, False),
        ("data.channel.bitrate", "gt", 7999, True),
        ("data.channel.bitrate", "gt", 8000, False),
        ("data.channel.bitrate", "gte", 8000.0, True),
        ("data.channel.ratio", "lt", 2, True),
        ("data.channel.ratio", "lte", 1.5, True),
        ("data.channel.ratio", "lte", 1.4, False),
        ("data.channel.valid", "gt", 0, False),
        ("data.channel.bitrate", "gt", "1", False),
        ("data.channel.origin", "gt", "a", True),
        ("data.channel.origin", "lt", "a", False),
        ("occurred_at", "gte", "2026-11-24T00:00:00Z", True),
        ("data.channel.note", "lt", 1, False),
    ],
)
def test_ops(path: str, op: Op, value: Any, expected: bool) -> None:
    assert holds(path, op, value) is expected


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("eq", "x"),
        ("ne", "x"),
        ("in", ["x"]),
        ("not_in", ["x"]),
        ("contains", "x"),
        ("startswith", "x"),
        ("endswith", "x"),
        ("glob", "*"),
        ("regex", ""),
        ("exists", None),
        ("gt", 0),
        ("gte", 0),
        ("lt", 0),
        ("lte", 0),
    ],
)
def test_missing_path_is_false_for_every_op_but_not_exists(op: Op, value: Any) -> None:
    assert holds("data.channel.nothing", op, value) is False
    assert holds("data.items.9.id", op, value) is False
    assert holds("data.channel.nothing", "not_exists") is True


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("channel.updated", "channel.updated", True),
        ("channel.updated", "channel.update", False),
        ("channel.*", "channel.updated", True),
        ("channel.*", "channel.", True),
        ("channel.*", "channels.updated", False),
        ("*", "anything.at.all", True),
        ("*.removed", "service.removed", True),
        ("chan*", "channel.validation_failed", True),
        ("Channel.*", "channel.updated", False),
        ("channel.?dded", "channel.added", True),
    ],
)
def test_event_type_matches(pattern: str, event_type: str, expected: bool) -> None:
    assert event_type_matches(pattern, event_type) is expected


IPX = Trigger(
    event_type="channel.*",
    conditions=[
        Condition(path="data.channel.origin", op="eq", value="avcm"),
        Condition(path="data.changes.pod_service", op="exists"),
        Condition(path="data.channel.bitrate", op="gt", value=9000),
    ],
)


def test_explain_reports_each_check() -> None:
    event = {**EVENT, "data": {"channel": {"origin": "xyz", "bitrate": 8000}}}
    result = explain(IPX, event)
    assert result.matched is False
    assert result.event_type_ok is True
    assert result.event_type_reason == "event type 'channel.updated' matches 'channel.*'"
    assert [check.passed for check in result.checks] == [False, False, False]
    assert [check.reason for check in result.checks] == [
        "data.channel.origin is 'xyz', expected eq 'avcm'",
        "data.changes.pod_service is missing",
        "data.channel.bitrate is 8000, expected gt 9000",
    ]
    assert result.checks[0].condition is IPX.conditions[0]


def test_explain_match_and_event_type_failure() -> None:
    channel = {"origin": "avcm", "bitrate": 9001}
    ok = explain(IPX, {**EVENT, "data": {**EVENT["data"], "channel": channel}})
    assert ok.matched is True
    assert all(check.passed for check in ok.checks)
    wrong_type = explain(IPX, {**EVENT, "event_type": "service.created"})
    assert wrong_type.matched is False
    assert wrong_type.event_type_reason == (
        "event type 'service.created' does not match 'channel.*'"
    )
    assert explain(IPX, {"data": {}}).event_type_reason == "the event has no event_type"


def test_explain_reasons_for_missing_and_not_exists() -> None:
    trigger = Trigger(
        event_type="*",
        conditions=[
            Condition(path="data.nope", op="eq", value="a"),
            Condition(path="data.channel.origin", op="not_exists"),
            Condition(path="data.nope", op="not_exists"),
        ],
    )
    reasons = [check.reason for check in explain(trigger, EVENT).checks]
    assert reasons == [
        "data.nope is missing, expected eq 'a'",
        "data.channel.origin exists ('avcm'), expected not_exists",
        "data.nope is missing",
    ]


def test_index_matches_in_insertion_order() -> None:
    origin_avcm = Condition(path="data.channel.origin", op="eq", value="avcm")
    jobs = [
        (Trigger(event_type="*"), "everything"),
        (Trigger(event_type="service.created"), "services"),
        (Trigger(event_type="channel.updated", conditions=[origin_avcm]), "exact+eq"),
        (Trigger(event_type="chan*", conditions=[IPX.conditions[1]]), "chan glob"),
        (Trigger(event_type="channel.*", conditions=[origin_avcm, IPX.conditions[2]]), "ipx"),
        (Trigger(event_type="channel.updated"), "exact"),
    ]
    index = JobIndex(jobs)
    assert len(index) == 6
    assert index.match(EVENT) == ["everything", "exact+eq", "chan glob", "exact"]
    assert index.match({"event_type": "service.created"}) == ["everything", "services"]
    assert index.match({"data": {}}) == []


def test_index_candidates_stay_flat_as_the_catalogue_grows() -> None:
    def catalogue(size: int) -> list[tuple[Trigger, int]]:
        jobs = [
            (Trigger(event_type="channel.updated", conditions=[cond]), i)
            for i, cond in enumerate(
                Condition(path="data.channel.channel_id", op="eq", value=f"CH-{n}")
                for n in range(size)
            )
        ]
        jobs.append((Trigger(event_type="channel.*"), size))
        return jobs

    event = {"event_type": "channel.updated", "data": {"channel": {"channel_id": "CH-3"}}}
    small, large = JobIndex(catalogue(10)), JobIndex(catalogue(10_000))
    assert small.candidates(event) == [3, 10]
    assert large.candidates(event) == [3, 10_000]
    assert small.match(event) == [3, 10]
    assert large.match(event) == [3, 10_000]


# ---------------------------------------------------------------- property: index == naive scan

PATTERNS = ["channel.updated", "channel.*", "*", "service.created", "chan*", "x", "*.created"]
EVENT_TYPES = ["channel.updated", "channel.added", "service.created", "x", "chan", "other"]
PATHS = ["data.a", "data.b", "data.l.0", "data.l", "data.d.k", "data.d"]
SCALARS = st.sampled_from([0, 1, 1.0, 2.5, True, False, None, "a", "b", "ab", "ba", ""])
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["k", "a"]), inner, max_size=2)
    ),
    max_leaves=5,
)
STRINGS = st.sampled_from(["a", "b", "ab", "", "a*", "?", "[ab]", "^a", "b$"])
REGEXES = st.sampled_from(["a", "b", "ab", "", "^a", "b$", "a|b", "^$"])
ORDERED = st.sampled_from([0, 1, 1.5, -1, "a", "ab", "b"])


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    path = draw(st.sampled_from(PATHS))
    # eq is drawn half of the time: it is what the index files jobs under.
    op: Op = draw(st.one_of(st.just("eq"), st.sampled_from(get_args(Op))))
    value: Any
    if op in ("exists", "not_exists"):
        value = None
    elif op in ("in", "not_in"):
        value = draw(st.lists(JSON_VALUES, max_size=3))
    elif op == "regex":
        value = draw(REGEXES)
    elif op in ("startswith", "endswith", "glob"):
        value = draw(STRINGS)
    elif op in ("gt", "gte", "lt", "lte"):
        value = draw(ORDERED)
    elif op == "eq":
        value = draw(st.one_of(SCALARS, SCALARS, JSON_VALUES))  # shared values collide often
    else:
        value = draw(JSON_VALUES)
    return Condition(path=path, op=op, value=value)


TRIGGERS = st.builds(
    Trigger,
    event_type=st.sampled_from(PATTERNS),
    conditions=st.lists(conditions(), max_size=3),
)
VALUES = st.one_of(SCALARS, SCALARS, JSON_VALUES)
EVENTS = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(EVENT_TYPES),
        "data": st.fixed_dictionaries(
            {},
            optional={
                "a": VALUES,
                "b": VALUES,
                "l": st.lists(VALUES, max_size=3) | VALUES,
                "d": st.dictionaries(st.sampled_from(["k", "j"]), VALUES, max_size=2) | VALUES,
            },
        ),
    }
)


def assert_index_agrees(triggers: list[Trigger], events: list[dict[str, Any]]) -> None:
    jobs = [(trigger, i) for i, trigger in enumerate(triggers)]
    index = JobIndex(jobs)
    for event in events:
        naive = [
            item
            for trigger, item in jobs
            if event_type_matches(trigger.event_type, event["event_type"])
            and all(evaluate(c, event) for c in trigger.conditions)
        ]
        assert index.match(event) == naive
        assert set(naive) <= set(index.candidates(event))
        assert [item for trigger, item in jobs if explain(trigger, event).matched] == naive


@settings(max_examples=300, deadline=None)
@given(triggers=st.lists(TRIGGERS, max_size=25), events=st.lists(EVENTS, min_size=1, max_size=5))
def test_index_equals_naive_scan(triggers: list[Trigger], events: list[dict[str, Any]]) -> None:
    assert_index_agrees(triggers, events)


# Only eq conditions over two paths and a handful of scalars: index buckets are hit constantly.
EQ_TRIGGERS = st.builds(
    Trigger,
    event_type=st.sampled_from(["channel.updated", "channel.*", "*"]),
    conditions=st.lists(
        st.builds(
            Condition, path=st.sampled_from(["data.a", "data.b"]), op=st.just("eq"), value=SCALARS
        ),
        max_size=2,
    ),
)
EQ_EVENTS = st.fixed_dictionaries(
    {
        "event_type": st.just("channel.updated"),
        "data": st.fixed_dictionaries({}, optional={"a": SCALARS, "b": SCALARS}),
    }
)


@settings(max_examples=300, deadline=None)
@given(triggers=st.lists(EQ_TRIGGERS, max_size=25), events=st.lists(EQ_EVENTS, max_size=5))
def test_index_equals_naive_scan_on_eq_conditions(
    triggers: list[Trigger], events: list[dict[str, Any]]
) -> None:
    assert_index_agrees(triggers, events)


def test_a_backtracking_pattern_cannot_hang_the_matcher() -> None:
    """`(a+)+$` against 5,000 `a`s and a `b` takes exponential time with Python's `re`; the
    regex operator must answer at once. Run in a process of its own, so that a regression
    fails on the timeout instead of hanging the suite."""
    probe = (
        "from jobmanager.jobs.matching import evaluate\n"
        "from jobmanager.jobs.spec import Condition\n"
        "c = Condition(path='data.v', op='regex', value='(a+)+$')\n"
        "print(evaluate(c, {'data': {'v': 'a' * 5000 + 'b'}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=20, check=True
    )
    assert done.stdout.strip() == "False"
