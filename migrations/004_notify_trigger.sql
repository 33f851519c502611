-- 004: tell `backfill-quality watch` about rows to score, so new images are scored in seconds.
--
-- After an INSERT of a row without a score, and after an UPDATE of the url, the trigger sends
-- `NOTIFY backfill_quality` with the row's id as the payload. NOTIFY is transactional: watch hears
-- of a row only once the transaction that wrote it has committed (and hears nothing on rollback).
--
-- A changed url makes the old score stale, so an UPDATE that changes the url and leaves the
-- score as it was also resets the score to NULL (the row is scored again). An UPDATE that sets
-- the url and a new score together keeps that score: the writer knows best.
--
-- Cheap: one catalog change (brief SHARE ROW EXCLUSIVE lock, bounded by lock_timeout), no scan,
-- no rewrite. Idempotent: the function is replaced, the triggers created only when absent.
SET lock_timeout = '2s';  -- then `migrate` pauses and runs the file again

CREATE OR REPLACE FUNCTION backfill_quality_reset_on_url_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.url IS DISTINCT FROM OLD.url
       AND NEW.quality_score IS NOT DISTINCT FROM OLD.quality_score THEN
        NEW.quality_score := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION backfill_quality_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.quality_score IS NULL
       AND (TG_OP = 'INSERT' OR NEW.url IS DISTINCT FROM OLD.url) THEN
        PERFORM pg_notify('backfill_quality', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgrelid = 'images'::regclass AND tgname = 'backfill_quality_reset_on_url_change'
    ) THEN
        CREATE TRIGGER backfill_quality_reset_on_url_change
            BEFORE UPDATE OF url ON images
            FOR EACH ROW EXECUTE FUNCTION backfill_quality_reset_on_url_change();
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgrelid = 'images'::regclass AND tgname = 'backfill_quality_notify'
    ) THEN
        CREATE TRIGGER backfill_quality_notify
            AFTER INSERT OR UPDATE OF url ON images
            FOR EACH ROW EXECUTE FUNCTION backfill_quality_notify();
    END IF;
END
$$;
