"""Validating Channel Manager messages (pure): every kind of bad input has a clear reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobmanager.matcher.events import BadEvent, parse_event

DEEP: list[object] = [1]
for _ in range(80):
    DEEP = [DEEP]


def parse(
    body: bytes,
    *,
    routing_key: str | None = "channel.updated",
    message_id: str | None = None,
    max_bytes: int = 1 << 20,
) -> object:
    return parse_event(
        body, routing_key=routing_key, message_id=message_id, max_bytes=max_bytes, max_depth=64
    )


def test_a_valid_event() -> None:
    event = parse(b'{"event_id": "e1", "event_type": "channel.added", "data": {"x": 1}}')
    assert event.event_type == "channel.added"
    assert event.source == "channel-manager"


def test_id_and_type_fall_back_to_the_message_id_and_routing_key() -> None:
    event = parse(b'{"data": {}}', routing_key="channel.removed", message_id="m-1")
    assert (event.event_id, event.event_type) == ("m-1", "channel.removed")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "not a JSON object but an array"),
        (b'"text"', "not a JSON object but a string"),
        (b"12", "not a JSON object but a number"),
        (b"true", "not a JSON object but a boolean"),
        (b"null", "not a JSON object but null"),
        (b'{"event_type": "x"}', "event_id"),
        (b'{"event_id": 5, "event_type": "x"}', "event_id"),
        (b'{"event_id": "e", "event_type": "x", "data": [1]}', "data"),
        (b'{"event_id": "e", "event_type": "x", "occurred_at": "yesterday"}', "occurred_at"),
        (b"[" * 100 + b"]" * 100, "not a JSON object"),
        (
            json.dumps({"event_id": "e", "event_type": "x", "data": {"a": DEEP}}).encode(),
            "nested deeper",
        ),
        (b"{" + b'"a":{' * 5000 + b"}" * 5001, "nested deeper"),
        (b'{"event_id": "e\\u0000", "event_type": "x"}', "NUL character"),
        (b'{"event_id": "e", "event_type": "x", "data": {"\\u0000": 1}}', "NUL character"),
        (b'{"event_id": "e", "event_type": "x", "data": {"s": "\\ud800"}}', "surrogate"),
        (b'{"event_id": "e", "event_type": "x", "data": {"n": NaN}}', "NaN is not a JSON number"),
        (b'{"event_id": "e", "event_type": "x", "data": [-Infinity]}', "Infinity is not a JSON"),
        (
            b'{"event_id": "e", "event_type": "x", "occurred_at": "9999-12-31T23:59:59-23:59"}',
            "occurred_at: Value error, a time outside the years 1 to 9999 in UTC",
        ),
    ],
)
def test_bad_input_says_why(body: bytes, reason: str) -> None:
    with pytest.raises(BadEvent, match=reason):
        parse(body, routing_key=None)


def test_missing_type_without_a_routing_key() -> None:
    with pytest.raises(BadEvent, match="event_type"):
        parse(b'{"event_id": "e"}', routing_key="")


def test_over_the_size_limit() -> None:
    with pytest.raises(BadEvent, match="too large: 2048 bytes"):
        parse(b" " * 2048, max_bytes=1024)


# Any code point, surrogates and NUL included, since JSON escapes can carry them all.
TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def _encode(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


MALFORMED = st.one_of(
    st.binary(max_size=300),
    JSON.map(_encode),
    # Well-shaped events whose strings may hold anything.
    st.fixed_dictionaries(
        {"event_id": TEXT, "event_type": TEXT, "data": st.dictionaries(TEXT, JSON, max_size=4)}
    ).map(_encode),
    st.fixed_dictionaries(
        {"event_id": JSON, "event_type": JSON},
        optional={"source": JSON, "occurred_at": JSON, "data": JSON},
    ).map(_encode),
)


@settings(max_examples=1000, deadline=None)
@given(MALFORMED, st.sampled_from([None, "", "channel.updated"]), st.sampled_from([None, "m1"]))
def test_any_input_is_an_event_or_a_reason(body: bytes, key: str | None, mid: str | None) -> None:
    try:
        event = parse_event(body, routing_key=key, message_id=mid, max_bytes=1 << 20, max_depth=64)
    except BadEvent as exc:
        assert str(exc)
        return
    # Whatever passes can be stored: Postgres text and JSONB hold it.
    document = json.dumps(event.document(), ensure_ascii=False)
    assert "\\u0000" not in document, "Postgres stores no NUL character"
    document.encode("utf-8")  # no unpaired surrogate
