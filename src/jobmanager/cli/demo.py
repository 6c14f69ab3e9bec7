"""`jobmanager demo`: services, sample jobs, a simulated Channel Manager and a live view.

The live view reads the four tables straight from Postgres twice a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.admin.config import AdminSettings
from jobmanager.cli.apply import apply_document, load_document
from jobmanager.cli.events import simulate
from jobmanager.cli.keys import create
from jobmanager.cli.up import Services
from jobmanager.core.config import DatabaseSettings, redact_url
from jobmanager.core.runtime import Unavailable
from jobmanager.store import db
from jobmanager.store.migrate import upgrade
from jobmanager.store.models import QUEUE_STATES, Job, Run

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "demo.yaml"
LOG = Path(".jobmanager") / "demo.log"
STATE_STYLE = {
    "queued": "yellow",
    "dispatched": "cyan",
    "running": "bold cyan",
    "succeeded": "green",
    "failed": "red",
    "removed": "dim",
}


async def snapshot(engine: AsyncEngine) -> Group:
    """The four tables at a glance: counts, then the latest runs."""
    async with engine.connect() as conn:
        counts = dict(
            (await conn.execute(select(Run.state, func.count()).group_by(Run.state))).all()
        )
        jobs = await conn.scalar(select(func.count()).select_from(Job)) or 0
        latest = (
            await conn.execute(
                select(
                    Run.id, Run.job_name, Run.lane, Run.state, Run.attempt, Run.result, Run.feedback
                )
                .order_by(Run.id.desc())
                .limit(12)
            )
        ).all()
    summary = Table(title="Job Manager", expand=True)
    for column in ("Jobs", "Queue", "Executed Jobs", "Failed Jobs"):
        summary.add_column(column, justify="right")
    summary.add_row(
        str(jobs),
        str(sum(counts.get(s, 0) for s in QUEUE_STATES)),
        str(counts.get("succeeded", 0)),
        str(counts.get("failed", 0)),
    )
    runs = Table(title="Latest runs", expand=True)
    for column in ("run", "job", "lane", "state", "attempt", "result", "feedback"):
        runs.add_column(column, overflow="ellipsis", no_wrap=True)
    for row in latest:
        style = STATE_STYLE.get(row.state, "")
        runs.add_row(
            str(row.id),
            row.job_name,
            row.lane or "—",
            f"[{style}]{row.state}[/]",
            str(row.attempt),
            str(row.result or ""),
            row.feedback[:80],
        )
    return Group(summary, runs)


async def _demo(settings: DatabaseSettings, rate: float, duration: float | None) -> None:
    document = load_document(SAMPLE.read_text(encoding="utf-8"), origin=str(SAMPLE))
    print(await apply_document(document, settings, prune=False))
    key = await create(role="admin", name="demo")
    admin = AdminSettings()
    url = f"http://{admin.admin_host}:{admin.admin_port}"
    LOG.parent.mkdir(exist_ok=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    if duration is not None:
        loop.call_later(duration, stopping.set)
    engine = db.create_engine(settings.database_url, pool_size=1)
    with LOG.open("a", encoding="utf-8") as log_file:
        services = Services(executors=2, output=log_file)
        supervisor = asyncio.create_task(services.run(stopping))
        print(f"services started; their logs go to {LOG}")
        print(f"web console: {url}/  (sign in with the admin key {key})")
        print(f"admin API: {url}/docs")
        print(f"database: {redact_url(settings.database_url)}, namespace: {settings.namespace}")
        print("a simulated Channel Manager publishes events; Ctrl-C stops the demo")
        await asyncio.sleep(2)  # let the matcher declare the topology
        simulator = asyncio.create_task(
            simulate(rate=rate, count=None, channels=12, seed=None, stop=stopping)
        )
        try:
            with Live(await snapshot(engine), refresh_per_second=2, transient=False) as live:
                while not stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), 0.5)
                    live.update(await snapshot(engine))
        finally:
            stopping.set()
            sent: Any = await asyncio.gather(simulator, return_exceptions=True)
            await supervisor
            await engine.dispose()
    print(f"demo stopped after {sent[0]} simulated event(s)")


def run_demo(*, rate: float, duration: float | None) -> int:
    settings = DatabaseSettings()
    try:
        upgrade(settings.database_url)
        asyncio.run(_demo(settings, rate, duration))
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
