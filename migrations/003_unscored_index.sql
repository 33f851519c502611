-- 003: the partial index of the rows still to score; it keeps the backfill's page query
-- (WHERE quality_score IS NULL AND id > $cursor ORDER BY id) cheap however many rows are scored.
-- Built CONCURRENTLY (writers are never blocked), so this file must run outside a transaction:
-- the migration runner executes it statement by statement in autocommit.
SET lock_timeout = '2s';  -- then `migrate` pauses and runs the file again

-- An interrupted CONCURRENTLY build leaves an INVALID index behind: drop it so it is rebuilt.
DO $$
DECLARE
    leftover regclass := to_regclass('idx_images_quality_score_null');
BEGIN
    IF leftover IS NOT NULL
       AND NOT (SELECT indisvalid FROM pg_index WHERE indexrelid = leftover) THEN
        EXECUTE format('DROP INDEX %s', leftover);
    END IF;
END
$$;

-- A CONCURRENTLY build blocks no one while it waits for older transactions to end.
SET lock_timeout = '10s';

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_images_quality_score_null
    ON images (id) WHERE quality_score IS NULL;
