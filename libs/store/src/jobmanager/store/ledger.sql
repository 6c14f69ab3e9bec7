-- The ledger: every rule of a run's life (SPEC §5), each written once, here.
--
-- `jobmanager.store.ledger` only calls these functions; `jobmanager migrate` installs this
-- file as it is (`jobmanager.store.functions`), so it is the one source of their text.
--
-- States: queued -> dispatched -> running -> succeeded | failed, queued -> removed, and
-- failed (attempts left) -> queued. A lane row's `head_run_id` is the one run that owns the
-- lane: scheduled (queued, its request in the broker) or active (dispatched or running);
-- the lane's other queued runs wait here. Each scheduling of a run increments its `token`,
-- carried by its request, and the gate accepts only the current one.
--
-- Lock order, everywhere: lane rows first, in name order (byte order: COLLATE "C"), then run
-- rows in id order. Queued runs of a lane are changed only by whoever holds its lane's lock,
-- so picking a lane's next head needs no lock of its own.
--
-- Every function returns what the caller has to publish after commit or to know, one row per
-- item, as (kind, item, run, payload, note):
--   recorded  the input at index `item` changed the ledger (false for a duplicate);
--   notice    the run's new state, for the runs exchange;
--   request   the run is its lane's head, due at its `not_before`: for the gate;
--   work      the run was dispatched: for the executors, with its event as `payload`;
--   wait      the gate's request at `item` came early: due at the run's `not_before`;
--   stale     the gate's request at `item` is no longer wanted: `note` says why;
--   missing   an operator action's run does not exist: `note` says so;
--   conflict  an operator action the run's state does not allow: `note` says why;
--   paused, resumed  a job was paused or resumed: `payload` is {job_id, job, reason};
--   cancel    the executors must stop the run's attempt `payload.attempt`: `payload` is
--             {attempt, by, grace_s};
--   ignored   the result at `item` changed nothing: `note` says why (unknown_run,
--             future_attempt, already_recorded, not_running).
-- Parameters end in `_` where a bare name would be a column's too.

-- When a lane's next run may start: the interval after its last run finished.
CREATE FUNCTION ledger_slot(
    last_finished timestamptz, interval_s double precision, now_ timestamptz
) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN last_finished IS NULL THEN now_
                ELSE greatest(now_, last_finished + make_interval(secs => interval_s)) END
$$;

-- Lock these lanes in the lock order, creating those that do not exist yet; their rows.
-- (The no-op update is what locks an existing row.)
CREATE FUNCTION ledger_lock_lanes(names text[]) RETURNS SETOF lanes
LANGUAGE sql AS $$
    INSERT INTO lanes (name)
    SELECT d.name FROM (SELECT DISTINCT n AS name FROM unnest(names) AS n) AS d
    WHERE d.name IS NOT NULL
    ORDER BY d.name COLLATE "C"
    ON CONFLICT (name) DO UPDATE SET name = excluded.name
    RETURNING *
$$;

-- Why an operator action on a run is refused (`r` null: there is no run `run_id_`), or null
-- when it may go ahead: the run must be in the `wanted` state (`in the queue`: queued,
-- dispatched or running).
CREATE FUNCTION ledger_refusal(r runs, run_id_ bigint, wanted text, action text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN r.id IS NULL THEN format('run %s does not exist', run_id_)
        WHEN r.state = wanted THEN NULL
        WHEN wanted = 'in the queue' AND r.state IN ('queued', 'dispatched', 'running') THEN NULL
        WHEN wanted = 'in the queue' THEN
            format('run %s has already ended (%s) and cannot be %s', r.id, r.state, action)
        WHEN wanted <> 'queued' THEN
            format('run %s is %s: only a %s run can be %s', r.id, r.state, wanted, action)
        WHEN r.state IN ('dispatched', 'running') THEN
            format('run %s is already %s on an executor and cannot be %s; '
                   'it will end in Executed or Failed', r.id, r.state, action)
        ELSE format('run %s is %s, not queued, and cannot be %s', r.id, r.state, action)
    END
$$;

-- Lock operator actions' runs and their lanes (lanes first, each in the lock order) and
-- refuse the action for each run that is not in the `wanted` state: a `missing` or
-- `conflict` row with its index among `ids` as `item` and the reason as `note`.
CREATE FUNCTION ledger_refused(ids bigint[], wanted text, action text)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ledger_lock_lanes(ARRAY(SELECT r.lane FROM runs AS r WHERE r.id = ANY(ids)));
    PERFORM 1 FROM runs AS r WHERE r.id = ANY(ids) ORDER BY r.id FOR UPDATE;
    RETURN QUERY
    SELECT CASE WHEN r.id IS NULL THEN 'missing' ELSE 'conflict' END, (u.k - 1)::int, r,
           NULL::jsonb, ledger_refusal(r, u.id, wanted, action)
    FROM unnest(ids) WITH ORDINALITY AS u(id, k)
    LEFT JOIN runs AS r ON r.id = u.id
    WHERE ledger_refusal(r, u.id, wanted, action) IS NOT NULL;
END
$$;

-- Give queued runs a new token and due time: the request that carries them becomes the
-- only one the gate accepts. The caller holds their lanes.
CREATE FUNCTION ledger_schedule(ids bigint[], due timestamptz) RETURNS SETOF runs
LANGUAGE sql AS $$
    UPDATE runs SET token = runs.token + 1, not_before = due
    WHERE runs.id = ANY(ids)
    RETURNING runs.*
$$;

-- Dispatch queued runs that are due: they become dispatched, with their attempt opened; their
-- work, with the event. The caller holds their lanes and rows and knows each to be its
-- lane's head with the current token.
CREATE FUNCTION ledger_dispatch(ids bigint[], now_ timestamptz)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE sql AS $$
    WITH sent AS (
        UPDATE runs SET state = 'dispatched', dispatched_at = now_, held_at = NULL
        WHERE runs.id = ANY(ids)
        RETURNING runs.*
    ), opened AS (
        INSERT INTO attempts (run_id, attempt, dispatched_at)
        SELECT s.id, s.attempt, now_ FROM sent AS s
        ON CONFLICT (run_id, attempt) DO UPDATE SET dispatched_at = excluded.dispatched_at
    )
    SELECT 'work'::text, NULL::int, s::runs, e.payload, NULL::text
    FROM sent AS s LEFT JOIN events AS e ON e.id = s.event_pk
    ORDER BY s.id
$$;

-- Move these locked lanes on: each one's next queued run (an Execute Now first, then lane
-- order: enqueue order, a debounced run in the place of the run it superseded) becomes its
-- head with a new token, due at the lane's slot and not before its debounce allows (at once
-- for an Execute Now); a lane with nothing queued becomes idle. A paused job's runs are passed over: they
-- wait, and other jobs of the lane run. With `dispatch`, a head due now is dispatched at
-- once (it holds every check of the gate by construction), unless its job has a
-- concurrency limit: only the gate counts the job's slots.
CREATE FUNCTION ledger_advance(
    names text[], now_ timestamptz, interval_s double precision, dispatch boolean
) RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE sql AS $$
    WITH nxt AS (
        SELECT l.name, n.id, n.limited,
               CASE WHEN n.execute_now_at IS NOT NULL THEN now_
                    ELSE greatest(ledger_slot(l.last_finished_at, interval_s, now_),
                                  n.debounce_until) END AS due
        FROM lanes AS l
        LEFT JOIN LATERAL (
            SELECT r.id, r.execute_now_at, r.debounce_until,
                   j.max_concurrency IS NOT NULL AS limited
            FROM runs AS r LEFT JOIN jobs AS j ON j.id = r.job_id
            WHERE r.lane = l.name AND r.state = 'queued' AND j.paused IS NOT TRUE
            ORDER BY r.execute_now_at ASC NULLS LAST, coalesce(r.place, r.id)
            LIMIT 1
        ) AS n ON true
        WHERE l.name = ANY(names)
    ), heads AS (
        UPDATE lanes SET head_run_id = nxt.id FROM nxt WHERE lanes.name = nxt.name
    ), moved AS (
        UPDATE runs SET
            token = runs.token + 1,
            not_before = nxt.due,
            state = CASE WHEN dispatch AND nxt.due <= now_ AND NOT nxt.limited
                         THEN 'dispatched' ELSE runs.state END,
            dispatched_at = CASE WHEN dispatch AND nxt.due <= now_ AND NOT nxt.limited
                                 THEN now_ ELSE runs.dispatched_at END
        FROM nxt
        WHERE runs.id = nxt.id
        RETURNING runs.*
    ), opened AS (
        INSERT INTO attempts (run_id, attempt, dispatched_at)
        SELECT m.id, m.attempt, m.dispatched_at FROM moved AS m WHERE m.state = 'dispatched'
        ON CONFLICT (run_id, attempt) DO UPDATE SET dispatched_at = excluded.dispatched_at
    )
    SELECT CASE WHEN m.state = 'dispatched' THEN 'work' ELSE 'request' END::text, NULL::int,
           m::runs, e.payload, NULL::text
    FROM moved AS m LEFT JOIN events AS e ON e.id = m.event_pk AND m.state = 'dispatched'
    ORDER BY m.id
$$;

-- The current requests of the lanes these runs belong to (a run without a lane is its own
-- head): for a redelivered input whose work an earlier delivery committed but may never have
-- published. Re-sending is harmless: the gate accepts a token once.
CREATE FUNCTION ledger_resend(ids bigint[], now_ timestamptz)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE sql AS $$
    SELECT 'request'::text, NULL::int, r::runs, NULL::jsonb, NULL::text
    FROM runs AS r
    WHERE r.state = 'queued' AND r.id IN (
        SELECT x.id FROM runs AS x WHERE x.id = ANY(ids) AND x.lane IS NULL
        UNION
        SELECT l.head_run_id FROM lanes AS l
        WHERE l.name IN (SELECT x.lane FROM runs AS x WHERE x.id = ANY(ids))
    )
    ORDER BY r.id
$$;

-- Create runs for recorded events (an event's new runs, or a replay's). `planned`: [{n (the
-- order of creation), event_pk, event_id, job_id, job_name, script, command, lane,
-- timeout_s, max_attempts, retry_backoff_s, debounce_s, debounce_max_s, error, ended_by}].
-- An event makes at most one run of a job, ever (the unique (event_pk, job_id) key): a run
-- it already has is skipped. `recorded` rows name the planned runs (by `n`) that were
-- created. A run whose templates failed (`error`) is recorded failed, with its one attempt;
-- one that an event later in the same batch cancels (`ended_by`: that event) is recorded
-- removed. A new run of a debounced job (`debounce_s` > 0) supersedes its job's run still
-- waiting in its lane (queued, never dispatched): that one ends `superseded`, naming its
-- successor, which takes its place in the lane, its burst and its absorbed events (one
-- more), and starts no earlier than `debounce_s` after the newest event and no later than
-- `debounce_max_s` after the burst's first (when set). Lanes that were idle get their first
-- new run as head; a run without a lane is its own head, due now (unless its job is paused:
-- then it waits, unrequested, for the resume).
CREATE FUNCTION ledger_create(
    planned jsonb, now_ timestamptz, interval_s double precision, dispatch boolean
) RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    idle text[];
    made runs[];
    d record;
    w runs;
    gone runs;
    burst timestamptz;
BEGIN
    -- Lanes first, then the runs: ids handed out under the lane locks keep each lane's
    -- enqueue order equal to its commit order.
    SELECT array_agg(l.name) INTO idle
    FROM ledger_lock_lanes(ARRAY(
        SELECT p.lane FROM jsonb_to_recordset(planned) AS p(lane text, error text, ended_by bigint)
        WHERE p.error IS NULL AND p.ended_by IS NULL)) AS l
    WHERE l.head_run_id IS NULL;

    WITH created AS (
        INSERT INTO runs (job_id, job_name, script, command, lane, event_pk, event_id,
                          state, max_attempts, retry_backoff_s, timeout_s, enqueued_at,
                          result, feedback, finished_at, token, not_before, ended_by_event_pk)
        SELECT p.job_id, p.job_name, p.script, p.command, p.lane, p.event_pk, p.event_id,
               CASE WHEN p.error IS NOT NULL THEN 'failed'
                    WHEN p.ended_by IS NOT NULL THEN 'removed' ELSE 'queued' END,
               p.max_attempts, p.retry_backoff_s, p.timeout_s, now_,
               CASE WHEN p.error IS NOT NULL THEN 2 END,
               coalesce(p.error, ''),
               CASE WHEN p.error IS NOT NULL OR p.ended_by IS NOT NULL THEN now_ END,
               CASE WHEN p.lane IS NULL AND p.error IS NULL AND j.paused IS NOT TRUE
                    THEN 1 ELSE 0 END,
               CASE WHEN p.lane IS NULL AND p.error IS NULL AND j.paused IS NOT TRUE
                    THEN now_ END,
               p.ended_by
        FROM jsonb_to_recordset(planned) AS p(
            n int, event_pk bigint, event_id text, job_id int, job_name text, script text,
            command text, lane text, timeout_s double precision, max_attempts int,
            retry_backoff_s double precision, error text, ended_by bigint)
        LEFT JOIN jobs AS j ON j.id = p.job_id
        ORDER BY p.n
        ON CONFLICT (event_pk, job_id) DO NOTHING
        RETURNING *
    )
    SELECT array_agg(c::runs ORDER BY c.id) INTO made FROM created AS c;
    IF made IS NULL THEN
        RETURN;
    END IF;

    RETURN QUERY SELECT 'recorded'::text, q.n, NULL::runs, NULL::jsonb, NULL::text
                 FROM unnest(made) AS m
                 JOIN jsonb_to_recordset(planned) AS q(n int, event_pk bigint, job_id int)
                   ON q.event_pk = m.event_pk AND q.job_id IS NOT DISTINCT FROM m.job_id;

    INSERT INTO attempts (run_id, attempt, finished_at, result, feedback)
    SELECT m.id, 1, now_, 2, m.feedback FROM unnest(made) AS m WHERE m.state = 'failed';

    -- Debounce, run by run in creation order: a burst within the batch chains too. A batch
    -- without a debounced job skips it with one test of its JSON.
    IF jsonb_path_exists(planned, '$[*] ? (@.debounce_s > 0)') THEN
        FOR d IN
            SELECT m.id, m.lane, m.job_id, p.debounce_s, p.debounce_max_s
            FROM unnest(made) AS m
            JOIN jsonb_to_recordset(planned) AS p(
                event_pk bigint, job_id int, debounce_s double precision,
                debounce_max_s double precision)
              ON p.event_pk = m.event_pk AND p.job_id = m.job_id
            WHERE p.debounce_s > 0 AND m.state = 'queued' AND m.lane IS NOT NULL
            ORDER BY m.id
        LOOP
            w := NULL;
            SELECT * INTO w FROM runs AS r
            WHERE r.lane = d.lane AND r.job_id = d.job_id AND r.state = 'queued'
              AND r.attempt = 1 AND r.id < d.id
            ORDER BY r.id DESC LIMIT 1;
            burst := coalesce(w.burst_started_at, w.enqueued_at, now_);
            UPDATE runs SET
                burst_started_at = burst,
                debounce_until = least(now_ + make_interval(secs => d.debounce_s),
                                       burst + make_interval(secs => d.debounce_max_s)),
                place = coalesce(w.place, w.id),
                absorbed = coalesce(w.absorbed + 1, 0),
                execute_now_at = w.execute_now_at
            WHERE runs.id = d.id;
            IF w.id IS NOT NULL THEN
                UPDATE runs SET state = 'superseded', superseded_by = d.id, finished_at = now_,
                                token = runs.token + 1, not_before = NULL
                WHERE runs.id = w.id
                RETURNING * INTO gone;
                RETURN QUERY SELECT 'notice'::text, NULL::int, gone, NULL::jsonb, NULL::text;
                IF EXISTS (SELECT 1 FROM lanes AS l
                           WHERE l.name = d.lane AND l.head_run_id = w.id) THEN
                    -- Its lane is free again: it gets its next head below.
                    UPDATE lanes SET head_run_id = NULL WHERE lanes.name = d.lane;
                    idle := array_append(idle, d.lane);
                END IF;
            END IF;
        END LOOP;
    END IF;

    RETURN QUERY SELECT 'notice'::text, NULL::int, m::runs, NULL::jsonb, NULL::text
                 FROM unnest(made) AS m ORDER BY m.id;
    RETURN QUERY SELECT * FROM ledger_dispatch(
        ARRAY(SELECT m.id FROM unnest(made) AS m LEFT JOIN jobs AS j ON j.id = m.job_id
              WHERE dispatch AND m.lane IS NULL AND m.state = 'queued' AND m.token > 0
                AND j.max_concurrency IS NULL
              ORDER BY m.id), now_);
    RETURN QUERY SELECT 'request'::text, NULL::int, m::runs, NULL::jsonb, NULL::text
                 FROM unnest(made) AS m LEFT JOIN jobs AS j ON j.id = m.job_id
                 WHERE m.lane IS NULL AND m.state = 'queued' AND m.token > 0
                   AND NOT (dispatch AND j.max_concurrency IS NULL)
                 ORDER BY m.id;
    IF idle IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ledger_advance(idle, now_, interval_s, dispatch);
    END IF;
END
$$;

-- Cancel on a later event (a job's `cancel_on`). `cancels`: [{event_pk, event_id,
-- event_type, job_id, lane, running}], one per matching entry of a new event. The job's
-- queued runs in that lane are removed, each naming the event (the batch's first, if
-- several) as `ended_by_event_pk`; with `running`, its run dispatched or running there (the
-- lane's head) is cancelled as an operator's cancel is, by "event ID (TYPE)". The caller
-- holds these lanes.
CREATE FUNCTION ledger_cancel_on(
    cancels jsonb, now_ timestamptz, interval_s double precision, dispatch boolean
) RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    freed text[];
    c record;
BEGIN
    SELECT array_agg(DISTINCT l.name) INTO freed
    FROM jsonb_to_recordset(cancels) AS x(job_id int, lane text)
    JOIN lanes AS l ON l.name = x.lane
    JOIN runs AS r ON r.id = l.head_run_id AND r.job_id = x.job_id
    WHERE r.state = 'queued';
    RETURN QUERY
    WITH ended AS (
        SELECT DISTINCT ON (r.id) r.id, x.event_pk
        FROM jsonb_to_recordset(cancels) AS x(event_pk bigint, job_id int, lane text)
        JOIN runs AS r ON r.lane = x.lane AND r.job_id = x.job_id AND r.state = 'queued'
        ORDER BY r.id, x.event_pk
    ), gone AS (
        UPDATE runs SET state = 'removed', finished_at = now_, token = runs.token + 1,
                        ended_by_event_pk = e.event_pk
        FROM ended AS e
        WHERE runs.id = e.id
        RETURNING runs.*
    )
    SELECT 'notice'::text, NULL::int, g::runs, NULL::jsonb, NULL::text FROM gone AS g
    ORDER BY g.id;
    IF freed IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ledger_advance(freed, now_, interval_s, dispatch);
    END IF;
    FOR c IN
        SELECT DISTINCT ON (r.id) r.id, x.event_pk, x.event_id, x.event_type
        FROM jsonb_to_recordset(cancels) AS x(
            event_pk bigint, event_id text, event_type text, job_id int, lane text,
            running boolean)
        JOIN lanes AS l ON l.name = x.lane
        JOIN runs AS r ON r.id = l.head_run_id AND r.job_id = x.job_id
        WHERE x.running AND r.state IN ('dispatched', 'running')
        ORDER BY r.id, x.event_pk
    LOOP
        UPDATE runs SET ended_by_event_pk = c.event_pk WHERE runs.id = c.id;
        RETURN QUERY
        SELECT * FROM ledger_cancel(c.id, format('event %s (%s)', c.event_id, c.event_type),
                                    now_, interval_s) AS k
        WHERE k.kind IN ('notice', 'request', 'work', 'cancel');
    END LOOP;
END
$$;

-- Enqueue: record new events and create their runs. `batch`: the events, [{i, source,
-- event_id, event_type, occurred_at, payload, matched, redelivered}]; `planned`: their runs,
-- [{n (the order of creation), i (the event's index), job_id, job_name, script, command,
-- lane, timeout_s, max_attempts, retry_backoff_s, debounce_s, debounce_max_s, error}];
-- `cancels`: what they cancel, [{i, job_id, lane, running}] (`ledger_cancel_on`). The
-- unique (source, event_id) key makes a duplicate create nothing (a redelivered one has its
-- runs' lanes' heads re-sent). The runs already there when an event cancels them are ended
-- first; a run of the batch is ended by an event after its own (it is created removed).
CREATE FUNCTION ledger_enqueue(
    batch jsonb, planned jsonb, cancels jsonb, now_ timestamptz, interval_s double precision,
    dispatch boolean
) RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    new_items int[];
    new_pks bigint[];
    again bigint[];
    ending jsonb;
    runs_ jsonb;
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

    RETURN QUERY SELECT 'recorded'::text, n, NULL::runs, NULL::jsonb, NULL::text
                 FROM unnest(new_items) AS n;

    IF jsonb_path_exists(batch, '$[*] ? (@.redelivered == true)') THEN
        SELECT array_agg(r.id) INTO again
        FROM jsonb_to_recordset(batch) AS g(i int, source text, event_id text, redelivered boolean)
        JOIN events AS e ON e.source = g.source AND e.event_id = g.event_id
        JOIN runs AS r ON r.event_pk = e.id
        WHERE g.redelivered AND g.i <> ALL(coalesce(new_items, '{}'));
    END IF;

    IF new_items IS NOT NULL THEN
        IF jsonb_array_length(cancels) > 0 THEN
            SELECT jsonb_agg(jsonb_build_object(
                       'i', c.i, 'event_pk', e.pk, 'event_id', g.event_id,
                       'event_type', g.event_type, 'job_id', c.job_id, 'lane', c.lane,
                       'running', c.running) ORDER BY c.i)
            INTO ending
            FROM jsonb_to_recordset(cancels) AS c(i int, job_id int, lane text, running boolean)
            JOIN unnest(new_items, new_pks) AS e(i, pk) ON e.i = c.i
            JOIN jsonb_to_recordset(batch) AS g(i int, event_id text, event_type text)
              ON g.i = c.i;
        END IF;
        IF ending IS NOT NULL THEN
            -- Every lane the batch touches, locked at once in the lock order: the lanes of
            -- its new runs and those its cancels end runs in (only lanes that exist have
            -- any). Without cancels, `ledger_create` locks the new runs' lanes itself.
            PERFORM 1 FROM ledger_lock_lanes(ARRAY(
                SELECT p.lane FROM jsonb_to_recordset(planned) AS p(i int, lane text, error text)
                WHERE p.i = ANY(new_items) AND p.error IS NULL
                UNION
                SELECT l.name FROM lanes AS l
                WHERE l.name IN (SELECT x.lane FROM jsonb_to_recordset(ending) AS x(lane text))));
            RETURN QUERY SELECT * FROM ledger_cancel_on(ending, now_, interval_s, dispatch);
        END IF;
        SELECT jsonb_agg(p.x || jsonb_build_object(
                   'event_pk', e.pk, 'event_id', g.event_id,
                   'ended_by', (SELECT x.event_pk
                                FROM jsonb_to_recordset(ending) AS x(
                                    i int, event_pk bigint, job_id int, lane text)
                                WHERE x.i > e.i AND x.job_id = (p.x->>'job_id')::int
                                  AND x.lane = p.x->>'lane'
                                ORDER BY x.i LIMIT 1)))
        INTO runs_
        FROM jsonb_array_elements(planned) AS p(x)
        JOIN unnest(new_items, new_pks) AS e(i, pk) ON e.i = (p.x->>'i')::int
        JOIN jsonb_to_recordset(batch) AS g(i int, event_id text) ON g.i = e.i;
        IF runs_ IS NOT NULL THEN
            RETURN QUERY SELECT * FROM ledger_create(runs_, now_, interval_s, dispatch) AS k
                         WHERE k.kind <> 'recorded';
        END IF;
    END IF;
    IF again IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ledger_resend(again, now_);
    END IF;
END
$$;

-- The gate: decide on requests that came due, one decision per request. `requests`: [{n,
-- run_id, attempt, token, lane}]. A request is dispatched only if its run still exists, is
-- queued, has the request's attempt and token, is its lane's head and is due; of the same
-- request twice, the first is dispatched. A paused job's run is not: it stops being its
-- lane's head (its lane moves on to other jobs' runs) and waits for the resume. A run of a
-- job with a concurrency limit is dispatched only into a free slot of the job, the oldest
-- first; otherwise it is held: it stays its lane's head, and the end of one of the job's
-- runs requests it again (`ledger_record`).
CREATE FUNCTION ledger_gate(requests jsonb, now_ timestamptz, interval_s double precision)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    items int[];
    kinds text[];
    notes text[];
    ids bigint[];
    released text[];
BEGIN
    SELECT array_agg(q.run_id) INTO ids FROM jsonb_to_recordset(requests) AS q(run_id bigint);
    PERFORM 1 FROM lanes AS l
    WHERE l.name = ANY(ARRAY(SELECT q.lane FROM jsonb_to_recordset(requests) AS q(lane text)))
    ORDER BY l.name COLLATE "C" FOR UPDATE;
    PERFORM 1 FROM runs AS r WHERE r.id = ANY(ids) ORDER BY r.id FOR UPDATE;
    PERFORM 1 FROM jobs AS j
    WHERE j.max_concurrency IS NOT NULL
      AND j.id = ANY(ARRAY(SELECT r.job_id FROM runs AS r WHERE r.id = ANY(ids)))
    ORDER BY j.id FOR UPDATE;

    WITH q AS (
        SELECT * FROM jsonb_to_recordset(requests) AS q(
            n int, run_id bigint, attempt int, token int, lane text)
    ), checked AS (
        SELECT q.n, q.run_id, r.job_id, j.max_concurrency AS cap,
            CASE
                WHEN r.id IS NULL THEN 'the run no longer exists'
                WHEN r.state <> 'queued' THEN format('the run is %s', r.state)
                WHEN r.attempt <> q.attempt OR r.token <> q.token THEN 'the run was rescheduled'
                WHEN q.lane IS NOT NULL AND l.head_run_id IS DISTINCT FROM r.id
                    THEN 'the run is not its lane''s head'
            END AS stale,
            j.paused IS TRUE AS paused,
            r.not_before IS NOT NULL AND r.not_before > now_ AS early
        FROM q
        LEFT JOIN runs AS r ON r.id = q.run_id
        LEFT JOIN lanes AS l ON l.name = q.lane
        LEFT JOIN jobs AS j ON j.id = r.job_id
    ), ranked AS (
        SELECT c.*,
               min(c.n) FILTER (WHERE c.stale IS NULL AND NOT c.paused AND NOT c.early)
                   OVER (PARTITION BY c.run_id) AS first
        FROM checked AS c
    ), decided AS (
        SELECT x.*,
            CASE WHEN x.first < x.n OR x.stale IS NOT NULL THEN 'stale'
                 WHEN x.paused THEN 'paused'
                 WHEN x.early THEN 'wait' ELSE 'work' END AS kind
        FROM ranked AS x
    ), slotted AS (
        SELECT d.*,
            d.kind = 'work' AND d.cap IS NOT NULL AND (
                row_number() OVER (PARTITION BY d.job_id, d.kind = 'work' ORDER BY d.run_id)
                    > d.cap - (SELECT count(*) FROM runs AS a
                               WHERE a.job_id = d.job_id AND a.state IN ('dispatched', 'running'))
                OR EXISTS (SELECT 1 FROM runs AS h  -- an older held run of the job goes first
                           WHERE h.job_id = d.job_id AND h.state = 'queued'
                             AND h.held_at IS NOT NULL AND h.id < d.run_id
                             AND h.id <> ALL(ids))
            ) AS held
        FROM decided AS d
    )
    SELECT array_agg(k.n ORDER BY k.n), array_agg(k.kind ORDER BY k.n),
           array_agg(k.note ORDER BY k.n), array_agg(k.run_id ORDER BY k.n)
    INTO items, kinds, notes, ids
    FROM (
        SELECT x.n, x.run_id,
            CASE WHEN x.held THEN 'held' ELSE x.kind END AS kind,
            CASE WHEN x.first < x.n THEN 'the run is dispatched'
                 WHEN x.kind = 'paused' THEN 'the job is paused'
                 WHEN x.held THEN 'held by the job''s concurrency limit'
                 ELSE x.stale END AS note
        FROM slotted AS x
    ) AS k;

    -- A paused job's run steps aside: its request void, its lane on to the next run.
    SELECT array_agg(DISTINCT r.lane) INTO released
    FROM runs AS r JOIN lanes AS l ON l.name = r.lane AND l.head_run_id = r.id
    WHERE r.id = ANY(ARRAY(SELECT d.run_id FROM unnest(kinds, ids) AS d(kind, run_id)
                           WHERE d.kind = 'paused'));
    UPDATE runs SET not_before = NULL, token = runs.token + 1
    WHERE runs.id = ANY(ARRAY(SELECT d.run_id FROM unnest(kinds, ids) AS d(kind, run_id)
                              WHERE d.kind = 'paused'));
    UPDATE runs SET held_at = coalesce(runs.held_at, now_)
    WHERE runs.id = ANY(ARRAY(SELECT d.run_id FROM unnest(kinds, ids) AS d(kind, run_id)
                              WHERE d.kind = 'held'));
    IF released IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ledger_advance(released, now_, interval_s, false);
    END IF;

    RETURN QUERY
    SELECT CASE WHEN d.kind = 'wait' THEN 'wait' ELSE 'stale' END, d.n, r, NULL::jsonb, d.note
    FROM unnest(items, kinds, notes, ids) AS d(n, kind, note, run_id)
    LEFT JOIN runs AS r ON r.id = d.run_id
    WHERE d.kind <> 'work';
    RETURN QUERY
    SELECT 'work'::text, d.n, w.run, w.payload, NULL::text
    FROM ledger_dispatch(
        ARRAY(SELECT d.run_id FROM unnest(kinds, ids) AS d(kind, run_id) WHERE d.kind = 'work'),
        now_) AS w
    JOIN unnest(items, kinds, ids) AS d(n, kind, run_id)
        ON d.kind = 'work' AND d.run_id = (w.run).id;
END
$$;

-- What executors reported, starts then results. `started`: [{n, run_id, attempt, started_at,
-- executor}]; `results`: [{n, run_id, attempt, result, feedback, started_at, finished_at,
-- executor, output_tail, final, redelivered}], `n` being the arrival order (a result's
-- `recorded` row gives its `n` as `item`). The first report of a run's active attempt
-- counts; any other changes nothing. A start makes a dispatched run running. A result ends
-- the attempt: a failure with attempts left (and not `final`: a request the broker gave up
-- on) puts the run back to queued as its lane's head, due after max(its backoff, the
-- interval); anything else ends the run and moves its lane on. A result without a start
-- time or an executor (one recorded for a lost executor) takes the run's. A job's final
-- failures in a row are counted (any success resets the count) and, at its
-- `pause_after_failures`, pause the job (the circuit breaker, audited as `breaker`). A run
-- of a job with a concurrency limit that leaves its slot has the job's oldest held runs
-- requested again, as many as there are free slots.
CREATE FUNCTION ledger_record(
    started jsonb, results jsonb, now_ timestamptz, interval_s double precision,
    dispatch boolean
) RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    locked_lanes text[];
    ended runs[];
    ended_items int[];
    retried bigint[];
    advancing text[];
    again bigint[];
    flow boolean;
BEGIN
    SELECT array_agg(DISTINCT x.run_id) INTO ids FROM (
        SELECT s.run_id FROM jsonb_to_recordset(started) AS s(run_id bigint)
        UNION ALL
        SELECT r.run_id FROM jsonb_to_recordset(results) AS r(run_id bigint)
    ) AS x;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(l.name) INTO locked_lanes FROM (
        SELECT lanes.name FROM lanes
        WHERE lanes.name = ANY(ARRAY(SELECT runs.lane FROM runs WHERE runs.id = ANY(ids)))
        ORDER BY lanes.name COLLATE "C" FOR UPDATE
    ) AS l;
    PERFORM 1 FROM runs WHERE runs.id = ANY(ids) ORDER BY runs.id FOR UPDATE;

    -- An attempt ended by a cancel (`ledger_cancel`): a start reported for it has the cancel
    -- sent again (its executor may have missed the broadcast), and a result whose Feedback
    -- extends the cancel's ("cancelled by ...; how the script ended") completes it once.
    RETURN QUERY
    SELECT 'cancel'::text, NULL::int, c::runs,
           jsonb_build_object('attempt', a.attempt, 'by', a.cancelled_by,
                              'grace_s', coalesce(j.cancel_grace_s, 10)), NULL::text
    FROM (SELECT DISTINCT s.run_id, s.attempt
          FROM jsonb_to_recordset(started) AS s(run_id bigint, attempt int)) AS s
    JOIN attempts AS a ON a.run_id = s.run_id AND a.attempt = s.attempt
    JOIN runs AS c ON c.id = s.run_id
    LEFT JOIN jobs AS j ON j.id = c.job_id
    WHERE a.cancelled_by IS NOT NULL;
    -- Only an executor's account of a cancel starts so: one cheap look spares the others.
    IF jsonb_path_exists(results, '$[*] ? (@.feedback starts with "cancelled by ")') THEN
        WITH told AS (
            UPDATE attempts AS a
            SET feedback = x.feedback, output_tail = coalesce(x.output_tail, '')
            FROM jsonb_to_recordset(results) AS x(
                run_id bigint, attempt int, feedback text, output_tail text)
            WHERE a.run_id = x.run_id AND a.attempt = x.attempt AND a.cancelled_by IS NOT NULL
              AND a.feedback = format('cancelled by %s', a.cancelled_by)
              AND length(x.feedback) > length(a.feedback)
              AND left(x.feedback, length(a.feedback)) = a.feedback
            RETURNING a.run_id, a.attempt, a.feedback, a.output_tail
        )
        UPDATE runs SET feedback = t.feedback, output_tail = t.output_tail
        FROM told AS t
        WHERE runs.id = t.run_id AND runs.attempt = t.attempt AND runs.state = 'failed';
    END IF;

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
        FROM first AS f
        WHERE attempts.run_id = f.id AND attempts.attempt = f.attempt
    ), changed AS (
        UPDATE runs SET state = 'running', started_at = f.started_at, executor = f.executor
        FROM first AS f
        WHERE runs.id = f.id
        RETURNING runs.*
    )
    SELECT 'notice'::text, NULL::int, c::runs, NULL::jsonb, NULL::text
    FROM changed AS c ORDER BY c.id;

    -- A lane has one active run, so at most one result per lane changes anything.
    WITH r AS MATERIALIZED (
        SELECT * FROM runs WHERE runs.id = ANY(ids)
    ), v AS (
        SELECT DISTINCT ON (r.id)
            x.n AS item, r.id, r.attempt, r.lane,
            x.result = 2 AND r.attempt < r.max_attempts AND NOT coalesce(x.final, false)
                AS retry,
            least(coalesce(x.finished_at, now_), now_) AS finished,
            greatest(r.retry_backoff_s,
                     CASE WHEN r.lane IS NOT NULL THEN interval_s ELSE 0 END) AS wait,
            x.result, coalesce(x.feedback, '') AS feedback,
            coalesce(x.output_tail, '') AS output_tail,
            coalesce(x.started_at, r.started_at, r.dispatched_at, now_) AS started_at,
            coalesce(x.executor, r.executor, 'unknown') AS executor
        FROM jsonb_to_recordset(results) AS x(
            n int, run_id bigint, attempt int, result smallint, feedback text,
            started_at timestamptz, finished_at timestamptz, executor text, output_tail text,
            final boolean)
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
        RETURNING t AS row_, t.id, t.lane, v.item, v.retry
    )
    SELECT array_agg(d.row_ ORDER BY d.id), array_agg(d.item),
           array_agg(d.id ORDER BY d.id) FILTER (WHERE d.retry),
           array_agg(d.lane) FILTER (WHERE NOT d.retry AND d.lane = ANY(locked_lanes))
    INTO ended, ended_items, retried, advancing
    FROM done AS d;

    IF jsonb_path_exists(results, '$[*] ? (@.redelivered == true)') THEN
        SELECT array_agg(x.run_id) INTO again
        FROM jsonb_to_recordset(results) AS x(n int, run_id bigint, redelivered boolean)
        WHERE x.redelivered AND x.n <> ALL(coalesce(ended_items, '{}'));
    END IF;

    IF ended IS NOT NULL THEN
        RETURN QUERY SELECT 'recorded'::text, n, NULL::runs, NULL::jsonb, NULL::text
                     FROM unnest(ended_items) AS n;
        RETURN QUERY SELECT 'notice'::text, NULL::int, e::runs, NULL::jsonb, NULL::text
                     FROM unnest(ended) AS e ORDER BY e.id;
        -- Flow control first, for the jobs that use it (one cheap look for the others): a
        -- job the breaker pauses now must not have its next run dispatched below.
        flow := EXISTS (
            SELECT 1 FROM jobs AS j
            WHERE j.id = ANY(ARRAY(SELECT e.job_id FROM unnest(ended) AS e))
              AND (j.pause_after_failures IS NOT NULL OR j.max_concurrency IS NOT NULL));
        IF flow THEN
            -- The circuit breaker, under the jobs' locks (after the lanes' and the runs').
            PERFORM 1 FROM jobs AS j
            WHERE j.pause_after_failures IS NOT NULL
              AND j.id = ANY(ARRAY(SELECT e.job_id FROM unnest(ended) AS e
                                   WHERE e.state IN ('succeeded', 'failed')))
            ORDER BY j.id FOR UPDATE;
            RETURN QUERY
            WITH finals AS (
                SELECT e.job_id, e.id, e.state, e.feedback FROM unnest(ended) AS e
                WHERE e.state IN ('succeeded', 'failed') AND e.job_id IS NOT NULL
            ), per_job AS (
                SELECT f.job_id,
                       max(f.id) FILTER (WHERE f.state = 'succeeded') AS last_ok,
                       (array_agg(f.feedback ORDER BY f.id DESC)
                           FILTER (WHERE f.state = 'failed'))[1] AS last_feedback
                FROM finals AS f GROUP BY f.job_id
            ), counts AS (
                SELECT p.job_id, p.last_feedback, j.pause_after_failures, j.paused,
                       CASE WHEN p.last_ok IS NOT NULL THEN 0 ELSE j.failure_streak END
                       + (SELECT count(*) FROM finals AS f
                          WHERE f.job_id = p.job_id AND f.state = 'failed'
                            AND f.id > coalesce(p.last_ok, 0))::int AS streak
                FROM per_job AS p JOIN jobs AS j ON j.id = p.job_id
                WHERE j.pause_after_failures IS NOT NULL
            ), streaks AS (
                SELECT c.*, coalesce(NOT c.paused AND c.streak >= c.pause_after_failures, false)
                                AS trip
                FROM counts AS c
            ), counted AS (
                UPDATE jobs AS j SET
                    failure_streak = s.streak,
                    paused = j.paused OR s.trip,
                    paused_at = CASE WHEN s.trip THEN now_ ELSE j.paused_at END,
                    paused_reason = CASE WHEN s.trip
                        THEN format('paused by the circuit breaker after %s failures in a row; '
                                    'the last: %s', s.streak, left(s.last_feedback, 300))
                        ELSE j.paused_reason END
                FROM streaks AS s
                WHERE j.id = s.job_id
                RETURNING j.id, j.name, j.paused_reason, s.trip
            ), audited AS (
                INSERT INTO audit (actor, action, target, outcome, detail)
                SELECT 'breaker', 'jobs.pause', 'job:' || c.id, 'ok',
                       jsonb_build_object('reason', c.paused_reason)
                FROM counted AS c WHERE c.trip
            )
            SELECT 'paused'::text, NULL::int, NULL::runs,
                   jsonb_build_object('job_id', c.id, 'job', c.name, 'reason', c.paused_reason),
                   c.paused_reason
            FROM counted AS c WHERE c.trip;
        END IF;

        -- A retry stays its lane's head: requested again after its wait, or dispatched now.
        RETURN QUERY SELECT * FROM ledger_dispatch(
            ARRAY(SELECT e.id FROM unnest(ended) AS e LEFT JOIN jobs AS j ON j.id = e.job_id
                  WHERE dispatch AND e.id = ANY(retried) AND e.not_before <= now_
                    AND j.max_concurrency IS NULL AND j.paused IS NOT TRUE
                  ORDER BY e.id), now_);
        RETURN QUERY SELECT 'request'::text, NULL::int, e::runs, NULL::jsonb, NULL::text
                     FROM unnest(ended) AS e LEFT JOIN jobs AS j ON j.id = e.job_id
                     WHERE e.id = ANY(retried)
                       AND NOT (dispatch AND e.not_before <= now_
                                AND j.max_concurrency IS NULL AND j.paused IS NOT TRUE)
                     ORDER BY e.id;
        IF advancing IS NOT NULL THEN
            RETURN QUERY SELECT * FROM ledger_advance(advancing, now_, interval_s, dispatch);
        END IF;

        IF flow THEN
            -- Slots freed: the oldest held runs of those jobs are requested again.
            RETURN QUERY
            SELECT 'request'::text, NULL::int, h::runs, NULL::jsonb, NULL::text
            FROM jobs AS j
            CROSS JOIN LATERAL (
                SELECT h.* FROM runs AS h
                WHERE h.job_id = j.id AND h.state = 'queued' AND h.held_at IS NOT NULL
                ORDER BY h.id
                LIMIT greatest(0, j.max_concurrency - (
                    SELECT count(*) FROM runs AS a
                    WHERE a.job_id = j.id AND a.state IN ('dispatched', 'running')))
            ) AS h
            WHERE j.max_concurrency IS NOT NULL
              AND j.id = ANY(ARRAY(SELECT e.job_id FROM unnest(ended) AS e));
        END IF;
    END IF;
    IF again IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ledger_resend(again, now_);
    END IF;

    -- The results that changed nothing, each with its reason (the caller counts and logs
    -- them): looked up only when some result of the batch was not recorded.
    IF coalesce(cardinality(ended_items), 0) < jsonb_array_length(results) THEN
        RETURN QUERY
        SELECT 'ignored'::text, x.n, NULL::runs, NULL::jsonb,
               CASE WHEN r.id IS NULL THEN 'unknown_run'
                    WHEN x.attempt > r.attempt THEN 'future_attempt'
                    WHEN a.result IS NOT NULL THEN 'already_recorded'
                    ELSE 'not_running' END
        FROM jsonb_to_recordset(results) AS x(n int, run_id bigint, attempt int)
        LEFT JOIN runs AS r ON r.id = x.run_id
        LEFT JOIN attempts AS a ON a.run_id = x.run_id AND a.attempt = x.attempt
        WHERE x.n <> ALL(coalesce(ended_items, '{}'));
    END IF;
END
$$;

-- The reaper. A run still running its timeout plus `running_grace_s` after it started lost
-- its executor without the broker noticing (the executor would have killed the script and
-- reported, and a dead executor's request would have been handed on): the attempt fails
-- ("executor lost") and retries like any failure. A run dispatched for longer than
-- `dispatch_grace_s` while the work queue holds no ready message (`work_queue_idle`) lost
-- its work request between a commit and its publish: its work is returned to be sent again,
-- with the same token.
CREATE FUNCTION ledger_reap(
    now_ timestamptz, interval_s double precision, running_grace_s double precision,
    dispatch_grace_s double precision, work_queue_idle boolean, lim int
) RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    lost jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'n', s.n, 'run_id', s.id, 'attempt', s.attempt, 'result', 2,
        'feedback', format('executor lost: no result %s s (the timeout) + %s s after the '
                           'script started on %s', s.timeout_s, running_grace_s, s.executor)
    )), '[]') INTO lost
    FROM (
        SELECT (row_number() OVER (ORDER BY r.id))::int - 1 AS n, r.*
        FROM runs AS r
        WHERE r.state = 'running'
          AND r.started_at + make_interval(secs => r.timeout_s + running_grace_s) < now_
        ORDER BY r.id LIMIT lim
    ) AS s;
    RETURN QUERY SELECT * FROM ledger_record('[]', lost, now_, interval_s, false) AS d
                 WHERE d.kind <> 'recorded';
    IF work_queue_idle THEN
        RETURN QUERY
        SELECT 'work'::text, NULL::int, r::runs, e.payload, NULL::text
        FROM runs AS r LEFT JOIN events AS e ON e.id = r.event_pk
        WHERE r.state = 'dispatched'
          AND r.dispatched_at < now_ - make_interval(secs => dispatch_grace_s)
        ORDER BY r.id LIMIT lim;
    END IF;
END
$$;

-- Cancels no executor has given its account of yet (`ledger_cancel`'s Feedback not
-- completed), `quiet_s` after them: sent again, for a broadcast lost after its commit or
-- missed by the executor that holds the attempt (a script running on is stopped, a request
-- still in the work queue is dropped when it arrives). Until the account comes, or the
-- attempt's timeout and grace have passed since the cancel: by then its executor's own
-- timeout has ended the script. Sending a cancel again is harmless: an executor that does
-- not run the attempt only remembers it.
CREATE FUNCTION ledger_unanswered_cancels(now_ timestamptz, quiet_s double precision, lim int)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE sql AS $$
    SELECT 'cancel'::text, NULL::int, r::runs,
           jsonb_build_object('attempt', a.attempt, 'by', a.cancelled_by,
                              'grace_s', coalesce(j.cancel_grace_s, 10)), NULL::text
    FROM attempts AS a
    JOIN runs AS r ON r.id = a.run_id
    LEFT JOIN jobs AS j ON j.id = r.job_id
    WHERE a.cancelled_by IS NOT NULL
      AND a.finished_at < now_ - make_interval(secs => quiet_s)
      AND a.finished_at > now_ - make_interval(secs => r.timeout_s + coalesce(j.cancel_grace_s, 10))
      AND a.feedback = format('cancelled by %s', a.cancelled_by)
    ORDER BY a.finished_at, a.run_id
    LIMIT lim
$$;

-- The lane check: idle lanes with queued runs get a head, and heads overdue by more than
-- `grace_s` get a new token and request, due now (a publish lost between a commit and a
-- crash; the old request, should it still arrive, is then stale). At most `lim` of each.
CREATE FUNCTION ledger_check_lanes(
    now_ timestamptz, interval_s double precision, grace_s double precision, lim int
) RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    idle text[];
    overdue bigint[];
    late timestamptz := now_ - make_interval(secs => grace_s);
BEGIN
    SELECT array_agg(x.name) INTO idle FROM (
        SELECT l.name FROM lanes AS l
        WHERE l.head_run_id IS NULL
          AND EXISTS (SELECT 1 FROM runs AS w LEFT JOIN jobs AS j ON j.id = w.job_id
                      WHERE w.lane = l.name AND w.state = 'queued' AND j.paused IS NOT TRUE)
        LIMIT lim
    ) AS x;
    SELECT array_agg(x.id) INTO overdue FROM (
        SELECT r.id FROM runs AS r
        WHERE r.state = 'queued' AND r.not_before < late
          -- A run held by its job's full concurrency limit is not late: it waits for a slot.
          AND NOT (r.held_at IS NOT NULL AND EXISTS (
              SELECT 1 FROM jobs AS j WHERE j.id = r.job_id AND j.max_concurrency <= (
                  SELECT count(*) FROM runs AS a
                  WHERE a.job_id = j.id AND a.state IN ('dispatched', 'running'))))
        ORDER BY r.not_before LIMIT lim
    ) AS x;
    IF idle IS NULL AND overdue IS NULL THEN
        RETURN;
    END IF;
    -- All the lanes, then the runs, each in the lock order; then decide again on what
    -- committed meanwhile (each statement sees it).
    PERFORM 1 FROM lanes AS l
    WHERE l.name = ANY(idle)
       OR l.name = ANY(ARRAY(SELECT r.lane FROM runs AS r WHERE r.id = ANY(overdue)))
    ORDER BY l.name COLLATE "C" FOR UPDATE;
    PERFORM 1 FROM runs AS r WHERE r.id = ANY(overdue) ORDER BY r.id FOR UPDATE;

    RETURN QUERY SELECT * FROM ledger_advance(
        ARRAY(SELECT l.name FROM lanes AS l WHERE l.name = ANY(idle) AND l.head_run_id IS NULL),
        now_, interval_s, false);
    RETURN QUERY
    SELECT 'request'::text, NULL::int, s::runs, NULL::jsonb, NULL::text
    FROM ledger_schedule(ARRAY(
        SELECT r.id FROM runs AS r LEFT JOIN lanes AS l ON l.name = r.lane
        WHERE r.id = ANY(overdue) AND r.state = 'queued' AND r.not_before < late
          AND (r.lane IS NULL OR l.head_run_id = r.id)), now_) AS s
    ORDER BY s.id;
END
$$;

-- A changed interval applies to each lane's next dispatch: the lanes' waiting heads are
-- rescheduled at their new slot. Heads waiting for a retry's wait or marked Execute Now
-- keep their time, and so do lanes where no run finished yet.
CREATE FUNCTION ledger_apply_interval(interval_s double precision, now_ timestamptz)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    names text[];
BEGIN
    SELECT array_agg(l.name) INTO names
    FROM lanes AS l JOIN runs AS r ON r.id = l.head_run_id
    WHERE r.state = 'queued' AND r.attempt = 1 AND r.execute_now_at IS NULL
      AND l.last_finished_at IS NOT NULL;
    IF names IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM lanes AS l WHERE l.name = ANY(names) ORDER BY l.name COLLATE "C" FOR UPDATE;
    PERFORM 1 FROM runs AS r
    WHERE r.id = ANY(ARRAY(SELECT l.head_run_id FROM lanes AS l WHERE l.name = ANY(names)))
    ORDER BY r.id FOR UPDATE;

    RETURN QUERY
    WITH slots AS (
        SELECT l.head_run_id AS id,
               greatest(ledger_slot(l.last_finished_at, interval_s, now_), r.debounce_until) AS slot
        FROM lanes AS l JOIN runs AS r ON r.id = l.head_run_id
        WHERE l.name = ANY(names) AND l.last_finished_at IS NOT NULL
    ), moved AS (
        UPDATE runs SET token = runs.token + 1, not_before = s.slot
        FROM slots AS s
        WHERE runs.id = s.id AND runs.state = 'queued' AND runs.attempt = 1
          AND runs.execute_now_at IS NULL
          AND runs.not_before IS DISTINCT FROM s.slot
          AND NOT (runs.not_before IS NOT NULL AND runs.not_before <= now_ AND s.slot <= now_)
        RETURNING runs.*
    )
    SELECT 'request'::text, NULL::int, m::runs, NULL::jsonb, NULL::text
    FROM moved AS m ORDER BY m.id;
END
$$;

-- An operator's run is to run next: at once, unless its lane has an active run (then the
-- lane's next advance picks it first). The lane's former scheduled head waits again like
-- any queued run; its request is now stale.
CREATE FUNCTION ledger_take_head(lane_ text, run_id_ bigint, now_ timestamptz)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
BEGIN
    IF lane_ IS NOT NULL THEN
        SELECT l.head_run_id INTO head FROM lanes AS l WHERE l.name = lane_;
        IF head IS NOT NULL AND head <> run_id_ THEN
            IF EXISTS (SELECT 1 FROM runs AS r
                       WHERE r.id = head AND r.state IN ('dispatched', 'running')) THEN
                RETURN;
            END IF;
            UPDATE runs SET not_before = NULL WHERE runs.id = head;
        END IF;
        UPDATE lanes SET head_run_id = run_id_ WHERE lanes.name = lane_;
    END IF;
    RETURN QUERY SELECT 'request'::text, NULL::int, s::runs, NULL::jsonb, NULL::text
                 FROM ledger_schedule(ARRAY[run_id_], now_) AS s;
END
$$;

-- Remove (the Queue's Remove, for one run or many): queued runs will never execute; lanes
-- whose head was removed move on. A dispatched or running run cannot be removed.
CREATE FUNCTION ledger_remove(ids bigint[], now_ timestamptz, interval_s double precision)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    heads text[];
BEGIN
    RETURN QUERY SELECT * FROM ledger_refused(ids, 'queued', 'removed');
    SELECT array_agg(l.name) INTO heads
    FROM lanes AS l JOIN runs AS r ON r.id = l.head_run_id
    WHERE r.id = ANY(ids) AND r.state = 'queued';
    RETURN QUERY
    WITH gone AS (
        UPDATE runs SET state = 'removed', finished_at = now_, token = runs.token + 1
        WHERE runs.id = ANY(ids) AND runs.state = 'queued'
        RETURNING runs.*
    )
    SELECT 'notice'::text, NULL::int, g::runs, NULL::jsonb, NULL::text FROM gone AS g;
    IF heads IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ledger_advance(heads, now_, interval_s, false);
    END IF;
END
$$;

-- Cancel (the Queue's Cancel): a queued run is removed, as by Remove. A dispatched or
-- running run ends at once, its attempt a final failure (no retry) with Feedback
-- "cancelled by <actor>", recorded as a result would be (`ledger_record`: its lane moves
-- on, the breaker counts it); the attempt keeps who cancelled it, and the `cancel` row asks
-- the executors to stop the script, with the job's `cancel_grace_s` between SIGTERM and
-- SIGKILL (10 s for a run whose job was deleted). A run that has ended is refused.
CREATE FUNCTION ledger_cancel(
    run_id_ bigint, actor text, now_ timestamptz, interval_s double precision
) RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    r runs;
BEGIN
    RETURN QUERY SELECT * FROM ledger_refused(ARRAY[run_id_], 'in the queue', 'cancelled');
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO r FROM runs WHERE runs.id = run_id_;
    IF r.state = 'queued' THEN
        RETURN QUERY SELECT * FROM ledger_remove(ARRAY[run_id_], now_, interval_s);
        RETURN;
    END IF;
    UPDATE attempts SET cancelled_by = actor
    WHERE attempts.run_id = r.id AND attempts.attempt = r.attempt;
    RETURN QUERY
    SELECT * FROM ledger_record(
        '[]',
        jsonb_build_array(jsonb_build_object(
            'n', 0, 'run_id', r.id, 'attempt', r.attempt, 'result', 2, 'final', true,
            'feedback', format('cancelled by %s', actor), 'finished_at', now_)),
        now_, interval_s, false) AS d
    WHERE d.kind <> 'recorded';
    RETURN QUERY
    SELECT 'cancel'::text, NULL::int, r,
           jsonb_build_object('attempt', r.attempt, 'by', actor,
                              'grace_s', coalesce(j.cancel_grace_s, 10)), NULL::text
    FROM (SELECT 1) AS one LEFT JOIN jobs AS j ON j.id = r.job_id;
END
$$;

-- Execute Now (the Queue's button): a queued run runs next, without waiting for the
-- interval: at once if its lane is idle or only has a scheduled head, else as soon as the
-- lane's active run ends.
CREATE FUNCTION ledger_execute_now(run_id_ bigint, now_ timestamptz)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    r runs;
BEGIN
    RETURN QUERY SELECT * FROM ledger_refused(ARRAY[run_id_], 'queued', 'executed now');
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO r FROM runs WHERE runs.id = run_id_;
    IF EXISTS (SELECT 1 FROM jobs AS j WHERE j.id = r.job_id AND j.paused) THEN
        RETURN QUERY SELECT 'conflict'::text, NULL::int, r, NULL::jsonb,
            format('run %s is of job %s, which is paused: resume the job first',
                   r.id, r.job_name);
        RETURN;
    END IF;
    UPDATE runs SET execute_now_at = now_ WHERE runs.id = run_id_;
    RETURN QUERY SELECT * FROM ledger_take_head(r.lane, run_id_, now_);
END
$$;

-- Execute (the Failed page's button, for one run or many): failed runs are queued again as
-- a new attempt each, run next, with exactly that one attempt (no automatic retries of a
-- manual re-execution). In each lane the lowest of them takes the head (unless the lane
-- has an active run: then they are its next runs); earlier attempts and their Feedback stay
-- in their history.
CREATE FUNCTION ledger_execute_failed(ids bigint[], now_ timestamptz)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    again bigint[];
    h record;
BEGIN
    RETURN QUERY SELECT * FROM ledger_refused(ids, 'failed', 'executed again');
    WITH queued AS (
        UPDATE runs SET state = 'queued', attempt = runs.attempt + 1,
                        max_attempts = runs.attempt + 1, execute_now_at = now_,
                        finished_at = NULL, dispatched_at = NULL
        WHERE runs.id = ANY(ids) AND runs.state = 'failed'
        RETURNING runs.id
    )
    SELECT array_agg(q.id) INTO again FROM queued AS q;
    IF again IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT 'notice'::text, NULL::int, r::runs, NULL::jsonb, NULL::text
                 FROM runs AS r WHERE r.id = ANY(again) ORDER BY r.id;
    FOR h IN
        SELECT min(r.id) AS id, r.lane FROM runs AS r
        WHERE r.id = ANY(again) AND r.lane IS NOT NULL GROUP BY r.lane
        UNION ALL
        SELECT r.id, NULL FROM runs AS r WHERE r.id = ANY(again) AND r.lane IS NULL
        ORDER BY 1
    LOOP
        RETURN QUERY SELECT * FROM ledger_take_head(h.lane, h.id, now_);
    END LOOP;
END
$$;

-- Pause a job: its runs still come, queued, and none is dispatched until the resume; those
-- dispatched or running finish. Its scheduled heads step aside at once (their requests
-- void), so their lanes move on to other jobs' runs. Lock order: those lanes, then those
-- runs and the job's runs without a lane, then the job.
CREATE FUNCTION ledger_pause(
    job_id_ int, reason text, now_ timestamptz, interval_s double precision
) RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    heads text[];
    job jobs;
BEGIN
    SELECT array_agg(x.name) INTO heads FROM (
        SELECT l.name FROM lanes AS l JOIN runs AS r ON r.id = l.head_run_id
        WHERE r.job_id = job_id_ AND r.state = 'queued'
        ORDER BY l.name COLLATE "C" FOR UPDATE OF l
    ) AS x;
    PERFORM 1 FROM runs AS r
    WHERE r.state = 'queued' AND r.job_id = job_id_
      AND (r.lane IS NULL
           OR r.id = ANY(ARRAY(SELECT l.head_run_id FROM lanes AS l WHERE l.name = ANY(heads))))
    ORDER BY r.id FOR UPDATE;
    UPDATE jobs SET paused = true, paused_at = now_, paused_reason = reason
    WHERE jobs.id = job_id_ AND NOT jobs.paused
    RETURNING * INTO job;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = job_id_) THEN
            RETURN QUERY SELECT 'missing'::text, NULL::int, NULL::runs, NULL::jsonb,
                                format('job %s does not exist', job_id_);
        END IF;
        RETURN;  -- paused already
    END IF;
    UPDATE runs SET not_before = NULL, token = runs.token + 1
    WHERE runs.state = 'queued' AND runs.job_id = job_id_
      AND (runs.lane IS NULL OR runs.id = ANY(
          ARRAY(SELECT l.head_run_id FROM lanes AS l WHERE l.name = ANY(heads))));
    IF heads IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ledger_advance(heads, now_, interval_s, false);
    END IF;
    RETURN QUERY SELECT 'paused'::text, NULL::int, NULL::runs,
        jsonb_build_object('job_id', job.id, 'job', job.name, 'reason', reason), reason;
END
$$;

-- Resume a paused job: its waiting runs run again in enqueue order, with their lanes'
-- interval (idle lanes that hold them get a head now; a run without a lane is due now).
-- The breaker's count starts again.
CREATE FUNCTION ledger_resume(job_id_ int, now_ timestamptz, interval_s double precision)
RETURNS TABLE (kind text, item int, run runs, payload jsonb, note text)
LANGUAGE plpgsql AS $$
DECLARE
    idle text[];
    job jobs;
BEGIN
    SELECT array_agg(x.name) INTO idle FROM (
        SELECT l.name FROM lanes AS l
        WHERE l.head_run_id IS NULL AND l.name IN (
            SELECT r.lane FROM runs AS r
            WHERE r.job_id = job_id_ AND r.state = 'queued' AND r.lane IS NOT NULL)
        ORDER BY l.name COLLATE "C" FOR UPDATE
    ) AS x;
    PERFORM 1 FROM runs AS r
    WHERE r.job_id = job_id_ AND r.lane IS NULL AND r.state = 'queued'
    ORDER BY r.id FOR UPDATE;
    UPDATE jobs SET paused = false, paused_at = NULL, paused_reason = NULL, failure_streak = 0
    WHERE jobs.id = job_id_ AND jobs.paused
    RETURNING * INTO job;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = job_id_) THEN
            RETURN QUERY SELECT 'missing'::text, NULL::int, NULL::runs, NULL::jsonb,
                                format('job %s does not exist', job_id_);
        END IF;
        RETURN;  -- not paused
    END IF;
    IF idle IS NOT NULL THEN
        RETURN QUERY SELECT * FROM ledger_advance(
            ARRAY(SELECT l.name FROM lanes AS l WHERE l.name = ANY(idle) AND l.head_run_id IS NULL),
            now_, interval_s, false);
    END IF;
    RETURN QUERY
    SELECT 'request'::text, NULL::int, s::runs, NULL::jsonb, NULL::text
    FROM ledger_schedule(ARRAY(
        SELECT r.id FROM runs AS r
        WHERE r.job_id = job_id_ AND r.lane IS NULL AND r.state = 'queued'), now_) AS s
    ORDER BY s.id;
    RETURN QUERY SELECT 'resumed'::text, NULL::int, NULL::runs,
        jsonb_build_object('job_id', job.id, 'job', job.name, 'reason', NULL), NULL::text;
END
$$;
