-- Announce finished jobs once per statement, not once per row: a writer
-- batch that ends fifty jobs sends one notification listing their ids.
-- Waiters parse the list; the per-row trigger cost and the per-row
-- notification (a callback in every listening process) go away.

DROP TRIGGER job_status_finished ON job_status;
DROP FUNCTION notify_job_finished();

CREATE FUNCTION notify_jobs_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    -- A notification payload holds at most 8000 bytes: 200 ids (36 bytes
    -- and a comma each) per notification.
    FOR ids IN
        SELECT string_agg(n.job_id::text, ',')
        FROM (
            SELECT n.job_id, (row_number() OVER () - 1) / 200 AS chunk
            FROM new_rows n JOIN old_rows o USING (job_id)
            WHERE n.status IN ('completed', 'failed', 'cancelled') AND o.status <> n.status
        ) n
        GROUP BY n.chunk
    LOOP
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_done', ids);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_status_finished
    AFTER UPDATE ON job_status
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_jobs_finished();
