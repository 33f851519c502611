-- 005: the shard plan: the bounds of the integer key that every `run --shard K/N` worker slices.
--
-- The first worker of N for a table records min(id) and max(id) as it reads them; every other
-- worker, and every resume, reads that row back, so all workers cut the same slices however far
-- apart they start (no row falls between two slices). The first slice is open below and the last
-- open above, so rows inserted later are still scored (by the last shard). uuid keys need no plan
-- (fixed slices of the 128-bit space).
--
-- `target` names the table and key column ('schema.table.column', quoted where needed); the
-- database is implicit. Reset before a new backfill: DELETE FROM backfill_quality_shard_plan;
--
-- Cheap and idempotent: a new, empty table, created only if absent.
SET lock_timeout = '2s';  -- then `migrate` pauses and runs the file again

CREATE TABLE IF NOT EXISTS backfill_quality_shard_plan (
    target text NOT NULL,
    shard_count integer NOT NULL CHECK (shard_count > 0),
    low bigint NOT NULL,
    high bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, shard_count)
);
