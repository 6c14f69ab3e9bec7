"""The AMQP topology, declared in exactly one place.

Every exchange and queue Job Manager uses is named and declared here, so that the matcher,
the executors, the admin service and the tests cannot disagree on names or arguments (a
queue redeclared with other arguments is a channel error in RabbitMQ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from jobmanager.core import delays
from jobmanager.core.config import ServiceSettings

ERROR_HEADER = "x-jobmanager-error"
WORK_DELIVERY_LIMIT = 5


@dataclass(frozen=True)
class Topology:
    """Names of our exchanges and queues for one namespace."""

    namespace: str
    events_exchange: str = "channel-manager.events"
    events_binding: str = "#"

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Topology:
        return cls(settings.namespace, settings.events_exchange, settings.events_binding)

    def _name(self, suffix: str) -> str:
        return f"{self.namespace}.{suffix}"

    @property
    def events_queue(self) -> str:
        return self._name("events")

    @property
    def due_queue(self) -> str:
        return self._name("due")

    @property
    def work_queue(self) -> str:
        return self._name("work")

    @property
    def lost_queue(self) -> str:
        """Job requests the broker gave up on (their executor died too often): the matcher
        ends their runs as Failed."""
        return self._name("work.lost")

    @property
    def results_exchange(self) -> str:
        return self._name("results")

    @property
    def results_queue(self) -> str:
        """The matcher's queue on the results exchange (the ledger's input)."""
        return self._name("results.ledger")

    @property
    def runs_exchange(self) -> str:
        return self._name("runs")

    @property
    def control_exchange(self) -> str:
        return self._name("control")

    @property
    def executor_control_exchange(self) -> str:
        """Cancels for the executors: each executor binds an exclusive queue of its own."""
        return self._name("control.executors")

    @property
    def dead_queue(self) -> str:
        return self._name("dead")

    def delay_exchange(self, level: int) -> str:
        return self._name(f"delay.{level:02d}")

    def delay_queue(self, level: int) -> str:
        return self._name(f"delay.{level:02d}.q")

    @property
    def delay_entry(self) -> str:
        """The exchange a delayed request is published to (the highest level)."""
        return self.delay_exchange(delays.MAX_LEVEL)

    @property
    def delay_exit(self) -> str:
        """Where a request leaves the delay stage: bound to the due queue."""
        return self._name("delay.due")

    def _consumed(self, **extra: Any) -> dict[str, Any]:
        """Arguments of a queue we consume: quorum, dead-lettering into the dead queue."""
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_queue,
            **extra,
        }

    def queue_arguments(self) -> dict[str, dict[str, Any]]:
        """Each durable queue of the namespace outside the delay stage, with its arguments:
        what `declare` declares and what the AsyncAPI document gives other executors (a
        queue declared again with other arguments is a channel error)."""
        return {
            self.dead_queue: {"x-queue-type": "quorum"},
            self.events_queue: self._consumed(),
            self.due_queue: self._consumed(),
            self.lost_queue: self._consumed(),
            # A request whose executor dies again and again (a script that kills it) is
            # handed out at most WORK_DELIVERY_LIMIT + 1 times, then dead-lettered to the
            # lost queue.
            self.work_queue: {
                **self._consumed(**{"x-delivery-limit": WORK_DELIVERY_LIMIT}),
                "x-dead-letter-routing-key": self.lost_queue,
            },
            self.results_queue: self._consumed(),
        }

    def delay_queue_arguments(self, level: int) -> dict[str, Any]:
        """A delay level's queue: classic, queue-level TTL plus dead-lettering into the
        level below (the proven delay ladder)."""
        below = self.delay_exchange(level - 1) if level > delays.MIN_LEVEL else self.delay_exit
        return {
            "x-queue-type": "classic",
            "x-message-ttl": 1 << level,
            "x-dead-letter-exchange": below,
        }

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare everything (idempotent). Any service may call it at start."""
        durable = aio_pika.ExchangeType
        queues = {
            name: await channel.declare_queue(name, durable=True, arguments=arguments)
            for name, arguments in self.queue_arguments().items()
        }
        events_x = await channel.declare_exchange(self.events_exchange, durable.TOPIC, durable=True)
        await queues[self.events_queue].bind(events_x, self.events_binding)
        results_x = await channel.declare_exchange(
            self.results_exchange, durable.TOPIC, durable=True
        )
        await queues[self.results_queue].bind(results_x, "run.*")
        await queues[self.results_queue].bind(results_x, "executor.*")
        await channel.declare_exchange(self.runs_exchange, durable.TOPIC, durable=True)
        await channel.declare_exchange(self.control_exchange, durable.FANOUT, durable=True)
        await channel.declare_exchange(self.executor_control_exchange, durable.FANOUT, durable=True)
        await self._declare_delay_stage(channel, queues[self.due_queue])

    async def _declare_delay_stage(self, channel: AbstractChannel, due: AbstractQueue) -> None:
        exit_x = await channel.declare_exchange(
            self.delay_exit, aio_pika.ExchangeType.FANOUT, durable=True
        )
        await due.bind(exit_x)
        below: AbstractExchange = exit_x
        # Declared from the lowest level up, so that every dead-letter target already exists.
        for level in reversed(delays.LEVELS):
            level_x = await channel.declare_exchange(
                self.delay_exchange(level), aio_pika.ExchangeType.TOPIC, durable=True
            )
            level_q = await channel.declare_queue(
                self.delay_queue(level), durable=True, arguments=self.delay_queue_arguments(level)
            )
            to_queue, to_next = delays.level_binding(level)
            await level_q.bind(level_x, to_queue)
            await below.bind(level_x, to_next)
            below = level_x

    async def delete(self, channel: AbstractChannel) -> None:
        """Delete every exchange and queue of the namespace (tests, uninstall)."""
        queues = [
            self.events_queue,
            self.due_queue,
            self.work_queue,
            self.lost_queue,
            self.results_queue,
            self.dead_queue,
            *(self.delay_queue(lv) for lv in delays.LEVELS),
        ]
        exchanges = [
            self.results_exchange,
            self.runs_exchange,
            self.control_exchange,
            self.executor_control_exchange,
            self.delay_exit,
            *(self.delay_exchange(lv) for lv in delays.LEVELS),
        ]
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
