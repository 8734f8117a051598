-- Periodic jobs (`orch.periodic`): one row per schedule, shared by every
-- daemon that runs it.
--
-- last_period is the latest period (a UTC instant) that some daemon enqueued,
-- or skipped under missed = 'skip'. Daemons advance it with one guarded
-- statement that also inserts the period's job (periodic_enqueue in
-- orchestrator/sql/queries.sql), so the database, not any daemon, decides
-- which one enqueues each period: exactly once, whichever daemons run,
-- restart, or disagree about the time.
CREATE TABLE periodic_schedules (
    name        text PRIMARY KEY CHECK (name <> '' AND char_length(name) <= 128),
    kind        text NOT NULL CHECK (kind <> ''),
    cron        text NOT NULL CHECK (cron <> ''),
    timezone    text NOT NULL CHECK (timezone <> ''),
    missed      text NOT NULL CHECK (missed IN ('enqueue_once', 'skip')),
    last_period timestamptz,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
