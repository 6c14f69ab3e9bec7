"""The events consumer: validate, de-duplicate, match, record, schedule.

Bad input (not JSON, not an object, no id or type, too big, nested too deep) is parked in
the dead queue with the reason; the consumer goes on. So is an event whose templates crashed
the render worker on every attempt (the render pool's `Crashed`): retrying it would crash it
again, for ever.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core import consumer
from jobmanager.core.broker import Publisher
from jobmanager.core.messages import Event
from jobmanager.jobs.renderer import Crashed, RenderPool
from jobmanager.jobs.spec import PlannedRun
from jobmanager.matcher.catalogue import Catalogue, Plan
from jobmanager.matcher.metrics import EVENTS, count_published
from jobmanager.store import db, ledger

log = logging.getLogger(__name__)


class BadEvent(ValueError):
    """Why a message is not an event we can accept."""


def _problem(document: Any, max_depth: int) -> str | None:
    """What makes a parsed JSON document unstorable, walking it iteratively (no recursion to
    blow): nesting beyond `max_depth`, or a string Postgres cannot hold (a NUL character, an
    unpaired surrogate)."""
    stack = [(document, 1)]
    while stack:
        item, level = stack.pop()
        if level > max_depth:
            return f"nested deeper than {max_depth} levels"
        if isinstance(item, dict):
            stack.extend((k, level) for k in item)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "a string contains a NUL character"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "a string is not valid Unicode (an unpaired surrogate)"
    return None


def parse_event(
    body: bytes, *, routing_key: str | None, message_id: str | None, max_bytes: int, max_depth: int
) -> Event:
    """Validate one Channel Manager message (pure; raises BadEvent with the reason).

    `event_id` and `event_type` may fall back to the AMQP message id and routing key.
    """
    if len(body) > max_bytes:
        raise BadEvent(f"too large: {len(body)} bytes (limit {max_bytes})")
    try:
        document = json.loads(body, parse_constant=_not_a_number)
    except RecursionError:
        raise BadEvent(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # also invalid UTF-8
        raise BadEvent(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadEvent(f"not a JSON object but {_json_kind(document)}")
    if (problem := _problem(document, max_depth)) is not None:
        raise BadEvent(problem)
    if document.get("event_id") in (None, "") and message_id:
        document["event_id"] = message_id
    if document.get("event_type") in (None, "") and routing_key:
        document["event_type"] = routing_key
    try:
        return Event.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BadEvent(f"invalid event: {problems}") from None


class EventsHandler:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        catalogue: Callable[[], Catalogue],
        renderer: RenderPool,
        *,
        max_bytes: int,
        max_depth: int,
        direct_dispatch: bool = True,
    ) -> None:
        self._engine = engine
        self._direct_dispatch = direct_dispatch
        self._publisher = publisher
        self._catalogue = catalogue
        self._renderer = renderer
        self._max_bytes = max_bytes
        self._max_depth = max_depth

    async def _parse(self, message: AbstractIncomingMessage) -> Event | None:
        """The message's event, or None once it is parked with the reason."""
        EVENTS.labels("received").inc()
        try:
            return parse_event(
                message.body,
                routing_key=message.routing_key,
                message_id=message.message_id,
                max_bytes=self._max_bytes,
                max_depth=self._max_depth,
            )
        except BadEvent as exc:
            EVENTS.labels("parked").inc()
            await self._publisher.park(message, str(exc))
            return None

    async def __call__(self, messages: list[AbstractIncomingMessage]) -> consumer.Later:
        """A batch of events in one statement (`ledger.enqueue`), its own transaction."""
        parsed: list[tuple[AbstractIncomingMessage, Event]] = []
        for message in messages:
            if (event := await self._parse(message)) is not None:
                parsed.append((message, event))
        catalogue = self._catalogue()
        plans = await catalogue.plan([event for _, event in parsed], self._renderer)
        accepted: list[tuple[AbstractIncomingMessage, Event, Plan]] = []
        for (message, event), plan in zip(parsed, plans, strict=True):
            if isinstance(plan, Crashed):
                EVENTS.labels("parked").inc()
                await self._publisher.park(message, plan.reason)
            else:
                accepted.append((message, event, plan))
        if not accepted:
            return []
        now = datetime.now(UTC)
        async with db.transaction(self._engine, single_statement=True) as conn:
            done = await ledger.enqueue(
                conn,
                [(event, plan.runs) for _, event, plan in accepted],
                interval_s=catalogue.interval_s,
                now=now,
                dispatch=self._direct_dispatch,
                redelivered=[bool(message.redelivered) for message, _, _ in accepted],
                cancels=[plan.cancels for _, _, plan in accepted],
            )
        await done.outbox.publish(self._publisher, now=now)
        count_published(done.outbox, now)
        for (_, event, plan), recorded in zip(accepted, done.recorded, strict=True):
            self._count(event, plan.runs, duplicate=not recorded)
        await consumer.ack([message for message, _, _ in accepted])
        return []

    def _count(self, event: Event, planned: list[PlannedRun], *, duplicate: bool) -> None:
        if duplicate:
            EVENTS.labels("duplicate").inc()
            log.info(
                "duplicate event %s/%s ignored",
                event.source,
                event.event_id,
                extra={"event_id": event.event_id},
            )
            return
        if planned:
            EVENTS.labels("matched").inc()
        log.debug(
            "event %s matched %d job(s)",
            event.event_id,
            len(planned),
            extra={"event_id": event.event_id},
        )


def _not_a_number(name: str) -> object:
    # Python's json reads NaN and Infinity, which JSON does not have and which would be
    # stored as null without a word.
    raise ValueError(f"{name} is not a JSON number")


def _json_kind(value: object) -> str:
    """What a JSON document is, in JSON's words (for the parking reason)."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"
