"""Service processes started, watched and stopped: the matcher, executors, the admin API, or
anything else run as `python <argv>` (or, with `start_command`, any other program).

Every process starts with nothing of the caller's environment but PATH (a stray JOBMANAGER_*
variable must not change what is tested or measured), in the work directory (no `.env` file
of the checkout is read), with a log of its own there, and dies with its parent, so that none
outlives a test run or a benchmark that was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aio_pika.abc import AbstractConnection

from jobmanager.core.runtime import die_with_parent
from jobmanager.testkit.namespaces import broken


class Stopped(RuntimeError):
    """A process a wait depends on has exited, or the broker closed the connection it uses."""


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


def base_env(workdir: Path) -> dict[str, str]:
    """What every process starts with."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
    }


@dataclass
class Processes:
    """The processes of one test or measurement, their logs in `workdir`; stopped (SIGTERM,
    then SIGKILL) when it ends. `env` is added to `base_env` for every process."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    # When given, a closed connection (the broker restarted) also ends waits at once.
    connection: AbstractConnection | None = None
    running: list[Process] = field(default_factory=list)
    # Every process started under each name, in order: a test may kill one and start another.
    started: dict[str, list[Process]] = field(default_factory=dict)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Process:
        """`python <argv>`, its stdin a pipe of the caller's (a process may wait for a word
        on it). Call it from a thread that lives as long as the group (the event loop's):
        Linux sends the parent-death signal when the thread that started the child ends."""
        return self.start_command(name, [sys.executable, *argv], env)

    def start_command(
        self, name: str, command: Sequence[str], env: dict[str, str] | None = None
    ) -> Process:
        """Any program (`command` is its whole argv, no shell), started, logged and stopped
        as `start` does a Python one: an executor written in another language, say."""
        log = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(command),
                env={**base_env(self.workdir), **self.env, **(env or {})},
                cwd=self.workdir,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        process = Process(name, popen, log)
        self.running.append(process)
        self.started.setdefault(name, []).append(process)
        return process

    def __getitem__(self, name: str) -> subprocess.Popen[bytes]:
        """The latest process started as `name`."""
        return self.started[name][-1].popen

    def log(self, name: str) -> str:
        """The logs of every process started as `name`, in order, as one text."""
        return "".join(process.text() for process in self.started.get(name, []))

    def check_alive(self) -> None:
        """Raise `Stopped` if a process has exited or the connection was closed."""
        if self.connection is not None and broken(self.connection):
            raise Stopped("the broker closed the connection (a restart?)")
        for process in self.running:
            code = process.popen.poll()
            if code is not None:
                raise Stopped(
                    f"{process.name} exited with {code}; its log ({process.log}) ends:\n"
                    + process.tail()
                )

    async def stop(self, process: Process, timeout: float = 20.0) -> None:
        if process.popen.stdin is not None:
            with contextlib.suppress(OSError):
                process.popen.stdin.close()
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            await asyncio.to_thread(process.popen.wait)
        if process in self.running:
            self.running.remove(process)

    async def stop_all(self) -> None:
        # All are told first, so that they stop together rather than one after another.
        for process in self.running:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in list(self.running):
            await self.stop(process)


@contextlib.asynccontextmanager
async def processes(
    workdir: Path, env: dict[str, str] | None = None, connection: AbstractConnection | None = None
) -> AsyncIterator[Processes]:
    """A group of processes, all stopped when the block ends."""
    group = Processes(workdir, env or {}, connection)
    try:
        yield group
    finally:
        await group.stop_all()
