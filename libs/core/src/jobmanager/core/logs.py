"""Logging set-up: human-readable text, or one JSON object per line for log pipelines."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Literal

from pythonjsonlogger.json import JsonFormatter


def configure(level: str, fmt: Literal["text", "json"], *, service: str) -> None:
    """Configure the root logger once, at service start."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s {service} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aio-pika and aiormq are chatty at INFO about reconnects we already report.
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class Throttled:
    """A logger for what can come in floods (forged or replayed messages): at most one line
    per key every `every_s` seconds, each saying how many like it were held back since."""

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Log `message` unless a line for `key` was logged less than `every_s` ago; True
        when it was logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        self._last[key] = now
        suffix = (
            f" ({held} more like it in the last {now - last:.0f} s)"
            if held and last is not None
            else ""
        )
        self._logger.warning(message + suffix, *args)
        return True
