"""The results table: created by `migrate`, written with every score in one statement, read back
under the keys of `score --json`. Real PostgreSQL, the real image server, the real command line."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from backfill_quality import db
from backfill_quality.config import DetectorChoice, Target, Thresholds
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.results import RESULT_KEYS
from backfill_quality.scoring.checks import CHECKS
from backfill_quality.scoring.version import scorer_version
from tests.support.cli import json_lines, run_cli
from tests.support.results import with_results
from tests.support.table import IdType, UserTable, sample_images, serve_valid_images

KEY_TYPES: list[IdType] = ["uuid", "integer", "text"]
FAST = ("--concurrency", "4", "--retries", "0", "--timeout", "5", "--log-format", "json")


def photos_table(database_url: str, id_type: IdType, *, with_results: bool = True) -> UserTable:
    """A user's table with names of its own (not images/id/url/quality_score)."""
    table = UserTable(
        database_url,
        name="Bird Photos",
        id_column="photo key",
        url_column="photo_url",
        score_column="quality",
        id_type=id_type,
    )
    return table.create(with_results=with_results)


def run(table: UserTable, cwd: Path, *extra: str) -> Any:
    return run_cli(
        "run", *table.cli_options(), *FAST, *extra, cwd=cwd, database_url=table.database_url
    )


def catalog(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def assert_every_score_has_its_result(
    table: UserTable, context: str = "", *, scored_before: frozenset[Any] = frozenset()
) -> dict[Any, Any]:
    """The promise: no score without its result, no result without its score, the same score
    (`scored_before`: rows that had a score before the test, which the tool never touches)."""
    scores = table.scores()
    results = table.results()
    scored = {key for key, score in scores.items() if score is not None} - scored_before
    assert set(results) == scored, (
        f"{context}: scored without result {sorted(map(str, scored - set(results)))}, "
        f"result without score {sorted(map(str, set(results) - scored))}"
    )
    assert all(results[key]["score"] == scores[key] for key in scored), context
    return results


# --- migrate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("id_type", KEY_TYPES)
def test_migrate_creates_the_results_table_keyed_like_the_users_table(
    database_url: str, tmp_path: Path, id_type: IdType
) -> None:
    table = photos_table(database_url, id_type, with_results=False)
    options = ["--table", table.name, "--id-column", table.id_column]
    first = run_cli("migrate", *options, cwd=tmp_path, database_url=database_url)
    assert first.exit_code == 0, first.output
    assert re.search(
        r'^results-table: +created — public\."Bird Photos_quality_results", ', first.stdout, re.M
    )
    again = run_cli("migrate", *options, cwd=tmp_path, database_url=database_url)
    assert again.exit_code == 0, again.output
    assert re.search(
        r'^results-table: +already present — public\."Bird Photos_quality_results"$',
        again.stdout,
        re.M,
    )

    results = table.results_table()
    [(key_type,)] = catalog(
        database_url,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attname = 'image_id'",
        f'"{results}"',
    )
    [(user_key_type,)] = catalog(
        database_url,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attname = %s",
        f'"{table.name}"',
        table.id_column,
    )
    assert key_type == user_key_type
    [(on_delete, referenced)] = catalog(
        database_url,
        "SELECT confdeltype, confrelid::regclass::text FROM pg_constraint"
        " WHERE conrelid = to_regclass(%s) AND contype = 'f'",
        f'"{results}"',
    )
    assert (on_delete, referenced) == ("c", f'"{table.name}"')
    indexed = {
        definition.split(" USING btree ")[1]
        for (definition,) in catalog(
            database_url,
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s",
            results,
        )
    }
    assert {"(scorer_version)", "(scored_at)", "(category)"} <= indexed
    assert "(content_sha256, scorer_version)" in indexed


def test_migrate_refuses_a_key_column_that_is_not_unique(database_url: str, tmp_path: Path) -> None:
    catalog(database_url, "CREATE TABLE pics (code text, url text, quality_score integer)")
    result = run_cli(
        "migrate", "--table", "pics", "--id-column", "code", cwd=tmp_path, database_url=database_url
    )
    assert result.exit_code == 2, result.output
    assert "'code' is not a primary key or unique column" in result.output
    assert catalog(database_url, "SELECT to_regclass('pics_quality_results')") == [(None,)]


# --- run ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("id_type", KEY_TYPES)
def test_each_score_is_written_with_its_result(
    database_url: str, tmp_path: Path, image_server: ImageServer, id_type: IdType
) -> None:
    table = photos_table(database_url, id_type)
    expected = serve_valid_images(image_server, 9)
    valid = table.insert(list(expected))
    broken = table.insert([image_server.url("/status/404"), image_server.url("/not-an-image")])
    earlier = table.insert([next(iter(expected))], score=42)  # scored before: left alone

    result = run(table, tmp_path)

    assert result.exit_code == 3, result.output
    results = assert_every_score_has_its_result(
        table, scored_before=frozenset(row.id for row in earlier)
    )
    assert set(results) == {row.id for row in valid}
    assert all(row.id not in results for row in [*broken, *earlier])
    data_by_url = {image_server.url(f"/img/{n}-{s.name}"): s for n, s in _served(expected)}
    version = scorer_version(DetectorChoice(), Thresholds())
    for row in valid:
        record = results[row.id]
        sample = data_by_url[row.url]
        assert record["source"] == row.url
        assert record["score"] == expected[row.url] == sample.expected_score
        assert record["bytes"] == len(sample.data)
        assert record["contentSha256"] == hashlib.sha256(sample.data).hexdigest()
        assert record["etag"] == f'"{hashlib.sha256(sample.data).hexdigest()[:20]}"'
        assert record["lastModified"].endswith(" GMT")
        assert record["scorerVersion"] == version
        assert record["detector"] == "learned"
        assert set(record["checks"]) == {check.name for check in CHECKS}
        assert record["fetchMs"] > 0 and record["scoreMs"] > 0
    typed = catalog(
        database_url,
        f"SELECT image_id::text, bird_size_score, bird_size_passed, contrast_score,"
        f' contrast_passed FROM "{table.results_table()}"',
    )
    for key, size_score, size_passed, contrast_score, contrast_passed in typed:
        checks = results[key if id_type != "integer" else int(key)]["checks"]
        assert (size_score, size_passed) == (
            checks["birdSize"]["score"],
            checks["birdSize"]["passed"],
        )
        assert (contrast_score, contrast_passed) == (
            checks["contrast"]["score"],
            checks["contrast"]["passed"],
        )


def _served(expected: dict[str, int]) -> list[tuple[int, Any]]:
    samples = sample_images()
    return [(n, samples[n % len(samples)]) for n in range(len(expected))]


def test_score_json_and_the_results_table_describe_a_result_with_the_same_keys(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    table = photos_table(database_url, "integer")
    expected = serve_valid_images(image_server, 7)  # birds, no bird, several kinds of faults
    table.insert(list(expected))
    assert run(table, tmp_path).exit_code == 0

    stored = table.results()
    printed = run_cli("score", "--json", *expected, cwd=tmp_path, timeout_s=120)
    assert printed.exit_code == 0, printed.output
    for line in json_lines(printed.stdout):
        [record] = [r for r in stored.values() if r["source"] == line["source"]]
        assert list(line) == list(record) == list(RESULT_KEYS)
        assert _key_paths(line) == _key_paths(record)
        same = {k for k in RESULT_KEYS if k not in ("scoredAt", "fetchMs", "scoreMs")}
        assert {k: line[k] for k in same} == {k: record[k] for k in same}


def _key_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON value, e.g. 'subject.bbox.x', 'checks.birdSize.reason'."""
    if not isinstance(value, dict):
        return set()
    paths: set[str] = set()
    for key, inner in value.items():
        paths |= {f"{prefix}{key}"} | _key_paths(inner, f"{prefix}{key}.")
    return paths


def test_a_deleted_image_takes_its_result_with_it(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    table = photos_table(database_url, "text")
    rows = table.insert(list(serve_valid_images(image_server, 3)))
    assert run(table, tmp_path).exit_code == 0
    assert set(table.results()) == {row.id for row in rows}
    catalog(database_url, 'DELETE FROM "Bird Photos" WHERE "photo key" = %s', rows[1].id)
    assert set(table.results()) == {rows[0].id, rows[2].id}


def test_a_dry_run_writes_no_result(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    table = photos_table(database_url, "uuid")
    table.insert(list(serve_valid_images(image_server, 4)))
    result = run(table, tmp_path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert table.results() == {}
    assert set(table.scores().values()) == {None}


def test_without_the_results_table_a_run_refuses_and_names_migrate(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    table = photos_table(database_url, "integer", with_results=False)
    table.insert(list(serve_valid_images(image_server, 3)))

    refused = run(table, tmp_path)

    assert refused.exit_code == 2, refused.output
    [message] = [
        json.loads(line)["message"]
        for line in refused.stderr.splitlines()
        if json.loads(line).get("event") == "error"
    ]
    assert 'results table "Bird Photos_quality_results" (what each score' in message
    assert 'backfill-quality migrate --table "Bird Photos" --id-column photo key' in message
    assert "Traceback" not in refused.output
    assert set(table.scores().values()) == {None}
    assert image_server.hits("/img/0-bird.jpg") == 0  # refused before any download
    assert not (tmp_path / ".backfill-progress.json").exists()

    dry = run(table, tmp_path, "--dry-run")  # writes nothing: it may go on, and says so
    assert dry.exit_code == 0, dry.output
    assert "a real run will refuse to start until `backfill-quality migrate`" in dry.output
    assert set(table.scores().values()) == {None}


def test_a_result_the_database_refuses_leaves_the_score_unwritten(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    """The UPDATE runs first in the statement; the INSERT of the result then fails: neither
    stays, the row is reported failed with the database's reason, the others are written."""
    table = photos_table(database_url, "integer")
    rows = table.insert(list(serve_valid_images(image_server, 4)))
    refused = rows[2]
    catalog(
        database_url,
        "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.source = '{refused.url}' THEN RAISE check_violation USING MESSAGE ="
        " 'refused by a test trigger'; END IF; RETURN NEW; END $$",
    )
    catalog(
        database_url,
        f'CREATE TRIGGER refuse_one BEFORE INSERT ON "{table.results_table()}"'
        " FOR EACH ROW EXECUTE FUNCTION refuse_one()",
    )

    result = run(table, tmp_path)

    assert result.exit_code == 3, result.output
    assert "refused by a test trigger" in result.output
    assert table.scores()[refused.id] is None
    results = assert_every_score_has_its_result(table)
    assert set(results) == {row.id for row in rows} - {refused.id}


# --- status ------------------------------------------------------------------------------------


def test_status_counts_the_rows_scored_before_the_results_table_separately(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    table = photos_table(database_url, "uuid", with_results=False)
    urls = list(serve_valid_images(image_server, 5))
    table.insert(urls[:2], score=70)  # scored by an earlier version, before the table existed

    before = run_cli(
        "status", "--json", *table.cli_options(), cwd=tmp_path, database_url=database_url
    )
    assert json.loads(before.stdout)["table"]["scoredWithoutResult"] is None
    text = run_cli("status", *table.cli_options(), cwd=tmp_path, database_url=database_url)
    assert "No results table" in text.stdout

    migrate = ["--table", table.name, "--id-column", table.id_column]
    assert run_cli("migrate", *migrate, cwd=tmp_path, database_url=database_url).exit_code == 0
    table.insert(urls[2:])
    assert run(table, tmp_path).exit_code == 0

    after = run_cli(
        "status", "--json", *table.cli_options(), cwd=tmp_path, database_url=database_url
    )
    figures = json.loads(after.stdout)["table"]
    assert figures["scored"] == 5
    assert figures["scoredWithoutResult"] == 2
    text = run_cli("status", *table.cli_options(), cwd=tmp_path, database_url=database_url)
    assert "Without a stored result: 2 scored rows" in text.stdout


def test_a_run_stores_the_version_its_thresholds_and_detector_make(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    table = photos_table(database_url, "integer")
    table.insert(list(serve_valid_images(image_server, 3)))
    options = ("--threshold", "min_short_side=300", "--detector", "heuristic")
    assert run(table, tmp_path, *options).exit_code == 0
    stored = {record["scorerVersion"] for record in table.results().values()}
    expected = scorer_version(DetectorChoice("heuristic"), Thresholds(min_short_side=300))
    assert stored == {expected}
    assert expected != scorer_version(DetectorChoice("heuristic"), Thresholds())


# --- other schemas, long names (the db layer: migrate has no --schema option yet) ---------------


@pytest.mark.parametrize(
    ("schema", "name"),
    [("media", "photos"), (None, "p" * 60), ('odd "schema"', "Photos; DROP TABLE x")],
)
def test_the_results_table_lives_beside_the_table_whatever_its_name(
    database_url: str, schema: str | None, name: str
) -> None:
    target = Target(table=name, schema=schema)
    qualified = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    with db.connect(database_url) as conn:
        if schema:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, url text, quality_score int)").format(
                qualified
            )
        )
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 'u', NULL), (2, 'u', NULL)").format(qualified)
        )
        [created] = db.migrate(conn, target, only={"results-table"})
        [again] = db.migrate(conn, target, only={"results-table"})
        assert (created.outcome, again.outcome) == ("created", "already present")
        results = db.results_table_name(target)
        assert len(results.encode()) <= 63 and results.endswith("_quality_results")
        [(found_schema,)] = conn.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = %s",
            (results,),
        ).fetchall()
        assert found_schema == (schema or "public")
        assert db.write_scores(conn, target, with_results([(1, 77)])) == [True]
        assert {key: r["score"] for key, r in db.read_results(conn, target).items()} == {1: 77}
