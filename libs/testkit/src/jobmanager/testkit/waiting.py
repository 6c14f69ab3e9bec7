"""Polling until something holds: the services are separate processes, so what a test or a
measurement waits for (a consumer, a run, a log line) can only be looked at again and again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class TimedOut(AssertionError):
    """A wait that ran out of time. An AssertionError, so that a test that waited in vain
    fails like any other assertion (and one that may wait in vain can suppress it)."""


async def wait_for(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float = 30.0,
    *,
    what: str | None = None,
    interval: float = 0.05,
    alive: Callable[[], None] | None = None,
) -> T:
    """Poll `probe` until it returns something other than None, and return that; `alive`
    raises if something the wait depends on has died (a process), so that the wait ends at
    once rather than at its timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout:g} s waiting for {what or probe}")
        await asyncio.sleep(interval)
