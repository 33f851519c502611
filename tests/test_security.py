"""Security of a real run: no password anywhere, private networks denied, hostile identifiers.

(A normal run with passwords in the URL and PGPASSWORD, text and JSON, is in test_cli_run.py;
here the error paths, with --verbose tracebacks.)
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from backfill_quality.demo.imageserver import ImageServer
from tests.support.cli import CHECKPOINT_NAME, read_checkpoint, run_cli
from tests.support.faults import dbname_of
from tests.support.pg import with_database
from tests.support.table import Row, UserTable, serve_valid_images

URL_PASSWORD = "UrlS3cret-q7Z"
ENV_PASSWORD = "EnvS3cret-k2W"
FAST_FETCH = ("--retries", "0", "--timeout", "3")


def _failing_setups(database_url: str) -> dict[str, tuple[str, list[str]]]:
    """URL and extra options of runs that fail, each carrying the password in its URL."""
    good = with_database(database_url, dbname_of(database_url), password=URL_PASSWORD)
    return {
        "unreachable": (f"postgresql://bob:{URL_PASSWORD}@127.0.0.1:1/app", []),
        "keyword-form": (f"host=127.0.0.1 port=1 user=bob password={URL_PASSWORD}", []),
        "bad-table": (good, ["--table", "no_such_table"]),
    }


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("setup", ["unreachable", "keyword-form", "bad-table"])
def test_no_password_in_any_error_output_even_with_verbose_tracebacks(
    database_url: str, tmp_path: Path, setup: str, log_format: str
) -> None:
    UserTable(database_url).create()
    url, extra = _failing_setups(database_url)[setup]

    result = run_cli(
        "run",
        "--verbose",
        "--log-format",
        log_format,
        *extra,
        cwd=tmp_path,
        database_url=url,
        env={"PGPASSWORD": ENV_PASSWORD},
    )

    assert result.exit_code in (1, 2), result.output
    assert result.stderr.strip(), "the error is reported"
    for secret in (URL_PASSWORD, ENV_PASSWORD):
        assert secret not in result.stdout
        assert secret not in result.stderr
    for path in tmp_path.iterdir():
        assert URL_PASSWORD not in path.read_text(encoding="utf-8", errors="replace")


def test_deny_private_networks_fails_loopback_rows_without_contacting_them(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = UserTable(database_url, id_type="integer").create().install_audit()
    urls = list(serve_valid_images(image_server, 3))
    localhost = urls[0].replace("127.0.0.1", "localhost")
    rows = table.insert([*urls, localhost])

    result = run_cli(
        "run",
        "--deny-private-networks",
        *FAST_FETCH,
        cwd=tmp_path,
        database_url=database_url,
    )

    assert result.exit_code == 3, result.output
    assert not table.audit_writes()
    hits = sum(image_server.hits(urlsplit(url).path) for url in urls)
    assert hits == 0, "no request reached the private host"
    failed = {
        e["id"]: e["error"] for e in read_checkpoint(tmp_path / CHECKPOINT_NAME)["failedImages"]
    }
    assert set(failed) == {row.id for row in rows}
    for error in failed.values():
        assert re.search(r"private|internal", error, re.IGNORECASE), error


HOSTILE_TABLE = 'images"; DROP TABLE keep; --'
HOSTILE_URL_COLUMN = 'u%s"x'
HOSTILE_SCORE_COLUMN = "score'); DROP TABLE keep; --"


def test_hostile_table_and_column_names_work_and_drop_nothing(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE keep (note text)")
        conn.execute("INSERT INTO keep VALUES ('still here')")
    table = (
        UserTable(
            database_url,
            name=HOSTILE_TABLE,
            url_column=HOSTILE_URL_COLUMN,
            score_column=HOSTILE_SCORE_COLUMN,
            id_type="text",
        )
        .create()
        .install_audit()
    )
    expected = serve_valid_images(image_server, 4)
    rows = [Row(f"k'{n}\"%s", url, None) for n, url in enumerate(expected)]
    insert = sql.SQL("INSERT INTO {} ({}, {}) VALUES ($1, $2)").format(
        sql.Identifier(HOSTILE_TABLE), sql.Identifier("id"), sql.Identifier(HOSTILE_URL_COLUMN)
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        for row in rows:  # $n placeholders: the '%s' in the column name is not a parameter
            psycopg.RawCursor(conn).execute(insert, (row.id, row.url))

    result = run_cli(
        "run", *table.cli_options(), *FAST_FETCH, cwd=tmp_path, database_url=database_url
    )

    assert result.exit_code == 0, result.output
    scores = table.scores()
    assert {r.id: scores[r.id] for r in rows} == {r.id: expected[r.url] for r in rows}
    assert table.audit_writes() == Counter(str(r.id) for r in rows)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT note FROM keep").fetchall() == [("still here",)]
    # the target's own checkpoint: the names made safe for a file name, nothing outside tmp_path
    checkpoint_name = ".backfill-progress.images_DROP_TABLE_keep_--.score_DROP_TABLE_keep_--.json"
    assert read_checkpoint(tmp_path / checkpoint_name)["finished"] is True
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".json"] == [checkpoint_name]
