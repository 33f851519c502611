-- 001: the minimal `images` table used by the demo and the tests.
-- Created only if absent: an existing table (with rows and other columns) is left untouched.
SET lock_timeout = '2s';  -- then `migrate` pauses and runs the file again

CREATE TABLE IF NOT EXISTS images (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url text NOT NULL,
    created_at timestamptz DEFAULT now()
);
