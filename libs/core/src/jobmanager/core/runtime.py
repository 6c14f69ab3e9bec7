"""Running a service in the foreground: signals, the event loop, clear start-up errors."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import ValidationError

PR_SET_PDEATHSIG = 1


class Unavailable(RuntimeError):
    """A service we depend on (broker, database) does not answer. The message is one line
    that says where we looked and how to start it; it is printed instead of a traceback."""


S = TypeVar("S")


def load_settings(factory: Callable[[], S], service: str) -> S:
    """Build a service's settings, or exit with one line naming every invalid setting."""
    try:
        return factory()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        print(f"error: invalid {service} configuration: {problems}", file=sys.stderr)
        raise SystemExit(1) from None


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
        with asyncio.Runner(loop_factory=loop_factory()) as loop:
            loop.run(runner())
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (optional: never required), else asyncio's."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def die_with_parent(signum: int) -> Callable[[], None]:
    """A `preexec_fn` for child processes: Linux sends `signum` to the child when its parent
    dies, so that no child outlives the process that supervises it (even after kill -9)."""

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signum)

    return preexec
