"""Starting a script's process in its own process group, and knowing when it exited.

`asyncio.subprocess.Process.wait()` returns only once the process exited *and* all its pipes
closed; a grandchild that keeps stdout open would make it wait for the grandchild. So the
protocol here signals the exit itself, and the executor decides how long to keep reading.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from jobmanager.core.runtime import die_with_parent

STREAM_LIMIT = 64 * 1024


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group (a session leader's pid is its group id)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=STREAM_LIMIT, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


class Child:
    """A subprocess leading its own process group, with pipes on stdin, stdout and stderr."""

    def __init__(self, process: asyncio.subprocess.Process, exited: asyncio.Event) -> None:
        if process.stdin is None or process.stdout is None or process.stderr is None:
            raise RuntimeError("a script process needs pipes on stdin, stdout and stderr")
        self.process = process
        self.stdin, self.stdout, self.stderr = process.stdin, process.stdout, process.stderr
        self._exited = exited

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return not self._exited.is_set()

    async def exit_status(self) -> int:
        """Wait until the process exited (not for its pipes); its return code."""
        await self._exited.wait()
        returncode = self.process.returncode
        return -1 if returncode is None else returncode

    def kill_group(self) -> None:
        """Kill the process and everything still in its group."""
        kill_group(self.pid)

    async def terminate(self, grace_s: float) -> bool:
        """SIGTERM to the whole group; SIGKILL to what is left of it once the process has
        exited or after `grace_s`. Whether the process itself had to be killed."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace_s):
                await self.exit_status()
            killed = False
        except TimeoutError:
            killed = True
        # The group's other members (a script's children) go too, whatever the leader did.
        self.kill_group()
        await self.exit_status()
        return killed


async def spawn(program: str | Path, *args: str, env: Mapping[str, str], cwd: Path) -> Child:
    """Start `program` without a shell, in a new session (so a new process group)."""
    loop = asyncio.get_running_loop()
    protocol = _Protocol(loop)
    transport, _ = await loop.subprocess_exec(
        lambda: protocol,
        program,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        # A script must not outlive its executor (kill -9 included): the broker hands the
        # request to another executor, and two copies must not run at once.
        preexec_fn=die_with_parent(signal.SIGKILL),
    )
    return Child(asyncio.subprocess.Process(transport, protocol, loop), protocol.exited)
