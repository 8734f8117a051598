-- Retention: finished jobs are deleted oldest first, a bounded batch per
-- statement, per state. This index finds them without scanning live jobs or
-- the rest of history, however many rows the table holds; the claim index
-- (queued rows only) is untouched by the deletes.
CREATE INDEX job_status_retention_idx
    ON job_status (status, completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
