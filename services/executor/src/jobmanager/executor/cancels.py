"""The cancels an executor heard on the executors' control exchange.

The ledger ends a cancelled run before any executor hears of it; what is left here is to stop
the script if it runs on this executor, and never to start it if its request reaches this
executor later (still waiting in the work queue, prefetched, or redelivered after another
executor died). Attempts are remembered in a bounded list, the most recent last: a request
that waits in the work queue longer than the last `REMEMBERED` cancels take to arrive would
run (and its result be ignored by the ledger); its start makes the matcher send the cancel
again, which stops it then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Iterator

from jobmanager.core.messages import CancelRequest

REMEMBERED = 10_000

Key = tuple[int, int]


class Cancels:
    """Cancelled attempts (by run id and attempt) and the attempts this executor runs now."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.remembered = remembered
        self._heard: OrderedDict[Key, CancelRequest] = OrderedDict()
        self._running: dict[Key, asyncio.Future[CancelRequest]] = {}

    def heard(self, run_id: int, attempt: int) -> CancelRequest | None:
        """The cancel of this attempt, if one was heard."""
        return self._heard.get((run_id, attempt))

    def cancel(self, request: CancelRequest) -> bool:
        """Remember a cancel and stop the attempt if it runs here; whether it does."""
        key = (request.run_id, request.attempt)
        self._heard[key] = request
        self._heard.move_to_end(key)
        while len(self._heard) > self.remembered:
            self._heard.popitem(last=False)
        running = self._running.get(key)
        if running is None:
            return False
        if not running.done():
            running.set_result(request)
        return True

    @contextlib.contextmanager
    def watching(self, run_id: int, attempt: int) -> Iterator[asyncio.Future[CancelRequest]]:
        """While an attempt runs: a future that a cancel of it completes."""
        key = (run_id, attempt)
        cancelled: asyncio.Future[CancelRequest] = asyncio.get_running_loop().create_future()
        if (known := self._heard.get(key)) is not None:
            cancelled.set_result(known)
        self._running[key] = cancelled
        try:
            yield cancelled
        finally:
            if self._running.get(key) is cancelled:
                del self._running[key]
            cancelled.cancel()  # nobody waits for it any more
