"""From an event to planned runs with a catalogue built in memory (pure)."""

from __future__ import annotations

from jobmanager.core.messages import Event
from jobmanager.jobs.matching import JobIndex
from jobmanager.jobs.spec import Trigger
from jobmanager.jobs.templating import compile_template
from jobmanager.matcher.catalogue import Catalogue, CompiledJob


def job(
    name: str,
    lane: str | None = "{{ data.channel.channel_id }}",
    command: str = "{{ data.channel | tojson }}",
) -> CompiledJob:
    return CompiledJob(
        id=1,
        name=name,
        script="ipx_update",
        command=compile_template(command),
        lane=compile_template(lane) if lane else None,
        timeout_s=5,
        max_attempts=3,
        retry_backoff_s=1,
    )


def catalogue(*entries: tuple[dict[str, object], CompiledJob]) -> Catalogue:
    return Catalogue(JobIndex((Trigger.model_validate(t), j) for t, j in entries), interval_s=0)


EVENT = Event(
    event_id="e1",
    event_type="channel.updated",
    data={"channel": {"channel_id": "ESPN-HD", "origin": "avcm"}},
)


def test_matching_jobs_become_planned_runs_with_rendered_command_and_lane() -> None:
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
    [run] = cat.plan(EVENT)
    assert run.job_name == "ipx" and run.error is None
    assert run.command == '{"channel_id": "ESPN-HD", "origin": "avcm"}'
    assert run.lane == "ESPN-HD" and run.max_attempts == 3


def test_a_template_error_becomes_a_failed_run_not_a_lost_one() -> None:
    cat = catalogue(
        ({"event_type": "channel.updated"}, job("broken", command="{{ data.nothing.here }}"))
    )
    [run] = cat.plan(EVENT)
    assert run.error is not None and "could not prepare the run" in run.error


def test_no_lane_template_means_no_sequencing() -> None:
    [run] = catalogue(({"event_type": "*"}, job("free", lane=None))).plan(EVENT)
    assert run.lane is None
