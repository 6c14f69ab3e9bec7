"""From an event to planned runs with a catalogue built in memory, its templates rendered by
a real render pool (worker processes, no broker or database)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from jobmanager.core.messages import Event
from jobmanager.jobs.matching import JobIndex
from jobmanager.jobs.renderer import Crashed, RenderLimits, RenderPool, Templates
from jobmanager.jobs.spec import PlannedCancel, PlannedRun, Trigger
from jobmanager.matcher.catalogue import Cancelling, Catalogue, CompiledJob, Plan


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[RenderPool]:
    renderer = RenderPool(RenderLimits(cpu_s=0.3, memory_bytes=32 << 20), workers=2)
    yield renderer
    await renderer.close()


def job(
    name: str,
    lane: str | None = "{{ data.channel.channel_id }}",
    command: str = "{{ data.channel | tojson }}",
) -> CompiledJob:
    return CompiledJob(
        id=1,
        name=name,
        script="ipx_update",
        templates=Templates(command, lane),
        timeout_s=5,
        max_attempts=3,
        retry_backoff_s=1,
    )


def catalogue(*entries: tuple[dict[str, object], CompiledJob]) -> Catalogue:
    return Catalogue(JobIndex((Trigger.model_validate(t), j) for t, j in entries), interval_s=0)


async def plan(cat: Catalogue, pool: RenderPool, *events: Event) -> list[list[PlannedRun]]:
    plans = await cat.plan(list(events) or [EVENT], pool)
    assert not any(isinstance(p, Crashed) for p in plans)
    return [p.runs for p in plans if not isinstance(p, Crashed)]


EVENT = Event(
    event_id="e1",
    event_type="channel.updated",
    data={"channel": {"channel_id": "ESPN-HD", "origin": "avcm"}},
)


async def test_matching_jobs_become_planned_runs_with_rendered_command_and_lane(
    pool: RenderPool,
) -> None:
    cat = catalogue(
        (
            {
                "event_type": "channel.*",
                "conditions": [{"path": "data.channel.origin", "op": "eq", "value": "avcm"}],
            },
            job("ipx"),
        ),
        ({"event_type": "channel.removed"}, job("other")),
    )
    [[run]] = await plan(cat, pool)
    assert run.job_name == "ipx" and run.error is None
    assert run.command == '{"channel_id": "ESPN-HD", "origin": "avcm"}'
    assert run.lane == "ESPN-HD" and run.max_attempts == 3


async def test_a_template_error_becomes_a_failed_run_not_a_lost_one(pool: RenderPool) -> None:
    cat = catalogue(
        ({"event_type": "channel.updated"}, job("broken", command="{{ data.nothing.here }}"))
    )
    [[run]] = await plan(cat, pool)
    assert run.error is not None and "could not prepare the run" in run.error


async def test_no_lane_template_means_no_sequencing(pool: RenderPool) -> None:
    [[run]] = await plan(catalogue(({"event_type": "*"}, job("free", lane=None))), pool)
    assert run.lane is None


RUNAWAY = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
BOMB = "{{ ''.ljust(1000000000) }}"


async def test_a_template_over_a_limit_fails_its_run_and_names_the_limit(pool: RenderPool) -> None:
    cat = catalogue(
        ({"event_type": "channel.updated"}, job("runaway", command=RUNAWAY)),
        ({"event_type": "channel.updated"}, job("bomb", lane=BOMB)),
        ({"event_type": "channel.updated"}, job("fine")),
    )
    [[runaway, bomb, fine]] = await plan(cat, pool)
    assert runaway.error == (
        "could not prepare the run: command template: rendering exceeded the CPU time limit (0.3 s)"
    )
    assert bomb.error == (
        "could not prepare the run: lane template: rendering exceeded the memory limit (32 MiB)"
    )
    assert fine.error is None and fine.lane == "ESPN-HD"


async def test_a_batch_is_planned_event_by_event_in_order(pool: RenderPool) -> None:
    cat = catalogue(({"event_type": "*"}, job("echo", command="{{ event_id }}", lane=None)))
    events = [EVENT.model_copy(update={"event_id": f"e{i}"}) for i in range(7)]
    plans = await plan(cat, pool, *events)
    assert [[run.command for run in runs] for runs in plans] == [[f"e{i}"] for i in range(7)]


async def test_a_cancel_on_entry_plans_a_cancel_in_the_events_lane(pool: RenderPool) -> None:
    ipx = job("ipx")
    cat = Catalogue(
        JobIndex([(Trigger(event_type="channel.updated"), ipx)]),
        interval_s=0,
        cancel_index=JobIndex(
            [
                (Trigger(event_type="channel.removed"), Cancelling(ipx, running=True)),
                (Trigger(event_type="other.*"), Cancelling(job("unrelated"), running=False)),
            ]
        ),
    )
    removed = EVENT.model_copy(update={"event_type": "channel.removed"})
    [updated, gone] = await cat.plan([EVENT, removed], pool)
    assert isinstance(updated, Plan) and isinstance(gone, Plan)
    assert [r.job_name for r in updated.runs] == ["ipx"] and updated.cancels == []
    assert gone.runs == [] and gone.cancels == [PlannedCancel(1, "ESPN-HD", running=True)]


async def test_a_cancel_whose_lane_fails_cancels_nothing(pool: RenderPool) -> None:
    broken = job("broken", lane="{{ data.nothing.here }}")
    cat = Catalogue(
        JobIndex([]),
        interval_s=0,
        cancel_index=JobIndex([(Trigger(event_type="*"), Cancelling(broken, running=False))]),
    )
    [plan_] = await cat.plan([EVENT], pool)
    assert isinstance(plan_, Plan) and plan_.cancels == [] and plan_.runs == []
