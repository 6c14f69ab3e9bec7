"""Cancel on a later event, end to end with the real matcher and executor processes: with
the queue's interval at 5 s, three updates for a channel queue three runs (the first runs
at once); the channel's removal removes the two still waiting, each naming that event, and
leaves another channel's runs alone. With `running: true` the run on an executor is
cancelled too: its script is stopped and the run is Failed with the event in its Feedback."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from stack import Stack

from jobmanager.core.messages import Event
from jobmanager.store.models import Event as EventRow
from jobmanager.testkit.waiting import wait_for


async def _event_pk(stack: Stack, event_id: str) -> int:
    async with stack.engine.connect() as conn:
        pk = await conn.scalar(select(EventRow.id).where(EventRow.event_id == event_id))
    assert pk is not None
    return int(pk)


async def _removed(stack: Stack, event_type: str, channel: str) -> str:
    """Publish the channel's removal as the Channel Manager would; its event id."""
    event = Event(event_id=uuid.uuid4().hex, event_type=event_type, data={"channel": channel})
    await stack.publisher.publish(
        stack.topology.events_exchange, event_type, event, message_id=event.event_id
    )
    return event.event_id


async def _states(stack: Stack, spec: Any, wanted: list[str]) -> list[Any]:
    async def reached() -> list[Any] | None:
        runs = await stack.runs(spec)
        return runs if [r.state for r in runs] == wanted else None

    return await wait_for(reached, 15, what=f"{spec.name}'s runs {wanted}")


async def test_a_removed_channel_ends_its_waiting_updates(stack: Stack) -> None:
    removed_type = f"test.{uuid.uuid4().hex[:8]}.removed"
    spec = stack.job(
        script="noop",
        lane="{{ data.channel }}",
        cancel_on=[{"event_type": removed_type}],
    )
    await stack.add(spec)
    await stack.set_interval(5.0)
    try:
        channel, other = f"A-{uuid.uuid4().hex[:6]}", f"B-{uuid.uuid4().hex[:6]}"
        for _ in range(3):
            await stack.publish(spec, {"channel": channel})
        await stack.publish(spec, {"channel": other})
        # The first of each lane runs at once; the later two of `channel` wait 5 s.
        await _states(stack, spec, ["succeeded", "queued", "queued", "succeeded"])

        gone = await _removed(stack, removed_type, channel)
        runs = await _states(stack, spec, ["succeeded", "removed", "removed", "succeeded"])
        pk = await _event_pk(stack, gone)
        assert [r.ended_by_event_pk for r in runs] == [None, pk, pk, None]
    finally:
        await stack.set_interval(0.0)


async def test_with_running_the_script_on_an_executor_is_stopped(
    stack: Stack, tmp_path: Path
) -> None:
    removed_type = f"test.{uuid.uuid4().hex[:8]}.removed"
    pid_file = tmp_path / "linger.pid"
    spec = stack.job(
        script="linger",
        command_template=str(pid_file),
        lane="{{ data.channel }}",
        cancel_on=[{"event_type": removed_type, "running": True}],
    )
    await stack.add(spec)
    channel = f"C-{uuid.uuid4().hex[:6]}"
    await stack.publish(spec, {"channel": channel})

    async def running() -> Any:
        runs = await stack.runs(spec)
        if runs and runs[0].state == "running" and pid_file.exists() and pid_file.read_text():
            return runs[0]
        return None

    run = await wait_for(running, 15, what="the lingering script running")
    gone = await _removed(stack, removed_type, channel)

    async def stopped() -> Any:
        [row] = await stack.runs(spec)
        return row if row.feedback.endswith("the script ended on SIGTERM") else None

    row = await wait_for(stopped, 15, what="the executor's account of the cancel")
    assert (row.id, row.state, row.result) == (run.id, "failed", 2)
    assert row.feedback == (
        f"cancelled by event {gone} ({removed_type}); the script ended on SIGTERM"
    )
    assert row.ended_by_event_pk == await _event_pk(stack, gone)
