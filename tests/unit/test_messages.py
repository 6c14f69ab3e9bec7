"""The runs exchange's routing keys are the specification's names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

from jobmanager.core.messages import RunNotice, RunState


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
