"""What the cancel tests share (the Python executor's and the Node executor's): cancelling as
the admin does, a run's row, and watching a script's process group end."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from stack import Stack

from jobmanager.store import ledger
from jobmanager.store.models import Run

BY = "key:test"


async def run_row(stack: Stack, run_id: int) -> Any:
    async with stack.engine.connect() as conn:
        return (await conn.execute(select(Run.__table__).where(Run.id == run_id))).one()


async def cancel(stack: Stack, run_id: int, *, broadcast: bool = True) -> None:
    """Cancel as `POST /queue/{id}/cancel` does (the ledger's function, then its outbox);
    without `broadcast`, as if no executor heard it."""
    now = datetime.now(UTC)
    async with stack.engine.begin() as conn:
        outbox = await ledger.cancel(conn, run_id, actor=BY, interval_s=0.0, now=now)
    if not broadcast:
        outbox.cancels.clear()
    await outbox.publish(stack.publisher, now=now)


def alive(group: int) -> bool:
    """Whether a process of the group still runs. A zombie does not: it is dead and waits
    for its parent, and an orphan's parent here is the machine's init, which reaps when it
    gets round to it."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after it.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


async def gone_after(group: int, limit: float) -> float:
    """Seconds until the process group is gone (fails past `limit`)."""
    start = time.monotonic()
    while alive(group):
        assert time.monotonic() - start < limit, f"process group {group} still alive"
        await asyncio.sleep(0.02)
    return time.monotonic() - start
