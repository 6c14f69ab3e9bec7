"""The matcher service: wires the consumers, the catalogue and the periodic tasks together.

One process runs the events consumer, the gate, the results consumer and a control
subscription; any number of matcher processes may run side by side (competing consumers; the
ledger's row locks keep them consistent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core import metrics
from jobmanager.core.broker import Publisher, connect
from jobmanager.core.consumer import Consumer, Handler
from jobmanager.core.topology import Topology
from jobmanager.jobs.renderer import RenderPool
from jobmanager.matcher.catalogue import Catalogue
from jobmanager.matcher.config import MatcherSettings
from jobmanager.matcher.events import EventsHandler
from jobmanager.matcher.gate import GateHandler
from jobmanager.matcher.results import ResultsHandler
from jobmanager.matcher.upkeep import Upkeep
from jobmanager.store import db
from jobmanager.store.migrate import check_schema

log = logging.getLogger(__name__)

Consuming = tuple[Consumer, str, int]  # a consumer, its queue and its prefetch


class CatalogueHolder:
    """The current catalogue; swapped whole on reload, so readers never see half of one."""

    def __init__(self, engine: AsyncEngine, catalogue: Catalogue) -> None:
        self._engine = engine
        self.current = catalogue
        self._lock = asyncio.Lock()

    def __call__(self) -> Catalogue:
        return self.current

    async def reload(self) -> None:
        async with self._lock:
            self.current = await Catalogue.load(self._engine)
        log.info(
            "catalogue loaded: %d enabled job(s), interval %.3f s",
            len(self.current.index),
            self.current.interval_s,
        )


async def _every(seconds: float, work: Callable[[], Awaitable[None]], name: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception:
            log.exception("%s failed; trying again in %.0f s", name, seconds)


async def serve(settings: MatcherSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run the matcher until `stop` is set, then finish the messages in hand and return."""
    stop = stop or asyncio.Event()
    topology = Topology.from_settings(settings)
    await db.check(settings.database_url)
    metrics.serve(settings.metrics_port)
    # No pre-ping: it is a round trip more per transaction, and the consumers wait out the
    # error a dead pooled connection gives (a transient one) and retry on a fresh one.
    engine = db.create_engine(
        settings.database_url, pool_size=settings.db_pool_size, pre_ping=False
    )
    try:
        await check_schema(engine)
    except BaseException:
        await engine.dispose()
        raise
    # Workers start before the first event is taken, so no event waits for one.
    renderer = RenderPool.from_settings(settings)
    try:
        await renderer.start()
        connection = await connect(settings.amqp_url, name="jobmanager-matcher")
    except BaseException:
        await renderer.close()
        await engine.dispose()
        raise
    try:
        await _run(settings, topology, engine, connection, renderer, stop)
    finally:
        await connection.close()
        await renderer.close()
        await engine.dispose()


async def _run(
    settings: MatcherSettings,
    topology: Topology,
    engine: AsyncEngine,
    connection: AbstractRobustConnection,
    renderer: RenderPool,
    stop: asyncio.Event,
) -> None:
    await topology.declare(await connection.channel())
    publisher = await Publisher.open(connection, topology)
    holder = CatalogueHolder(engine, await Catalogue.load(engine))
    log.info("catalogue loaded: %d enabled job(s)", len(holder.current.index))

    def consumer(name: str, handler: Handler, queue: str, prefetch: int) -> Consuming:
        # Batching off (`batch_max` 1): messages one at a time, as many at once as prefetched.
        batches = 1 if settings.batch_max > 1 else prefetch
        return (
            Consumer(
                name,
                handler,
                publisher,
                transient=db.transient,
                max_batch=settings.batch_max,
                batches=batches,
            ),
            queue,
            prefetch,
        )

    events = EventsHandler(
        engine,
        publisher,
        holder,
        renderer,
        max_bytes=settings.event_max_bytes,
        max_depth=settings.event_max_depth,
        direct_dispatch=settings.direct_dispatch,
    )
    gate = GateHandler(engine, publisher, holder, hold_max_s=settings.gate_hold_max_s)
    results = ResultsHandler(engine, publisher, holder, direct_dispatch=settings.direct_dispatch)
    upkeep = Upkeep(settings, engine, connection, publisher, holder)
    consumers = [
        consumer("events", events, topology.events_queue, settings.prefetch),
        consumer("gate", gate, topology.due_queue, settings.gate_prefetch),
        consumer("results", results, topology.results_queue, settings.prefetch),
        consumer("lost", upkeep.on_lost, topology.lost_queue, settings.prefetch),
    ]

    control_channel = await connection.channel()
    control_queue = await control_channel.declare_queue(exclusive=True, auto_delete=True)
    await control_queue.bind(topology.control_exchange)

    async def on_control(message: AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            backoff = 0.05
            while True:
                try:
                    await holder.reload()
                    return
                except Exception as exc:
                    # A pooled connection that died with a database restart fails once
                    # (no pre-ping): wait it out rather than drop the change's broadcast.
                    if not db.transient(exc) or stop.is_set():
                        raise
                    log.warning("reloading the catalogue: %s; retrying in %.2f s", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)

    await control_queue.consume(on_control)
    for c, queue, prefetch in consumers:
        await c.start(connection, queue, prefetch=prefetch)
    tasks = [
        asyncio.create_task(_every(settings.catalogue_refresh_s, holder.reload, "reload")),
        asyncio.create_task(_every(settings.lane_check_s, upkeep.run_once, "upkeep")),
    ]
    log.info("matcher consuming in namespace %r", topology.namespace)
    await stop.wait()
    log.info("matcher stopping: finishing the messages in hand")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*(c.stop() for c, _, _ in consumers))
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    log.info("matcher stopped")
