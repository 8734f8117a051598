-- The job table and everything the claim, lifecycle and cancel queries need.
-- The runner creates the schema (default "orchestrator") and applies this file
-- with search_path set to it, so objects land in that schema and collide with
-- nothing in the host application's database.

CREATE TYPE job_state AS ENUM ('queued', 'active', 'completed', 'failed', 'cancelled');

-- Fencing tokens: every claim takes a fresh one, so a node that lost its lease
-- can no longer match the guard of any write.
CREATE SEQUENCE lease_token_seq AS bigint;

CREATE TABLE job_status (
    job_id              uuid PRIMARY KEY,
    kind                text NOT NULL CHECK (kind <> ''),
    queue               text NOT NULL DEFAULT 'default' CHECK (queue <> ''),
    payload             jsonb NOT NULL,
    owner_user_id       text NOT NULL,
    owner_org_id        text NOT NULL,
    status              job_state NOT NULL DEFAULT 'queued',
    priority            integer NOT NULL DEFAULT 0,
    attempt             integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    max_attempts        integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    run_at              timestamptz NOT NULL,
    created_at          timestamptz NOT NULL,
    started_at          timestamptz,
    completed_at        timestamptz,
    lease_node          text,
    lease_token         bigint,
    lease_expires_at    timestamptz,
    cancel_requested_at timestamptz,
    cancel_requested_by text,
    progress            double precision NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    result              jsonb,
    error               jsonb,
    CONSTRAINT job_status_timestamps_check
        CHECK (started_at >= created_at AND completed_at >= started_at),
    CONSTRAINT job_status_completed_after_created_check
        CHECK (completed_at >= created_at),
    CONSTRAINT job_status_terminal_timestamps_check
        CHECK ((status IN ('completed', 'failed', 'cancelled')) = (completed_at IS NOT NULL)),
    CONSTRAINT job_status_started_check
        CHECK (status NOT IN ('active', 'completed') OR started_at IS NOT NULL),
    CONSTRAINT job_status_active_lease_check
        CHECK (status <> 'active' OR lease_token IS NOT NULL),
    CONSTRAINT job_status_attempts_check
        CHECK (attempt <= max_attempts)
);

-- The claim query: due, unleased, queued jobs in priority order.
CREATE INDEX job_status_claim_idx
    ON job_status (priority DESC, run_at, job_id)
    WHERE status = 'queued' AND lease_token IS NULL;

-- Lease renewal and rescue look jobs up by node and by expiry.
CREATE INDEX job_status_lease_node_idx
    ON job_status (lease_node)
    WHERE status IN ('queued', 'active') AND lease_token IS NOT NULL;
CREATE INDEX job_status_lease_expiry_idx
    ON job_status (lease_expires_at)
    WHERE status IN ('queued', 'active') AND lease_token IS NOT NULL;

-- Listing an organisation's jobs, newest first.
CREATE INDEX job_status_org_idx ON job_status (owner_org_id, created_at DESC);

-- Dispatchers wake on this instead of polling: one notification per
-- statement, however many rows it inserted.
CREATE FUNCTION notify_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_jobs', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_status_inserted
    AFTER INSERT ON job_status
    FOR EACH STATEMENT EXECUTE FUNCTION notify_jobs_inserted();

-- Waiters (`wait`, `cancel`) on any node wake on this when a job ends.
CREATE FUNCTION notify_job_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_done', NEW.job_id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_status_finished
    AFTER UPDATE OF status ON job_status
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION notify_job_finished();
