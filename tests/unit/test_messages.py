"""The message contract: the runs exchange's routing keys are the specification's names,
and what executors report can always be stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import get_args

import pytest
from pydantic import ValidationError

from jobmanager.core.messages import (
    MAX_FEEDBACK,
    MAX_OUTPUT_TAIL,
    Event,
    JobResult,
    RunNotice,
    RunStarted,
    RunState,
)


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
        "superseded": "run.superseded",  # SPEC §12, debounce
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
    assert JobResult.model_validate(tail).output_tail == "half \ufffd a pair"
    started = RunStarted(run_id=1, attempt=1, executor="x\x00", started_at=datetime.now(UTC))
    assert started.executor == "x\ufffd"


def test_a_time_without_an_offset_is_utc() -> None:
    body = (
        '{"run_id": 1, "attempt": 1, "result": 3, "status": "succeeded", '
        '"started_at": "2026-12-03T10:00:00", "finished_at": "2026-12-03T11:00:00+01:00", '
        '"executor": "x"}'
    )
    result = JobResult.model_validate_json(body)
    assert result.started_at == datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    assert result.finished_at == result.started_at  # the same instant, its offset kept
    event = Event.model_validate(
        {"event_id": "e", "event_type": "t", "occurred_at": "2026-12-03T10:00"}
    )
    assert event.occurred_at == datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def test_an_executor_name_longer_than_the_ledger_holds_is_invalid() -> None:
    with pytest.raises(ValidationError):
        RunStarted(run_id=1, attempt=1, executor="x" * 201, started_at=datetime.now(UTC))


def _result(**fields: object) -> JobResult:
    body = {
        "run_id": 1,
        "attempt": 1,
        "result": 2,
        "status": "failed",
        "started_at": "2026-12-03T10:00:00Z",
        "finished_at": "2026-12-03T10:00:01Z",
        "executor": "x",
        **fields,
    }
    return JobResult.model_validate_json(json.dumps(body))


def test_feedback_and_output_beyond_the_contract_are_cut_and_marked() -> None:
    huge = "a" * 1_000_000 + "THE END"
    result = _result(feedback="THE START" + huge, output_tail=huge)
    assert len(result.feedback) <= MAX_FEEDBACK
    assert result.feedback.startswith("THE START")
    assert result.feedback.endswith(f"[… {1_000_016 - (MAX_FEEDBACK - 48)} characters omitted]")
    assert len(result.output_tail) <= MAX_OUTPUT_TAIL
    assert result.output_tail.startswith("[… ") and result.output_tail.endswith("aTHE END")
    fits = "b" * MAX_FEEDBACK
    assert _result(feedback=fits, output_tail=fits).feedback == fits


@pytest.mark.parametrize(("result", "status"), [(3, "failed"), (2, "succeeded")])
def test_a_result_whose_status_contradicts_its_code_is_invalid(result: int, status: str) -> None:
    with pytest.raises(ValidationError, match="contradicts"):
        _result(result=result, status=status)


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"])
def test_a_time_with_no_utc_form_is_invalid(moment: str) -> None:
    with pytest.raises(ValidationError, match="outside the years 1 to 9999"):
        Event.model_validate({"event_id": "e", "event_type": "t", "occurred_at": moment})
    with pytest.raises(ValidationError, match="outside the years 1 to 9999"):
        _result(finished_at=moment)
