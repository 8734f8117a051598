-- The benchmark's own statements (setup and measurement, never the hot path).
-- Loaded by orchestrator/_bench/_db.py; each starts with a `-- name:` header.

-- name: create_database_statement
-- Identifiers cannot be parameters: PostgreSQL quotes the name itself.
SELECT format('CREATE DATABASE %I', $1::text);

-- name: drop_database_statement
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text);

-- name: server_facts
SELECT current_setting('server_version') AS version,
       current_setting('track_commit_timestamp') = 'on' AS commit_ts;

-- name: truncate_jobs
TRUNCATE job_status;

-- name: analyze_jobs
ANALYZE job_status;

-- name: count_completed
SELECT count(*) FROM job_status WHERE status = 'completed';

-- name: last_completed
-- When the last job completed: the commit of the row's completing UPDATE
-- (nothing updates a completed row afterwards), else its completed_at.
SELECT max(CASE WHEN current_setting('track_commit_timestamp') = 'on'
                THEN extract(epoch FROM pg_xact_commit_timestamp(j.xmin))
                ELSE extract(epoch FROM j.completed_at) END)::float8
FROM job_status j WHERE j.status = 'completed';

-- name: handler_starts
-- The bench handlers return {"t": time.time()} taken at handler entry.
SELECT (result->>'t')::float8 AS t FROM job_status WHERE status = 'completed' ORDER BY 1;

-- name: job_times
-- A terminal job's handler start (from its result) and the commit time of
-- its terminal row (else completed_at).
SELECT (j.result->>'t')::float8 AS started,
       (CASE WHEN current_setting('track_commit_timestamp') = 'on'
             THEN extract(epoch FROM pg_xact_commit_timestamp(j.xmin))
             ELSE extract(epoch FROM j.completed_at) END)::float8 AS done
FROM job_status j WHERE j.job_id = $1;

-- name: count_active
SELECT count(*) FROM job_status WHERE status = 'active';

-- name: backend_pids
-- The other backends of this database (their CPU is read from /proc).
SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid();

-- name: listening_backends
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%';

-- name: node_started
-- When a daemon (by pid) registered as a node: before its first claim.
SELECT extract(epoch FROM started_at)::float8 FROM nodes WHERE pid = $1 AND stopped_at IS NULL
ORDER BY started_at DESC LIMIT 1;

-- name: fill_terminal
-- $1 completed rows of another kind: the history a long-lived table keeps.
INSERT INTO job_status (job_id, kind, queue, payload, owner_user_id, owner_org_id, status,
                        run_at, created_at, started_at, completed_at, progress, result)
SELECT gen_random_uuid(), 'history', 'default', to_jsonb(i), 'bench', 'bench', 'completed',
       t, t, t + interval '1 ms', t + interval '2 ms', 1, 'null'::jsonb
FROM generate_series(1, $1::int) AS i,
     LATERAL (SELECT clock_timestamp() - interval '1 day' AS t) AS now_;

-- name: fill_queued
-- $1 queued rows of kind $2, due now.
INSERT INTO job_status (job_id, kind, queue, payload, owner_user_id, owner_org_id, run_at, created_at)
SELECT gen_random_uuid(), $2::text, 'default', to_jsonb(i), 'bench', 'bench', t, t
FROM generate_series(1, $1::int) AS i,
     LATERAL (SELECT clock_timestamp() - interval '1 s' AS t) AS now_;

-- name: fill_delayed
-- $1 queued rows of kind $2, due in a day: a backlog no claim may take yet.
-- Of a higher priority than fill_queued's, so that in the claim's order they
-- come first (a scan in that order walks them all to reach a due row).
INSERT INTO job_status (job_id, kind, queue, payload, owner_user_id, owner_org_id, priority, run_at, created_at)
SELECT gen_random_uuid(), $2::text, 'default', to_jsonb(i), 'bench', 'bench', 1, t + interval '1 day', t
FROM generate_series(1, $1::int) AS i,
     LATERAL (SELECT clock_timestamp() - interval '1 s' AS t) AS now_;

-- name: count_queued
SELECT count(*) FROM job_status WHERE status = 'queued';

-- name: own_pid
SELECT pg_backend_pid();

-- name: finish_claimed
-- The jobs a timed claim took ($1) complete, as a worker would finish them,
-- so that the claim index and the history see the churn of a live queue.
UPDATE job_status SET status = 'completed', progress = 1, result = 'null'::jsonb,
       completed_at = greatest(clock_timestamp(), started_at + interval '1 microsecond')
WHERE job_id = ANY($1::uuid[]) AND status = 'active';

-- name: table_rows
SELECT count(*) FROM job_status;
