"""Validating Channel Manager messages (pure): every kind of bad input has a clear reason."""

from __future__ import annotations

import json

import pytest

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
        (b"[1, 2]", "not a JSON object but a list"),
        (b'"text"', "not a JSON object but a str"),
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
