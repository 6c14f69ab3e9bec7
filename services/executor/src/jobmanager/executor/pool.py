"""The pool of long-lived Python worker processes (parent side of `worker.py`).

One worker per concurrency slot, started on first use and reused, so that a Python script
starts in well under a millisecond instead of paying for an interpreter start. Each worker
leads its own process group: a timeout kills the group (the script's children included) and
the worker is replaced, and so does a cancel, after SIGTERM and its grace; a worker that dies
during a run fails that run, not the executor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobmanager.core.messages import CancelRequest
from jobmanager.executor.output import TailBuffer
from jobmanager.executor.process import Child, spawn
from jobmanager.executor.worker import HEADER, MAX_FRAME, encode_frame

log = logging.getLogger(__name__)

WORKER_MODULE = "jobmanager.executor.worker"
# The directory holding this package, for a worker started with a minimal environment.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class WorkerDied(Exception):
    """The worker process ended while running a script."""

    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(f"worker exited with {returncode}")
        self.returncode = returncode
        self.stderr_tail = stderr


class WorkerTimeout(Exception):
    """The script ran past its timeout; its worker's process group was killed."""

    def __init__(self, stderr: str) -> None:
        super().__init__("timed out")
        self.stderr_tail = stderr


class WorkerCancelled(Exception):
    """The run was cancelled: its worker's process group got SIGTERM, and SIGKILL if it was
    still there after the grace (`killed`; None: the script had not started)."""

    def __init__(self, cancel: CancelRequest, killed: bool | None, stderr: str = "") -> None:
        super().__init__(f"cancelled by {cancel.by}")
        self.cancel = cancel
        self.killed = killed
        self.stderr_tail = stderr


class WorkerProcess:
    """One worker subprocess and the pipes to it."""

    def __init__(self, child: Child, tail_bytes: int) -> None:
        self.child = child
        self.tail_bytes = tail_bytes
        self.stderr_tail = TailBuffer(tail_bytes)
        self._stderr_task = asyncio.create_task(self._drain_stderr())

    @classmethod
    async def start(cls, *, env: Mapping[str, str], cwd: Path, tail_bytes: int) -> WorkerProcess:
        child = await spawn(sys.executable, "-m", WORKER_MODULE, env=env, cwd=cwd)
        log.debug("started Python worker %d", child.pid)
        return cls(child, tail_bytes)

    @property
    def alive(self) -> bool:
        return self.child.running

    async def _drain_stderr(self) -> None:
        # The worker's fd 1 and 2 (tracebacks of crashes, output of the script's children)
        # end here; the pipe must be drained or a chatty child would block on it.
        while chunk := await self.child.stderr.read(65536):
            self.stderr_tail.feed(chunk)

    async def _exchange(self, payload: Mapping[str, Any]) -> bytes:
        self.child.stdin.write(encode_frame(payload))
        await self.child.stdin.drain()
        (size,) = HEADER.unpack(await self.child.stdout.readexactly(HEADER.size))
        if size > MAX_FRAME:
            raise ValueError(f"reply frame of {size} bytes")
        return await self.child.stdout.readexactly(size)

    async def call(
        self,
        payload: Mapping[str, Any],
        timeout: float,
        cancelled: asyncio.Future[CancelRequest] | None = None,
    ) -> dict[str, Any]:
        """Send one request and wait for its reply, at most `timeout` seconds, or until
        `cancelled` completes (then the worker is terminated)."""
        self.stderr_tail = TailBuffer(self.tail_bytes)
        exchange = asyncio.ensure_future(self._exchange(payload))
        try:
            waiting: list[asyncio.Future[Any]] = [exchange]
            if cancelled is not None:
                waiting.append(cancelled)
            await asyncio.wait(
                waiting,
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not exchange.done():
                exchange.cancel()
                await asyncio.wait([exchange])
                if cancelled is not None and cancelled.done() and not cancelled.cancelled():
                    cancel = cancelled.result()
                    killed = await self.child.terminate(cancel.grace_s)
                    await self._finish()
                    raise WorkerCancelled(cancel, killed, self.stderr_tail.text())
                raise TimeoutError
            body = exchange.result()
        except TimeoutError:
            await self.kill()
            raise WorkerTimeout(self.stderr_tail.text()) from None
        except WorkerCancelled:
            raise
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            returncode = await self.kill()
            raise WorkerDied(returncode, self.stderr_tail.text()) from exc
        except BaseException:
            # Cancelled (the executor is stopping hard) or a broken reply: never reuse it.
            exchange.cancel()
            await asyncio.shield(self.kill())
            raise
        reply = json.loads(body)
        if not isinstance(reply, dict):
            await self.kill()
            raise ValueError("the worker's reply is not a JSON object")
        # What the script's child processes wrote to the inherited descriptors.
        reply["stderr"] = self.stderr_tail.text() if self.stderr_tail.total else ""
        return reply

    async def kill(self) -> int:
        """Kill the worker's process group; its exit status."""
        self.child.kill_group()
        returncode = await self.child.exit_status()
        await self._finish()
        return returncode

    async def close(self, grace: float = 2.0) -> None:
        """Ask the worker to exit (end of its input); kill it if it does not."""
        self.child.stdin.close()
        try:
            await asyncio.wait_for(self.child.exit_status(), grace)
        except TimeoutError:
            log.warning("Python worker %d did not exit; killing it", self.child.pid)
        await self.kill()  # also ends children a script left running in the group

    async def _finish(self) -> None:
        self.child.stdin.close()
        # EOF follows the kill at once, unless a child escaped the group and holds the pipe.
        await asyncio.wait([self._stderr_task], timeout=1.0)
        self._stderr_task.cancel()


class WorkerPool:
    """At most `size` workers, started lazily; a call waits for a free one."""

    def __init__(self, size: int, *, env: Mapping[str, str], cwd: Path, tail_bytes: int) -> None:
        self.size = size
        self.env = dict(env)
        self.cwd = cwd
        self.tail_bytes = tail_bytes
        self._slots = asyncio.Semaphore(size)
        self._idle: list[WorkerProcess] = []
        self._workers: set[WorkerProcess] = set()

    @property
    def started(self) -> int:
        """How many worker processes exist now."""
        return len(self._workers)

    async def call(
        self,
        payload: Mapping[str, Any],
        timeout: float,
        cancelled: asyncio.Future[CancelRequest] | None = None,
    ) -> dict[str, Any]:
        """Run one request on a free worker (see `WorkerProcess.call` for the errors); one
        cancelled while it waited for a worker does not start."""
        async with self._slots:
            if cancelled is not None and cancelled.done() and not cancelled.cancelled():
                raise WorkerCancelled(cancelled.result(), None)
            worker = await self._acquire()
            try:
                reply = await worker.call(payload, timeout, cancelled)
            except BaseException:
                self._workers.discard(worker)  # killed or dead: a new one replaces it
                raise
            self._idle.append(worker)
            return reply

    async def _acquire(self) -> WorkerProcess:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
            # It died while idle (OOM killer, an operator's kill): reap it quietly.
            self._workers.discard(worker)
            await worker.kill()
        worker = await WorkerProcess.start(env=self.env, cwd=self.cwd, tail_bytes=self.tail_bytes)
        self._workers.add(worker)
        return worker

    async def close(self) -> None:
        """Stop every worker (idle ones exit at once; call after the runs ended)."""
        workers, self._workers, self._idle = list(self._workers), set(), []
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
