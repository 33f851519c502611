"""Security of a real run: no password anywhere, private networks denied, hostile identifiers.

(A normal run with passwords in the URL and PGPASSWORD, text and JSON, is in test_cli_run.py;
here the error paths, with --verbose tracebacks.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
import pytest
from psycopg import sql

from backfill_quality import redaction
from backfill_quality.demo.imageserver import ImageServer
from tests.support.cli import (
    CHECKPOINT_NAME,
    CliResult,
    cli_env,
    invoke_in_process,
    read_checkpoint,
    run_cli,
)
from tests.support.faults import dbname_of
from tests.support.pg import with_database
from tests.support.table import Row, UserTable, serve_valid_images
from tests.test_notify import HookRecorder

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


MALFORMED_URLS = {
    "no-colon-after-scheme": f"postgresql//app:{URL_PASSWORD}@127.0.0.1/db",
    "one-slash": f"postgresql:/app:{URL_PASSWORD}@127.0.0.1/db",
    "no-scheme": f"app:{URL_PASSWORD}@127.0.0.1/db",
    "jdbc": f"jdbc:postgresql://app:{URL_PASSWORD}@127.0.0.1/db",
    "bad-port": f"postgresql://app:{URL_PASSWORD}@127.0.0.1:notaport/db",
    "bad-port-named-host": f"postgresql://app:{URL_PASSWORD}@localhost:54x/db",
    "quoted": f"'postgresql://app:{URL_PASSWORD}@127.0.0.1/db'",
    "at-and-colon-in-password": "postgresql://app:Pw@9x:Q7z@k@127.0.0.1/db",
    "misspelt-option": f"postgresql://app:{URL_PASSWORD}@127.0.0.1/db?sslmod=require",
    "bad-option-value": f"postgresql://app:{URL_PASSWORD}@127.0.0.1/db?sslmode=bogus",
    "keyvalue-quoted-blank": f"host=127.0.0.1 password = 'a b {URL_PASSWORD}' sslmod=require",
    "keyvalue-unquoted-blank": f"host=127.0.0.1 password=first {URL_PASSWORD} dbname=db",
    "percent-encoded": f"postgresql://app:{quote(URL_PASSWORD + '@/')}@127.0.0.1/db?foo=1",
}
"""Connection strings that cannot be used as given; each carries a password."""
HIDDEN_PARTS = (URL_PASSWORD, "Pw@9x:Q7z@k", "9x:Q7z", "Q7z@k", quote(URL_PASSWORD + "@/"))
COMMAND_VARIANTS = {
    "run-text": ("run", "--verbose"),
    "run-json": ("run", "--verbose", "--log-format", "json"),
    "watch-json": ("watch", "--verbose", "--log-format", "json"),
    "status-text": ("status", "--verbose"),
    "status-json": ("status", "--verbose", "--json"),
    "migrate-text": ("migrate", "--verbose"),
}


def _assert_secret_free(result: CliResult, cwd: Path) -> None:
    assert result.exit_code == 2, result.output
    assert "--database-url" in result.output, "the message names what to fix"
    for secret in (*HIDDEN_PARTS, ENV_PASSWORD):
        assert secret not in result.output, f"{secret!r} printed"
    for path in cwd.iterdir():
        assert URL_PASSWORD not in path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs start, like a new process, with no secret registered."""
    monkeypatch.setattr(redaction, "_secrets", set())


@pytest.mark.usefixtures("fresh_secrets")
@pytest.mark.parametrize("variant", sorted(COMMAND_VARIANTS))
@pytest.mark.parametrize("shape", sorted(MALFORMED_URLS))
def test_a_malformed_connection_string_never_prints_its_password(
    tmp_path: Path, shape: str, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq quotes a string it cannot parse back in its error: whatever the shape, every
    message (text, JSON, a --verbose traceback) shows it masked, and says what to fix.
    (In this process, for speed; the next test runs every shape through the real program.)"""
    monkeypatch.chdir(tmp_path)
    result = invoke_in_process(
        *COMMAND_VARIANTS[variant],
        env={"DATABASE_URL": MALFORMED_URLS[shape], "PGPASSWORD": ENV_PASSWORD},
    )

    _assert_secret_free(result, tmp_path)


@pytest.mark.parametrize("shape", sorted(MALFORMED_URLS))
def test_a_malformed_connection_string_is_masked_by_the_real_program(
    tmp_path: Path, shape: str
) -> None:
    """Each shape once in a real process, the commands taken in turn."""
    variants = sorted(COMMAND_VARIANTS)
    variant = variants[sorted(MALFORMED_URLS).index(shape) % len(variants)]

    result = run_cli(
        *COMMAND_VARIANTS[variant],
        cwd=tmp_path,
        database_url=MALFORMED_URLS[shape],
        env={"PGPASSWORD": ENV_PASSWORD},
    )

    _assert_secret_free(result, tmp_path)


def test_a_malformed_connection_string_never_reaches_the_webhook(tmp_path: Path) -> None:
    with HookRecorder() as hooks:
        result = run_cli(
            "run",
            "--notify-url",
            hooks.url("/ok"),
            cwd=tmp_path,
            database_url=MALFORMED_URLS["no-colon-after-scheme"],
        )
        [body] = hooks.payloads("/ok")

    assert result.exit_code == 2, result.output
    assert body["event"] == "run.failed" and "--database-url" in body["error"]
    assert URL_PASSWORD not in json.dumps(body) and URL_PASSWORD not in result.output


_UNCAUGHT_SCRIPT = """
import sys
from backfill_quality.cli.app import app, main

@app.command()
def boom() -> None:
    raise RuntimeError("lost postgresql//app:{pw}@db/prod")

sys.argv = ["backfill-quality", "boom"]
main()
"""


def test_an_exception_no_boundary_caught_is_printed_redacted(tmp_path: Path) -> None:
    """The last net: a bug that escapes every error boundary still prints no password."""
    completed = subprocess.run(
        [sys.executable, "-c", _UNCAUGHT_SCRIPT.format(pw=URL_PASSWORD)],
        cwd=tmp_path,
        env=cli_env(None),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 1
    assert "RuntimeError: lost postgresql//app:***@db/prod" in completed.stderr
    assert URL_PASSWORD not in completed.stderr + completed.stdout


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
