-- Queue depth for the metrics (orchestrator_queue_depth): one row holding the
-- live jobs by queue and state as some node last counted them, and when.
--
-- Every node reads it once per interval; only the node that finds it older
-- than the interval, and locks it first, counts again (queue_depth in
-- orchestrator/sql/queries.sql). So the cluster pays for one count per
-- interval however many nodes (and scrapes) there are.
CREATE TABLE queue_depth (
    only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    depths       jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(depths) = 'array'),
    refreshed_at timestamptz NOT NULL DEFAULT '1970-01-01 00:00:00+00'
);
INSERT INTO queue_depth DEFAULT VALUES;
