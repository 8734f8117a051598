-- Notifications sent by the statements that move jobs, not by triggers on
-- every UPDATE. The triggers of 0003 (finished jobs) and 0006 (job events)
-- ran for each UPDATE of job_status, lease renewals and claims included, and
-- built transition tables of whole rows (payloads too) to find out what
-- changed. Each statement in sql/queries.sql that moves jobs already knows
-- which ones it moved: it calls announce_jobs once with their ids.
-- (0005 is unused on purpose.)

DROP TRIGGER job_status_finished ON job_status;
DROP FUNCTION notify_jobs_finished();

-- Inserts keep their statement trigger (one per submit statement); only the
-- UPDATE one goes.
DROP TRIGGER job_status_events_updated ON job_status;

-- Send ``ids`` on ``channel``, 200 per notification: a payload holds at most
-- 8000 bytes (36 bytes and a comma per id). Returns how many were sent.
CREATE FUNCTION notify_job_ids(channel text, ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    chunk text;
    sent integer := 0;
BEGIN
    FOR chunk IN
        SELECT string_agg(u.id::text, ',' ORDER BY u.n)
        FROM unnest(ids) WITH ORDINALITY AS u(id, n)
        GROUP BY (u.n - 1) / 200
    LOOP
        PERFORM pg_notify(channel, chunk);
        sent := sent + 1;
    END LOOP;
    RETURN sent;
END;
$$;

-- What a statement that moved jobs calls once: ``finished`` (jobs that just
-- reached a terminal state) on the schema's ``done`` channel, for waiters on
-- every node; ``changed`` (jobs whose state, attempt or progress moved) on
-- its ``events`` channel, for the HTTP event stream. Null arrays send
-- nothing. The schema is the caller's (connections set search_path to it),
-- as the triggers used their table's.
CREATE FUNCTION announce_jobs(finished uuid[], changed uuid[]) RETURNS integer LANGUAGE sql AS $$
    SELECT notify_job_ids(current_schema() || '_done', finished)
         + notify_job_ids(current_schema() || '_events', changed);
$$;
