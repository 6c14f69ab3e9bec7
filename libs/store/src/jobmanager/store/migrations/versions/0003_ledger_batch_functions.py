"""ledger batch functions: a batch of events, or of executor reports, in one round trip

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 17:10:00.000000

The matcher's two hot transitions (`jobmanager.store.bulk.enqueue_many` and
`record_reports`) as server-side functions, so that a whole batch is one statement: one
round trip and its own transaction (called in autocommit) instead of six round trips. The
rules are those of `jobmanager.store.ledger`, the reference; its statements are those that
`bulk` sent one by one before, under the same lock order (lane rows in byte order, then run
rows in id order). (Runs without a lane and retries due at once are now dispatched before
the lanes advance instead of after: they are other runs of other lanes, so the order does
not change the result.) Each function returns what the transition has to
publish, one row per item: `kind` is `recorded` (the input at index `item` changed the
ledger), `notice` (the run's new state, for the runs exchange), `request` (the run is its
lane's head, for the gate) or `work` (the run was dispatched; `payload` is its event).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# `lanes.advance` for many locked lanes (`names`, each due at `slots`): each lane's next queued
# run (an Execute Now first, then enqueue order) becomes its head with a new token, due at
# its slot (at once for an Execute Now); a lane with nothing queued becomes idle. With
# `dispatch`, a head due now is dispatched at once: its attempt is opened and its event
# returned for the work request.
ADVANCE = """
CREATE FUNCTION ledger_advance(
    names text[], slots timestamptz[], now_ timestamptz, dispatch boolean
) RETURNS TABLE (kind text, item int, run runs, payload jsonb)
LANGUAGE sql AS $$
    WITH nxt AS (
        SELECT l.name, n.id,
               CASE WHEN n.execute_now_at IS NOT NULL THEN now_ ELSE l.slot END AS due
        FROM unnest(names, slots) AS l(name, slot)
        LEFT JOIN LATERAL (
            SELECT r.id, r.execute_now_at FROM runs r
            WHERE r.lane = l.name AND r.state = 'queued'
            ORDER BY r.execute_now_at ASC NULLS LAST, r.id
            LIMIT 1
        ) AS n ON true
    ), heads AS (
        UPDATE lanes SET head_run_id = nxt.id FROM nxt WHERE lanes.name = nxt.name
    ), moved AS (
        UPDATE runs SET
            token = runs.token + 1,
            not_before = nxt.due,
            state = CASE WHEN dispatch AND nxt.due <= now_ THEN 'dispatched' ELSE runs.state END,
            dispatched_at = CASE WHEN dispatch AND nxt.due <= now_
                                 THEN now_ ELSE runs.dispatched_at END
        FROM nxt
        WHERE runs.id = nxt.id
        RETURNING runs.*
    ), opened AS (
        INSERT INTO attempts (run_id, attempt, dispatched_at)
        SELECT id, attempt, dispatched_at FROM moved WHERE state = 'dispatched'
        ON CONFLICT (run_id, attempt) DO UPDATE SET dispatched_at = excluded.dispatched_at
    )
    SELECT CASE WHEN m.state = 'dispatched' THEN 'work' ELSE 'request' END::text, NULL::int,
           m::runs, e.payload
    FROM moved m LEFT JOIN events e ON e.id = m.event_pk AND m.state = 'dispatched'
    ORDER BY m.id
$$
"""

# Queued runs that are due now become dispatched, with their attempt opened; their rows and
# events for the work requests (`bulk.dispatch_due`). The caller holds their lanes and rows.
DISPATCH = """
CREATE FUNCTION ledger_dispatch(ids bigint[], now_ timestamptz)
RETURNS TABLE (kind text, item int, run runs, payload jsonb)
LANGUAGE sql AS $$
    WITH sent AS (
        UPDATE runs SET state = 'dispatched', dispatched_at = now_
        WHERE id = ANY(ids)
        RETURNING runs.*
    ), opened AS (
        INSERT INTO attempts (run_id, attempt, dispatched_at)
        SELECT id, attempt, now_ FROM sent
        ON CONFLICT (run_id, attempt) DO UPDATE SET dispatched_at = excluded.dispatched_at
    )
    SELECT 'work'::text, NULL::int, s::runs, e.payload
    FROM sent s LEFT JOIN events e ON e.id = s.event_pk
    ORDER BY s.id
$$
"""

# `ledger.enqueue` for a batch. `batch`: the events, [{i, source, event_id, event_type,
# occurred_at, payload, matched}]; `planned`: their runs, [{n (the order of creation), i (the
# event's index), the `runs` columns but event_pk (`ledger.run_values`)}].
ENQUEUE = """
CREATE FUNCTION ledger_enqueue(
    batch jsonb, planned jsonb, now_ timestamptz, interval_s double precision, dispatch boolean
) RETURNS TABLE (kind text, item int, run runs, payload jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    new_items int[];
    new_pks bigint[];
    idle_names text[];
    idle_slots timestamptz[];
    made runs[];
BEGIN
    -- Record the new events, in key order: two batches inserting the same events wait for
    -- each other in the unique index in one order, so they cannot deadlock there. Of an
    -- event twice in the batch, the first copy is the one recorded.
    WITH given AS (
        SELECT * FROM jsonb_to_recordset(batch) AS g(
            i int, source text, event_id text, event_type text, occurred_at timestamptz,
            payload jsonb, matched int)
    ), inserted AS (
        INSERT INTO events (source, event_id, event_type, occurred_at, received_at, payload,
                            matched)
        SELECT g.source, g.event_id, g.event_type, g.occurred_at, now_, g.payload, g.matched
        FROM given AS g
        ORDER BY g.source COLLATE "C", g.event_id COLLATE "C", g.i
        ON CONFLICT (source, event_id) DO NOTHING
        RETURNING events.id, events.source, events.event_id
    ), first AS (
        SELECT DISTINCT ON (g.source, g.event_id) g.i, g.source, g.event_id
        FROM given AS g
        ORDER BY g.source, g.event_id, g.i
    )
    SELECT array_agg(f.i ORDER BY f.i), array_agg(ins.id ORDER BY f.i)
    INTO new_items, new_pks
    FROM inserted AS ins
    JOIN first AS f ON f.source = ins.source AND f.event_id = ins.event_id;

    RETURN QUERY SELECT 'recorded'::text, n, NULL::runs, NULL::jsonb FROM unnest(new_items) AS n;
    IF new_items IS NULL THEN
        RETURN;
    END IF;

    -- Lanes first, then the runs: ids handed out under the lane locks keep each lane's
    -- enqueue order equal to its commit order. The lanes are created if missing and locked
    -- in one statement, in the lock order (the no-op update is what locks an existing row).
    WITH locked AS (
        INSERT INTO lanes (name)
        SELECT d.lane FROM (
            SELECT DISTINCT p.lane
            FROM jsonb_to_recordset(planned) AS p(i int, lane text, state text)
            WHERE p.i = ANY(new_items) AND p.lane IS NOT NULL AND p.state = 'queued'
        ) AS d
        ORDER BY d.lane COLLATE "C"
        ON CONFLICT (name) DO UPDATE SET name = excluded.name
        RETURNING *
    )
    SELECT array_agg(l.name ORDER BY l.name COLLATE "C"),
           array_agg(CASE WHEN l.last_finished_at IS NULL THEN now_
                          ELSE greatest(now_,
                                        l.last_finished_at + make_interval(secs => interval_s))
                     END ORDER BY l.name COLLATE "C")
    INTO idle_names, idle_slots
    FROM locked AS l
    WHERE l.head_run_id IS NULL;

    WITH created AS (
        INSERT INTO runs (job_id, job_name, script, command, lane, event_pk, event_id, state,
                          max_attempts, retry_backoff_s, timeout_s, enqueued_at, result,
                          feedback, finished_at, token, not_before)
        SELECT p.job_id, p.job_name, p.script, p.command, p.lane, e.pk, p.event_id, p.state,
               p.max_attempts, p.retry_backoff_s, p.timeout_s, p.enqueued_at, p.result,
               p.feedback, p.finished_at, p.token, p.not_before
        FROM jsonb_to_recordset(planned) AS p(n int, 
            i int, job_id int, job_name text, script text, command text, lane text,
            event_id text, state text, max_attempts int, retry_backoff_s double precision,
            timeout_s double precision, enqueued_at timestamptz, result smallint,
            feedback text, finished_at timestamptz, token int, not_before timestamptz)
        JOIN unnest(new_items, new_pks) AS e(i, pk) ON e.i = p.i
        ORDER BY p.n
        RETURNING *
    )
    SELECT array_agg(c::runs ORDER BY c.id) INTO made FROM created c;

    -- A run that could not be prepared is failed, with its one attempt.
    INSERT INTO attempts (run_id, attempt, finished_at, result, feedback)
    SELECT m.id, 1, now_, 2, m.feedback FROM unnest(made) AS m WHERE m.state = 'failed';

    RETURN QUERY SELECT 'notice'::text, NULL::int, m::runs, NULL::jsonb
                 FROM unnest(made) AS m ORDER BY m.id;
    -- A run without a lane is its own head, due at once.
    IF dispatch THEN
        RETURN QUERY SELECT * FROM ledger_dispatch(
            ARRAY(SELECT m.id FROM unnest(made) AS m
                  WHERE m.lane IS NULL AND m.state = 'queued' ORDER BY m.id), now_);
    ELSE
        RETURN QUERY SELECT 'request'::text, NULL::int, m::runs, NULL::jsonb
                     FROM unnest(made) AS m
                     WHERE m.lane IS NULL AND m.state = 'queued' ORDER BY m.id;
    END IF;
    IF idle_names IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ledger_advance(idle_names, idle_slots, now_, dispatch);
    END IF;
END
$$
"""

# `ledger.record_started` and `ledger.record_result` for a batch of executor reports.
# `started`: [{n, run_id, attempt, started_at, executor}]; `results`: [{n, run_id, attempt,
# result, feedback, started_at, finished_at, executor, output_tail}]; `n` is the arrival order
# (a result's `recorded` row gives its `n` as `item`).
RECORD = """
CREATE FUNCTION ledger_record(
    started jsonb, results jsonb, now_ timestamptz, interval_s double precision,
    dispatch boolean
) RETURNS TABLE (kind text, item int, run runs, payload jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    locked_lanes text[];
    ended runs[];
    ended_items int[];
    retried bigint[];
    slot_names text[];
    slot_times timestamptz[];
BEGIN
    SELECT array_agg(DISTINCT x.run_id) INTO ids FROM (
        SELECT s.run_id FROM jsonb_to_recordset(started) AS s(run_id bigint)
        UNION ALL
        SELECT r.run_id FROM jsonb_to_recordset(results) AS r(run_id bigint)
    ) AS x;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    -- The lanes of these runs, then the runs, in the lock order (a run's lane never
    -- changes, so it is read without locking the run).
    SELECT array_agg(l.name) INTO locked_lanes FROM (
        SELECT lanes.name FROM lanes
        WHERE lanes.name = ANY(ARRAY(SELECT runs.lane FROM runs WHERE runs.id = ANY(ids)))
        ORDER BY lanes.name COLLATE "C" FOR UPDATE
    ) AS l;
    PERFORM 1 FROM runs WHERE runs.id = ANY(ids) ORDER BY runs.id FOR UPDATE;

    -- Dispatched runs whose start is reported become running; the first report of an
    -- attempt counts, a repeat or a late one changes nothing.
    RETURN QUERY
    WITH r AS MATERIALIZED (  -- by key: a join on `runs` could pick the index on state
        SELECT * FROM runs WHERE runs.id = ANY(ids)
    ), first AS (
        SELECT DISTINCT ON (r.id) r.id, s.attempt, s.started_at, s.executor
        FROM jsonb_to_recordset(started) AS s(
            n int, run_id bigint, attempt int, started_at timestamptz, executor text)
        JOIN r ON r.id = s.run_id AND r.attempt = s.attempt AND r.state = 'dispatched'
        ORDER BY r.id, s.n
    ), tried AS (
        UPDATE attempts SET started_at = f.started_at, executor = f.executor
        FROM first f
        WHERE attempts.run_id = f.id AND attempts.attempt = f.attempt
    ), changed AS (
        UPDATE runs SET state = 'running', started_at = f.started_at, executor = f.executor
        FROM first f
        WHERE runs.id = f.id
        RETURNING runs.*
    )
    SELECT 'notice'::text, NULL::int, c::runs, NULL::jsonb FROM changed c ORDER BY c.id;

    -- The results of the runs' active attempts (the first of duplicates): record the
    -- attempt; retry the run (it stays its lane's head) or end it, and note its lane's
    -- last finish. A lane has one active run, so at most one result per lane.
    WITH r AS MATERIALIZED (
        SELECT * FROM runs WHERE runs.id = ANY(ids)
    ), v AS (
        SELECT DISTINCT ON (r.id)
            x.n AS item, r.id, r.attempt, r.lane,
            x.result = 2 AND r.attempt < r.max_attempts AS retry,
            least(x.finished_at, now_) AS finished,
            greatest(r.retry_backoff_s,
                     CASE WHEN r.lane IS NOT NULL THEN interval_s ELSE 0 END) AS wait,
            x.result, x.feedback, x.started_at, x.executor, x.output_tail
        FROM jsonb_to_recordset(results) AS x(
            n int, run_id bigint, attempt int, result smallint, feedback text,
            started_at timestamptz, finished_at timestamptz, executor text, output_tail text)
        JOIN r ON r.id = x.run_id AND r.attempt = x.attempt
                AND r.state IN ('dispatched', 'running')
        ORDER BY r.id, x.n
    ), tried AS (
        UPDATE attempts SET
            started_at = coalesce(attempts.started_at, v.started_at),
            finished_at = v.finished, result = v.result, feedback = v.feedback,
            executor = v.executor, output_tail = v.output_tail
        FROM v
        WHERE attempts.run_id = v.id AND attempts.attempt = v.attempt
    ), finished AS (
        UPDATE lanes SET last_finished_at = v.finished
        FROM v
        WHERE lanes.name = v.lane
    ), done AS (
        UPDATE runs AS t SET
            state = CASE WHEN v.retry THEN 'queued'
                         WHEN v.result = 3 THEN 'succeeded' ELSE 'failed' END,
            attempt = CASE WHEN v.retry THEN t.attempt + 1 ELSE t.attempt END,
            token = CASE WHEN v.retry THEN t.token + 1 ELSE t.token END,
            not_before = CASE WHEN v.retry THEN v.finished + make_interval(secs => v.wait)
                              ELSE t.not_before END,
            execute_now_at = CASE WHEN v.retry THEN NULL ELSE t.execute_now_at END,
            dispatched_at = CASE WHEN v.retry THEN NULL ELSE t.dispatched_at END,
            finished_at = CASE WHEN v.retry THEN t.finished_at ELSE v.finished END,
            started_at = coalesce(t.started_at, v.started_at),
            result = v.result, feedback = v.feedback, executor = v.executor,
            output_tail = v.output_tail
        FROM v
        WHERE t.id = v.id
        RETURNING t AS row_, t.id, t.lane, t.not_before, v.item, v.retry, v.finished
    )
    SELECT array_agg(d.row_ ORDER BY d.id), array_agg(d.item),
           array_agg(d.id ORDER BY d.id) FILTER (WHERE d.retry),
           array_agg(d.lane ORDER BY d.lane COLLATE "C")
               FILTER (WHERE NOT d.retry AND d.lane = ANY(locked_lanes)),
           array_agg(greatest(d.finished + make_interval(secs => interval_s), now_)
                     ORDER BY d.lane COLLATE "C")
               FILTER (WHERE NOT d.retry AND d.lane = ANY(locked_lanes))
    INTO ended, ended_items, retried, slot_names, slot_times
    FROM done d;

    IF ended IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT 'recorded'::text, n, NULL::runs, NULL::jsonb FROM unnest(ended_items) AS n;
    RETURN QUERY SELECT 'notice'::text, NULL::int, e::runs, NULL::jsonb
                 FROM unnest(ended) AS e ORDER BY e.id;
    -- A retry stays its lane's head: requested again after its backoff, or at once.
    IF dispatch THEN
        RETURN QUERY SELECT * FROM ledger_dispatch(
            ARRAY(SELECT e.id FROM unnest(ended) AS e
                  WHERE e.id = ANY(retried) AND e.not_before <= now_ ORDER BY e.id), now_);
    END IF;
    RETURN QUERY SELECT 'request'::text, NULL::int, e::runs, NULL::jsonb
                 FROM unnest(ended) AS e
                 WHERE e.id = ANY(retried) AND NOT (dispatch AND e.not_before <= now_)
                 ORDER BY e.id;
    IF slot_names IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ledger_advance(slot_names, slot_times, now_, dispatch);
    END IF;
END
$$
"""


def upgrade() -> None:
    for statement in (ADVANCE, DISPATCH, ENQUEUE, RECORD):
        op.execute(statement)


def downgrade() -> None:
    for name in ("ledger_record", "ledger_enqueue", "ledger_dispatch", "ledger_advance"):
        op.execute(f"DROP FUNCTION {name}")
