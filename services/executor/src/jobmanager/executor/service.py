"""The executor service: consumes job requests from the work queue and publishes results.

For each request: run the script (publishing `run.started` if it is still running after
`report_started_after_s`), publish `run.succeeded` or `run.failed` with its start and end
times, and only once the broker confirmed the result, ack the request. An executor that
dies mid-run therefore leaves its request unacked, and the broker hands it to another one.

Cancels arrive in an exclusive queue of the executor's own, bound to the executors' control
exchange before the work queue is consumed: a cancelled attempt running here is stopped
(SIGTERM to its process group, SIGKILL after the grace), and one handed here later is
acked without running (`jobmanager.executor.cancels`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from jobmanager.core import metrics
from jobmanager.core.broker import Publisher, connect
from jobmanager.core.messages import (
    CancelRequest,
    ExecutorReport,
    JobRequest,
    JobResult,
    RunStarted,
)
from jobmanager.core.topology import Topology
from jobmanager.executor.cancels import Cancels
from jobmanager.executor.config import ExecutorSettings
from jobmanager.executor.metrics import BUSY_SLOTS, SCRIPT_FAILURES, SLOTS
from jobmanager.executor.runner import Runner

log = logging.getLogger(__name__)


class ExecutorConfigError(RuntimeError):
    """The executor cannot start with these settings; the message says what to fix."""


def describe_invalid(exc: ValidationError) -> str:
    """A one-line reason for a message that is not a valid job request."""
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()[:5]
    ]
    return "invalid job request: " + "; ".join(problems)


def _now() -> datetime:
    return datetime.now(UTC)


class WorkConsumer:
    """Handles deliveries from the work queue, each in its own task."""

    def __init__(self, settings: ExecutorSettings, publisher: Publisher, runner: Runner) -> None:
        self.settings = settings
        self.publisher = publisher
        self.runner = runner
        self.results = publisher.topology.results_exchange
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.cancels = Cancels()

    async def on_cancel(self, message: AbstractIncomingMessage) -> None:
        """A cancel from the control exchange (consumed without acks: one that is lost is
        sent again when its attempt reports a start)."""
        try:
            cancel = CancelRequest.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning("ignored an invalid cancel: %s", describe_invalid(exc))
            return
        if self.cancels.cancel(cancel):
            log.info(
                "run %d attempt %d: cancelled by %s; stopping the script (grace %g s)",
                cancel.run_id,
                cancel.attempt,
                cancel.by,
                cancel.grace_s,
                extra={"run_id": cancel.run_id},
            )

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            # Delivered between our cancel and the broker's cancel-ok: give it back at once.
            with suppress(Exception):
                await message.nack(requeue=True)
            return
        task = asyncio.create_task(self.handle(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def busy(self) -> int:
        """Runs in flight now."""
        return len(self._tasks)

    def stop_accepting(self) -> None:
        self._stopping = True

    async def drain(self) -> None:
        """Wait until every run in flight has published its result."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def abort(self) -> None:
        """Stop runs in flight now; their requests are not acked, so they are redelivered."""
        for task in self._tasks:
            task.cancel()

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            request = JobRequest.model_validate_json(message.body)
        except ValidationError as exc:
            with suppress(Exception):  # park() already logs; a failure leaves it unacked
                await self.publisher.park(message, describe_invalid(exc))
            return
        extra = {"run_id": request.run_id, "event_id": request.event_id}
        cancel = self.cancels.heard(request.run_id, request.attempt)
        if cancel is not None:
            # The ledger ended the attempt already; nothing is to be reported.
            log.info(
                "run %d attempt %d: cancelled by %s before it started here; not run",
                request.run_id,
                request.attempt,
                cancel.by,
                extra=extra,
            )
            with suppress(Exception):  # the channel may be gone; then it comes again
                await message.ack()
            return
        try:
            await self._execute(message, request, extra)
        except asyncio.CancelledError:
            log.warning("run %d aborted; the broker will redeliver it", request.run_id, extra=extra)
            raise
        except Exception:
            log.exception(
                "run %d: the broker did not take its messages; it will be redelivered",
                request.run_id,
                extra=extra,
            )
            with suppress(Exception):  # the channel may be gone; then the broker requeues
                await message.nack(requeue=True)

    async def _execute(
        self, message: AbstractIncomingMessage, request: JobRequest, extra: Mapping[str, object]
    ) -> None:
        key = f"{request.run_id}.{request.attempt}"
        started_at = _now()
        started = RunStarted(
            run_id=request.run_id,
            attempt=request.attempt,
            executor=self.settings.executor_id,
            started_at=started_at,
        )
        log.info(
            "run %d attempt %d: %s started",
            request.run_id,
            request.attempt,
            request.script,
            extra=extra,
        )
        # Most scripts are done in milliseconds; reporting their start separately would cost
        # a delivery and a ledger transaction per run for a state nobody sees. Only a script
        # still running after `report_started_after_s` is reported as started.
        reporting = asyncio.Event()

        async def report_started() -> None:
            await asyncio.sleep(self.settings.report_started_after_s)
            reporting.set()
            await self.publisher.publish(
                self.results, "run.started", started, message_id=f"{key}.started"
            )

        report = asyncio.create_task(report_started())
        BUSY_SLOTS.inc()
        try:
            with self.cancels.watching(request.run_id, request.attempt) as cancelled:
                outcome = await self.runner.run(request, cancelled)
        finally:
            BUSY_SLOTS.dec()
            if not reporting.is_set():
                report.cancel()
        if reporting.is_set():
            await report  # keeps run.started ahead of the result, and surfaces its failure
        succeeded = outcome.succeeded
        if not succeeded:
            SCRIPT_FAILURES.labels(request.script).inc()
        result = JobResult(
            run_id=request.run_id,
            attempt=request.attempt,
            result=3 if succeeded else 2,
            status="succeeded" if succeeded else "failed",
            feedback=outcome.feedback,
            started_at=started_at,
            finished_at=_now(),
            executor=self.settings.executor_id,
            output_tail=outcome.output_tail,
        )
        await self.publisher.publish(
            self.results, result.routing_key, result, message_id=f"{key}.result"
        )
        await message.ack()
        log.info(
            "run %d attempt %d: %s %s%s",
            request.run_id,
            request.attempt,
            request.script,
            result.status,
            f": {result.feedback}" if result.feedback else "",
            extra=extra,
        )


def _handle_signals(stop: asyncio.Event, consumer: WorkConsumer) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s: stopping after the runs in flight (again to stop now)", signum.name)
            stop.set()
        else:
            log.warning("%s again: aborting the runs in flight", signum.name)
            consumer.abort()

    handled = [signal.SIGTERM, signal.SIGINT]
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    return handled


async def _report(
    settings: ExecutorSettings, publisher: Publisher, runner: Runner, consumer: WorkConsumer
) -> None:
    """Tell the matchers which scripts this executor runs, now and every report interval."""
    started_at = _now()
    while True:
        report = ExecutorReport(
            executor=settings.executor_id,
            scripts=runner.scripts.names(),
            concurrency=settings.concurrency,
            busy=consumer.busy,
            started_at=started_at,
            at=_now(),
        )
        try:
            await publisher.publish(publisher.topology.results_exchange, report.routing_key, report)
        except Exception as exc:  # a report is advisory: the next one will do
            log.warning("could not report the scripts: %s", exc)
        await asyncio.sleep(settings.report_interval_s)


async def serve(settings: ExecutorSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run an executor until `stop` is set (by default: until SIGTERM or SIGINT).

    On stop it consumes nothing more, lets the runs in flight finish and publish their
    results, closes the connection and returns. Raises `BrokerUnavailable` if RabbitMQ does
    not answer and `ExecutorConfigError` if the scripts directory does not exist.
    """
    if not settings.scripts_dir.is_dir():
        raise ExecutorConfigError(
            f"the scripts directory {settings.scripts_dir} does not exist; "
            "set JOBMANAGER_SCRIPTS_DIR to a directory of scripts"
        )
    topology = Topology.from_settings(settings)
    runner = Runner(settings)
    metrics.serve(settings.metrics_port)
    SLOTS.set(settings.concurrency)
    connection = await connect(
        settings.amqp_url, name=f"jobmanager-executor {settings.executor_id}"
    )
    handled: list[signal.Signals] = []
    consumer: WorkConsumer | None = None
    try:
        declaring = await connection.channel()
        await topology.declare(declaring)
        await declaring.close()
        publisher = await Publisher.open(connection, topology)
        consumer = WorkConsumer(settings, publisher, runner)
        if stop is None:
            stop = asyncio.Event()
            handled = _handle_signals(stop, consumer)
        # Bound before any work is taken, so that no cancel of a run taken here is missed.
        cancels = await connection.channel()
        cancel_queue = await cancels.declare_queue(exclusive=True, auto_delete=True)
        await cancel_queue.bind(topology.executor_control_exchange)
        await cancel_queue.consume(consumer.on_cancel, no_ack=True)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=settings.concurrency)
        queue: AbstractQueue = await channel.get_queue(topology.work_queue)
        tag = await queue.consume(consumer.on_message)
        reporter = asyncio.create_task(_report(settings, publisher, runner, consumer))
        log.info(
            "executor %s consuming %s (concurrency %d); scripts in %s: %s",
            settings.executor_id,
            topology.work_queue,
            settings.concurrency,
            settings.scripts_dir,
            ", ".join(runner.scripts.names()) or "none",
        )
        await stop.wait()
        reporter.cancel()
        consumer.stop_accepting()
        with suppress(Exception):  # the channel may be closed already; nothing more comes
            await queue.cancel(tag)
        await consumer.drain()
        log.info("executor %s stopped", settings.executor_id)
    finally:
        loop = asyncio.get_running_loop()
        for signum in handled:
            loop.remove_signal_handler(signum)
        if consumer is not None:
            # Only left when serve() itself is cancelled: unacked, those runs are redelivered.
            consumer.stop_accepting()
            consumer.abort()
            await consumer.drain()
        await runner.close()
        await connection.close()
