-- The row rules of migration 0004 as plain predicates, for the CHECK and the
-- claims. job_row_problem builds its messages with format(), which is only
-- STABLE: PostgreSQL does not inline an IMMUTABLE SQL function whose body
-- holds a STABLE call, so every insert and every update of a live row ran
-- five SQL functions through the function executor (about 0.25 ms a row on
-- PostgreSQL 15: 500 rows took 150 ms to insert, 20 ms without it).
--
-- The CHECK spells the rules out rather than calling a function: a function
-- in a CHECK, even one PostgreSQL inlines, is inlined again for every
-- statement that writes the table, which a one-row insert notices. The
-- claims call job_row_well_formed, the same rules as a function of
-- immutable operators, which the planner inlines. Both are true exactly when
-- job_row_problem is NULL (tests/integration/test_row_rules.py), which stays
-- to name the rule when a row is failed.

CREATE FUNCTION job_name_ok(value text, max_chars integer)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    -- C0 controls, DEL and C1 controls, as in job_name_problem.
    SELECT value IS NOT NULL AND value <> '' AND char_length(value) <= max_chars
           AND value !~ '[\x01-\x1f\x7f-\x9f]';
END;

CREATE FUNCTION job_row_well_formed(
    kind text, queue text, owner_user_id text, owner_org_id text, unique_key text,
    max_attempts integer, created_at timestamptz, run_at timestamptz
) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    -- IS NOT TRUE where job_row_problem's CASE gives no message for NULL.
    SELECT job_name_ok(kind, 128) AND job_name_ok(queue, 128)
           AND job_name_ok(owner_user_id, 128) AND job_name_ok(owner_org_id, 128)
           AND (unique_key IS NULL OR job_name_ok(unique_key, 256))
           AND (max_attempts > 1000) IS NOT TRUE
           AND (created_at < '1900-01-01 00:00:00+00' OR created_at >= '9000-01-01 00:00:00+00') IS NOT TRUE
           AND (run_at < '1900-01-01 00:00:00+00' OR run_at >= '9000-01-01 00:00:00+00') IS NOT TRUE;
END;

-- Still NOT VALID, as in 0004: rows already in the table are left to the
-- workers' quarantine. The names, max_attempts and the timestamps are NOT
-- NULL columns, so only unique_key needs a NULL case here.
ALTER TABLE job_status DROP CONSTRAINT job_status_well_formed_check;
ALTER TABLE job_status ADD CONSTRAINT job_status_well_formed_check CHECK (
    status IN ('completed', 'failed', 'cancelled')
    OR (kind <> '' AND char_length(kind) <= 128 AND kind !~ '[\x01-\x1f\x7f-\x9f]'
        AND queue <> '' AND char_length(queue) <= 128 AND queue !~ '[\x01-\x1f\x7f-\x9f]'
        AND owner_user_id <> '' AND char_length(owner_user_id) <= 128
        AND owner_user_id !~ '[\x01-\x1f\x7f-\x9f]'
        AND owner_org_id <> '' AND char_length(owner_org_id) <= 128
        AND owner_org_id !~ '[\x01-\x1f\x7f-\x9f]'
        AND (unique_key IS NULL
             OR (unique_key <> '' AND char_length(unique_key) <= 256 AND unique_key !~ '[\x01-\x1f\x7f-\x9f]'))
        AND max_attempts <= 1000
        AND created_at >= '1900-01-01 00:00:00+00' AND created_at < '9000-01-01 00:00:00+00'
        AND run_at >= '1900-01-01 00:00:00+00' AND run_at < '9000-01-01 00:00:00+00')
) NOT VALID;
