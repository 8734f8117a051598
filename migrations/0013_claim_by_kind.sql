-- The claim index leads with the kind after the queue, so that a claim (and
-- the next_due probe) reads only rows of the kinds the node runs, and a
-- backlog of other kinds in the same queue costs it nothing. The claim
-- (claim_jobs) walks it once per (queue, kind) and merges by priority.
DROP INDEX job_status_claim_idx;
CREATE INDEX job_status_claim_idx
    ON job_status (queue, kind, priority DESC, run_at, job_id)
    WHERE status = 'queued' AND lease_token IS NULL;
