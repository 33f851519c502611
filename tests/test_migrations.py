"""The migration steps against a real PostgreSQL: idempotent, safe on a live table, complete."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.config import Target
from backfill_quality.db.migrate import _carry_out
from backfill_quality.db.migration_steps import resolve_subject
from backfill_quality.errors import ConfigError, DatabaseError, MigrationBlockedError
from tests.support.sqlscript import split_statements

ALL_STEPS = [step.name for step in db.STEPS]
DEFAULT = Target()


def apply(conn: psycopg.Connection[Any], **options: Any) -> list[str]:
    """Every step for the default table (created if absent, with the watch triggers); the
    names of the steps that created something."""
    plans = db.migrate(conn, DEFAULT, may_create_table=True, with_watch=True, **options)
    return [plan.step for plan in plans if plan.outcome == "created"]


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


def test_steps_create_everything_then_nothing_on_a_second_run(
    conn: psycopg.Connection[Any],
) -> None:
    assert apply(conn) == ALL_STEPS
    before = schema_snapshot(conn)
    assert apply(conn) == []
    assert schema_snapshot(conn) == before


def test_a_database_migrated_by_an_older_version_gets_only_the_shard_plan(
    conn: psycopg.Connection[Any],
) -> None:
    apply(conn)
    conn.execute("DROP TABLE backfill_quality_shard_plan")

    assert apply(conn) == ["shard-plan"]

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
    apply(conn)
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
    apply(conn)
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
    apply(conn)
    row = conn.execute("SELECT get_quality_category(%s::integer)", (score,)).fetchone()
    assert row == (category,)


def test_get_quality_category_is_immutable_varchar(conn: psycopg.Connection[Any]) -> None:
    apply(conn)
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

    assert apply(conn) == ALL_STEPS[1:]  # every step but `table`

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
    apply(conn)
    checks = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'images'::regclass AND contype = 'c'"
    ).fetchall()
    assert checks == [("images_quality_score_check",)]
    assert conn.execute("SELECT quality_score FROM images").fetchone() == (77,)


def test_invalid_index_left_by_an_interrupted_build_is_rebuilt(
    conn: psycopg.Connection[Any],
) -> None:
    apply(conn)
    conn.execute("DROP INDEX idx_images_quality_score_null")
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

    assert apply(conn) == ["unscored-index"]

    assert conn.execute(invalid, ("idx_images_quality_score_null",)).fetchone() == (True,)
    definition = conn.execute(
        "SELECT pg_get_indexdef('idx_images_quality_score_null'::regclass)"
    ).fetchone()
    assert definition == (
        "CREATE INDEX idx_images_quality_score_null ON public.images USING btree (id)"
        " WHERE (quality_score IS NULL)",
    )


def test_a_view_is_refused_before_anything_changes(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE VIEW images AS SELECT gen_random_uuid() AS id, 'u'::text AS url")
    before = schema_snapshot(conn)
    with pytest.raises(ConfigError, match=r"images is not a table"):
        apply(conn)
    assert schema_snapshot(conn) == before
    assert conn.execute("SELECT to_regclass('backfill_quality_shard_plan')").fetchone() == (None,)


def test_a_failing_statement_names_its_step_and_the_steps_before_it_stay(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TABLE images (id uuid PRIMARY KEY, url text NOT NULL)")
    # a table of the index's name in the schema: the planner sees it is not the index
    conn.execute("CREATE TABLE idx_images_quality_score_null (x int)")
    with pytest.raises(ConfigError, match=r"public\.idx_images_quality_score_null already exists"):
        apply(conn)
    assert conn.execute("SELECT to_regclass('images_quality_score_check')").fetchone() == (None,)
    columns = conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'images'"
    ).fetchone()
    assert columns == (2,), "refused while planning: not even the column was added"
    assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)


def test_a_row_written_between_the_count_and_the_validation_undoes_the_step(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TABLE images (id integer PRIMARY KEY, url text, quality_score integer)")
    conn.execute("INSERT INTO images VALUES (1, 'u', 50)")
    subject = resolve_subject(conn, DEFAULT, may_create_table=False, with_watch=False)
    (plan,) = [p for p in db.plan_migration(conn, DEFAULT) if p.step == "score-check"]
    conn.execute("INSERT INTO images VALUES (2, 'u', 250)")  # after the planner counted

    with pytest.raises(MigrationBlockedError, match=r"1 row of public\.images has"):
        _carry_out(conn, plan, lambda: subject, (), lambda message: None)

    constraints = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'images'::regclass AND contype = 'c'"
    ).fetchall()
    assert constraints == [], "the NOT VALID constraint was dropped again"
    conn.execute("INSERT INTO images VALUES (3, 'u', 300)")  # the application is not affected


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


def test_a_lock_held_elsewhere_is_waited_for_briefly_then_the_step_retried(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    waits: list[str] = []
    with images_locked_elsewhere(conn, database_url, 3.0):
        started = time.monotonic()
        applied = apply(conn, lock_retry_delays_s=(0.5, 1.0, 1.0, 2.0), on_lock_wait=waits.append)
        waited_s = time.monotonic() - started

    assert applied == ALL_STEPS[1:]  # the column's ALTER TABLE waited out the lock, then went on
    assert waited_s >= 2.5
    assert waits and waits[0] == (
        "score-column: the table is locked by another session; trying again in 0.5s"
        " (attempt 2 of 5)"
    )
    assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)


@pytest.mark.slow  # waits out every lock retry (about 6 s)
def test_a_lock_held_longer_than_every_retry_is_a_clear_error(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    with (
        images_locked_elsewhere(conn, database_url, 6.0),
        pytest.raises(DatabaseError, match=r"migration step score-column: .*locked"),
    ):
        apply(conn, lock_retry_delays_s=(0.1,))
    columns = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'images'"
    ).fetchall()
    assert sorted(columns) == [("id",), ("url",)]


def test_migrations_need_an_autocommit_connection(database_url: str) -> None:
    with psycopg.connect(database_url) as plain, pytest.raises(DatabaseError, match="autocommit"):
        db.migrate(plain, DEFAULT)


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
