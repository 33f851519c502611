"""`backfill-quality migrate` on tables as users have them: steps that complete or change
nothing, the watch triggers only when asked for, `--sql`, and tables in other schemas.

Each test runs the real command line against the real embedded PostgreSQL and then reads the
catalog (columns, constraints, indexes, triggers) to see what changed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.config import Target
from backfill_quality.db.migrate import STEPS
from backfill_quality.demo.imageserver import ImageServer
from tests.support.cli import run_cli
from tests.support.sqlscript import split_statements
from tests.support.table import UserTable, serve_valid_images

STEP_LINE = re.compile(r"^([a-z-]+): +(created|already present|skipped) — ", re.MULTILINE)
ALL_STEPS = (
    "table",
    "score-column",
    "score-check",
    "score-index",
    "category-function",
    "unscored-index",
    "watch-triggers",
    "shard-plan",
    "results-table",
)


def outcomes(stdout: str) -> dict[str, str]:
    """step name -> what `migrate` said it did."""
    return dict(STEP_LINE.findall(stdout))


def catalog(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every user-visible object of the database outside the system schemas."""
    queries = {
        "tables": "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE c.relkind = 'r'",
        "columns": "SELECT table_schema, table_name, column_name, data_type"
        " FROM information_schema.columns",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid),"
        " convalidated FROM pg_constraint WHERE contype = 'c' AND conrelid <> 0",
        "indexes": "SELECT indrelid::regclass::text, indexrelid::regclass::text,"
        " pg_get_indexdef(indexrelid), indisvalid FROM pg_index",
        "triggers": "SELECT tgrelid::regclass::text, tgname, encode(tgargs, 'escape')"
        " FROM pg_trigger WHERE NOT tgisinternal",
        "functions": "SELECT pronamespace::regnamespace::text, proname FROM pg_proc",
    }
    system = ("pg_", "information_schema")
    found: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name, query in queries.items():
            rows = conn.execute(query).fetchall()
            found[name] = sorted(
                (r for r in rows if not str(r[0]).split(".")[0].strip('"').startswith(system)),
                key=repr,
            )
    return found


def execute(database_url: str, *statements: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


# --- 1. a step completes or changes nothing ---------------------------------------------------


def test_scores_outside_0_to_100_are_named_and_nothing_is_added(
    database_url: str, tmp_path: Path
) -> None:
    table = UserTable(database_url, name="photos", id_type="integer").create()
    table.insert(["http://h/a.jpg"], score=150)
    table.insert(["http://h/b.jpg"], score=80)
    table.insert(["http://h/c.jpg"], score=-3)
    table.insert(["http://h/d.jpg"])
    bad = {table.rows[0].id, table.rows[2].id}
    before = catalog(database_url)

    result = run_cli("migrate", *table.cli_options(), cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 1, result.output
    assert "2 rows of public.photos" in result.stderr, result.stderr
    assert all(str(key) in result.stderr for key in bad), result.stderr
    assert catalog(database_url) == before, "no constraint, index, function or trigger added"
    listed = re.search(r"(SELECT .+?);", result.stderr)
    assert listed, result.stderr
    with psycopg.connect(database_url) as conn:
        assert {key for (key, _) in conn.execute(listed.group(1)).fetchall()} == bad
    # the application can still write what it wrote before
    table.insert(["http://h/e.jpg"], score=101)

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute('UPDATE photos SET quality_score = NULL WHERE quality_score > 100 OR "id" < 0')
        conn.execute("UPDATE photos SET quality_score = 0 WHERE quality_score < 0")
    fixed = run_cli("migrate", *table.cli_options(), cwd=tmp_path, database_url=database_url)
    assert fixed.exit_code == 0, fixed.output
    assert outcomes(fixed.stdout)["score-check"] == "created"
    constraints = catalog(database_url)["constraints"]
    assert [(c[1], c[3]) for c in constraints if c[0] == "photos"] == [
        ("photos_quality_score_check", True)
    ]


def test_a_check_left_not_valid_by_an_older_version_is_validated(
    database_url: str, tmp_path: Path
) -> None:
    UserTable(database_url).create().insert(["http://h/a.jpg"], score=40)
    execute(
        database_url,
        "ALTER TABLE images ADD CONSTRAINT images_quality_score_check"
        " CHECK (quality_score IS NULL OR quality_score BETWEEN 0 AND 100) NOT VALID",
    )

    result = run_cli("migrate", cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    assert outcomes(result.stdout)["score-check"] == "created"
    checks = [c[1:] for c in catalog(database_url)["constraints"] if c[0] == "images"]
    assert [(name, valid) for name, _, valid in checks] == [("images_quality_score_check", True)]


# --- 2. what each step did; the watch triggers on request; --sql -----------------------------


def test_each_step_is_reported_and_the_watch_triggers_come_only_with_watch(
    database_url: str, tmp_path: Path
) -> None:
    UserTable(database_url).create(with_score_column=False, with_results=False).insert(
        ["http://h/a.jpg"]
    )

    first = run_cli("migrate", cwd=tmp_path, database_url=database_url)

    assert first.exit_code == 0, first.output
    assert outcomes(first.stdout) == {
        "table": "already present",
        "score-column": "created",
        "score-check": "created",
        "score-index": "created",
        "category-function": "created",
        "unscored-index": "created",
        "watch-triggers": "skipped",
        "shard-plan": "created",
        "results-table": "created",
    }
    assert "migrate --watch" in first.stdout
    assert catalog(database_url)["triggers"] == []
    migrated = catalog(database_url)

    second = run_cli("migrate", cwd=tmp_path, database_url=database_url)

    assert second.exit_code == 0, second.output
    assert set(outcomes(second.stdout).values()) == {"already present", "skipped"}
    assert catalog(database_url) == migrated

    with_watch = run_cli("migrate", "--watch", cwd=tmp_path, database_url=database_url)

    assert with_watch.exit_code == 0, with_watch.output
    steps = outcomes(with_watch.stdout)
    assert steps.pop("watch-triggers") == "created"
    assert set(steps.values()) == {"already present"}
    triggers = {name for _, name, _ in catalog(database_url)["triggers"]}
    assert triggers == {"backfill_quality_notify", "backfill_quality_reset_on_url_change"}

    again = run_cli("migrate", "--watch", cwd=tmp_path, database_url=database_url)
    assert set(outcomes(again.stdout).values()) == {"already present"}


def test_sql_prints_the_statements_and_changes_nothing(database_url: str, tmp_path: Path) -> None:
    execute(database_url, "CREATE SCHEMA media")
    UserTable(database_url, schema="media", name="photos", id_type="integer").create(
        with_score_column=False
    )
    options = ("--table", "media.photos", "--watch")
    before = catalog(database_url)

    printed = run_cli("migrate", "--sql", *options, cwd=tmp_path, database_url=database_url)

    assert printed.exit_code == 0, printed.output
    assert catalog(database_url) == before, "--sql changes nothing"
    script = printed.stdout
    assert 'ALTER TABLE "media"."photos" ADD COLUMN IF NOT EXISTS "quality_score"' in script
    assert "CREATE INDEX CONCURRENTLY" in script and "CREATE TRIGGER" in script
    assert "-- table: already present" in script

    # the printed script, run as is, does everything `migrate` would have done
    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in split_statements(script):
            conn.execute(statement.encode())
    after = run_cli("migrate", *options, cwd=tmp_path, database_url=database_url)
    assert after.exit_code == 0, after.output
    assert set(outcomes(after.stdout).values()) == {"already present"}


# --- 3. other schemas, capitals, spaces and dots --------------------------------------------


def test_a_table_in_another_schema_is_migrated_scored_and_reported(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    execute(database_url, "CREATE SCHEMA media")
    table = UserTable(database_url, schema="media", name="photos").create(
        with_score_column=False, with_results=False
    )
    expected = serve_valid_images(image_server, 3)
    table.insert(list(expected))

    migrated = run_cli(
        "migrate", "--table", "media.photos", cwd=tmp_path, database_url=database_url
    )

    assert migrated.exit_code == 0, migrated.output
    found = catalog(database_url)
    assert found["tables"] == [
        ("media", "photos"),
        ("media", "photos_quality_results"),
        ("public", "backfill_quality_shard_plan"),
    ]
    assert ("media.photos", "photos_quality_score_check") in {c[:2] for c in found["constraints"]}
    indexes = {name for _, name, _, valid in found["indexes"] if valid}
    assert {"media.idx_photos_quality_score", "media.idx_photos_quality_score_null"} <= indexes
    assert ("media", "get_quality_category") in found["functions"]

    ran = run_cli("run", "--table", "media.photos", cwd=tmp_path, database_url=database_url)
    assert ran.exit_code == 0, ran.output
    assert sorted(v for v in table.scores().values() if v is not None) == sorted(expected.values())
    status = run_cli(
        "status", "--json", "--table", "media.photos", cwd=tmp_path, database_url=database_url
    )
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["table"]["scored"] == 3


def test_an_unqualified_name_follows_the_search_path(database_url: str, tmp_path: Path) -> None:
    execute(database_url, "CREATE SCHEMA media")
    UserTable(database_url, schema="media", name="images").create(with_score_column=False)
    separator = "&" if "?" in database_url else "?"
    url = f"{database_url}{separator}options=-csearch_path%3Dmedia,public"

    result = run_cli("migrate", cwd=tmp_path, database_url=url)

    assert result.exit_code == 0, result.output
    assert outcomes(result.stdout)["table"] == "already present"
    tables = catalog(database_url)["tables"]
    assert ("media", "images") in tables and ("public", "images") not in tables
    columns = {(s, t, c) for s, t, c, _ in catalog(database_url)["columns"]}
    assert ("media", "images", "quality_score") in columns


def test_migrate_never_creates_a_table_nobody_asked_for(database_url: str, tmp_path: Path) -> None:
    execute(database_url, "CREATE SCHEMA media")
    UserTable(database_url, schema="media", name="images").create(with_score_column=False)
    before = catalog(database_url)

    elsewhere = run_cli("migrate", cwd=tmp_path, database_url=database_url)
    misspelt = run_cli("migrate", "--table", "photos", cwd=tmp_path, database_url=database_url)

    assert elsewhere.exit_code == 2, elsewhere.output
    assert "--table media.images" in elsewhere.stderr, elsewhere.stderr
    assert misspelt.exit_code == 2, misspelt.output
    assert "photos" in misspelt.stderr and "does not exist" in misspelt.stderr
    assert catalog(database_url) == before


def test_the_demo_table_is_created_only_when_none_exists(database_url: str, tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    assert outcomes(result.stdout)["table"] == "created"
    assert ("public", "images") in catalog(database_url)["tables"]


def test_capitals_spaces_and_dots_in_names_everywhere(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    execute(database_url, 'CREATE SCHEMA "My Schema"')
    table = UserTable(
        database_url,
        schema="My Schema",
        name="Bird Photos.v2",
        id_column="PhotoId",
        url_column="Image URL",
        score_column="Score",
        id_type="integer",
    ).create(with_score_column=False)
    expected = serve_valid_images(image_server, 4)
    table.insert(list(expected))
    options = table.cli_options()
    assert options[1] == 'My Schema."Bird Photos.v2"'

    migrated = run_cli("migrate", "--watch", *options, cwd=tmp_path, database_url=database_url)

    assert migrated.exit_code == 0, migrated.output
    found = catalog(database_url)
    qualified = '"My Schema"."Bird Photos.v2"'
    assert (qualified, "Bird Photos.v2_Score_check") in {c[:2] for c in found["constraints"]}
    indexes = {(t, n) for t, n, _, valid in found["indexes"] if valid}
    assert (qualified, '"My Schema"."idx_Bird Photos.v2_Score_null"') in indexes
    triggers = {name: args for t, name, args in found["triggers"] if t == qualified}
    assert set(triggers) == {"backfill_quality_notify", "backfill_quality_reset_on_url_change"}
    assert triggers["backfill_quality_notify"].split("\\000")[:3] == [
        "PhotoId",
        "Image URL",
        "Score",
    ]

    for shard in ("0/2", "1/2"):
        ran = run_cli("run", "--shard", shard, *options, cwd=tmp_path, database_url=database_url)
        assert ran.exit_code == 0, ran.output
    assert sorted(v for v in table.scores().values() if v is not None) == sorted(expected.values())
    status = run_cli("status", "--json", *options, cwd=tmp_path, database_url=database_url)
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["table"]["scored"] == 4

    # the triggers use the table's own columns: a new url resets that row's score
    with psycopg.connect(database_url, autocommit=True) as conn:
        key = table.rows[0].id
        conn.execute(
            'UPDATE "My Schema"."Bird Photos.v2" SET "Image URL" = \'http://h/new.jpg\''
            ' WHERE "PhotoId" = %s',
            (key,),
        )
        row = conn.execute(
            'SELECT "Score" FROM "My Schema"."Bird Photos.v2" WHERE "PhotoId" = %s', (key,)
        ).fetchone()
    assert row == (None,)


@pytest.mark.parametrize(
    ("text", "schema", "table"),
    [
        ("images", None, "images"),
        ("media.photos", "media", "photos"),
        ("Media.Photos", "Media", "Photos"),
        ('"My Schema"."My Table"', "My Schema", "My Table"),
        ("My Schema.My Table", "My Schema", "My Table"),
        ('"a.b"', None, "a.b"),
        ('media."photos.v2"', "media", "photos.v2"),
        ('"say ""hi"""', None, 'say "hi"'),
    ],
)
def test_table_names_are_parsed_as_documented(text: str, schema: str | None, table: str) -> None:
    from backfill_quality.config import parse_table_option

    assert parse_table_option(text) == (schema, table)


@pytest.mark.parametrize("text", ["", "a.", ".b", "a.b.c", '"open', 'a"b', '"a"b', "a..b"])
def test_unusable_table_names_are_refused_with_the_syntax(text: str) -> None:
    from backfill_quality.config import parse_table_option
    from backfill_quality.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--table.*SCHEMA\.TABLE"):
        parse_table_option(text)


def test_the_checkpoint_identity_tells_qualified_names_apart() -> None:
    from backfill_quality.pipeline.target import describe_target, make_fingerprint

    url = "postgresql://app@db:5432/birds"
    dotted = Target(table="a.b")
    qualified = Target(schema="a", table="b")
    fingerprints = {
        make_fingerprint(database=url, target=t, shard=None) for t in (dotted, qualified)
    }
    assert len(fingerprints) == 2
    assert describe_target(database=url, target=dotted, shard=None).endswith(
        ' "a.b"(id,url→quality_score)'
    )
    assert describe_target(database=url, target=qualified, shard=None).endswith(
        " a.b(id,url→quality_score)"
    )
    spaced = Target(schema="My Schema", table="Photos")
    assert '"My Schema"."Photos"' in describe_target(database=url, target=spaced, shard=None)


# --- 4. the results table is a step ---------------------------------------------------------


def test_the_results_table_is_a_step_planned_reported_and_printed(
    database_url: str, tmp_path: Path
) -> None:
    assert [step.name for step in STEPS] == list(ALL_STEPS)
    execute(database_url, "CREATE SCHEMA media")
    table = UserTable(database_url, schema="media", name="photos", id_type="integer")
    table.create(with_results=False)
    options = ("--table", "media.photos")

    printed = run_cli("migrate", "--sql", *options, cwd=tmp_path, database_url=database_url)

    assert printed.exit_code == 0, printed.output
    assert "-- results-table: created — media.photos_quality_results" in printed.stdout
    assert 'CREATE TABLE IF NOT EXISTS "media"."photos_quality_results"' in printed.stdout
    assert 'REFERENCES "media"."photos" ("id")' in printed.stdout
    with db.connect(database_url) as conn:
        assert not db.has_results_table(conn, table.target)

    first = run_cli("migrate", *options, cwd=tmp_path, database_url=database_url)

    assert first.exit_code == 0, first.output
    assert outcomes(first.stdout)["results-table"] == "created"
    assert ("media", "photos_quality_results") in catalog(database_url)["tables"]
    again = run_cli("migrate", *options, cwd=tmp_path, database_url=database_url)
    assert outcomes(again.stdout)["results-table"] == "already present"
    assert "results table" not in again.stdout.replace("results-table", ""), "reported once"


def test_an_unusable_key_stops_migrate_before_it_changes_anything(
    database_url: str, tmp_path: Path
) -> None:
    execute(database_url, "CREATE TABLE photos (ref text, url text NOT NULL)")
    before = catalog(database_url)

    result = run_cli(
        "migrate",
        "--table",
        "photos",
        "--id-column",
        "ref",
        cwd=tmp_path,
        database_url=database_url,
    )

    assert result.exit_code == 2, result.output
    assert "not a primary key or unique column" in result.output
    assert catalog(database_url) == before
