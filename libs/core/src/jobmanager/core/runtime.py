"""Running a service in the foreground: signals, the event loop, clear start-up errors."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable


class Unavailable(RuntimeError):
    """A service we depend on (broker, database) does not answer. The message is one line
    that says where we looked and how to start it; it is printed instead of a traceback."""


def run_service(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run `main(stop)` until it returns; SIGTERM and SIGINT set `stop` (graceful shutdown).

    Returns the process exit status: 0 after a graceful stop, 1 if a dependency is missing.
    """

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        _event_loop_runner()(runner())
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _event_loop_runner() -> Callable[[Awaitable[None]], None]:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.run  # type: ignore[return-value]
    return uvloop.run  # type: ignore[no-any-return]
