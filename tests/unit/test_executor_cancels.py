"""What an executor remembers of the cancels it heard (`jobmanager.executor.cancels`)."""

from __future__ import annotations

from datetime import UTC, datetime

from jobmanager.core.messages import CancelRequest
from jobmanager.executor.cancels import Cancels
from jobmanager.executor.outcome import cancel_feedback


def cancel(run_id: int, attempt: int = 1) -> CancelRequest:
    return CancelRequest(
        run_id=run_id, attempt=attempt, by="key:ops", grace_s=2, at=datetime.now(UTC)
    )


async def test_a_running_attempt_is_told_and_only_that_attempt() -> None:
    cancels = Cancels()
    with cancels.watching(7, 2) as cancelled:
        assert cancels.cancel(cancel(7, 1)) is False, "another attempt of the run"
        assert not cancelled.done()
        assert cancels.cancel(cancel(7, 2)) is True
        assert cancelled.result().run_id == 7
        assert cancels.cancel(cancel(7, 2)) is True, "a cancel sent again changes nothing"
    assert cancels.cancel(cancel(7, 2)) is False, "it no longer runs here"


async def test_an_attempt_cancelled_before_it_runs_is_known_and_told_at_once() -> None:
    cancels = Cancels()
    cancels.cancel(cancel(3))
    assert cancels.heard(3, 1) is not None and cancels.heard(3, 2) is None
    with cancels.watching(3, 1) as cancelled:
        assert cancelled.done()


async def test_the_memory_is_bounded_and_forgets_the_oldest() -> None:
    cancels = Cancels(remembered=3)
    for run_id in range(1, 5):
        cancels.cancel(cancel(run_id))
    assert [cancels.heard(r, 1) is not None for r in range(1, 5)] == [False, True, True, True]


def test_the_feedback_begins_with_the_ledgers() -> None:
    c = cancel(1)
    assert cancel_feedback(c, killed=False) == "cancelled by key:ops; the script ended on SIGTERM"
    assert cancel_feedback(c, killed=True).startswith("cancelled by key:ops; the script was still")
    assert cancel_feedback(c, killed=None) == "cancelled by key:ops; the script had not started"
