-- Scale-out: nodes with heartbeats, per-queue claiming, unique jobs, and a
-- function that enqueues a job in one statement from any language.

CREATE TABLE nodes (
    node_id      text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    stopped_at   timestamptz
);

-- The claim takes due jobs of one queue at a time, in priority order.
DROP INDEX job_status_claim_idx;
CREATE INDEX job_status_claim_idx
    ON job_status (queue, priority DESC, run_at, job_id)
    WHERE status = 'queued' AND lease_token IS NULL;

-- A unique job: while one with the same key (per organisation and kind) is
-- queued or active, submitting it again returns that job.
ALTER TABLE job_status ADD COLUMN unique_key text;
CREATE UNIQUE INDEX job_status_unique_key_idx
    ON job_status (owner_org_id, kind, unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('queued', 'active');

-- Why a rescuer moved a job (its node's lease expired).
ALTER TABLE job_status ADD COLUMN rescued_from text;

CREATE FUNCTION submit_job(
    kind text,
    payload jsonb,
    owner_user_id text,
    owner_org_id text,
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    max_attempts integer DEFAULT 1,
    delay_seconds double precision DEFAULT 0,
    unique_key text DEFAULT NULL
) RETURNS uuid LANGUAGE plpgsql
-- Callers need not have the schema on their search_path.
SET search_path FROM CURRENT
AS $$
-- Enqueue one job; returns its id (or, for a unique key already queued or
-- active, that job's id). The payload is not validated here: workers
-- validate it against the handler's type when they run it.
#variable_conflict use_column
DECLARE
    new_id uuid;
BEGIN
    INSERT INTO job_status AS j (
        job_id, kind, queue, payload, owner_user_id, owner_org_id,
        priority, max_attempts, run_at, created_at, unique_key)
    VALUES (
        gen_random_uuid(), submit_job.kind, submit_job.queue, submit_job.payload,
        submit_job.owner_user_id, submit_job.owner_org_id, submit_job.priority,
        submit_job.max_attempts, statement_timestamp() + make_interval(secs => submit_job.delay_seconds),
        statement_timestamp(), submit_job.unique_key)
    ON CONFLICT (owner_org_id, kind, unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('queued', 'active')
        DO NOTHING
    RETURNING j.job_id INTO new_id;
    IF new_id IS NULL THEN
        SELECT j.job_id INTO new_id FROM job_status j
        WHERE j.owner_org_id = submit_job.owner_org_id AND j.kind = submit_job.kind
          AND j.unique_key = submit_job.unique_key AND j.status IN ('queued', 'active');
    END IF;
    RETURN new_id;
END;
$$;
