-- 002: the compatibility schema of the original service (its migration 015).
-- Safe on a large live table: the nullable column without a default is a catalog-only change,
-- the CHECK constraint is added NOT VALID (brief lock, no scan) and validated afterwards
-- (SHARE UPDATE EXCLUSIVE: reads and writes go on), the index is built CONCURRENTLY.
-- Every statement is idempotent. A short lock_timeout keeps a statement that needs a strong lock
-- from queueing (and holding up every query behind it) for long behind a long transaction.
SET lock_timeout = '2s';  -- then `migrate` pauses and runs the file again

ALTER TABLE images ADD COLUMN IF NOT EXISTS quality_score INTEGER;

-- Named like PostgreSQL names an inline CHECK on this column, so a database migrated by the
-- original service (ADD COLUMN quality_score INTEGER CHECK (...)) is recognised.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'images'::regclass AND conname = 'images_quality_score_check'
    ) THEN
        ALTER TABLE images ADD CONSTRAINT images_quality_score_check
            CHECK (quality_score IS NULL OR quality_score BETWEEN 0 AND 100) NOT VALID;
    END IF;
END
$$;

-- A no-op when the constraint is already valid.
ALTER TABLE images VALIDATE CONSTRAINT images_quality_score_check;

-- An interrupted CONCURRENTLY build leaves an INVALID index behind: drop it so it is rebuilt.
DO $$
DECLARE
    leftover regclass := to_regclass('idx_images_quality_score');
BEGIN
    IF leftover IS NOT NULL
       AND NOT (SELECT indisvalid FROM pg_index WHERE indexrelid = leftover) THEN
        EXECUTE format('DROP INDEX %s', leftover);
    END IF;
END
$$;

-- A CONCURRENTLY build blocks no one while it waits for older transactions to end.
SET lock_timeout = '10s';

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_images_quality_score
    ON images (quality_score DESC) WHERE quality_score IS NOT NULL;

CREATE OR REPLACE FUNCTION get_quality_category(score INTEGER)
RETURNS VARCHAR(10)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN score IS NULL THEN NULL
        WHEN score >= 80 THEN 'high'
        WHEN score >= 60 THEN 'medium'
        ELSE 'low'
    END
$$;
