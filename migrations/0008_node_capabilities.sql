-- What each node runs, so that `explain` can say from the database alone
-- whether any live node claims a job's kind and queue, and whether every one
-- of them is at its limit. A node writes these when its worker starts; rows
-- of nodes from before this migration keep nulls and count as unknown.

ALTER TABLE nodes ADD COLUMN kinds text[];
-- {"queue": limit, ...}: the queues the node claims from, each with its own
-- limit of jobs running at once on that node.
ALTER TABLE nodes ADD COLUMN queue_limits jsonb;
ALTER TABLE nodes ADD COLUMN concurrency integer CHECK (concurrency >= 1);
-- A node is live while its last heartbeat is younger than its lease.
ALTER TABLE nodes ADD COLUMN lease_seconds double precision CHECK (lease_seconds > 0);
