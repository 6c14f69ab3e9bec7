"""Hostile input: duplicates published concurrently, 2,000 malformed events, and operators
removing runs at the moment the gate dispatches them."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime

import pytest
from fault_kit import duplicates, events_for, missing, publish_confirmed, report, settle
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from stack import Stack

from jobmanager.store import ledger
from jobmanager.store.models import Attempt, Run

pytestmark = pytest.mark.fault


@pytest.mark.stack(executors=2, concurrency=4)
async def test_each_event_published_three_times_gives_one_run(
    fault_stack: Stack, amqp_url: str
) -> None:
    stack = fault_stack
    job = stack.job(script="noop", lane="{{ data.lane }}")
    await stack.add(job)
    events = events_for(job, 1000, lanes=100)
    start = time.monotonic()
    await asyncio.gather(*(publish_confirmed(amqp_url, stack, events) for _ in range(3)))
    states = await settle(stack, len(events), timeout=120)
    await asyncio.sleep(1.0)  # any late duplicate would show now
    states = await settle(stack, len(events), timeout=5)
    assert states == {"succeeded": 1000}, states
    assert await missing(stack, events, [job]) == 0 and await duplicates(stack) == 0
    report(
        "1000 events published 3 times concurrently",
        published=3000,
        runs=1000,
        lost=0,
        duplicates=0,
        seconds=round(time.monotonic() - start, 1),
    )


MAX_BYTES = 64 * 1024


def _nested(depth: int) -> bytes:
    return b'{"event_id": "deep", "event_type": "x", "data": ' + b"[" * depth + b"]" * depth + b"}"


# Each category is invalid by construction; none may become a run.
MALFORMED = st.one_of(
    st.binary(max_size=200).filter(lambda b: not b.strip().startswith((b"{", b"[", b'"'))),
    st.sampled_from([b"{", b'{"event_id": ', b"[1, 2", b"nul", b"{'a': 1}"]),
    st.lists(st.integers() | st.text(max_size=5), max_size=5).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            # Wrong types (null would fall back to the AMQP message id, a valid event).
            "event_id": st.integers() | st.booleans() | st.lists(st.integers(), max_size=2),
            "event_type": st.text(min_size=1, max_size=10),
        }
    ).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries(
        {
            "event_id": st.text(min_size=1, max_size=10),
            "event_type": st.text(min_size=1, max_size=10),
            "data": st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=3),
        }
    ).map(lambda d: json.dumps(d).encode()),
    st.integers(min_value=65, max_value=400).map(_nested),
    # Over the size limit this test's matcher runs with (MAX_BYTES).
    st.integers(min_value=1, max_value=4096).map(
        lambda n: (
            b'{"event_id": "big", "event_type": "x", "data": {"b": "'
            + b"x" * (MAX_BYTES + n)
            + b'"}}'
        )
    ),
    st.binary(min_size=1, max_size=20).map(
        lambda b: b'{"event_id": "\xff\xfe' + b + b'", "event_type": "x"}'
    ),
    # What Python's json reads but JSON and the database do not have.
    st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(
        lambda n: f'{{"event_id": "n", "event_type": "x", "data": {{"v": {n}}}}}'.encode()
    ),
    st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01"]).map(
        lambda t: f'{{"event_id": "t", "event_type": "x", "occurred_at": "{t}"}}'.encode()
    ),
)


def generate(count: int) -> list[bytes]:
    bodies: list[bytes] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(MALFORMED)
    def collect(body: bytes) -> None:
        bodies.append(body)

    collect()
    return bodies


@pytest.mark.stack(executors=1, concurrency=1, env={"JOBMANAGER_EVENT_MAX_BYTES": str(MAX_BYTES)})
async def test_malformed_events_are_all_parked_and_never_run(fault_stack: Stack) -> None:
    stack = fault_stack
    job = stack.job(script="noop", lane=None, trigger={"event_type": "*"})
    await stack.add(job)
    bodies = generate(2000)
    assert len(bodies) >= 2000
    start = time.monotonic()
    # An empty routing key: no fallback for a missing event_type.
    await asyncio.gather(*(stack.publish_raw(b, routing_key="") for b in bodies))
    deadline = time.monotonic() + 120
    while True:
        parked = await stack.depth(stack.topology.dead_queue)
        if parked >= len(bodies) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    channel = await stack.connection.channel()
    reasons: dict[str, int] = {}
    queue = await channel.get_queue(stack.topology.dead_queue)
    while (message := await queue.get(fail=False)) is not None:
        reason = str((message.headers or {}).get("x-jobmanager-error", "")).split(":")[0]
        reasons[reason] = reasons.get(reason, 0) + 1
        await message.ack()
    await channel.close()
    async with stack.engine.connect() as conn:
        runs = await conn.scalar(select(func.count()).select_from(Run))
    assert parked == len(bodies), f"{parked} of {len(bodies)} parked"
    assert runs == 0
    assert "internal error" not in reasons, reasons
    assert stack.processes["matcher"].poll() is None, "the consumer never crashed"
    report(
        "2000 malformed events (hypothesis)",
        published=len(bodies),
        parked=parked,
        runs=0,
        consumer_crashes=0,
        reasons=reasons,
        seconds=round(time.monotonic() - start, 1),
    )


# The race is with the gate's dispatch. With JOBMANAGER_DIRECT_DISPATCH a run due at once
# is already dispatched when its enqueue commits, so Remove cannot race it (it is refused);
# runs due later (an interval, a backoff) still go through the gate, which this drives.
@pytest.mark.stack(executors=2, concurrency=4, env={"JOBMANAGER_DIRECT_DISPATCH": "false"})
async def test_remove_racing_dispatch_ends_each_run_exactly_once(fault_stack: Stack) -> None:
    stack = fault_stack
    job = stack.job(script="noop", lane="{{ data.lane }}")
    await stack.add(job)
    rng = random.Random(11)
    outcomes = {"removed": 0, "refused": 0}

    async def trial(n: int) -> None:
        [event] = events_for(job, 1, data={"lane": f"race-{n}"})
        await stack.publisher.publish(
            stack.topology.events_exchange, event.event_type, event, message_id=event.event_id
        )
        run_id = None
        while run_id is None:
            async with stack.engine.connect() as conn:
                run_id = await conn.scalar(select(Run.id).where(Run.event_id == event.event_id))
            await asyncio.sleep(0.001)
        await asyncio.sleep(rng.random() * 0.01)  # land anywhere around the dispatch
        now = datetime.now(UTC)
        try:
            async with stack.engine.begin() as conn:
                outbox = await ledger.remove(conn, run_id, interval_s=0, now=now)
        except ledger.Conflict:
            outcomes["refused"] += 1
            return
        await outbox.publish(stack.publisher, now=now)
        outcomes["removed"] += 1

    start = time.monotonic()
    for batch in range(10):
        await asyncio.gather(*(trial(batch * 50 + i) for i in range(50)))
    states = await settle(stack, 500, timeout=60)
    async with stack.engine.connect() as conn:
        removed_ran = await conn.scalar(
            select(func.count())
            .select_from(Attempt)
            .join(Run, Run.id == Attempt.run_id)
            .where(Run.state == "removed")
        )
    assert states.get("removed", 0) == outcomes["removed"]
    assert states.get("succeeded", 0) == outcomes["refused"]
    assert sum(states.values()) == 500 and removed_ran == 0, "never both, never neither"
    assert outcomes["removed"] and outcomes["refused"], f"no race took place: {outcomes}"
    report(
        "Remove racing dispatch, 500 trials",
        trials=500,
        removed=outcomes["removed"],
        executed=outcomes["refused"],
        both=0,
        neither=0,
        seconds=round(time.monotonic() - start, 1),
    )
