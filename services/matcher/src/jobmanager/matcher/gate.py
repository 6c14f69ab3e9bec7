"""The gate: a request that came due is dispatched to the executors, held, or dropped.

The ledger decides (is the run still queued, is this its current request, is it its lane's
head, is it time). The delay stage aims a little early, so the gate holds the last
milliseconds itself and dispatches on time.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.broker import Publisher
from jobmanager.core.messages import JobRequest
from jobmanager.matcher.metrics import DISPATCH_LAG
from jobmanager.store import ledger

log = logging.getLogger(__name__)


class GateHandler:
    def __init__(self, engine: AsyncEngine, publisher: Publisher, *, hold_max_s: float) -> None:
        self._engine = engine
        self._publisher = publisher
        self._hold_max_s = hold_max_s

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        try:
            request = JobRequest.model_validate_json(message.body)
        except ValidationError as exc:
            await self._publisher.park(message, f"invalid job request: {exc.errors()[:3]}")
            return
        while True:
            now = datetime.now(UTC)
            async with self._engine.begin() as conn:
                decision = await ledger.gate(conn, request, now=now)
            if isinstance(decision, ledger.Wait):
                wait = (decision.until - datetime.now(UTC)).total_seconds()
                if wait <= self._hold_max_s:
                    await asyncio.sleep(max(wait, 0.0))
                    continue
                # Far too early (a delay longer than the stage holds): round again.
                await self._publisher.schedule(
                    request.model_copy(update={"not_before": decision.until}), now
                )
            elif isinstance(decision, ledger.Dispatch):
                DISPATCH_LAG.observe(max(0.0, (now - request.not_before).total_seconds()))
                await self._publisher.publish(
                    "", self._publisher.topology.work_queue, decision.request
                )
                log.debug(
                    "dispatched run %d attempt %d",
                    request.run_id,
                    request.attempt,
                    extra={"run_id": request.run_id, "event_id": request.event_id},
                )
            else:
                log.debug(
                    "dropped a request for run %d: %s",
                    request.run_id,
                    decision.reason,
                    extra={"run_id": request.run_id},
                )
            await message.ack()
            return
