-- Every statement the store runs. Each starts with a "-- name:" header; the
-- comment lines under it say what it is for. Loaded once by _queries.py.
-- Placeholders are asyncpg's $n. Objects are unqualified: connections set
-- search_path to the orchestrator's schema.

-- name: submit_jobs
-- Insert queued jobs of one kind in one statement; the database clock stamps
-- created_at, so producers on skewed clocks cannot break ordering. A payload
-- whose unique key matches a queued or active job of the same kind and
-- organisation is not inserted: that job is returned instead. $11 is the
-- submitter's trace context (NULL when it traced nothing), shared by the batch.
WITH input AS (
    -- Payloads arrive as JSON text: a jsonb[] parameter would read a payload
    -- that is itself an array as another dimension of the array.
    SELECT i.job_id, i.payload::jsonb AS payload, i.unique_key
    FROM unnest($8::uuid[], $9::text[], $10::text[]) AS i(job_id, payload, unique_key)
),
inserted AS (
    INSERT INTO job_status (
        job_id, kind, queue, payload, owner_user_id, owner_org_id,
        priority, max_attempts, run_at, created_at, unique_key, trace_context)
    SELECT i.job_id, $1, $2, i.payload, $3, $4, $5, $6,
           statement_timestamp() + make_interval(secs => $7), statement_timestamp(), i.unique_key,
           $11::jsonb
    FROM input i
    ON CONFLICT (owner_org_id, kind, unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('queued', 'active')
        DO NOTHING
    RETURNING *
)
SELECT * FROM inserted
UNION ALL
-- One probe of the unique index per distinct key (LIMIT 1 keeps the lookup a
-- probe: a join the planner could reorder might scan the organisation's and
-- kind's whole range of the index when its statistics lag behind the table).
SELECT j.*
FROM (SELECT DISTINCT unique_key FROM input WHERE unique_key IS NOT NULL) k
CROSS JOIN LATERAL (
    SELECT * FROM job_status j
    WHERE j.owner_org_id = $4 AND j.kind = $1 AND j.unique_key = k.unique_key AND j.status IN ('queued', 'active')
    LIMIT 1
) j
WHERE k.unique_key NOT IN (SELECT unique_key FROM inserted WHERE unique_key IS NOT NULL);

-- name: get_job
-- One job, only within the caller's organisation.
SELECT * FROM job_status WHERE job_id = $1 AND owner_org_id = $2;

-- name: get_job_any
-- One job for the node that runs it (no tenancy: the node holds the lease).
SELECT * FROM job_status WHERE job_id = $1;

-- name: get_jobs
-- Several jobs by id, for waiters re-checking after a notification or a tick.
SELECT * FROM job_status WHERE job_id = ANY($1::uuid[]);

-- name: claim_jobs
-- Lease due jobs of the kinds this node runs, up to the free slots of each
-- of its queues ($2 queues, $3 slots), and start them: the rows become
-- `active` in this statement, so no separate write marks the start (the
-- handler runs only after this commits). SKIP LOCKED lets many dispatchers
-- claim at once without waiting on each other; each claimed row gets a
-- fresh fencing token. started_at comes from the database's clock, never
-- before the job's creation or its previous start (G2). Returns only what
-- a job actor needs, and the previous started_at, for release_unstarted;
-- announces the started jobs to the event stream.
WITH wanted AS (
    SELECT * FROM unnest($2::text[], $3::int[]) AS w(queue, slots) WHERE w.slots > 0
),
-- The best `slots` due rows of each (queue, kind), each an ordered range of
-- the claim index (queue, kind, priority DESC, run_at, job_id) that stops
-- after `slots` rows, whatever else the queue holds (jobs delayed into the
-- future, other kinds); then the best `slots` of the queue across its kinds.
-- run_at is compared with the statement's start, not clock_timestamp(): a
-- stable value the index can test without reading the row; a job that became
-- due during the statement is claimed by the next one (next_due says when).
-- The few rows locked beyond a queue's slots are released at commit.
due AS (
    SELECT c.job_id, c.previous_started_at
    FROM (
        SELECT d.job_id, d.started_at AS previous_started_at, w.slots,
               row_number() OVER (PARTITION BY w.queue ORDER BY d.priority DESC, d.run_at, d.job_id) AS rank
        FROM wanted w
        CROSS JOIN (SELECT DISTINCT kind FROM unnest($1::text[]) AS k(kind)) k
        CROSS JOIN LATERAL (
            SELECT job_id, started_at, priority, run_at FROM job_status
            WHERE status = 'queued' AND lease_token IS NULL AND queue = w.queue AND kind = k.kind
              AND run_at <= statement_timestamp()
              -- A malformed row from before migration 0004 is left for
              -- quarantine_malformed: leasing it would break the CHECK.
              AND job_row_well_formed(kind, queue, owner_user_id, owner_org_id, unique_key,
                                      max_attempts, created_at, run_at)
            ORDER BY priority DESC, run_at, job_id
            LIMIT w.slots
            FOR UPDATE SKIP LOCKED
        ) d
    ) c
    WHERE c.rank <= c.slots
),
claimed AS (
    UPDATE job_status j
    SET status = 'active',
        started_at = greatest(clock_timestamp(), COALESCE(j.started_at, j.created_at) + interval '1 microsecond'),
        lease_node = $4,
        lease_token = nextval('lease_token_seq'),
        lease_expires_at = clock_timestamp() + make_interval(secs => $5)
    -- By primary key, whatever the planner guesses of how many rows `due`
    -- holds: a generic plan (see the store's GENERIC_PLAN_STATEMENTS) that
    -- guessed many hashed the whole table instead.
    WHERE j.job_id = ANY (ARRAY(SELECT job_id FROM due))
    RETURNING j.job_id, j.kind, j.queue, j.payload, j.owner_user_id, j.owner_org_id, j.priority,
              j.attempt, j.max_attempts, j.run_at, j.created_at, j.started_at, j.progress, j.error,
              j.cancel_requested_at IS NOT NULL AS cancel_requested, j.lease_token, j.trace_context
),
announced AS (SELECT announce_jobs(NULL, array_agg(job_id)) FROM claimed)
-- In the claim's order: an UPDATE returns its rows in whatever order its plan
-- met them.
SELECT c.*, d.previous_started_at FROM claimed c JOIN due d USING (job_id) CROSS JOIN announced
ORDER BY c.priority DESC, c.run_at, c.job_id;

-- name: next_due
-- Seconds (by the database's clock) until the next not-yet-due job of these
-- kinds and queues becomes due; null when none waits. A number, not a
-- timestamp: no run_at, however far away, can fail to decode here.
-- The earliest run_at of a (queue, kind) is the first of one of its
-- priorities in the claim index: the recursion visits each distinct priority
-- (one index probe each), not each queued row.
WITH RECURSIVE pairs AS (
    SELECT DISTINCT q.queue, k.kind FROM unnest($2::text[]) AS q(queue) CROSS JOIN unnest($1::text[]) AS k(kind)
),
priorities AS (
    SELECT p.queue, p.kind, (
        SELECT j.priority FROM job_status j
        WHERE j.status = 'queued' AND j.lease_token IS NULL AND j.queue = p.queue AND j.kind = p.kind
        ORDER BY j.priority DESC LIMIT 1) AS priority
    FROM pairs p
    UNION ALL
    SELECT p.queue, p.kind, (
        SELECT j.priority FROM job_status j
        WHERE j.status = 'queued' AND j.lease_token IS NULL AND j.queue = p.queue AND j.kind = p.kind
          AND j.priority < p.priority
        ORDER BY j.priority DESC LIMIT 1)
    FROM priorities p WHERE p.priority IS NOT NULL
)
SELECT extract(epoch FROM min(f.run_at) - clock_timestamp())::double precision
FROM priorities p
CROSS JOIN LATERAL (
    SELECT j.run_at FROM job_status j
    WHERE j.status = 'queued' AND j.lease_token IS NULL AND j.queue = p.queue AND j.kind = p.kind
      AND j.priority = p.priority
    ORDER BY j.run_at LIMIT 1) f
WHERE p.priority IS NOT NULL;

-- name: apply_transitions
-- Persist many jobs' transitions in one statement. Each row applies only if
-- the job is still in the expected status under the expected lease token, so
-- no transition is skipped, repeated or made by a node that lost its lease.
-- A retry (back to queued) also yields to a pending cancel request: the actor
-- then sees why it did not apply and cancels instead. Announces the jobs
-- moved (and, separately, those it finished). Returns the rows applied.
WITH t AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::bigint[], $3::text[], $4::text[],
        $5::timestamptz[], $6::timestamptz[], $7::timestamptz[],
        $8::double precision[], $9::jsonb[], $10::jsonb[], $11::int[]
    ) AS t(job_id, token, expected, next, started_at, completed_at, run_at,
           progress, result, error, attempt)
),
-- Lock the rows in job_id order, as every multi-row update here does, so
-- that two batches (a heartbeat, a write) never wait on each other in a
-- cycle.
locked AS (
    SELECT j.job_id FROM job_status j JOIN t USING (job_id)
    ORDER BY j.job_id
    FOR UPDATE OF j
),
applied AS (
    UPDATE job_status j
    SET status = t.next::job_state,
        started_at = COALESCE(t.started_at, j.started_at),
        completed_at = t.completed_at,
        run_at = COALESCE(t.run_at, j.run_at),
        attempt = COALESCE(t.attempt, j.attempt),
        progress = COALESCE(t.progress, j.progress),
        result = COALESCE(t.result, j.result),
        error = COALESCE(t.error, j.error),
        lease_node = CASE WHEN t.next = 'queued' THEN NULL ELSE j.lease_node END,
        lease_token = CASE WHEN t.next = 'queued' THEN NULL ELSE j.lease_token END,
        lease_expires_at = CASE WHEN t.next = 'queued' THEN NULL ELSE j.lease_expires_at END
    FROM t JOIN locked USING (job_id)
    WHERE j.job_id = t.job_id
      AND j.status = t.expected::job_state
      AND j.lease_token = t.token
      AND (t.next <> 'queued' OR j.cancel_requested_at IS NULL)
    RETURNING j.job_id, j.status
),
announced AS (
    SELECT announce_jobs(array_agg(job_id) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')),
                         array_agg(job_id))
    FROM applied
)
SELECT a.job_id FROM applied a CROSS JOIN announced;

-- name: apply_transitions_and_claim
-- apply_transitions ($1-$11), and in the same statement the claim of
-- claim_jobs ($12 kinds, $13 queues, $14 slots, $15 node, $16 lease seconds)
-- for the slots that the batch's finished jobs free on this node: one
-- statement and one round trip per batch instead of two. The claim happens
-- only if every row that takes its job off the node (a next status other
-- than `active`) applied: a row that did not keeps its slot until its actor
-- learns why, so nothing is claimed for it. Leases, fencing tokens,
-- started_at, the per-queue limits and the order (priority, run_at, id) are
-- claim_jobs'; the jobs the batch writes are never claimed by it. Returns one
-- row per transition applied (`claimed` false, the job id only) and one per
-- job claimed (`claimed` true, with claim_jobs' columns); announces both.
-- It repeats the two statements rather than replacing them: run with one
-- half empty it cost 2.7-3.2 ms more per statement than the statement of
-- the other half alone (PG15, 200,000 queued rows, medians of 350 runs),
-- so a batch that frees nothing, and the dispatcher's claim, keep theirs.
WITH t AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::bigint[], $3::text[], $4::text[],
        $5::timestamptz[], $6::timestamptz[], $7::timestamptz[],
        $8::double precision[], $9::jsonb[], $10::jsonb[], $11::int[]
    ) AS t(job_id, token, expected, next, started_at, completed_at, run_at,
           progress, result, error, attempt)
),
locked AS (
    SELECT j.job_id FROM job_status j JOIN t USING (job_id)
    ORDER BY j.job_id
    FOR UPDATE OF j
),
applied AS (
    UPDATE job_status j
    SET status = t.next::job_state,
        started_at = COALESCE(t.started_at, j.started_at),
        completed_at = t.completed_at,
        run_at = COALESCE(t.run_at, j.run_at),
        attempt = COALESCE(t.attempt, j.attempt),
        progress = COALESCE(t.progress, j.progress),
        result = COALESCE(t.result, j.result),
        error = COALESCE(t.error, j.error),
        lease_node = CASE WHEN t.next = 'queued' THEN NULL ELSE j.lease_node END,
        lease_token = CASE WHEN t.next = 'queued' THEN NULL ELSE j.lease_token END,
        lease_expires_at = CASE WHEN t.next = 'queued' THEN NULL ELSE j.lease_expires_at END
    FROM t JOIN locked USING (job_id)
    WHERE j.job_id = t.job_id
      AND j.status = t.expected::job_state
      AND j.lease_token = t.token
      AND (t.next <> 'queued' OR j.cancel_requested_at IS NULL)
    RETURNING j.job_id, j.status
),
freed AS (
    SELECT (SELECT count(*) FROM applied WHERE status <> 'active')
         = (SELECT count(*) FROM t WHERE next <> 'active') AS all_left
),
wanted AS (
    SELECT w.* FROM unnest($13::text[], $14::int[]) AS w(queue, slots) CROSS JOIN freed
    WHERE w.slots > 0 AND freed.all_left
),
due AS (
    SELECT c.job_id, c.previous_started_at
    FROM (
        SELECT d.job_id, d.started_at AS previous_started_at, w.slots,
               row_number() OVER (PARTITION BY w.queue ORDER BY d.priority DESC, d.run_at, d.job_id) AS rank
        FROM wanted w
        CROSS JOIN (SELECT DISTINCT kind FROM unnest($12::text[]) AS k(kind)) k
        CROSS JOIN LATERAL (
            SELECT job_id, started_at, priority, run_at FROM job_status
            WHERE status = 'queued' AND lease_token IS NULL AND queue = w.queue AND kind = k.kind
              AND run_at <= statement_timestamp()
              AND job_row_well_formed(kind, queue, owner_user_id, owner_org_id, unique_key,
                                      max_attempts, created_at, run_at)
              AND job_id <> ALL($1::uuid[])
            ORDER BY priority DESC, run_at, job_id
            LIMIT w.slots
            FOR UPDATE SKIP LOCKED
        ) d
    ) c
    WHERE c.rank <= c.slots
),
claimed AS (
    UPDATE job_status j
    SET status = 'active',
        started_at = greatest(clock_timestamp(), COALESCE(j.started_at, j.created_at) + interval '1 microsecond'),
        lease_node = $15,
        lease_token = nextval('lease_token_seq'),
        lease_expires_at = clock_timestamp() + make_interval(secs => $16)
    -- By primary key, as in claim_jobs.
    WHERE j.job_id = ANY (ARRAY(SELECT job_id FROM due))
    RETURNING j.job_id, j.kind, j.queue, j.payload, j.owner_user_id, j.owner_org_id, j.priority,
              j.attempt, j.max_attempts, j.run_at, j.created_at, j.started_at, j.progress, j.error,
              j.cancel_requested_at IS NOT NULL AS cancel_requested, j.lease_token, j.trace_context
),
announced AS (
    SELECT announce_jobs(
        (SELECT array_agg(job_id) FROM applied WHERE status IN ('completed', 'failed', 'cancelled')),
        (SELECT array_agg(job_id) FROM (SELECT job_id FROM applied UNION ALL SELECT job_id FROM claimed) moved))
)
SELECT true AS claimed, c.*, d.previous_started_at FROM claimed c JOIN due d USING (job_id) CROSS JOIN announced
UNION ALL
SELECT false, a.job_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL
FROM applied a CROSS JOIN announced
-- The claimed rows first, in the claim's order (as claim_jobs).
ORDER BY claimed DESC, priority DESC, run_at, job_id;

-- name: cancel_queued
-- Cancel a job that no node has started. Guarded by status and by the
-- started_at ($2, null before a first attempt) the stamp $3 was computed from.
-- Announces the job finished.
WITH cancelled AS (
    UPDATE job_status
    SET status = 'cancelled', completed_at = $3,
        cancel_requested_at = $3, cancel_requested_by = $4
    WHERE job_id = $1 AND status = 'queued' AND started_at IS NOT DISTINCT FROM $2
    RETURNING *
),
announced AS (SELECT announce_jobs(array_agg(job_id), array_agg(job_id)) FROM cancelled)
SELECT c.* FROM cancelled c CROSS JOIN announced;

-- name: request_cancel
-- Ask the node running an active job to cancel it: stored durably (a node
-- that misses the notification sees it at its next heartbeat) and announced.
WITH requested AS (
    UPDATE job_status
    SET cancel_requested_at = COALESCE(cancel_requested_at, clock_timestamp()),
        cancel_requested_by = COALESCE(cancel_requested_by, $2)
    WHERE job_id = $1 AND status = 'active'
    RETURNING job_id, lease_node
)
SELECT job_id, lease_node, pg_notify(current_schema() || '_cancel', job_id::text)
FROM requested;

-- name: renew_leases
-- The heartbeat: mark the node alive and extend every lease it still holds
-- ($3: the fencing tokens of its running jobs) in one statement. Returns the
-- jobs renewed, with whether their cancellation was requested (a fallback
-- for missed notifications); a running job missing from the answer has
-- lost its lease.
WITH node AS (
    UPDATE nodes SET heartbeat_at = clock_timestamp() WHERE node_id = $1
    RETURNING node_id
),
held AS (
    SELECT job_id FROM job_status
    WHERE lease_node = $1 AND lease_token = ANY($3::bigint[]) AND status IN ('queued', 'active')
    ORDER BY job_id
    FOR UPDATE
),
renewed AS (
    UPDATE job_status j
    SET lease_expires_at = clock_timestamp() + make_interval(secs => $2)
    FROM held
    WHERE j.job_id = held.job_id
      AND j.lease_node = $1 AND j.lease_token = ANY($3::bigint[]) AND j.status IN ('queued', 'active')
    RETURNING j.job_id, j.cancel_requested_at
)
SELECT job_id, cancel_requested_at IS NOT NULL AS cancel_requested FROM renewed;

-- name: register_node
-- A daemon announces itself (again, after a restart with the same id).
INSERT INTO nodes (node_id, hostname, pid) VALUES ($1, $2, $3)
ON CONFLICT (node_id) DO UPDATE
SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
    started_at = clock_timestamp(), heartbeat_at = clock_timestamp(), stopped_at = NULL;

-- name: stop_node
UPDATE nodes SET stopped_at = clock_timestamp() WHERE node_id = $1;

-- name: rescue_expired
-- Any live node runs this: jobs whose node stopped renewing its lease go
-- back to the queue (attempt + 1), or fail when their attempts are used up,
-- or end cancelled when a cancel was requested meanwhile; a job claimed but
-- never started just loses the lease. The database clock stamps the end,
-- never before the start. At most $1 jobs per call. Announces the jobs that
-- moved (a lost lease alone moves nothing) and those that ended.
WITH expired AS (
    SELECT job_id FROM job_status
    WHERE status IN ('queued', 'active') AND lease_token IS NOT NULL
      AND lease_expires_at < clock_timestamp()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
decided AS (
    SELECT j.job_id, p.problem,
           CASE
               WHEN p.problem IS NOT NULL THEN 'invalid'
               WHEN j.status = 'queued' THEN 'queued'
               WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
               WHEN j.attempt < j.max_attempts THEN 'retry'
               ELSE 'failed'
           END AS outcome
    FROM job_status j JOIN expired USING (job_id)
    -- The message (job_row_problem is not inlined) only for a row that needs one.
    CROSS JOIN LATERAL (
        SELECT CASE WHEN NOT job_row_well_formed(j.kind, j.queue, j.owner_user_id, j.owner_org_id, j.unique_key,
                                                 j.max_attempts, j.created_at, j.run_at)
                    THEN job_row_problem(j.kind, j.queue, j.owner_user_id, j.owner_org_id, j.unique_key,
                                         j.max_attempts, j.created_at, j.run_at)
               END AS problem
    ) p
),
rescued AS (
    UPDATE job_status j
    SET status = (CASE d.outcome WHEN 'retry' THEN 'queued' WHEN 'invalid' THEN 'failed' ELSE d.outcome END)::job_state,
        attempt = j.attempt + CASE d.outcome WHEN 'retry' THEN 1 ELSE 0 END,
        completed_at = CASE WHEN d.outcome IN ('cancelled', 'failed', 'invalid')
                            THEN greatest(clock_timestamp(), COALESCE(j.started_at, j.created_at) + interval '1 microsecond')
                       END,
        run_at = CASE d.outcome WHEN 'retry' THEN clock_timestamp() ELSE j.run_at END,
        error = CASE WHEN d.outcome = 'queued' THEN j.error
                     WHEN d.outcome = 'invalid' THEN jsonb_build_object('type', 'InvalidJob', 'message', d.problem)
                     ELSE jsonb_build_object('type', 'LeaseExpired',
                                             'message', format('node %s stopped renewing its lease', j.lease_node))
                END,
        rescued_from = j.lease_node,
        lease_node = NULL, lease_token = NULL, lease_expires_at = NULL
    FROM decided d
    WHERE j.job_id = d.job_id
    RETURNING j.job_id, d.outcome, j.rescued_from, j.kind, j.queue
),
announced AS (
    SELECT announce_jobs(array_agg(job_id) FILTER (WHERE outcome IN ('cancelled', 'failed', 'invalid')),
                         array_agg(job_id) FILTER (WHERE outcome <> 'queued'))
    FROM rescued
)
SELECT r.* FROM rescued r CROSS JOIN announced;

-- name: quarantine_malformed
-- Fail live jobs that break the rules of migration 0004 (rows written before
-- it, by an older version or by hand), with the rule they break, so that no
-- worker trips on them and their owners see why. At most $1 per call.
-- Announces the jobs failed.
WITH bad AS (
    SELECT job_id,
           job_row_problem(kind, queue, owner_user_id, owner_org_id, unique_key,
                           max_attempts, created_at, run_at) AS problem
    FROM job_status
    WHERE status IN ('queued', 'active')
      AND NOT job_row_well_formed(kind, queue, owner_user_id, owner_org_id, unique_key,
                                  max_attempts, created_at, run_at)
    ORDER BY job_id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
failed AS (
    UPDATE job_status j
    SET status = 'failed',
        completed_at = greatest(clock_timestamp(), COALESCE(j.started_at, j.created_at) + interval '1 microsecond'),
        error = jsonb_build_object('type', 'InvalidJob', 'message', bad.problem),
        lease_node = NULL, lease_token = NULL, lease_expires_at = NULL
    FROM bad
    WHERE j.job_id = bad.job_id
    RETURNING j.job_id, bad.problem, j.kind, j.queue
),
announced AS (SELECT announce_jobs(array_agg(job_id), array_agg(job_id)) FROM failed)
SELECT f.* FROM failed f CROSS JOIN announced;

-- name: fail_unusable
-- Fail jobs this node claimed but cannot run (a row it could not decode or
-- start an actor for), with the reason. Guarded by the lease tokens ($2).
-- Announces the jobs failed.
WITH t AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS t(job_id, token, reason)
),
locked AS (
    SELECT j.job_id FROM job_status j JOIN t USING (job_id)
    ORDER BY j.job_id
    FOR UPDATE OF j
),
failed AS (
    UPDATE job_status j
    SET status = 'failed',
        completed_at = greatest(clock_timestamp(), COALESCE(j.started_at, j.created_at) + interval '1 microsecond'),
        error = jsonb_build_object('type', 'InvalidJob', 'message', t.reason),
        lease_node = NULL, lease_token = NULL, lease_expires_at = NULL
    FROM t JOIN locked USING (job_id)
    WHERE j.job_id = t.job_id AND j.status IN ('queued', 'active') AND j.lease_token = t.token
    RETURNING j.job_id
),
announced AS (SELECT announce_jobs(array_agg(job_id), array_agg(job_id)) FROM failed)
SELECT f.job_id FROM failed f CROSS JOIN announced;

-- name: release_unstarted
-- Give back jobs this node claimed but never started (a claim whose answer
-- came after the node began to stop): back to queued, the lease dropped,
-- started_at as it was before the claim ($3), the attempt not counted.
-- Guarded by status and lease token. A job whose cancel was requested
-- meanwhile stays leased: the rescuer ends it cancelled. Announces the jobs
-- moved back.
WITH t AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS t(job_id, token, previous_started_at)
),
locked AS (
    SELECT j.job_id FROM job_status j JOIN t USING (job_id)
    ORDER BY j.job_id
    FOR UPDATE OF j
),
released AS (
    UPDATE job_status j
    SET status = 'queued', started_at = t.previous_started_at,
        lease_node = NULL, lease_token = NULL, lease_expires_at = NULL
    FROM t JOIN locked USING (job_id)
    WHERE j.job_id = t.job_id AND j.status = 'active' AND j.lease_token = t.token
      AND j.cancel_requested_at IS NULL
    RETURNING j.job_id
),
announced AS (SELECT announce_jobs(NULL, array_agg(job_id)) FROM released)
SELECT r.job_id FROM released r CROSS JOIN announced;

-- name: migration_lock
-- Serialise migration runners of one schema across processes and machines.
SELECT pg_advisory_lock(hashtext('trio-orchestrator migrations ' || $1));

-- name: migration_unlock
SELECT pg_advisory_unlock(hashtext('trio-orchestrator migrations ' || $1));

-- name: create_schema_statement
-- The schema name is an identifier, which cannot be a parameter: let the
-- server quote it.
SELECT format('CREATE SCHEMA IF NOT EXISTS %I', $1::text);

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- name: applied_migrations
SELECT name FROM schema_migrations ORDER BY name;

-- name: record_migration
INSERT INTO schema_migrations (name) VALUES ($1);

-- name: list_jobs
-- An organisation's jobs, newest first, optionally filtered by status, kind,
-- queue and owner, after the keyset cursor ($6 created_at, $7 job_id; both
-- null for the first page). Jobs inserted
-- meanwhile sort before the cursor, so later pages neither repeat nor skip.
-- $8 is the page size (a pager asks for one more row to know if a next page
-- exists).
SELECT * FROM job_status
WHERE owner_org_id = $1
  AND ($2::text IS NULL OR status = $2::job_state)
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::text IS NULL OR queue = $4)
  AND ($5::text IS NULL OR owner_user_id = $5)
  AND ($6::timestamptz IS NULL OR (created_at, job_id) < ($6::timestamptz, $7::uuid))
ORDER BY created_at DESC, job_id DESC
LIMIT $8;

-- name: job_counts
-- How many jobs of an organisation are in each state, per queue.
SELECT queue, status::text AS status, count(*)::bigint AS n
FROM job_status
WHERE owner_org_id = $1
GROUP BY queue, status
ORDER BY queue, status;

-- name: job_series
-- Per minute over the last $2 minutes (oldest first): jobs of an
-- organisation finished in that minute (by outcome), and how many were
-- waiting in the queue at its end. Only jobs unfinished, or finished within
-- the window, can count, so old history is not scanned.
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', clock_timestamp()) - make_interval(mins => $2 - 1),
                           date_trunc('minute', clock_timestamp()), interval '1 minute') AS start
),
recent AS (
    SELECT status, created_at, started_at, completed_at FROM job_status
    WHERE owner_org_id = $1
      AND (completed_at IS NULL OR completed_at >= clock_timestamp() - make_interval(mins => $2 + 1))
)
SELECT m.start,
       count(*) FILTER (WHERE r.status = 'completed' AND r.completed_at >= m.start
                        AND r.completed_at < m.start + interval '1 minute')::bigint AS completed,
       count(*) FILTER (WHERE r.status = 'failed' AND r.completed_at >= m.start
                        AND r.completed_at < m.start + interval '1 minute')::bigint AS failed,
       count(*) FILTER (WHERE r.created_at < m.start + interval '1 minute'
                        AND (r.started_at IS NULL OR r.started_at >= m.start + interval '1 minute')
                        AND (r.completed_at IS NULL OR r.completed_at >= m.start + interval '1 minute'))::bigint AS queued
FROM minutes m LEFT JOIN recent r ON true
GROUP BY m.start
ORDER BY m.start;

-- name: set_plan_cache_mode
-- How this session plans prepared statements: 'force_generic_plan' for the
-- lifecycle's hot statements (planned once per connection), 'auto' for the
-- rest (the store's GENERIC_PLAN_STATEMENTS).
SELECT set_config('plan_cache_mode', $1, false);

-- name: ping
-- The health check: the database answers.
SELECT 1;

-- name: create_token
-- A new API token: only the hash of the secret is stored. One reading of the
-- clock for both times, so a token lives exactly as long as asked.
WITH clock AS (SELECT clock_timestamp() AS now)
INSERT INTO api_tokens (token_id, token_hash, user_id, org_id, role, name, created_at, expires_at)
SELECT $1, $2, $3, $4, $5, $6, now,
       CASE WHEN $7::double precision IS NULL THEN NULL
            ELSE now + make_interval(secs => $7::double precision) END
FROM clock
RETURNING token_id, user_id, org_id, role, name, created_at, expires_at, revoked_at, last_used_at;

-- name: authenticate_token
-- The principal of a live token (not revoked, not expired), if any. Marks
-- it used, at most once a minute, so a busy client does not write per request.
WITH live AS (
    SELECT token_id, user_id, org_id, role FROM api_tokens
    WHERE token_hash = $1 AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > clock_timestamp())
),
touched AS (
    UPDATE api_tokens t SET last_used_at = clock_timestamp()
    FROM live
    WHERE t.token_id = live.token_id
      AND (t.last_used_at IS NULL OR t.last_used_at < clock_timestamp() - interval '1 minute')
    RETURNING t.token_id
)
SELECT token_id, user_id, org_id, role FROM live;

-- name: list_tokens
-- An organisation's tokens, newest first (never their hashes).
SELECT token_id, user_id, org_id, role, name, created_at, expires_at, revoked_at, last_used_at
FROM api_tokens WHERE org_id = $1
ORDER BY created_at DESC, token_id;

-- name: revoke_token
-- Revoke a token for good; revoking it again keeps the first time.
UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, clock_timestamp())
WHERE token_id = $1
RETURNING token_id, user_id, org_id, role, name, created_at, expires_at, revoked_at, last_used_at;

-- Periodic jobs (orchestrator/_periodic.py, migration 0010) ------------------

-- name: periodic_now
-- The database's clock. Which period is due is decided by it, never by a
-- node's own clock, so daemons whose clocks disagree agree on the period.
SELECT clock_timestamp();

-- name: periodic_register
-- A daemon announces a schedule it runs. A new schedule starts after its
-- latest period as of now ($6, from the database's clock): deploying it does
-- not enqueue a period that passed before it existed. One whose cron or time
-- zone changed starts afresh the same way. Otherwise last_period is kept, so
-- a restart neither skips nor doubles a period. An unchanged row is not
-- written.
INSERT INTO periodic_schedules AS s (name, kind, cron, timezone, missed, last_period)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (name) DO UPDATE SET
    kind = EXCLUDED.kind,
    cron = EXCLUDED.cron,
    timezone = EXCLUDED.timezone,
    missed = EXCLUDED.missed,
    last_period = CASE
        WHEN (s.cron, s.timezone) IS DISTINCT FROM (EXCLUDED.cron, EXCLUDED.timezone)
            THEN greatest(s.last_period, EXCLUDED.last_period)
        ELSE s.last_period
    END,
    updated_at = clock_timestamp()
WHERE (s.kind, s.cron, s.timezone, s.missed)
    IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.cron, EXCLUDED.timezone, EXCLUDED.missed);

-- name: periodic_enqueue
-- Enqueue period $2 of schedule $1, once across all daemons. The update
-- advances last_period only if no daemon has reached $2 yet: a concurrent
-- daemon waits on the row lock, then sees the advanced value and updates
-- nothing. The job is inserted only if this update happened, and, when the
-- period is reached more than $13 seconds late ($3 is the database's now)
-- and the schedule skips missed periods ($14 false), not at all: the skip
-- is still recorded. The unique key per period ($12) is a second guard.
WITH advanced AS (
    UPDATE periodic_schedules s
    SET last_period = $2, updated_at = clock_timestamp()
    WHERE s.name = $1 AND (s.last_period IS NULL OR s.last_period < $2) AND $2 <= $3
    RETURNING s.name
),
inserted AS (
    INSERT INTO job_status (
        job_id, kind, queue, payload, owner_user_id, owner_org_id,
        priority, max_attempts, run_at, created_at, unique_key)
    SELECT $4, $5, $6, $7::text::jsonb, $8, $9, $10, $11,
           statement_timestamp(), statement_timestamp(), $12
    FROM advanced
    WHERE $14 OR $3 <= $2 + make_interval(secs => $13)
    ON CONFLICT (owner_org_id, kind, unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('queued', 'active')
        DO NOTHING
    RETURNING job_id
)
SELECT (SELECT count(*) FROM advanced) > 0 AS advanced,
       ($14 OR $3 <= $2 + make_interval(secs => $13)) AS on_time,
       (SELECT job_id FROM inserted) AS job_id;

-- name: advertise_node
-- A worker says what it runs: its kinds, its queues with their limits, its
-- concurrency and its lease, so that `explain` can tell, from the database,
-- whether a live node could claim a job. After register_node.
UPDATE nodes SET kinds = $2::text[], queue_limits = $3::jsonb, concurrency = $4, lease_seconds = $5
WHERE node_id = $1;

-- name: explain_job
-- Everything `explain` needs about one job of an organisation ($1 id, $2
-- organisation), measured by the database's clock in one statement: the row,
-- seconds until it is due, the live nodes that run its kind and claim from
-- its queue and how many of them are at a limit, the jobs ahead of it in
-- claim order, and the heartbeat of the node holding its lease. Durations
-- are numbers of seconds, never timestamps that might not decode.
WITH job AS (
    SELECT * FROM job_status WHERE job_id = $1 AND owner_org_id = $2
),
now AS (
    SELECT clock_timestamp() AS t
),
live AS (
    SELECT n.node_id, n.kinds, n.queue_limits, n.concurrency
    FROM nodes n CROSS JOIN now
    WHERE n.stopped_at IS NULL AND n.kinds IS NOT NULL
      AND n.heartbeat_at >= now.t - make_interval(secs => COALESCE(n.lease_seconds, 30))
),
serving AS (
    SELECT l.node_id, l.concurrency, (l.queue_limits ->> job.queue)::int AS queue_limit,
           -- The node's leases use the lease-node index.
           (SELECT count(*) FROM job_status r
            WHERE r.lease_node = l.node_id AND r.status IN ('queued', 'active') AND r.lease_token IS NOT NULL) AS held,
           (SELECT count(*) FROM job_status r
            WHERE r.lease_node = l.node_id AND r.status IN ('queued', 'active') AND r.lease_token IS NOT NULL
              AND r.queue = job.queue) AS held_in_queue
    FROM live l CROSS JOIN job
    WHERE job.kind = ANY(l.kinds) AND l.queue_limits ? job.queue
)
SELECT job.*,
       now.t AS checked_at,
       extract(epoch FROM job.run_at - now.t)::double precision AS due_in_seconds,
       extract(epoch FROM job.lease_expires_at - now.t)::double precision AS lease_expires_in_seconds,
       extract(epoch FROM now.t - job.cancel_requested_at)::double precision AS cancel_requested_seconds_ago,
       extract(epoch FROM now.t - ln.heartbeat_at)::double precision AS heartbeat_age_seconds,
       ln.stopped_at IS NOT NULL AS lease_node_stopped,
       (SELECT count(*) FROM live)::int AS live_nodes,
       (SELECT count(*) FROM live l WHERE job.kind = ANY(l.kinds))::int AS nodes_running_kind,
       (SELECT count(*) FROM serving)::int AS nodes_serving,
       (SELECT count(*) FROM serving s
        WHERE s.held >= s.concurrency OR s.held_in_queue >= s.queue_limit)::int AS nodes_at_limit,
       -- Due, unleased jobs of its queue that a claim takes first (the claim
       -- index's order: priority, then run_at, then id).
       (SELECT count(*) FROM job_status a
        WHERE a.status = 'queued' AND a.lease_token IS NULL AND a.queue = job.queue
          AND a.run_at <= now.t AND a.priority > job.priority)::int AS ahead_higher_priority,
       (SELECT count(*) FROM job_status a
        WHERE a.status = 'queued' AND a.lease_token IS NULL AND a.queue = job.queue
          AND a.run_at <= now.t
          AND (a.priority > job.priority
               OR (a.priority = job.priority AND (a.run_at, a.job_id) < (job.run_at, job.job_id))))::int AS ahead
FROM job CROSS JOIN now
LEFT JOIN nodes ln ON ln.node_id = job.lease_node;

-- name: prune_lock
-- Take this schema's prune lock for a whole round, without waiting: a
-- session-level advisory lock, held by the one connection the round's
-- batches run on from the first to the last (and released with it if that
-- connection is lost), so one process prunes a schema at a time; false
-- when another process holds it. The same key as the transaction-level
-- lock earlier versions took in each batch, so they exclude each other.
SELECT pg_try_advisory_lock(hashtext('trio-orchestrator prune ' || current_schema()));

-- name: prune_unlock
SELECT pg_advisory_unlock(hashtext('trio-orchestrator prune ' || current_schema()));

-- name: prune_jobs
-- Delete at most $3 jobs in state $1 that finished more than $2 seconds ago,
-- oldest first (the retention index), under the prune lock (prune_lock, on
-- the same connection); how many were deleted. Each batch is its own short
-- transaction. Live jobs are never touched, and SKIP LOCKED never waits on
-- a row another statement holds, so a claim (which locks only queued rows)
-- never waits on a prune, nor a prune on a claim.
WITH doomed AS (
    SELECT j.job_id FROM job_status j
    WHERE j.status = $1::job_state
      AND j.status IN ('completed', 'failed', 'cancelled')
      AND j.completed_at < clock_timestamp() - make_interval(secs => $2)
    ORDER BY j.completed_at
    LIMIT $3
    FOR UPDATE OF j SKIP LOCKED
),
deleted AS (
    DELETE FROM job_status j USING doomed WHERE j.job_id = doomed.job_id
    RETURNING j.job_id
)
SELECT count(*)::bigint AS deleted FROM deleted;

-- name: count_prunable
-- How many jobs prune_jobs would delete: per state ($1), those finished more
-- than the matching number of seconds ($2) ago.
SELECT a.state,
       (SELECT count(*) FROM job_status j
        WHERE j.status = a.state::job_state AND j.status IN ('completed', 'failed', 'cancelled')
          AND j.completed_at < clock_timestamp() - make_interval(secs => a.age))::bigint AS n
FROM unnest($1::text[], $2::double precision[]) WITH ORDINALITY AS a(state, age, i)
ORDER BY a.i;

-- name: queue_depth
-- Live jobs by queue and state, for the queue-depth gauge: one statement per
-- node per interval, and one count per interval across the cluster. The node
-- that finds the single queue_depth row older than $1 seconds and locks it
-- counts and stores; SKIP LOCKED means the others never wait for that, and a
-- row another node refreshed since this statement's snapshot fails the
-- re-checked WHERE of FOR UPDATE, so it is not counted twice. Every node gets
-- the stored counts back (fresh, or at most $1 seconds old), and `refreshed`
-- says whether this call counted.
WITH mine AS (
    SELECT only_row FROM queue_depth
    WHERE refreshed_at < clock_timestamp() - make_interval(secs => $1)
    FOR UPDATE SKIP LOCKED
),
counted AS (
    SELECT COALESCE(jsonb_agg(jsonb_build_object('queue', queue, 'state', status, 'jobs', jobs)), '[]'::jsonb) AS depths
    FROM (
        SELECT queue, status, count(*) AS jobs FROM (
            -- Live jobs only, through the partial indexes that hold nothing
            -- else, so the count costs the live rows, however much history
            -- the table keeps (a plain WHERE status IN (...) is a scan of the
            -- whole table): the unleased queued ones from the claim index
            -- alone (the status is its predicate, so none is read from the
            -- rows), the leased ones (active, or queued and being released)
            -- through the lease index.
            SELECT queue, 'queued'::job_state AS status FROM job_status
            WHERE status = 'queued' AND lease_token IS NULL
            UNION ALL
            SELECT queue, status FROM job_status
            WHERE status IN ('queued', 'active') AND lease_token IS NOT NULL
        ) live
        WHERE EXISTS (SELECT 1 FROM mine)
        GROUP BY queue, status
    ) c
),
stored AS (
    UPDATE queue_depth q SET depths = counted.depths, refreshed_at = clock_timestamp()
    FROM mine, counted
    WHERE q.only_row = mine.only_row
    RETURNING q.depths
)
SELECT depths, true AS refreshed FROM stored
UNION ALL
SELECT depths, false AS refreshed FROM queue_depth WHERE NOT EXISTS (SELECT 1 FROM stored);

-- name: list_schedules
-- Every periodic schedule of the schema, for `orchestrator schedules` and
-- GET /api/schedules, with the database's clock: the next period is worked
-- out from it, so nodes whose clocks disagree list the same thing.
SELECT name, kind, cron, timezone, missed, last_period, created_at, updated_at,
       clock_timestamp() AS checked_at
FROM periodic_schedules
ORDER BY name;
