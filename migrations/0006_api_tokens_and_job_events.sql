-- The HTTP API: bearer tokens, a keyset index for paging, and a per-statement
-- notification of every job that was inserted or changed state or progress,
-- which feeds the event stream (GET /api/events) without polling.

-- Only a SHA-256 hash of each token is stored: tokens are 256 random bits, so
-- a fast hash cannot be brute-forced, and a leaked table grants nothing.
CREATE TABLE api_tokens (
    token_id      uuid PRIMARY KEY,
    token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    user_id       text NOT NULL CHECK (user_id <> ''),
    org_id        text NOT NULL CHECK (org_id <> ''),
    role          text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin')),
    name          text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    CONSTRAINT api_tokens_expiry_check CHECK (expires_at > created_at)
);

CREATE INDEX api_tokens_org_idx ON api_tokens (org_id, created_at DESC);

-- Listing an organisation's jobs page by page, newest first: the keyset is
-- (created_at, job_id), so a page boundary never moves when jobs are added.
DROP INDEX job_status_org_idx;
CREATE INDEX job_status_org_idx ON job_status (owner_org_id, created_at DESC, job_id DESC);

-- Ids of the jobs a statement inserted or moved (state or progress), 200 per
-- notification (a payload holds at most 8000 bytes). Lease renewals, which
-- touch neither, announce nothing.
CREATE FUNCTION notify_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR ids IN
            SELECT string_agg(c.job_id::text, ',')
            FROM (SELECT n.job_id, (row_number() OVER () - 1) / 200 AS chunk FROM new_rows n) c
            GROUP BY c.chunk
        LOOP
            PERFORM pg_notify(TG_TABLE_SCHEMA || '_events', ids);
        END LOOP;
    ELSE
        FOR ids IN
            SELECT string_agg(c.job_id::text, ',')
            FROM (
                SELECT n.job_id, (row_number() OVER () - 1) / 200 AS chunk
                FROM new_rows n JOIN old_rows o USING (job_id)
                WHERE n.status <> o.status OR n.progress <> o.progress OR n.attempt <> o.attempt
            ) c
            GROUP BY c.chunk
        LOOP
            PERFORM pg_notify(TG_TABLE_SCHEMA || '_events', ids);
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_status_events_inserted
    AFTER INSERT ON job_status
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_job_events();

CREATE TRIGGER job_status_events_updated
    AFTER UPDATE ON job_status
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_job_events();
