-- The submission boundary in SQL: the same rules as orchestrator/_validation.py
-- for the SQL entry point (submit_job), and CHECK constraints as the last line
-- for every writer.
--
-- A live job (queued or active) must be a row every worker can use: names
-- non-empty, bounded and free of control characters, owners a principal
-- could match, run_at and created_at inside every range the workers decode.
-- Terminal rows are exempt, so that a row written before these rules (by an
-- older version, or by hand) can still be moved to `failed` with the reason.

-- SQL-standard bodies (BEGIN ATOMIC): names are resolved now, not at each
-- call under the caller's search_path, so the CHECK works for a writer whose
-- search_path does not hold this schema.
CREATE FUNCTION job_name_problem(field text, value text, max_chars integer)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE
        WHEN value IS NULL THEN field || ': must not be null'
        WHEN value = '' THEN field || ': must not be empty'
        WHEN char_length(value) > max_chars
            THEN format('%s: must be at most %s characters, got %s', field, max_chars, char_length(value))
        -- C0 controls, DEL and C1 controls (NUL cannot be stored in text).
        WHEN value ~ '[\x01-\x1f\x7f-\x9f]'
            THEN field || ': must not contain control characters'
    END;
END;

CREATE FUNCTION job_row_problem(
    kind text, queue text, owner_user_id text, owner_org_id text, unique_key text,
    max_attempts integer, created_at timestamptz, run_at timestamptz
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT COALESCE(
        job_name_problem('kind', kind, 128),
        job_name_problem('queue', queue, 128),
        job_name_problem('owner_user_id', owner_user_id, 128),
        job_name_problem('owner_org_id', owner_org_id, 128),
        CASE WHEN unique_key IS NOT NULL THEN job_name_problem('unique_key', unique_key, 256) END,
        CASE WHEN max_attempts > 1000 THEN format('max_attempts: must be at most 1000, got %s', max_attempts) END,
        -- Python's datetime ends with year 9999; a delay is at most 100 years.
        CASE WHEN created_at < '1900-01-01 00:00:00+00' OR created_at >= '9000-01-01 00:00:00+00'
             THEN format('created_at: %s is outside years 1900 to 9000', created_at) END,
        CASE WHEN run_at < '1900-01-01 00:00:00+00' OR run_at >= '9000-01-01 00:00:00+00'
             THEN format('run_at: %s is outside years 1900 to 9000', run_at) END
    );
END;

-- NOT VALID: rows already in the table are not checked now (the workers fail
-- the malformed ones with the reason); every insert and update from now on is.
ALTER TABLE job_status ADD CONSTRAINT job_status_well_formed_check CHECK (
    status IN ('completed', 'failed', 'cancelled')
    OR job_row_problem(kind, queue, owner_user_id, owner_org_id, unique_key, max_attempts, created_at, run_at) IS NULL
) NOT VALID;

-- How deep a JSON value nests (objects and arrays), counting stops past `limit`.
CREATE FUNCTION jsonb_depth_exceeds(value jsonb, max_depth integer)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    inner_value jsonb;
BEGIN
    IF jsonb_typeof(value) NOT IN ('object', 'array') THEN
        RETURN false;
    END IF;
    IF max_depth <= 0 THEN
        RETURN true;
    END IF;
    FOR inner_value IN
        SELECT v FROM jsonb_each(CASE WHEN jsonb_typeof(value) = 'object' THEN value END) AS e(k, v)
        UNION ALL
        SELECT v FROM jsonb_array_elements(CASE WHEN jsonb_typeof(value) = 'array' THEN value END) AS a(v)
    LOOP
        IF jsonb_depth_exceeds(inner_value, max_depth - 1) THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END;
$$;

-- submit_job refuses what the library refuses, with SQLSTATE 22023
-- (invalid_parameter_value) and a message naming the parameter.
CREATE OR REPLACE FUNCTION submit_job(
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
SET search_path FROM CURRENT
AS $$
-- Enqueue one job; returns its id (or, for a unique key already queued or
-- active, that job's id). The payload's shape is not validated here (workers
-- validate it against the handler's type when they run it), but it must be
-- JSON a worker can decode: at most 1 MiB, nested at most 64 levels.
#variable_conflict use_column
DECLARE
    new_id uuid;
    problem text;
BEGIN
    problem := COALESCE(
        job_name_problem('kind', submit_job.kind, 128),
        job_name_problem('queue', submit_job.queue, 128),
        job_name_problem('owner_user_id', submit_job.owner_user_id, 128),
        job_name_problem('owner_org_id', submit_job.owner_org_id, 128),
        CASE WHEN submit_job.unique_key IS NOT NULL
             THEN job_name_problem('unique_key', submit_job.unique_key, 256) END,
        CASE WHEN submit_job.payload IS NULL THEN 'payload: must not be null (use ''null''::jsonb)' END,
        CASE WHEN submit_job.priority IS NULL THEN 'priority: must not be null' END,
        CASE WHEN submit_job.max_attempts IS NULL OR submit_job.max_attempts NOT BETWEEN 1 AND 1000
             THEN format('max_attempts: must be between 1 and 1000, got %s', submit_job.max_attempts) END,
        CASE WHEN submit_job.delay_seconds IS NULL
                  OR submit_job.delay_seconds = 'NaN'::double precision
                  OR submit_job.delay_seconds NOT BETWEEN 0 AND 3153600000
             THEN format('delay_seconds: must be from 0 to 3153600000 (100 years), got %s', submit_job.delay_seconds) END
    );
    IF problem IS NULL AND octet_length(submit_job.payload::text) > 1048576 THEN
        problem := format('payload: must encode to at most 1048576 bytes of JSON, got %s', octet_length(submit_job.payload::text));
    END IF;
    IF problem IS NULL AND jsonb_depth_exceeds(submit_job.payload, 64) THEN
        problem := 'payload: nests deeper than 64 levels';
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = 'submit_job: ' || problem;
    END IF;
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
