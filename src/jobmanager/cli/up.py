"""`jobmanager up`: every service in one process tree, for development and the demo.

Each service is its own child process, exactly as it runs in production; this supervisor
only starts them, restarts one that dies, and stops them all gracefully on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import IO

from jobmanager.core.runtime import die_with_parent

log = logging.getLogger("jobmanager.up")


def answering(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts connections at host:port (a service running already)."""
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


@dataclass
class Child:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    exit_code: int | None = None  # of its last exit


@dataclass
class Services:
    executors: int = 2
    concurrency: int = 4
    admin: bool = True
    output: IO[str] | None = None  # children's logs; None: this terminal
    children: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        python = sys.executable
        self.children.append(Child("matcher", [python, "-m", "jobmanager.matcher"]))
        if self.admin:
            self.children.append(Child("admin", [python, "-m", "jobmanager.admin"]))
        for n in range(self.executors):
            self.children.append(
                Child(
                    f"executor-{n + 1}",
                    [python, "-m", "jobmanager.executor", "--concurrency", str(self.concurrency)],
                )
            )

    async def _start(self, child: Child) -> asyncio.subprocess.Process:
        # A session of its own: Ctrl-C in the terminal reaches only this supervisor, which
        # then stops each child once, gracefully. If the supervisor dies, so do they.
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            stdout=self.output or None,
            stderr=self.output or None,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        log.info("started %s (pid %d)", child.name, child.process.pid)
        return child.process

    async def _watch(self, child: Child, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            process = await self._start(child)
            code = child.exit_code = await process.wait()
            if stopping.is_set():
                return
            child.restarts += 1
            delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
            log.warning("%s exited with %s; restarting in %.1f s", child.name, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)

    async def run(self, stopping: asyncio.Event) -> None:
        """Supervise the children until `stopping` is set, then stop them gracefully."""
        watchers = [asyncio.create_task(self._watch(c, stopping)) for c in self.children]
        await stopping.wait()
        await self.stop()
        await asyncio.gather(*watchers, return_exceptions=True)

    async def stop(self, grace_s: float = 30.0) -> None:
        running = [
            c.process
            for c in self.children
            if c.process is not None and c.process.returncode is None
        ]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), grace_s)
        except TimeoutError:
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    def run_until_stopped(self) -> int:
        """Run in the foreground until Ctrl-C or SIGTERM; migrate the schema first."""
        from jobmanager.admin.config import AdminSettings
        from jobmanager.core.config import DatabaseSettings
        from jobmanager.core.logs import configure
        from jobmanager.core.runtime import Unavailable, load_settings
        from jobmanager.store.migrate import upgrade

        settings = DatabaseSettings()
        configure(settings.log_level, settings.log_format, service="up")
        if self.admin:
            admin = load_settings(AdminSettings, "admin")
            if answering(admin.admin_host, admin.admin_port):
                print(
                    f"error: http://{admin.admin_host}:{admin.admin_port} answers already: "
                    "an admin (of `jobmanager up` or `demo`) is running there; stop it, use "
                    "--no-admin, or set another JOBMANAGER_ADMIN_PORT",
                    file=sys.stderr,
                )
                return 1
        try:
            upgrade(settings.database_url)
        except Unavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

        async def main() -> None:
            stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stopping.set)
            await self.run(stopping)

        asyncio.run(main())
        return 0
