"""The shipped migrations against a real PostgreSQL: idempotent, safe on a live table, complete."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.db.migration_files import migration_files, split_statements
from backfill_quality.errors import DatabaseError

ALL_MIGRATIONS = [
    "001_images_table.sql",
    "002_quality_score.sql",
    "003_unscored_index.sql",
    "004_notify_trigger.sql",
    "005_shard_plan.sql",
]


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(database_url) as connection:
        yield connection


def schema_snapshot(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Columns, constraints, indexes (with validity) and functions of the public schema."""
    return conn.execute(
        """
        SELECT 'column', table_name || '.' || column_name, data_type, is_nullable, ''
          FROM information_schema.columns WHERE table_schema = 'public'
        UNION ALL
        SELECT 'constraint', conname, pg_get_constraintdef(oid), convalidated::text, ''
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'index', c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid::text, ''
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'function', proname, pg_get_functiondef(oid), provolatile::text, ''
          FROM pg_proc WHERE pronamespace = 'public'::regnamespace
        ORDER BY 1, 2
        """
    ).fetchall()


def test_migrations_apply_in_order_then_nothing_on_a_second_run(
    conn: psycopg.Connection[Any],
) -> None:
    assert db.apply_migrations(conn) == ALL_MIGRATIONS
    before = schema_snapshot(conn)
    assert db.apply_migrations(conn) == []
    assert schema_snapshot(conn) == before
    recorded = conn.execute("SELECT name FROM backfill_quality_migrations ORDER BY name")
    assert [name for (name,) in recorded.fetchall()] == ALL_MIGRATIONS


def test_sql_itself_is_idempotent_without_the_tracking_table(
    conn: psycopg.Connection[Any],
) -> None:
    db.apply_migrations(conn)
    before = schema_snapshot(conn)
    conn.execute("DROP TABLE backfill_quality_migrations")
    assert db.apply_migrations(conn) == ALL_MIGRATIONS
    assert schema_snapshot(conn) == before


def test_a_database_migrated_by_an_older_version_gets_only_the_shard_plan(
    conn: psycopg.Connection[Any],
) -> None:
    db.apply_migrations(conn)
    conn.execute("DROP TABLE backfill_quality_shard_plan")
    conn.execute("DELETE FROM backfill_quality_migrations WHERE name = '005_shard_plan.sql'")

    assert db.apply_migrations(conn) == ["005_shard_plan.sql"]

    conn.execute(
        "INSERT INTO backfill_quality_shard_plan (target, shard_count, low, high)"
        " VALUES ('public.images.id', 4, 1, 100)"
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO backfill_quality_shard_plan (target, shard_count, low, high)"
            " VALUES ('public.images.id', 4, 5, 500)"
        )


def test_schema_matches_the_original_migration_015(conn: psycopg.Connection[Any]) -> None:
    db.apply_migrations(conn)
    column = conn.execute(
        "SELECT data_type, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_name = 'images' AND column_name = 'quality_score'"
    ).fetchone()
    assert column == ("integer", "YES", None)
    indexes = dict(
        conn.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) || ' valid=' || i.indisvalid"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'images'::regclass"
        ).fetchall()
    )
    assert indexes["idx_images_quality_score"].endswith(
        "USING btree (quality_score DESC) WHERE (quality_score IS NOT NULL) valid=true"
    )
    assert indexes["idx_images_quality_score_null"].endswith(
        "USING btree (id) WHERE (quality_score IS NULL) valid=true"
    )
    check = conn.execute(
        "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint"
        " WHERE conrelid = 'images'::regclass AND contype = 'c'"
    ).fetchall()
    assert check == [
        (
            "CHECK (((quality_score IS NULL) OR"
            " ((quality_score >= 0) AND (quality_score <= 100))))",
            True,
        )
    ]


def test_constraint_rejects_scores_outside_0_to_100(conn: psycopg.Connection[Any]) -> None:
    db.apply_migrations(conn)
    for score in (None, 0, 100):
        conn.execute("INSERT INTO images (url, quality_score) VALUES ('u', %s)", (score,))
    for score in (101, -1):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO images (url, quality_score) VALUES ('u', %s)", (score,))
    assert conn.execute("SELECT count(*) FROM images").fetchone() == (3,)


@pytest.mark.parametrize(
    ("score", "category"),
    [
        (None, None),
        (0, "low"),
        (59, "low"),
        (60, "medium"),
        (79, "medium"),
        (80, "high"),
        (100, "high"),
    ],
)
def test_get_quality_category(
    conn: psycopg.Connection[Any], score: int | None, category: str | None
) -> None:
    db.apply_migrations(conn)
    row = conn.execute("SELECT get_quality_category(%s::integer)", (score,)).fetchone()
    assert row == (category,)


def test_get_quality_category_is_immutable_varchar(conn: psycopg.Connection[Any]) -> None:
    db.apply_migrations(conn)
    row = conn.execute(
        "SELECT provolatile, pg_get_function_result(oid) FROM pg_proc"
        " WHERE proname = 'get_quality_category'"
    ).fetchone()
    assert row == ("i", "character varying")


def test_existing_table_keeps_rows_and_columns_and_is_not_rewritten(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(
        "CREATE TABLE images (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), url text NOT NULL,"
        " title text, width int)"
    )
    conn.execute(
        "INSERT INTO images (url, title, width)"
        " SELECT 'http://h/' || g, 'title ' || g, g FROM generate_series(1, 500) g"
    )
    before = conn.execute(
        "SELECT md5(string_agg(id::text || url || title || width, ',' ORDER BY id)) FROM images"
    ).fetchone()
    filenode = conn.execute("SELECT pg_relation_filenode('images')").fetchone()

    assert db.apply_migrations(conn) == ALL_MIGRATIONS

    after = conn.execute(
        "SELECT md5(string_agg(id::text || url || title || width, ',' ORDER BY id)) FROM images"
    ).fetchone()
    assert after == before
    assert conn.execute("SELECT pg_relation_filenode('images')").fetchone() == filenode
    assert conn.execute("SELECT count(*) FROM images WHERE quality_score IS NULL").fetchone() == (
        500,
    )
    columns = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'images'"
        " ORDER BY ordinal_position"
    ).fetchall()
    assert [c for (c,) in columns] == ["id", "url", "title", "width", "quality_score"]


def test_database_migrated_by_the_original_gets_no_second_constraint(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TABLE images (id uuid PRIMARY KEY, url text NOT NULL)")
    conn.execute(
        "ALTER TABLE images ADD COLUMN quality_score INTEGER"
        " CHECK (quality_score IS NULL OR quality_score BETWEEN 0 AND 100)"
    )
    conn.execute("INSERT INTO images VALUES (gen_random_uuid(), 'u', 77)")
    db.apply_migrations(conn)
    checks = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'images'::regclass AND contype = 'c'"
    ).fetchall()
    assert checks == [("images_quality_score_check",)]
    assert conn.execute("SELECT quality_score FROM images").fetchone() == (77,)


def test_invalid_index_left_by_an_interrupted_build_is_rebuilt(
    conn: psycopg.Connection[Any],
) -> None:
    db.apply_migrations(conn)
    conn.execute("DROP INDEX idx_images_quality_score_null")
    conn.execute("DELETE FROM backfill_quality_migrations WHERE name = '003_unscored_index.sql'")
    conn.execute("INSERT INTO images (url) VALUES ('same'), ('same')")
    # A failed CONCURRENTLY build leaves its index behind, marked INVALID (as an interrupted
    # one does); this one is unique on duplicate urls, so it must fail.
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY idx_images_quality_score_null ON images (url)"
            " WHERE quality_score IS NULL"
        )
    invalid = "SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass"
    assert conn.execute(invalid, ("idx_images_quality_score_null",)).fetchone() == (False,)

    assert db.apply_migrations(conn) == ["003_unscored_index.sql"]

    assert conn.execute(invalid, ("idx_images_quality_score_null",)).fetchone() == (True,)
    definition = conn.execute(
        "SELECT pg_get_indexdef('idx_images_quality_score_null'::regclass)"
    ).fetchone()
    assert definition == (
        "CREATE INDEX idx_images_quality_score_null ON public.images USING btree (id)"
        " WHERE (quality_score IS NULL)",
    )


def test_a_failing_statement_is_reported_and_the_file_not_recorded(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE VIEW images AS SELECT gen_random_uuid() AS id, 'u'::text AS url")
    with pytest.raises(DatabaseError, match=r"002_quality_score\.sql.*migrate` again"):
        db.apply_migrations(conn)
    recorded = conn.execute("SELECT name FROM backfill_quality_migrations").fetchall()
    assert recorded == [("001_images_table.sql",)]
    assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)


@contextmanager
def images_locked_elsewhere(
    conn: psycopg.Connection[Any], database_url: str, seconds: float
) -> Iterator[None]:
    """A bare `images` table that another session holds ACCESS EXCLUSIVE for `seconds`."""
    conn.execute("CREATE TABLE images (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), url text)")
    locked = threading.Event()

    def hold() -> None:
        with psycopg.connect(database_url) as other, other.transaction():
            other.execute("LOCK TABLE images IN ACCESS EXCLUSIVE MODE")
            locked.set()
            time.sleep(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        yield
    finally:
        holder.join()


def test_a_lock_held_elsewhere_is_waited_for_briefly_then_the_file_retried(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    waits: list[str] = []
    with images_locked_elsewhere(conn, database_url, 3.0):
        started = time.monotonic()
        applied = db.apply_migrations(
            conn, lock_retry_delays_s=(0.5, 1.0, 1.0, 2.0), on_lock_wait=waits.append
        )
        waited_s = time.monotonic() - started

    assert applied == ALL_MIGRATIONS  # 002 (ALTER TABLE) waited out the lock, then went through
    assert waited_s >= 2.5
    assert waits and waits[0] == (
        "002_quality_score.sql: the table is locked by another session; trying again in 0.5s"
        " (attempt 2 of 5)"
    )
    assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)


def test_a_lock_held_longer_than_every_retry_is_a_clear_error(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    with (
        images_locked_elsewhere(conn, database_url, 6.0),
        pytest.raises(DatabaseError, match=r"002_quality_score\.sql.*lock"),
    ):
        db.apply_migrations(conn, lock_retry_delays_s=(0.1,))
    recorded = conn.execute("SELECT name FROM backfill_quality_migrations ORDER BY name")
    assert recorded.fetchall() == [("001_images_table.sql",)]


def test_migrations_need_an_autocommit_connection(database_url: str) -> None:
    with psycopg.connect(database_url) as plain, pytest.raises(DatabaseError, match="autocommit"):
        db.apply_migrations(plain)


def test_migration_files_ship_in_the_package() -> None:
    names = [name for name, _ in migration_files()]
    assert names == ALL_MIGRATIONS
    assert all(text.strip() for _, text in migration_files())


def test_split_statements_respects_quotes_comments_and_dollar_bodies() -> None:
    script = """
    -- a comment; with a semicolon
    SET lock_timeout = '10s';
    /* block; comment */ SELECT 'a;b', "we;ird" FROM t;
    DO $$ BEGIN PERFORM 1; PERFORM 2; END $$;
    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;
    SELECT 'it''s; fine';
    -- trailing comment only
    """
    statements = split_statements(script)
    assert len(statements) == 5
    assert statements[2] == "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$"
    assert statements[3].endswith("$body$ SELECT 1; $body$")
    assert statements[4] == "SELECT 'it''s; fine'"
