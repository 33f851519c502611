"""Bad input to a real run: options out of range, unusable tables, unusable checkpoints, bad URLs.

Each case checks the exit code, a message that names the problem, no traceback, and that nothing
was written (no score, no new checkpoint, an existing checkpoint left byte for byte).
(`--batch-size 0/51`, `--delay -1`, `--concurrency 0`, unknown tables and columns, malformed JSON
and another table's checkpoint are in tests/test_cli_run.py.)
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from backfill_quality.cli import app
from backfill_quality.demo.imageserver import ImageServer
from tests.support.cli import (
    CHECKPOINT_NAME,
    DRY_RUN_CHECKPOINT_NAME,
    cli_env,
    read_checkpoint,
    run_cli,
)
from tests.support.pg import with_database
from tests.support.table import UserTable, serve_valid_images

FAST_FETCH = ("--retries", "0", "--timeout", "3")
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"


def assert_clean_refusal(output: str, code: int, expected_code: int, *names: str) -> None:
    assert code == expected_code, output
    for name in names:
        assert name.lower() in output.lower(), f"{name!r} not named in: {output}"
    assert "Traceback" not in output


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--retries", "-1"), "--retries"),
        (("--timeout", "0"), "--timeout"),
        (("--max-bytes", "0"), "--max-bytes"),
        (("--max-rps", "0"), "--max-rps"),
        (("--limit", "0"), "--limit"),
        (("--shard", "4/4"), "--shard"),
        (("--shard", "x"), "--shard"),
        (("--threshold", "bogus=1"), "bogus"),
        (("--threshold", "min_short_side=big"), "min_short_side"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, tuple) else None,
)
def test_an_option_out_of_range_is_a_usage_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], named: str
) -> None:
    # usage errors are decided before any I/O: in-process, to keep the matrix fast
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", *args], env={"DATABASE_URL": UNREACHABLE})

    assert_clean_refusal(result.output, result.exit_code, 2, named)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert list(tmp_path.iterdir()) == [], "nothing is written on a usage error"


# --- tables ----------------------------------------------------------------------------------


def test_a_table_whose_id_is_not_unique_is_refused(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    url = next(iter(serve_valid_images(image_server, 1)))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE loose (id bigint, url text, quality_score integer)")
        conn.execute("INSERT INTO loose VALUES (1, %s, NULL), (1, %s, NULL)", (url, url))

        result = run_cli(
            "run", "--table", "loose", *FAST_FETCH, cwd=tmp_path, database_url=database_url
        )

        assert_clean_refusal(result.output, result.exit_code, 2, "--id-column", "unique")
        rows = conn.execute("SELECT quality_score FROM loose").fetchall()
    assert rows == [(None,), (None,)]
    assert not (tmp_path / CHECKPOINT_NAME).exists()


# --- checkpoints -----------------------------------------------------------------------------


@pytest.fixture
def other_database_url(pg_admin_url: str) -> Iterator[str]:
    name = "t_other_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _edit_version(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["version"] = 99
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("version-99", ["version", "--restart"]),
        ("dry-run-checkpoint-for-a-real-run", ["dry run"]),
        ("another-database", ["another target"]),
        ("only-a-dry-run-checkpoint", ["--resume", "no checkpoint"]),
    ],
)
def test_an_unusable_checkpoint_is_refused_and_nothing_is_written(
    database_url: str,
    other_database_url: str,
    image_server: ImageServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    named: list[str],
) -> None:
    urls = list(serve_valid_images(image_server, 5))
    table = UserTable(database_url, id_type="integer").create().install_audit()
    table.insert(urls)
    target_url = database_url
    checkpoint = tmp_path / CHECKPOINT_NAME
    limited = ("--limit", "2", "--batch-size", "2", *FAST_FETCH)
    if case == "another-database":
        UserTable(other_database_url, id_type="integer").create().install_audit().insert(urls)
        target_url = other_database_url
    first = run_cli(
        "run",
        *limited,
        *(["--dry-run"] if "dry-run" in case else []),
        cwd=tmp_path,
        database_url=database_url,
    )
    assert first.exit_code == 0, first.output
    writes_before = table.audit_writes()
    if case == "version-99":
        _edit_version(checkpoint)
    elif case == "dry-run-checkpoint-for-a-real-run":
        shutil.copy(tmp_path / DRY_RUN_CHECKPOINT_NAME, checkpoint)
    files_before = {p.name: p.read_bytes() for p in tmp_path.glob(".backfill-progress*")}

    monkeypatch.chdir(tmp_path)  # the refusal comes before any work: in-process, to stay fast
    result = CliRunner().invoke(
        app, ["run", "--resume", *FAST_FETCH], env={"DATABASE_URL": target_url}
    )

    assert_clean_refusal(result.output, result.exit_code, result.exit_code, *named)
    assert result.exit_code in (1, 2), result.output
    assert {p.name: p.read_bytes() for p in tmp_path.glob(".backfill-progress*")} == files_before
    assert table.audit_writes() == writes_before
    if case == "another-database":
        other = UserTable(other_database_url, id_type="integer")
        assert not other.audit_writes(), "the other database was not touched"


# --- URLs ------------------------------------------------------------------------------------


BAD_URLS = {
    "file": ("file:///etc/passwd", r"scheme 'file'.*only http"),
    "ftp": ("ftp://127.0.0.1/bird.jpg", r"scheme 'ftp'.*only http"),
    "data": ("data:image/png;base64,iVBORw0KGgo=", r"scheme 'data'.*only http"),
    "empty": ("", r"empty|no url|missing"),
    "over-8KB": ("http://127.0.0.1/" + "a" * 8200, r"too long"),
    "no-scheme": ("127.0.0.1/bird.jpg", r"no scheme"),
}


def test_urls_other_than_http_are_failed_with_a_reason_and_the_rest_scored(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = UserTable(database_url, id_type="integer").create().install_audit()
    expected = serve_valid_images(image_server, 3)
    valid = table.insert(list(expected))
    bad = dict(zip(BAD_URLS, table.insert([url for url, _ in BAD_URLS.values()]), strict=True))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE images ALTER COLUMN url DROP NOT NULL")
        (null_id,) = conn.execute(
            "INSERT INTO images (id, url) VALUES (9999, NULL) RETURNING id"
        ).fetchone() or (None,)

    result = run_cli("run", *FAST_FETCH, cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 3, result.output
    scores = table.scores()
    assert {r.id: scores[r.id] for r in valid} == {r.id: expected[r.url] for r in valid}
    assert table.audit_writes() == Counter(str(r.id) for r in valid)
    failed = {
        e["id"]: e["error"] for e in read_checkpoint(tmp_path / CHECKPOINT_NAME)["failedImages"]
    }
    assert set(failed) == {*(r.id for r in bad.values()), null_id}
    for label, row in bad.items():
        pattern = BAD_URLS[label][1]
        assert re.search(pattern, failed[row.id], re.IGNORECASE), (label, failed[row.id])
    assert re.search(BAD_URLS["empty"][1], failed[null_id], re.IGNORECASE), failed[null_id]
    assert "Traceback" not in result.output


# --- the checkpoint's disk -----------------------------------------------------------------------


def test_a_checkpoint_path_under_a_regular_file_is_a_clear_fatal_error(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = UserTable(database_url, id_type="integer").create().install_audit()
    expected = serve_valid_images(image_server, 6)
    table.insert(list(expected))
    (tmp_path / "blocker").write_text("a file, not a directory\n", encoding="utf-8")

    result = run_cli(
        "run",
        "--checkpoint",
        "blocker/progress.json",
        "--batch-size",
        "2",
        *FAST_FETCH,
        cwd=tmp_path,
        database_url=database_url,
    )

    assert result.exit_code in (1, 2), result.output
    assert_clean_refusal(
        result.output, result.exit_code, result.exit_code, "blocker/progress.json", "checkpoint"
    )
    assert "not a directory" in result.output.lower()
    assert (tmp_path / "blocker").read_text(encoding="utf-8") == "a file, not a directory\n"
    assert not table.audit_writes(), "refused before any work"


def _limit_file_size(max_bytes: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec: writes past max_bytes fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def test_a_failed_checkpoint_save_leaves_the_previous_checkpoint_intact(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = UserTable(database_url, id_type="integer").create().install_audit()
    table.insert(list(serve_valid_images(image_server, 6)))
    first = run_cli(
        "run",
        "--limit",
        "2",
        "--batch-size",
        "2",
        *FAST_FETCH,
        cwd=tmp_path,
        database_url=database_url,
    )
    assert first.exit_code == 0, first.output
    checkpoint = tmp_path / CHECKPOINT_NAME
    before = checkpoint.read_bytes()

    # the disk refuses the write (a file size limit: EFBIG, as a full disk gives ENOSPC)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "backfill_quality",
            "run",
            "--resume",
            "--batch-size",
            "2",
            *FAST_FETCH,
        ],
        cwd=tmp_path,
        env=cli_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_file_size(256),
        check=False,
    )

    output = completed.stdout + completed.stderr
    assert_clean_refusal(output, completed.returncode, 1, "cannot save checkpoint")
    assert checkpoint.read_bytes() == before
    assert not list(tmp_path.glob(f".{CHECKPOINT_NAME}.*")), "no temporary file left behind"
    assert all(n == 1 for n in table.audit_writes().values())
