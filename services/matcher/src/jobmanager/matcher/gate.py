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

from jobmanager.core import consumer
from jobmanager.core.broker import Publisher
from jobmanager.core.messages import JobRequest
from jobmanager.matcher.metrics import observe_dispatched
from jobmanager.store import bulk, ledger
from jobmanager.store.outbox import Outbox

log = logging.getLogger(__name__)


class GateHandler:
    def __init__(self, engine: AsyncEngine, publisher: Publisher, *, hold_max_s: float) -> None:
        self._engine = engine
        self._publisher = publisher
        self._hold_max_s = hold_max_s

    async def _parse(self, message: AbstractIncomingMessage) -> JobRequest | None:
        try:
            return JobRequest.model_validate_json(message.body)
        except ValidationError as exc:
            await self._publisher.park(message, f"invalid job request: {exc.errors()[:3]}")
            return None

    async def batch(self, messages: list[AbstractIncomingMessage]) -> list[AbstractIncomingMessage]:
        """Many due requests in one transaction (see `jobmanager.store.bulk`). Those that came
        early are handed back, to be held one by one until their time."""
        if len(messages) == 1:
            # One request costs the same either way, and the single path holds an early
            # one without deciding twice.
            return messages
        valid = [(m, r) for m in messages if (r := await self._parse(m)) is not None]
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            decisions = await bulk.gate_many(conn, [r for _, r in valid], now=now)
        early: list[AbstractIncomingMessage] = []
        sending = []
        for (message, request), decision in zip(valid, decisions, strict=True):
            if isinstance(decision, ledger.Wait):
                early.append(message)
            elif isinstance(decision, ledger.Dispatch):
                sending.append(self._send(request, decision, now))
            else:
                self._dropped(request, decision)
        await asyncio.gather(*sending)
        await consumer.ack(
            [
                m
                for (m, _), d in zip(valid, decisions, strict=True)
                if not isinstance(d, ledger.Wait)
            ]
        )
        return early

    async def _send(self, request: JobRequest, decision: ledger.Dispatch, now: datetime) -> None:
        observe_dispatched([request], now)
        await Outbox(work=[decision.request]).publish(self._publisher, now=now)
        log.debug(
            "dispatched run %d attempt %d",
            request.run_id,
            request.attempt,
            extra={"run_id": request.run_id, "event_id": request.event_id},
        )

    def _dropped(self, request: JobRequest, decision: ledger.Stale) -> None:
        log.debug(
            "dropped a request for run %d: %s",
            request.run_id,
            decision.reason,
            extra={"run_id": request.run_id},
        )

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        request = await self._parse(message)
        if request is None:
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
                await self._send(request, decision, now)
            else:
                self._dropped(request, decision)
            await message.ack()
            return
