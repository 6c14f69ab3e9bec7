"""The gate: a request that came due is dispatched to the executors, held, or dropped.

The ledger decides (is the run still queued, is this its current request, is it its lane's
head, is it time: `ledger_gate`). The delay stage aims a little early, so the gate holds the
last milliseconds itself and dispatches on time: an early request is handed back to the
consumer, to be decided again when it is due. One far too early (a delay longer than the
stage holds) goes round the delay stage again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core import consumer
from jobmanager.core.broker import Publisher
from jobmanager.core.messages import JobRequest
from jobmanager.matcher.catalogue import Catalogue
from jobmanager.matcher.metrics import count_published, observe_dispatched
from jobmanager.store import db, ledger
from jobmanager.store.outbox import Outbox

log = logging.getLogger(__name__)


class GateHandler:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        catalogue: Callable[[], Catalogue],
        *,
        hold_max_s: float,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._catalogue = catalogue
        self._hold_max_s = hold_max_s

    async def _parse(self, message: AbstractIncomingMessage) -> JobRequest | None:
        try:
            return JobRequest.model_validate_json(message.body)
        except ValidationError as exc:
            await self._publisher.park(message, f"invalid job request: {exc.errors()[:3]}")
            return None

    async def __call__(self, messages: list[AbstractIncomingMessage]) -> consumer.Later:
        """Decide on a batch of due requests in one statement (`ledger.gate`)."""
        valid = [(m, r) for m in messages if (r := await self._parse(m)) is not None]
        if not valid:
            return []
        now = datetime.now(UTC)
        interval = self._catalogue().interval_s
        async with db.transaction(self._engine, single_statement=True) as conn:
            decisions, moved_on = await ledger.gate(
                conn, [r for _, r in valid], now=now, interval_s=interval
            )
        later: consumer.Later = []
        decided: list[AbstractIncomingMessage] = []
        sending: list[Awaitable[None]] = [moved_on.publish(self._publisher, now=now)]
        for (message, request), decision in zip(valid, decisions, strict=True):
            if isinstance(decision, ledger.Wait):
                wait = (decision.until - datetime.now(UTC)).total_seconds()
                if wait <= self._hold_max_s:
                    later.append((message, max(wait, 0.0)))
                    continue
                again = request.model_copy(update={"not_before": decision.until})
                sending.append(self._publisher.schedule(again, now))
            elif isinstance(decision, ledger.Dispatch):
                sending.append(self._send(request, decision, now))
            else:
                self._dropped(request, decision)
            decided.append(message)
        await asyncio.gather(*sending)
        count_published(moved_on, now)
        await consumer.ack(decided)
        return later

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
