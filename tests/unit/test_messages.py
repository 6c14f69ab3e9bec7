"""The message contract: the runs exchange's routing keys are the specification's names,
and what executors report can always be stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

from jobmanager.core.messages import JobResult, RunNotice, RunStarted, RunState


def notice(state: RunState) -> RunNotice:
    return RunNotice(
        run_id=1, state=state, attempt=1, job="j", lane=None, event_id="e", at=datetime.now(UTC)
    )


def test_each_announced_state_has_the_specified_routing_key() -> None:
    keys = {
        state: notice(state).routing_key for state in get_args(RunState) if state != "dispatched"
    }
    assert keys == {
        "queued": "run.queued",
        "running": "run.started",
        "succeeded": "run.succeeded",
        "failed": "run.failed",
        "removed": "run.removed",
    }


def test_reported_text_that_postgres_cannot_hold_is_replaced() -> None:
    body = (
        '{"run_id": 1, "attempt": 1, "result": 2, "status": "failed", '
        '"feedback": "bad \\u0000 byte", "output_tail": "", '
        '"started_at": "2026-12-03T10:00:00Z", "finished_at": "2026-12-03T10:00:01Z", '
        '"executor": "x\\u0000"}'
    )
    result = JobResult.model_validate_json(body)
    assert (result.feedback, result.executor) == ("bad \ufffd byte", "x\ufffd")
    tail = result.model_copy(update={"output_tail": "half \ud800 a pair"}).model_dump()
    assert JobResult.model_validate(tail).output_tail == "half ? a pair"
    started = RunStarted(run_id=1, attempt=1, executor="x\x00", started_at=datetime.now(UTC))
    assert started.executor == "x\ufffd"
