"""Auto Cleanup, event retention and deleting by hand, against the real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from jobmanager.store import cleanup, settings
from jobmanager.store.cleanup import CleanupReport, clean_table, delete_finished_run
from jobmanager.store.ledger import Conflict, RunNotFound
from jobmanager.store.models import Attempt, Event, Run
from jobmanager.store.settings import CleanupSettings, RetentionSettings

NOW = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
DAY = 86400.0

runs = cast(Table, Run.__table__)
attempts = cast(Table, Attempt.__table__)
events = cast(Table, Event.__table__)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def policy(method: str = "row_count", **kw: Any) -> CleanupSettings:
    return CleanupSettings.model_validate({"enabled": True, "method": method, **kw})


async def add_runs(
    conn: AsyncConnection,
    finished: Sequence[datetime | None],
    *,
    state: str = "succeeded",
    **kw: Any,
) -> list[int]:
    """One run per `finished_at` value, in that order; their ids."""
    rows = [
        {
            "job_name": "job",
            "script": "noop",
            "command": "cmd",
            "state": state,
            "finished_at": at,
            **kw,
        }
        for at in finished
    ]
    return list((await conn.scalars(insert(runs).returning(runs.c.id), rows)).all())


async def add_events(conn: AsyncConnection, received: Sequence[datetime]) -> list[int]:
    rows = [
        {
            "source": "channel-manager",
            "event_id": f"ev-{i}",
            "event_type": "channel.updated",
            "received_at": at,
            "payload": {"n": i},
        }
        for i, at in enumerate(received)
    ]
    return list((await conn.scalars(insert(events).returning(events.c.id), rows)).all())


async def ids(conn: AsyncConnection, state: str = "succeeded") -> list[int]:
    query = select(runs.c.id).where(runs.c.state == state).order_by(runs.c.id)
    return list((await conn.scalars(query)).all())


def minutes(n: int) -> list[datetime]:
    """`n` finish times one minute apart, the first (oldest) n minutes ago."""
    return [ago(60 * (n - i)) for i in range(n)]


# -- row_count --------------------------------------------------------------------------------


async def test_disabled_deletes_nothing(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        created = await add_runs(conn, [ago(100 * DAY)] * 5)
        off = CleanupSettings(enabled=False, method="both", max_rows=0, max_age_s=0)
        assert await clean_table(conn, table="executed", settings=off, now=NOW) == 0
        assert await ids(conn) == created


@pytest.mark.parametrize(("rows", "deleted"), [(3, 0), (4, 0), (5, 2), (9, 2)])
async def test_row_count_cleans_only_above_the_limit_and_by_the_amount(
    engine: AsyncEngine, rows: int, deleted: int
) -> None:
    async with engine.begin() as conn:
        created = await add_runs(conn, minutes(rows))
        rule = policy(max_rows=4, cleanup_amount=2)
        assert await clean_table(conn, table="executed", settings=rule, now=NOW) == deleted
        assert await ids(conn) == created[deleted:]


async def test_row_count_deletes_fewer_when_the_table_holds_fewer(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await add_runs(conn, minutes(3))
        rule = policy(max_rows=0, cleanup_amount=10)
        assert await clean_table(conn, table="executed", settings=rule, now=NOW) == 3
        assert await ids(conn) == []


async def test_the_oldest_rows_go_first_by_finish_time_then_id(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        created = await add_runs(conn, [ago(10), ago(50), ago(30), ago(50), ago(20)])
        a, b, c, d, e = created
        # b and d finished together, the oldest: b goes first (lower id), then d, then c.
        rule = policy(max_rows=1, cleanup_amount=1)
        assert await clean_table(conn, table="executed", settings=rule, now=NOW) == 1
        assert await ids(conn) == [a, c, d, e] == [r for r in created if r != b]
        rule = policy(max_rows=1, cleanup_amount=2)
        assert await clean_table(conn, table="executed", settings=rule, now=NOW) == 2
        assert await ids(conn) == [a, e]


async def test_other_states_are_never_touched_nor_counted(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        old = [ago(100 * DAY)] * 3
        others = {
            state: await add_runs(conn, old, state=state)
            for state in ("queued", "dispatched", "running", "removed")
        }
        failed = await add_runs(conn, old, state="failed")
        await add_runs(conn, [ago(DAY)] * 2)
        # 2 succeeded runs are within max_rows=2, however many runs there are in total.
        rule = policy(max_rows=2, cleanup_amount=100)
        assert await clean_table(conn, table="executed", settings=rule, now=NOW) == 0

        rule = policy("both", max_rows=0, max_age_s=0, cleanup_amount=100)
        assert await clean_table(conn, table="executed", settings=rule, now=NOW) == 2
        assert await ids(conn) == []
        assert await ids(conn, "failed") == failed
        assert await clean_table(conn, table="failed", settings=rule, now=NOW) == 3
        assert await ids(conn, "failed") == []
        for state, created in others.items():
            assert await ids(conn, state) == created


async def test_a_run_moved_out_of_the_table_meanwhile_is_not_deleted(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        (run,) = await add_runs(conn, [ago(DAY)], state="failed")
    async with engine.connect() as operator, engine.connect() as cleaner:
        # The operator's Execute has re-queued the run but not committed yet.
        await operator.begin()
        await operator.execute(update(runs).where(runs.c.id == run).values(state="queued"))
        await cleaner.begin()
        pid = await cleaner.scalar(select(func.pg_backend_pid()))
        rule = policy(max_rows=0)
        task = asyncio.create_task(clean_table(cleaner, table="failed", settings=rule, now=NOW))
        # Until the cleaner, which still sees the run as failed, waits for its row lock.
        while not await operator.scalar(select(func.cardinality(func.pg_blocking_pids(pid)))):
            assert not task.done()
        await operator.commit()
        assert await task == 0
        await cleaner.commit()
        assert await ids(cleaner, "queued") == [run]


# -- row_age and both -------------------------------------------------------------------------


async def test_row_age_deletes_only_old_rows_and_at_most_the_amount(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        old = await add_runs(conn, [ago(5 * DAY), ago(4 * DAY), ago(3 * DAY)], state="failed")
        at_limit = await add_runs(conn, [ago(2 * DAY)], state="failed")
        young = await add_runs(conn, [ago(DAY), ago(0)], state="failed")
        rule = policy("row_age", max_age_s=2 * DAY, cleanup_amount=2, max_rows=0)
        assert await clean_table(conn, table="failed", settings=rule, now=NOW) == 2
        assert await ids(conn, "failed") == old[2:] + at_limit + young
        assert await clean_table(conn, table="failed", settings=rule, now=NOW) == 1
        # Exactly max_age_s old is not older than max_age_s; max_rows plays no part.
        assert await clean_table(conn, table="failed", settings=rule, now=NOW) == 0
        assert await ids(conn, "failed") == at_limit + young


async def test_both_caps_the_pass_at_the_amount_when_rows_are_old(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        created = await add_runs(conn, [ago(10 * DAY)] * 4 + [ago(0)] * 4)
        rule = policy("both", max_rows=2, max_age_s=DAY, cleanup_amount=3)
        assert await clean_table(conn, table="executed", settings=rule, now=NOW) == 3
        assert await ids(conn) == created[3:]


async def test_both_counts_rows_after_the_age_pass(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        created = await add_runs(conn, [ago(10 * DAY)] + [ago(60)] * 5)
        # 6 rows > 5: the one old row goes, leaving 5, which is not above the limit.
        rule = policy("both", max_rows=5, max_age_s=DAY, cleanup_amount=3)
        assert await clean_table(conn, table="executed", settings=rule, now=NOW) == 1
        assert await ids(conn) == created[1:]


async def test_both_fills_the_amount_with_the_row_count_pass(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        created = await add_runs(conn, [ago(10 * DAY), *minutes(7)])
        # 8 rows > 2: the old row (age pass), then the 2 next oldest (count pass).
        rule = policy("both", max_rows=2, max_age_s=DAY, cleanup_amount=3)
        assert await clean_table(conn, table="executed", settings=rule, now=NOW) == 3
        assert await ids(conn) == created[3:]


async def test_attempts_are_deleted_with_their_runs(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        gone, kept = await add_runs(conn, [ago(3 * DAY), ago(0)], state="failed", attempt=2)
        await conn.execute(
            insert(attempts),
            [{"run_id": r, "attempt": n} for r in (gone, kept) for n in (1, 2)],
        )
        rule = policy("row_age", max_age_s=DAY)
        assert await clean_table(conn, table="failed", settings=rule, now=NOW) == 1
        left = (await conn.execute(select(attempts.c.run_id, attempts.c.attempt))).all()
        assert sorted(left) == [(kept, 1), (kept, 2)]


# -- events -----------------------------------------------------------------------------------


async def test_events_expire_and_their_runs_keep_the_event_id(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        e1, _, e3, recent = await add_events(
            conn, [ago(9 * DAY), ago(8 * DAY), ago(7 * DAY + 1), ago(DAY)]
        )
        (run,) = await add_runs(conn, [ago(0)], event_pk=e1, event_id="ev-0")
        (fresh,) = await add_runs(conn, [ago(0)], event_pk=recent, event_id="ev-3")
        week = RetentionSettings(events_s=7 * DAY)
        assert await cleanup.expire_events(conn, settings=week, now=NOW, batch=2) == 2
        left = (await conn.scalars(select(events.c.id).order_by(events.c.id))).all()
        assert left == [e3, recent]
        assert await cleanup.expire_events(conn, settings=week, now=NOW) == 1
        assert await cleanup.expire_events(conn, settings=week, now=NOW) == 0
        links = (await conn.execute(select(runs.c.id, runs.c.event_pk, runs.c.event_id))).all()
        assert sorted(links) == [(run, None, "ev-0"), (fresh, recent, "ev-3")]


# -- deleting by hand -------------------------------------------------------------------------


async def test_delete_finished_run(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        (done,) = await add_runs(conn, [ago(0)])
        (failed,) = await add_runs(conn, [ago(0)], state="failed")
        await conn.execute(insert(attempts).values(run_id=failed, attempt=1))
        await delete_finished_run(conn, run_id=done, table="executed")
        await delete_finished_run(conn, run_id=failed, table="failed")
        assert await ids(conn) == [] and await ids(conn, "failed") == []
        assert (await conn.scalars(select(attempts.c.run_id))).all() == []


async def test_delete_finished_run_refuses_what_is_not_in_the_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        (queued,) = await add_runs(conn, [None], state="queued")
        (failed,) = await add_runs(conn, [ago(0)], state="failed")
        with pytest.raises(RunNotFound, match="run 999999 does not exist"):
            await delete_finished_run(conn, run_id=999999, table="executed")
        with pytest.raises(Conflict, match=f"run {queued} is queued, not in the Failed table"):
            await delete_finished_run(conn, run_id=queued, table="failed")
        with pytest.raises(Conflict, match=f"run {failed} is failed, not in the Executed table"):
            await delete_finished_run(conn, run_id=failed, table="executed")
        assert await ids(conn, "queued") == [queued]
        assert await ids(conn, "failed") == [failed]


# -- the whole pass ---------------------------------------------------------------------------


async def test_cleanup_pass_applies_the_stored_settings(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        executed = await add_runs(conn, minutes(5))
        failed = await add_runs(conn, minutes(5), state="failed")
        await add_events(conn, [ago(8 * DAY), ago(DAY)])
        # Defaults: Auto Cleanup disabled, events kept 7 days.
        assert await cleanup.cleanup_pass(conn, now=NOW) == CleanupReport(0, 0, 1)
        await settings.save(conn, "executed_cleanup", policy(max_rows=3, cleanup_amount=2))
        await settings.save(conn, "failed_cleanup", policy("row_age", max_age_s=150))
        await settings.save(conn, "retention", RetentionSettings(events_s=0))
        assert await cleanup.cleanup_pass(conn, now=NOW) == CleanupReport(2, 3, 1)
        assert await ids(conn) == executed[2:]
        assert await ids(conn, "failed") == failed[3:]


async def test_only_one_replica_cleans_at_a_time(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await add_runs(conn, minutes(3))
        await settings.save(conn, "executed_cleanup", policy(max_rows=0, cleanup_amount=1))
    async with engine.connect() as first, engine.connect() as second:
        async with first.begin():
            assert await cleanup.cleanup_pass(first, now=NOW) == CleanupReport(1, 0, 0)
            async with second.begin():
                assert await cleanup.cleanup_pass(second, now=NOW) is None
        # The lock ends with the first transaction.
        async with second.begin():
            assert await cleanup.cleanup_pass(second, now=NOW) == CleanupReport(1, 0, 0)
        async with first.begin():
            assert len(await ids(first)) == 1
