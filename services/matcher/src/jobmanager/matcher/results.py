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
from jobmanager.store import db, executors, ledger

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

    async def __call__(self, messages: list[AbstractIncomingMessage]) -> consumer.Later:
        """A batch of starts and results in one statement (`ledger.record`); executor
        reports in one transaction beside it."""
        started: list[tuple[AbstractIncomingMessage, RunStarted]] = []
        results: list[tuple[AbstractIncomingMessage, JobResult]] = []
        reports: list[tuple[AbstractIncomingMessage, ExecutorReport]] = []
        for message in messages:
            key = message.routing_key
            try:
                if key == "run.started":
                    started.append((message, RunStarted.model_validate_json(message.body)))
                elif key in ("run.succeeded", "run.failed"):
                    results.append((message, JobResult.model_validate_json(message.body)))
                elif key == ExecutorReport.routing_key:
                    reports.append((message, ExecutorReport.model_validate_json(message.body)))
                else:
                    await self._publisher.park(message, f"unknown routing key {key!r}")
            except ValidationError as exc:
                await self._publisher.park(message, f"invalid {key} message: {exc.errors()[:3]}")
        if reports:
            async with self._engine.begin() as conn:
                for _, report in reports:
                    await executors.record_report(conn, report)
            await consumer.ack([message for message, _ in reports])
        if not (started or results):
            return []
        now = datetime.now(UTC)
        async with db.transaction(self._engine, single_statement=True) as conn:
            done = await ledger.record(
                conn,
                [s for _, s in started],
                [r for _, r in results],
                interval_s=self._catalogue().interval_s,
                now=now,
                dispatch=self._direct_dispatch,
                redelivered=[bool(message.redelivered) for message, _ in results],
            )
        await done.outbox.publish(self._publisher, now=now)
        count_published(done.outbox, now)
        jobs = {notice.run_id: notice.job for notice in done.outbox.notices}
        for (_, result), recorded in zip(results, done.recorded, strict=True):
            if recorded:
                RUN_SECONDS.labels(jobs[result.run_id]).observe(
                    (result.finished_at - result.started_at).total_seconds()
                )
                log.debug(
                    "run %d attempt %d: %s",
                    result.run_id,
                    result.attempt,
                    result.status,
                    extra={"run_id": result.run_id},
                )
        await consumer.ack([message for message, _ in [*started, *results]])
        return []
