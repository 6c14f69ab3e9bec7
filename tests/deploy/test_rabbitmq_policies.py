"""deploy/rabbitmq/definitions.json: broker policies that fit the queues the code declares.

The queues and their arguments come from `Topology.declare` itself, run against a channel
that only records what it is asked to declare (no broker needed to compare two documents).
"""

from __future__ import annotations

import asyncio
import json
import re
from functools import cache
from typing import Any

import pytest
from deployfiles import DEFINITIONS, find

from jobmanager.core.topology import WORK_DELIVERY_LIMIT, Topology


class _Declared:
    def __init__(self, name: str) -> None:
        self.name = name

    async def bind(self, *args: Any, **kwargs: Any) -> None:
        return None


class RecordingChannel:
    """Records queue declarations (name → arguments); everything else succeeds silently."""

    def __init__(self) -> None:
        self.queues: dict[str, dict[str, Any]] = {}

    async def declare_queue(self, name: str, **kwargs: Any) -> _Declared:
        self.queues[name] = dict(kwargs.get("arguments") or {})
        return _Declared(name)

    async def declare_exchange(self, name: str, *args: Any, **kwargs: Any) -> _Declared:
        return _Declared(name)


@cache
def declared_queues() -> dict[str, dict[str, Any]]:
    (config_map,) = find("ConfigMap")
    channel = RecordingChannel()
    topology = Topology(config_map["data"]["JOBMANAGER_NAMESPACE"])
    # A loop of its own, never installed as the thread's: the async tests keep theirs.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(topology.declare(channel))  # type: ignore[arg-type]
    finally:
        loop.close()
    return channel.queues


def policies() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(DEFINITIONS.read_text())["policies"]
    return found


def policy_of(queue: str) -> dict[str, Any] | None:
    """The policy RabbitMQ applies to a queue (the matching one of highest priority)."""
    matching = [p for p in policies() if re.fullmatch(p["pattern"], queue)]
    if not matching:
        return None
    top = max(p["priority"] for p in matching)
    (chosen,) = [p for p in matching if p["priority"] == top]  # never a tie: ambiguous
    return chosen


def quorum(arguments: dict[str, Any]) -> bool:
    return arguments.get("x-queue-type") == "quorum"


def test_the_file_has_only_policies_for_queues_in_the_default_vhost() -> None:
    data = json.loads(DEFINITIONS.read_text())
    assert set(data) == {"policies"}, "no users or vhosts: the file is imported into a broker"
    for policy in policies():
        assert policy["vhost"] == "/"
        assert policy["apply-to"] == "queues"
        re.compile(policy["pattern"])


def test_every_policy_matches_queues_the_code_declares_and_only_quorum_ones() -> None:
    queues = declared_queues()
    for policy in policies():
        matched = [q for q in queues if re.fullmatch(policy["pattern"], q)]
        assert matched, f"{policy['name']} matches no queue of the topology"
        for queue in matched:
            # delivery-limit and dead-letter-strategy are quorum-queue features; the delay
            # levels are classic queues whose arguments (TTL, dead-lettering) say it all.
            assert quorum(queues[queue]), f"{policy['name']} matches classic queue {queue}"


def test_no_policy_contradicts_an_argument_of_the_code() -> None:
    for queue, arguments in declared_queues().items():
        policy = policy_of(queue)
        if policy is None:
            continue
        for key, value in policy["definition"].items():
            if f"x-{key}" in arguments:
                assert arguments[f"x-{key}"] == value, f"{queue}: policy {key}={value!r}"


@pytest.mark.parametrize("queue_suffix", ["events", "due", "work", "work.lost", "results.ledger"])
def test_consumed_queues_dead_letter_at_least_once_with_a_delivery_limit(queue_suffix: str) -> None:
    queues = declared_queues()
    (queue,) = [q for q in queues if q.endswith(f".{queue_suffix}")]
    arguments = queues[queue]
    assert "x-dead-letter-routing-key" in arguments
    policy = policy_of(queue)
    assert policy is not None, f"{queue} has no policy"
    definition = policy["definition"]
    # At-least-once dead-lettering needs overflow reject-publish (else RabbitMQ falls back to
    # at-most-once and can lose a message on its way to the dead-letter queue).
    assert definition["dead-letter-strategy"] == "at-least-once"
    assert definition["overflow"] == "reject-publish"
    assert "x-delivery-limit" in arguments or "delivery-limit" in definition


def test_the_work_queue_limit_is_the_codes() -> None:
    (work,) = [q for q in declared_queues() if q.endswith(".work")]
    policy = policy_of(work)
    assert policy is not None
    assert policy["definition"]["delivery-limit"] == WORK_DELIVERY_LIMIT


def test_the_delay_levels_have_no_policy() -> None:
    delay = [q for q, a in declared_queues().items() if "x-message-ttl" in a]
    assert len(delay) > 20
    assert all(policy_of(q) is None for q in delay)
