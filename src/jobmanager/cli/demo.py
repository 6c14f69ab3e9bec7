"""`jobmanager demo`: services, sample jobs, a simulated Channel Manager and a live view.

One demo per directory and admin port: a second one says where the first one is and exits.
The sample jobs and settings are written only where the database has none of its own, so a
demo started again keeps what an operator changed. The live view reads the four tables
straight from Postgres twice a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.admin.config import AdminSettings
from jobmanager.cli.apply import ApplyError, apply_document, load_document
from jobmanager.cli.events import simulate
from jobmanager.cli.keys import create
from jobmanager.cli.up import Services, answering
from jobmanager.core.config import redact_url
from jobmanager.core.runtime import Unavailable, load_settings
from jobmanager.store import db
from jobmanager.store import jobs as job_store
from jobmanager.store.migrate import upgrade
from jobmanager.store.models import QUEUE_STATES, Job, Run

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "demo.yaml"
LOG = Path(".jobmanager") / "demo.log"
LOCK = Path(".jobmanager") / "demo.lock"
START_TIMEOUT_S = 60.0
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


class DemoError(RuntimeError):
    """The demo cannot go on; the message is one line that says why."""


def claim(path: Path, url: str) -> IO[str]:
    """Hold the demo's lock file for as long as the returned file stays open, or raise
    DemoError naming the demo that holds it (two demos would share one namespace and one
    database, and the second one's admin could not bind its port)."""
    path.parent.mkdir(exist_ok=True)
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "see its lock file " + str(path)
        handle.close()
        raise DemoError(
            f"a demo is already running from this directory ({holder}); "
            "use that one, or stop it (Ctrl-C in its terminal) first"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, console {url}/\n")
    handle.flush()
    return handle


async def _started(
    services: Services,
    engine: AsyncEngine,
    settings: AdminSettings,
    scripts: set[str],
    stopping: asyncio.Event,
) -> bool:
    """Wait until the admin answers and the executors have reported the scripts of the
    sample jobs (which `apply` checks, as the API does); DemoError if they do not, False if
    the demo was stopped meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    admin = next(child for child in services.children if child.name == "admin")
    while not stopping.is_set():
        if admin.restarts:
            raise DemoError(
                f"the admin service exited with {admin.exit_code} at start; "
                f"the reason is at the end of {LOG}"
            )
        since = datetime.now(UTC) - timedelta(seconds=settings.executor_report_window_s)
        async with engine.connect() as conn:
            known = set(await job_store.known_scripts(conn, since))
        if scripts <= known and answering(settings.admin_host, settings.admin_port):
            return True
        if loop.time() > deadline:
            missing = ", ".join(sorted(scripts - known)) or "none"
            raise DemoError(
                f"the services did not start within {START_TIMEOUT_S:.0f} s (scripts not "
                f"reported yet: {missing}); see {LOG}"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 0.2)
    return False


async def _demo(settings: AdminSettings, rate: float, duration: float | None) -> None:
    document = load_document(SAMPLE.read_text(encoding="utf-8"), origin=str(SAMPLE))
    url = f"http://{settings.admin_host}:{settings.admin_port}"
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    engine = db.create_engine(settings.database_url, pool_size=1)
    sent: Any = [0]
    with LOG.open("a", encoding="utf-8") as log_file:
        services = Services(executors=2, output=log_file)
        supervisor = asyncio.create_task(services.run(stopping))
        simulator = None
        try:
            print(f"starting the services; their logs go to {LOG}")
            scripts = {job.script for job in document.jobs}
            if not await _started(services, engine, settings, scripts, stopping):
                return
            # A database that holds settings or jobs already keeps them as they are (an
            # operator may have changed them): the demo only adds what is missing.
            print(
                await apply_document(
                    document,
                    settings,
                    prune=False,
                    window_s=settings.executor_report_window_s,
                    origin=str(SAMPLE),
                    keep_existing=True,
                )
            )
            # A key of its own each time: key names are unique, and a demo started again on
            # the same database must not stop at the last one's.
            key = await create(role="admin", name=f"demo-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
            print(f"web console: {url}/  (sign in with the admin key {key})")
            print(f"admin API: {url}/docs")
            print(f"database: {redact_url(settings.database_url)}, namespace: {settings.namespace}")
            print("a simulated Channel Manager publishes events; Ctrl-C stops the demo")
            if duration is not None:
                loop.call_later(duration, stopping.set)
            await asyncio.sleep(2)  # let the matcher declare the topology
            simulator = asyncio.create_task(
                simulate(rate=rate, count=None, channels=12, seed=None, stop=stopping)
            )
            with Live(await snapshot(engine), refresh_per_second=2, transient=False) as live:
                while not stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), 0.5)
                    live.update(await snapshot(engine))
        finally:
            stopping.set()
            if simulator is not None:
                sent = await asyncio.gather(simulator, return_exceptions=True)
            await supervisor
            await engine.dispose()
    print(f"demo stopped after {sent[0]} simulated event(s)")


def run_demo(*, rate: float, duration: float | None) -> int:
    settings = load_settings(AdminSettings, "demo")
    url = f"http://{settings.admin_host}:{settings.admin_port}"
    try:
        with claim(LOCK, url):
            if answering(settings.admin_host, settings.admin_port):
                raise DemoError(
                    f"{url} answers already: another demo (or `jobmanager up`, or an admin) "
                    f"is running there, with its own console; stop it, or give this demo "
                    f"another port with JOBMANAGER_ADMIN_PORT"
                )
            upgrade(settings.database_url)
            asyncio.run(_demo(settings, rate, duration))
    except (Unavailable, DemoError, ApplyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
