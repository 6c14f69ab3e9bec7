"""The results consumer: record what executors report and move each run on.

`run.started` marks the run running; `run.succeeded` / `run.failed` records the attempt,
retries or ends the run, and schedules the lane's next run after the interval;
`executor.report` records an executor's scripts and load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core import consumer
from jobmanager.core.broker import Publisher
from jobmanager.core.messages import ExecutorReport, JobResult, RunStarted
from jobmanager.matcher.catalogue import Catalogue
from jobmanager.matcher.metrics import RUN_SECONDS, count_published
from jobmanager.store import bulk, db, executors, ledger
from jobmanager.store.outbox import Outbox

log = logging.getLogger(__name__)


class ResultsHandler:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        catalogue: Callable[[], Catalogue],
        *,
        direct_dispatch: bool = True,
    ) -> None:
        self._engine = engine
        self._direct_dispatch = direct_dispatch
        self._publisher = publisher
        self._catalogue = catalogue

    async def batch(self, messages: list[AbstractIncomingMessage]) -> list[AbstractIncomingMessage]:
        """Many starts and results in one statement (see `jobmanager.store.bulk`).
        Executor reports and messages of other keys are handed back, one by one."""
        started: list[tuple[AbstractIncomingMessage, RunStarted]] = []
        results: list[tuple[AbstractIncomingMessage, JobResult]] = []
        singles: list[AbstractIncomingMessage] = []
        for message in messages:
            key = message.routing_key
            try:
                if key == "run.started":
                    started.append((message, RunStarted.model_validate_json(message.body)))
                elif key in ("run.succeeded", "run.failed"):
                    results.append((message, JobResult.model_validate_json(message.body)))
                else:
                    singles.append(message)
            except ValidationError as exc:
                await self._publisher.park(message, f"invalid {key} message: {exc.errors()[:3]}")
        if not (started or results):
            return singles
        interval = self._catalogue().interval_s
        now = datetime.now(UTC)
        # One statement, unless a redelivered result may need its lane's head re-sent (see
        # EventsHandler.batch).
        redelivered = any(message.redelivered for message, _ in results)
        async with db.transaction(self._engine, single_statement=not redelivered) as conn:
            done = await bulk.record_reports(
                conn,
                [s for _, s in started],
                [r for _, r in results],
                interval_s=interval,
                now=now,
                dispatch=self._direct_dispatch,
            )
            outbox = done.outbox
            # As in __call__: re-send the lane's head for a redelivered, recorded result.
            again = [
                result.run_id
                for (message, result), recorded in zip(results, done.recorded, strict=True)
                if not recorded and message.redelivered
            ]
            outbox.extend(await ledger.resend_heads(conn, again, now=now))
        await outbox.publish(self._publisher, now=now)
        count_published(outbox, now)
        jobs = {notice.run_id: notice.job for notice in outbox.notices}
        for (_, result), recorded in zip(results, done.recorded, strict=True):
            if recorded:
                RUN_SECONDS.labels(jobs[result.run_id]).observe(
                    (result.finished_at - result.started_at).total_seconds()
                )
        await consumer.ack([message for message, _ in [*started, *results]])
        return singles

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        key = message.routing_key
        now = datetime.now(UTC)
        outbox: Outbox
        try:
            if key == ExecutorReport.routing_key:
                report = ExecutorReport.model_validate_json(message.body)
                async with self._engine.begin() as conn:
                    await executors.record_report(conn, report)
                outbox = Outbox()
            elif key == "run.started":
                started = RunStarted.model_validate_json(message.body)
                async with self._engine.begin() as conn:
                    outbox = await ledger.record_started(conn, started, now=now)
            elif key in ("run.succeeded", "run.failed"):
                result = JobResult.model_validate_json(message.body)
                interval = self._catalogue().interval_s
                async with self._engine.begin() as conn:
                    outbox = await ledger.record_result(conn, result, interval_s=interval, now=now)
                    if self._direct_dispatch:
                        await bulk.dispatch_due(conn, outbox, now=now)
                    if not outbox.notices and message.redelivered:
                        # Recorded by an earlier delivery that may have died before
                        # publishing the lane's next request.
                        outbox = await ledger.resend_heads(conn, [result.run_id], now=now)
                if outbox.notices:
                    RUN_SECONDS.labels(outbox.notices[0].job).observe(
                        (result.finished_at - result.started_at).total_seconds()
                    )
                log.debug(
                    "run %d attempt %d: %s",
                    result.run_id,
                    result.attempt,
                    result.status,
                    extra={"run_id": result.run_id},
                )
            else:
                await self._publisher.park(message, f"unknown routing key {key!r}")
                return
        except ValidationError as exc:
            await self._publisher.park(message, f"invalid {key} message: {exc.errors()[:3]}")
            return
        await outbox.publish(self._publisher, now=now)
        count_published(outbox, now)
        await message.ack()
