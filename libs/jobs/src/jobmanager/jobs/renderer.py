"""Rendering templates out of process, within a CPU-time and a memory limit.

A template is user code: a loop can run for hours and a string method can build gigabytes,
whatever the sandbox refuses. So no service renders a template itself: a `RenderPool` keeps a
few long-lived worker processes (`jobmanager.jobs.render_worker`) that render within the
limits, and the service's event loop only writes requests to their pipes and awaits the
answers. A whole batch goes in one write, its answers stream back, spread over the workers.

What each outcome means:

* `Rendered` with no error: the command and lane;
* `Rendered` with an error: the template failed for this event (undefined variable, a limit:
  `limit` says which), exactly as a template error is reported everywhere;
* `Crashed`: the worker died while rendering it on every one of `crash_attempts` fresh
  workers; the caller parks the event rather than try for ever.

A worker that does not answer within the wall-clock backstop (the CPU limit and a margin) is
killed and replaced, and its render is reported over the CPU time limit: only code that never
returns to Python can outlast the worker's own CPU timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from jobmanager.jobs.render_worker import CPU, HEADER, MEMORY, READY, encode, limit_message

__all__ = ["Crashed", "RenderLimits", "RenderPool", "Rendered", "Templates"]

log = logging.getLogger(__name__)

WORKER_MODULE = "jobmanager.jobs.render_worker"
# A worker imports Jinja2 once; a slow machine may take a while, a broken one never answers.
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RenderLimits:
    """What one render (one job's command and lane for one event) may use."""

    cpu_s: float = 1.0
    memory_bytes: int = 64 << 20

    @property
    def backstop_s(self) -> float:
        """How long the parent waits for an answer before it kills the worker: room for a
        worker that shares a loaded machine's cores (its CPU timer counts only its own time),
        so that the worker's timer, which names the template, is what normally stops it."""
        return self.cpu_s * 1.5 + 0.5

    def message(self, limit: str) -> str:
        return limit_message(limit, cpu_s=self.cpu_s, memory_bytes=self.memory_bytes)


@dataclass(frozen=True)
class Templates:
    """One job's template sources."""

    command: str
    lane: str | None


@dataclass(frozen=True)
class Rendered:
    """A job's command and lane for an event, or why not (with the command, when only the
    lane failed)."""

    command: str = ""
    lane: str | None = None
    error: str | None = None
    limit: str | None = None  # "cpu" or "memory" when the error is a limit
    crashed: bool = False  # only from `render_one`: the renders crashed every worker


@dataclass(frozen=True)
class Crashed:
    """The renders of an event killed the worker on every attempt."""

    reason: str


Outcome = list[Rendered] | Crashed
Batch = Sequence[tuple[Mapping[str, Any], Sequence[Templates]]]


class LimitSettings(Protocol):
    """The settings a render pool is built from (`jobmanager.core.config.RenderSettings`)."""

    @property
    def render_cpu_s(self) -> float: ...
    @property
    def render_memory_mb(self) -> int: ...
    @property
    def render_workers(self) -> int: ...


class _Died(Exception):
    """The worker ended without answering."""


@dataclass
class _Item:
    event: int
    job: int
    document: Mapping[str, Any]
    templates: Templates
    crashes: int = 0


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        if process.stdin is None or process.stdout is None:
            raise RuntimeError("a render worker without pipes")
        self.stdin = process.stdin
        self.stdout = process.stdout

    @classmethod
    async def start(cls, limits: RenderLimits) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            repr(limits.cpu_s),
            str(limits.memory_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(process)
        try:
            if await worker.answer(START_TIMEOUT_S) != READY:
                raise _Died("no ready frame")
        except (_Died, TimeoutError) as exc:
            await worker.kill()
            raise RuntimeError(
                f"a render worker did not start ({exc}; exit status {process.returncode})"
            ) from None
        log.debug("render worker %d started", process.pid)
        return worker

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def send(self, items: Sequence[_Item]) -> None:
        """All requests in one write; the event loop flushes the pipe as the worker reads."""
        frames = []
        previous: Mapping[str, Any] | None = None
        for item in items:
            request: dict[str, Any] = {"c": item.templates.command, "l": item.templates.lane}
            if item.document is not previous:
                request["d"] = item.document
                previous = item.document
            frames.append(encode(request))
        self.stdin.write(b"".join(frames))

    async def answer(self, timeout: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                (size,) = HEADER.unpack(await self.stdout.readexactly(HEADER.size))
                answer = json.loads(await self.stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise _Died(f"exit status {await self.process.wait()}") from exc
        if not isinstance(answer, dict):
            raise _Died("an answer that is not an object")
        return answer

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()
        self.stdin.close()

    async def close(self, grace: float = 2.0) -> None:
        self.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            await self.kill()


class RenderPool:
    """At most `workers` render workers, started on first use or by `start()`."""

    def __init__(self, limits: RenderLimits, *, workers: int = 2, crash_attempts: int = 3) -> None:
        self.limits = limits
        self.workers = workers
        self.crash_attempts = crash_attempts
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> RenderPool:
        limits = RenderLimits(settings.render_cpu_s, settings.render_memory_mb << 20)
        return cls(limits, workers=settings.render_workers)

    @property
    def pids(self) -> list[int]:
        """The worker processes that exist now."""
        return [w.process.pid for w in (*self._idle, *self._busy)]

    async def start(self) -> None:
        """Start every worker now, so the first events do not wait for one."""
        missing = self.workers - len(self._idle) - len(self._busy)
        self._idle += await asyncio.gather(*(_Worker.start(self.limits) for _ in range(missing)))

    async def close(self) -> None:
        workers, self._idle = self._idle, []
        await asyncio.gather(*(w.close() for w in workers))

    async def render(self, batch: Batch) -> list[Outcome]:
        """Each event's jobs rendered for it (in the order given), or Crashed."""
        items = [
            _Item(e, j, document, templates)
            for e, (document, jobs) in enumerate(batch)
            for j, templates in enumerate(jobs)
        ]
        chunks = _split(items, min(self.workers, len(items)))
        done: dict[tuple[int, int], Rendered | Crashed] = {}
        for part in await asyncio.gather(*(self._render(chunk) for chunk in chunks)):
            done.update(part)
        outcomes: list[Outcome] = []
        for e, (_, jobs) in enumerate(batch):
            answers = [done[e, j] for j in range(len(jobs))]
            crashed = [a for a in answers if isinstance(a, Crashed)]
            outcomes.append(
                crashed[0] if crashed else [a for a in answers if isinstance(a, Rendered)]
            )
        return outcomes

    async def render_one(self, document: Mapping[str, Any], templates: Templates) -> Rendered:
        """One job's templates for one event; a crash is reported as an error."""
        [outcome] = await self.render([(document, [templates])])
        if isinstance(outcome, Crashed):
            return Rendered(error=outcome.reason, crashed=True)
        return outcome[0]

    async def _render(self, items: list[_Item]) -> dict[tuple[int, int], Rendered | Crashed]:
        done: dict[tuple[int, int], Rendered | Crashed] = {}
        async with self._slots:
            worker: _Worker | None = None
            try:
                while items:
                    worker = worker or await self._acquire()
                    worker.send(items)
                    while items:
                        outcome = await self._answer(worker, items[0])
                        if outcome is not None:
                            done[items[0].event, items[0].job] = outcome
                            items.pop(0)
                        if outcome is None or not worker.alive or _retires(outcome):
                            # Killed, dead or exiting: the rest go to a fresh worker.
                            await self._retire(worker)
                            worker = None
                            break
            except BaseException:
                if worker is not None:
                    await asyncio.shield(self._retire(worker))
                raise
            if worker is not None:
                self._busy.discard(worker)
                self._idle.append(worker)
        return done

    async def _answer(self, worker: _Worker, item: _Item) -> Rendered | Crashed | None:
        """The item's outcome, or None when the worker died and the item is to be retried."""
        try:
            answer = await worker.answer(self.limits.backstop_s)
        except TimeoutError:
            log.warning(
                "render worker %d gave no answer in %.2f s; killing it",
                worker.process.pid,
                self.limits.backstop_s,
            )
            await worker.kill()
            message = f"command or lane template: {self.limits.message(CPU)}"
            return Rendered(error=message, limit=CPU)
        except _Died as exc:
            item.crashes += 1
            log.error("render worker %d died while rendering (%s)", worker.process.pid, exc)
            if item.crashes < self.crash_attempts:
                return None
            return Crashed(
                f"rendering its templates crashed the renderer {item.crashes} times (last: {exc})"
            )
        if "e" in answer:
            command = answer.get("c") or ""
            return Rendered(command=str(command), error=str(answer["e"]), limit=answer.get("k"))
        return Rendered(command=str(answer["c"]), lane=answer["l"])

    async def _acquire(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                self._busy.add(worker)
                return worker
        worker = await _Worker.start(self.limits)
        self._busy.add(worker)
        return worker

    async def _retire(self, worker: _Worker) -> None:
        self._busy.discard(worker)
        await worker.kill()


def _retires(outcome: Rendered | Crashed) -> bool:
    """A worker that hit the memory limit exits after its answer (see the worker)."""
    return isinstance(outcome, Rendered) and outcome.limit == MEMORY


def _split(items: list[_Item], parts: int) -> list[list[_Item]]:
    """`items` in at most `parts` contiguous runs of whole events, of near-equal length: an
    event's jobs stay on one worker, so its document is sent once and a batch of one event
    is one round trip to one worker; the events of a batch go to all of them."""
    events: list[list[_Item]] = []
    for item in items:
        if events and events[-1][0].event == item.event:
            events[-1].append(item)
        else:
            events.append([item])
    parts = min(parts, len(events))
    return [
        [
            item
            for event in events[n * len(events) // parts : (n + 1) * len(events) // parts]
            for item in event
        ]
        for n in range(parts)
    ]
