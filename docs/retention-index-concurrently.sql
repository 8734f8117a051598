-- Migration 0009 (0009_retention_index.sql) builds the retention index with
-- a plain CREATE INDEX, inside the migration's transaction: on a big
-- job_status table that blocks every insert and update of the table (submits,
-- claims, every transition) for as long as the build takes. To upgrade such
-- a table, run this file BEFORE `orchestrator migrate` applies 0009 (that is,
-- while `SELECT name FROM orchestrator.schema_migrations` lacks it):
--
--   psql "$ORCHESTRATOR_DATABASE_URL" -v ON_ERROR_STOP=1 -f docs/retention-index-concurrently.sql
--
-- psql runs each statement on its own, outside a transaction, as CREATE
-- INDEX CONCURRENTLY needs; the build then waits for, but never blocks, the
-- daemons' writes. The migration is recorded as applied only once the index
-- is valid, and `orchestrator migrate` then skips it and applies the rest.
-- If the build fails or is interrupted it leaves an INVALID index behind and
-- records nothing: `DROP INDEX CONCURRENTLY orchestrator.job_status_retention_idx;`
-- and run the file again. Another schema than `orchestrator`: change the
-- search_path line.
SET search_path = orchestrator;

CREATE INDEX CONCURRENTLY IF NOT EXISTS job_status_retention_idx
    ON job_status (status, completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

INSERT INTO schema_migrations (name)
SELECT '0009_retention_index.sql'
WHERE EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = 'job_status_retention_idx'::regclass AND indisvalid)
ON CONFLICT (name) DO NOTHING;
