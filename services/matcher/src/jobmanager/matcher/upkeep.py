"""Periodic repairs, so that no run waits for ever after a crash in the wrong moment.

* The lane check gives idle lanes with waiting runs a head, and re-sends heads whose
  request is overdue (a publish lost between a commit and a crash).
* The reaper fails attempts whose executor vanished without the broker noticing, and re-sends
  work requests that were lost between the gate's commit and its publish.
* Cancels no executor has answered are sent again (a broadcast lost after its commit).
* Lost requests (dead-lettered by the work queue's delivery limit) end their runs as Failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core import consumer
from jobmanager.core.broker import Publisher
from jobmanager.core.messages import JobRequest
from jobmanager.core.topology import WORK_DELIVERY_LIMIT
from jobmanager.matcher.catalogue import Catalogue
from jobmanager.matcher.config import MatcherSettings
from jobmanager.matcher.metrics import HELD_RUNS, LANE_BACKLOG, PAUSED_JOBS, count_notices
from jobmanager.store import db, ledger

log = logging.getLogger(__name__)


class Upkeep:
    def __init__(
        self,
        settings: MatcherSettings,
        engine: AsyncEngine,
        connection: AbstractRobustConnection,
        publisher: Publisher,
        catalogue: Callable[[], Catalogue],
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._connection = connection
        self._publisher = publisher
        self._catalogue = catalogue

    async def _work_queue_idle(self) -> bool:
        """Whether no request waits in the work queue (ready, not yet taken)."""
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(self._publisher.topology.work_queue, passive=True)
            return (queue.declaration_result.message_count or 0) == 0
        finally:
            await channel.close()

    async def run_once(self) -> None:
        now = datetime.now(UTC)
        interval = self._catalogue().interval_s
        idle = await self._work_queue_idle()
        # Each repair is one statement, its own transaction, locking in the ledger's order.
        async with db.transaction(self._engine, single_statement=True) as conn:
            outbox = await ledger.check_lanes(
                conn, interval_s=interval, now=now, grace_s=self._settings.lane_grace_s
            )
            reaped = await ledger.reap(
                conn,
                now=now,
                interval_s=interval,
                running_grace_s=self._settings.running_grace_s,
                dispatch_grace_s=self._settings.dispatch_grace_s,
                work_queue_idle=idle,
            )
            cancels = await ledger.unanswered_cancels(conn, now=now)
            counts = await ledger.counts(conn)
        LANE_BACKLOG.set(counts.queued)
        PAUSED_JOBS.set(counts.paused_jobs)
        HELD_RUNS.set(counts.held)
        outbox.extend(reaped)
        outbox.extend(cancels)
        if cancels.cancels:
            log.debug("upkeep: sending %d unanswered cancel(s) again", len(cancels.cancels))
        if outbox.requests or reaped.notices:
            log.warning(
                "upkeep: %d lane(s) rescheduled, %d lost attempt(s) failed",
                len(outbox.requests),
                len(reaped.notices),
            )
        if reaped.work:
            log.warning(
                "upkeep: re-sending %d dispatched run(s) whose request was lost",
                len(reaped.work),
            )
        await outbox.publish(self._publisher, now=now)
        count_notices(outbox.notices)

    async def on_lost(self, messages: list[AbstractIncomingMessage]) -> consumer.Later:
        """Requests the work queue dead-lettered: end their runs as Failed, for good."""
        lost: list[tuple[AbstractIncomingMessage, ledger.Lost]] = []
        for message in messages:
            try:
                request = JobRequest.model_validate_json(message.body)
            except ValidationError as exc:
                await self._publisher.park(message, f"invalid lost job request: {exc.errors()[:3]}")
                continue
            deliveries = _deliveries(message)
            feedback = (
                f"executor lost: the request was handed to executors {deliveries} times and "
                "each died before reporting a result (a script that crashes or kills its "
                "executor?); not retried"
            )
            lost.append((message, ledger.Lost(request.run_id, request.attempt, feedback)))
        if not lost:
            return []
        now = datetime.now(UTC)
        async with db.transaction(self._engine, single_statement=True) as conn:
            done = await ledger.record(
                conn, [], [r for _, r in lost], interval_s=self._catalogue().interval_s, now=now
            )
        for (_, result), recorded in zip(lost, done.recorded, strict=True):
            if recorded:
                log.warning(
                    "run %d failed: its executor died on every delivery of its request",
                    result.run_id,
                    extra={"run_id": result.run_id},
                )
        await done.outbox.publish(self._publisher, now=now)
        await consumer.ack([message for message, _ in lost])
        return []


def _deliveries(message: AbstractIncomingMessage) -> int:
    """How often the work queue handed the request out. A dead-lettered message does not
    carry the count; the delivery limit is what dead-letters it, so that is the number."""
    headers = message.headers or {}
    deaths = headers.get("x-death")
    reasons = (
        [d.get("reason") for d in deaths if isinstance(d, dict)] if isinstance(deaths, list) else []
    )
    if "delivery_limit" in reasons or not reasons:
        return WORK_DELIVERY_LIMIT + 1
    return 1
