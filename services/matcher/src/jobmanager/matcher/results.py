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
from jobmanager.core.logs import Throttled
from jobmanager.core.messages import MAX_RESULT_BYTES, ExecutorReport, JobResult, RunStarted
from jobmanager.matcher.catalogue import Catalogue
from jobmanager.matcher.metrics import RESULTS_IGNORED, RUN_SECONDS, count_published
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
        # A forged or replayed stream of results must not flood the log.
        self._ignored = Throttled(log)

    async def __call__(self, messages: list[AbstractIncomingMessage]) -> consumer.Later:
        """A batch of starts and results in one statement (`ledger.record`); executor
        reports in one transaction beside it."""
        started: list[tuple[AbstractIncomingMessage, RunStarted]] = []
        results: list[tuple[AbstractIncomingMessage, JobResult]] = []
        reports: list[tuple[AbstractIncomingMessage, ExecutorReport]] = []
        for message in messages:
            key = message.routing_key
            if len(message.body) > MAX_RESULT_BYTES:
                # Not parsed at all: parsing alone would cost a multiple of its size.
                await self._publisher.park(
                    message, f"too large: {len(message.body)} bytes (limit {MAX_RESULT_BYTES})"
                )
                continue
            try:
                if key == "run.started":
                    started.append((message, RunStarted.model_validate_json(message.body)))
                elif key in ("run.succeeded", "run.failed"):
                    result = JobResult.model_validate_json(message.body)
                    if result.routing_key != key:
                        # Which one is true cannot be known: neither is recorded.
                        await self._publisher.park(
                            message,
                            f"inconsistent result: routing key {key} but result {result.result}"
                            f" ({result.status})",
                        )
                        continue
                    results.append((message, result))
                elif key == ExecutorReport.routing_key:
                    reports.append((message, ExecutorReport.model_validate_json(message.body)))
                else:
                    await self._publisher.park(message, f"unknown routing key {key!r}")
            except ValidationError as exc:
                # Locations and messages only: the input itself may be megabytes.
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
                    for e in exc.errors()[:3]
                )
                await self._publisher.park(message, f"invalid {key} message: {problems}")
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
        for n, reason in done.ignored.items():
            result = results[n][1]
            RESULTS_IGNORED.labels(reason).inc()
            self._ignored.warning(
                reason,
                "result for run %d attempt %d from %s ignored: %s",
                result.run_id,
                result.attempt,
                result.executor,
                reason.replace("_", " "),
            )
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
