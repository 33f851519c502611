"""`backfill-quality run` end to end: the real console script, a real PostgreSQL, real HTTP.

Every test looks at three things afterwards: the exit code, the table (scores, and an audit
trigger that records each UPDATE of the score column), and the checkpoint file.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backfill_quality.config import Thresholds, parse_detector
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.pipeline.checkpoint import Checkpoint, save_checkpoint
from backfill_quality.scoring.detectors.factory import load_detector
from backfill_quality.scoring.score import score_image
from tests.support.cli import (
    CHECKPOINT_NAME,
    DRY_RUN_CHECKPOINT_NAME,
    SPEC_CHECKPOINT_KEYS,
    CliResult,
    invoke_in_process,
    json_lines,
    read_checkpoint,
    run_cli,
)
from tests.support.models import anchors, yolo_layout_model
from tests.support.pg import with_database
from tests.support.table import (
    IdType,
    Row,
    UserTable,
    apply_migrations,
    broken_urls,
    sample_images,
    serve_valid_images,
)

FAST_FETCH = ("--retries", "0", "--timeout", "2")
"""No retries, short timeouts: for tests where retrying is not the point."""
NOTHING_TO_DO = "No images need quality score backfill"
DB_PASSWORD = "S3cretPw"
ENV_PASSWORD = "PgEnvS3cretX"
REASONS = {
    "404": r"\b404\b",
    "500": r"\b500\b",
    "not-an-image": r"not an image",
    "truncated": r"truncat|closed|incomplete",
    "refused": r"refused",
    "file": r"scheme|only http",
}
"""What the recorded error of each broken URL must say (case-insensitive)."""


# --- helpers --------------------------------------------------------------------------------------


def run(tmp_path: Path, database_url: str, *args: str, **kwargs: Any) -> CliResult:
    return run_cli("run", *args, cwd=tmp_path, database_url=database_url, **kwargs)


def migrate(tmp_path: Path, database_url: str) -> None:
    result = run_cli("migrate", cwd=tmp_path, database_url=database_url)
    assert result.exit_code == 0, result.output


def images_table(database_url: str) -> UserTable:
    """A migrated `images` table with the audit trigger installed."""
    table = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    return table.install_audit()


def keys(rows: Iterable[Row]) -> set[str]:
    return {str(row.id) for row in rows}


def assert_spec_checkpoint(checkpoint: dict[str, Any], *, is_dry_run: bool = False) -> None:
    """The keys of SPEC section 4 with sensible types."""
    assert checkpoint.keys() >= SPEC_CHECKPOINT_KEYS, SPEC_CHECKPOINT_KEYS - checkpoint.keys()
    assert checkpoint["version"] == 1
    assert checkpoint["dryRun"] is is_dry_run
    assert isinstance(checkpoint["fingerprint"], str) and checkpoint["fingerprint"]
    for key in ("startTime", "updatedAt"):
        assert datetime.fromisoformat(checkpoint[key]).tzinfo is not None, checkpoint[key]
    assert isinstance(checkpoint["estimatedTimeRemaining"], str)
    for count in ("total", "processed", "succeeded", "failed"):
        assert isinstance(checkpoint[count], int), count
    assert checkpoint["processed"] >= checkpoint["succeeded"] + checkpoint["failed"]
    for entry in checkpoint["failedImages"]:
        assert {"id", "url", "error"} <= entry.keys()
        assert entry["error"].strip()


def failed_entries(checkpoint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(entry["id"]): entry for entry in checkpoint["failedImages"]}


def assert_scored(table: UserTable, rows: Iterable[Row], expected: dict[str, int]) -> None:
    scores = table.scores()
    wrong = {row.id: (scores[row.id], expected[row.url]) for row in rows}
    wrong = {key: pair for key, pair in wrong.items() if pair[0] != pair[1]}
    assert not wrong, f"rows with (actual, expected) scores: {wrong}"


def assert_null(table: UserTable, rows: Iterable[Row]) -> None:
    scores = table.scores()
    written = {row.id: scores[row.id] for row in rows if scores[row.id] is not None}
    assert not written, f"rows that must stay NULL were written: {written}"


def path_of(url: str) -> str:
    return urlsplit(url).path


# --- the full story on a user-shaped table --------------------------------------------------------


def test_run_scores_a_user_table_keeps_prescored_rows_and_lists_broken_urls(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = UserTable(database_url).create(with_score_column=False)
    valid = serve_valid_images(image_server, 18)
    broken = broken_urls(image_server)
    valid_rows = table.insert(list(valid))
    broken_rows = table.insert(list(broken.values()))
    migrate(tmp_path, database_url)  # adds the score column to a table with rows and columns
    prescored = [
        *table.insert([valid_rows[0].url], score=0),
        *table.insert([valid_rows[1].url], score=55),
        *table.insert([valid_rows[2].url], score=100),
        *table.insert([broken["404"]], score=77),
    ]
    table.install_audit()
    unscored_keys = table.ordered_keys(unscored_only=True)
    before = _other_columns(database_url)

    result = run(tmp_path, database_url, "--batch-size", "7", *FAST_FETCH, use_console_script=True)

    assert result.exit_code == 3, result.output
    assert_scored(table, valid_rows, valid)
    assert_null(table, broken_rows)
    scores = table.scores()
    assert {row.id: scores[row.id] for row in prescored} == {row.id: row.score for row in prescored}
    assert table.audit_writes() == Counter(keys(valid_rows)), "each valid row written once"
    assert _other_columns(database_url) == before, "only the score column is written"

    checkpoint = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert_spec_checkpoint(checkpoint)
    assert (checkpoint["total"], checkpoint["processed"]) == (24, 24)
    assert (checkpoint["succeeded"], checkpoint["failed"]) == (18, 6)
    assert checkpoint["lastProcessedId"] == unscored_keys[-1]
    failed = failed_entries(checkpoint)
    assert set(failed) == keys(broken_rows)
    for row, (label, url) in zip(broken_rows, broken.items(), strict=True):
        assert failed[str(row.id)]["url"] == url
        assert re.search(REASONS[label], failed[str(row.id)]["error"], re.IGNORECASE), (
            label,
            failed[str(row.id)]["error"],
        )
    assert "Progress Summary" in result.stderr
    assert all(str(row.id) in result.stderr for row in broken_rows), "failed rows are listed"


def _other_columns(database_url: str) -> dict[str, tuple[Any, ...]]:
    """Every column but the score, by id."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id::text, url, title, created_at, width_px FROM images")
        return {row[0]: tuple(row[1:]) for row in rows.fetchall()}


# --- dry run --------------------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_keeps_its_own_checkpoint(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = images_table(database_url)
    valid = serve_valid_images(image_server, 10)
    valid_rows = table.insert(list(valid))
    broken_rows = table.insert([image_server.url("/status/404")])
    first_six = set(map(str, table.ordered_keys()[:6]))
    dry_exit = 3 if keys(broken_rows) & first_six else 0

    dry = run(tmp_path, database_url, "--dry-run", "--limit", "6", "--batch-size", "3", *FAST_FETCH)

    assert dry.exit_code == dry_exit, dry.output
    assert_null(table, [*valid_rows, *broken_rows])
    assert not table.audit_writes()
    assert not (tmp_path / CHECKPOINT_NAME).exists(), "a dry run must not touch the real checkpoint"
    dry_path = tmp_path / DRY_RUN_CHECKPOINT_NAME
    dry_checkpoint = read_checkpoint(dry_path)
    assert_spec_checkpoint(dry_checkpoint, is_dry_run=True)
    assert dry_checkpoint["processed"] == 6
    assert set(failed_entries(dry_checkpoint)) == keys(broken_rows) & first_six
    assert "dry run" in dry.stderr.lower()
    dry_bytes = dry_path.read_bytes()

    real = run(tmp_path, database_url, *FAST_FETCH)  # no --resume: the dry run is not in the way

    assert real.exit_code == 3, real.output
    assert_scored(table, valid_rows, valid)
    assert_null(table, broken_rows)
    assert table.audit_writes() == Counter(keys(valid_rows))
    checkpoint = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert_spec_checkpoint(checkpoint)
    assert (checkpoint["processed"], checkpoint["succeeded"], checkpoint["failed"]) == (11, 10, 1)
    assert dry_path.read_bytes() == dry_bytes, "the real run must not touch the dry-run checkpoint"


def summary_block(stderr: str) -> dict[str, str]:
    """The 'Label: value' lines of the closing Progress Summary."""
    block = stderr.split("Progress Summary", 1)[1].split("═" * 60)[1]
    return dict(
        (label.strip(), value.strip())
        for label, _, value in (line.partition(":") for line in block.splitlines())
        if value
    )


def categories(scores: Iterable[int]) -> dict[str, int]:
    counts = {"high": 0, "medium": 0, "low": 0}
    for score in scores:
        counts["high" if score >= 80 else "medium" if score >= 60 else "low"] += 1
    return counts


def test_a_limited_dry_run_shows_its_scores_and_the_rows_left_and_never_blocks_the_next(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = images_table(database_url)
    valid = serve_valid_images(image_server, 8)
    rows = table.insert(list(valid))
    score_of = {str(row.id): valid[row.url] for row in rows}
    first_five = [score_of[str(key)] for key in table.ordered_keys()[:5]]
    limited = ("--dry-run", "--limit", "5", "--batch-size", "2", *FAST_FETCH)

    first = run(tmp_path, database_url, *limited)

    assert first.exit_code == 0, first.output
    lines = summary_block(first.stderr)
    assert lines["Total"] == "8 images", "Total is the rows left, not the limit"
    assert lines["Limit"].startswith("5 "), lines
    assert lines["Processed"] == "5 (62.5%)"
    for category, count in categories(first_five).items():
        assert re.search(rf"^\s*{category}\s+{count}\b", first.stderr, re.MULTILINE), (
            category,
            first.stderr,
        )
    histogram = re.findall(r"^\s*(\d+-\d+)\s+(\d+)", first.stderr, re.MULTILINE)
    assert [label for label, _ in histogram][-1] == "90-100" and len(histogram) == 10
    assert [int(n) for _, n in histogram] == [
        sum(1 for s in first_five if min(s // 10, 9) == decile) for decile in range(10)
    ]
    dry_path = tmp_path / DRY_RUN_CHECKPOINT_NAME
    checkpoint = read_checkpoint(dry_path)
    assert (checkpoint["total"], checkpoint["processed"], checkpoint["finished"]) == (8, 5, False)

    again = run(tmp_path, database_url, *limited)  # no --resume, no --restart

    assert again.exit_code == 0, again.output
    assert read_checkpoint(dry_path)["processed"] == 5
    assert summary_block(again.stderr)["Total"] == "8 images"

    whole = run(tmp_path, database_url, "--dry-run", "--log-format", "json", *FAST_FETCH)

    assert whole.exit_code == 0, whole.output
    events = json_lines(whole.stderr)
    start = next(e for e in events if e["event"] == "start")
    assert (start["total"], start["limit"]) == (8, None)
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["scoreDistribution"] == categories(valid[row.url] for row in rows)
    assert sum(summary["scoreHistogram"]) == 8
    assert_null(table, rows)
    assert not table.audit_writes()
    assert not (tmp_path / CHECKPOINT_NAME).exists()


# --- interrupted and repeated runs ----------------------------------------------------------------


def test_limited_run_then_resume_finishes_without_rewriting_or_refetching(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = images_table(database_url)
    valid = serve_valid_images(image_server, 40)
    valid_rows = table.insert(list(valid))
    broken_rows = table.insert([image_server.url("/status/404"), image_server.url("/not-an-image")])
    order = [str(key) for key in table.ordered_keys()]
    first_part = set(order[:30])
    by_key = {str(row.id): row for row in [*valid_rows, *broken_rows]}

    first = run(tmp_path, database_url, "--limit", "30", "--batch-size", "10", *FAST_FETCH)

    assert first.exit_code == (3 if keys(broken_rows) & first_part else 0), first.output
    done_valid = [row for row in valid_rows if str(row.id) in first_part]
    assert_scored(table, done_valid, valid)
    assert_null(table, [by_key[key] for key in order[30:]])
    assert table.audit_writes() == Counter(keys(done_valid))
    checkpoint = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert_spec_checkpoint(checkpoint)
    assert checkpoint["processed"] == 30
    assert str(checkpoint["lastProcessedId"]) == order[29]

    refused = run(tmp_path, database_url, *FAST_FETCH)

    assert refused.exit_code == 2, refused.output
    assert "--resume" in refused.output and "--restart" in refused.output
    assert table.audit_writes() == Counter(keys(done_valid)), "a refused run writes nothing"
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME)["processed"] == 30

    resumed = run(tmp_path, database_url, "--resume", "--batch-size", "10", *FAST_FETCH)

    assert resumed.exit_code == 3, resumed.output  # the failed rows stay listed
    assert_scored(table, valid_rows, valid)
    assert_null(table, broken_rows)
    assert table.audit_writes() == Counter(keys(valid_rows)), "no row written twice"
    assert all(image_server.hits(path_of(url)) == 1 for url in valid), "no image fetched twice"
    checkpoint = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert_spec_checkpoint(checkpoint)
    assert (checkpoint["total"], checkpoint["processed"]) == (42, 42)
    assert (checkpoint["succeeded"], checkpoint["failed"]) == (40, 2)
    assert str(checkpoint["lastProcessedId"]) == order[-1]
    assert set(failed_entries(checkpoint)) == keys(broken_rows)


def test_second_run_over_a_finished_table_has_nothing_to_do(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = images_table(database_url)
    valid = serve_valid_images(image_server, 6)
    rows = table.insert(list(valid))
    first = run(tmp_path, database_url, *FAST_FETCH)
    assert first.exit_code == 0, first.output

    second = run(tmp_path, database_url, *FAST_FETCH)

    assert second.exit_code == 0, second.output
    assert NOTHING_TO_DO in second.output
    assert_scored(table, rows, valid)
    assert table.audit_writes() == Counter(keys(rows))
    assert all(image_server.hits(path_of(url)) == 1 for url in valid)
    checkpoint = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert_spec_checkpoint(checkpoint)
    assert (checkpoint["failed"], checkpoint["failedImages"]) == (0, [])


# --- pacing options and other tables --------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [("--concurrency", "1"), ("--batch-size", "1")],
    ids=["sequential", "one-row-pages"],
)
def test_pacing_options_still_score_every_row(
    database_url: str, image_server: ImageServer, tmp_path: Path, options: tuple[str, ...]
) -> None:
    table = images_table(database_url)
    valid = serve_valid_images(image_server, 8)
    valid_rows = table.insert(list(valid))
    broken_rows = table.insert([image_server.url("/status/500")])

    result = run(tmp_path, database_url, *options, *FAST_FETCH)

    assert result.exit_code == 3, result.output
    assert_scored(table, valid_rows, valid)
    assert_null(table, broken_rows)
    assert table.audit_writes() == Counter(keys(valid_rows))
    checkpoint = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert_spec_checkpoint(checkpoint)
    assert (checkpoint["processed"], checkpoint["succeeded"], checkpoint["failed"]) == (9, 8, 1)
    assert checkpoint["lastProcessedId"] == table.ordered_keys()[-1]


@pytest.mark.parametrize(
    ("id_type", "names", "checkpoint_name"),
    [
        (
            "integer",
            ("Bird Photos", "photoKey", "imageUrl", "qualityScore"),
            ".backfill-progress.Bird_Photos.qualityScore.json",
        ),
        (
            "text",
            ("uploads", "slug", "source url", "score"),
            ".backfill-progress.uploads.score.json",
        ),
    ],
    ids=["integer-keys-quoted-names", "text-keys"],
)
def test_other_key_types_and_table_names(
    database_url: str,
    image_server: ImageServer,
    tmp_path: Path,
    id_type: IdType,
    names: tuple[str, str, str, str],
    checkpoint_name: str,
) -> None:
    name, id_column, url_column, score_column = names
    table = UserTable(database_url, name, id_column, url_column, score_column, id_type)
    table.create().install_audit()
    valid = serve_valid_images(image_server, 10)
    valid_rows = table.insert(list(valid))
    broken_rows = table.insert([image_server.url("/status/404")])
    prescored = table.insert([valid_rows[0].url], score=12)

    result = run(tmp_path, database_url, *table.cli_options(), "--batch-size", "4", *FAST_FETCH)

    assert result.exit_code == 3, result.output
    assert_scored(table, valid_rows, valid)
    assert_null(table, broken_rows)
    assert table.scores()[prescored[0].id] == 12
    assert table.audit_writes() == Counter(keys(valid_rows))
    checkpoint = read_checkpoint(tmp_path / checkpoint_name)  # the table's own file
    assert_spec_checkpoint(checkpoint)
    unscored = [key for key in table.ordered_keys() if key != prescored[0].id]
    assert checkpoint["lastProcessedId"] == unscored[-1]  # an integer stays a JSON integer
    assert [entry["id"] for entry in checkpoint["failedImages"]] == [broken_rows[0].id]


# --- refusals: options, targets, checkpoints ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--batch-size", "0"), "--batch-size"),
        (("--batch-size", "51"), "--batch-size"),
        (("--delay", "-1"), "--delay"),
        (("--concurrency", "0"), "--concurrency"),
        (("--concurrency", "lots"), "--concurrency"),
        (("--max-concurrency", "0"), "--max-concurrency"),
        (("--max-per-host", "0"), "--max-per-host"),
        (("--log-format", "xml"), "--log-format"),
    ],
    ids=[
        "batch-size-0",
        "batch-size-51",
        "negative-delay",
        "concurrency-0",
        "concurrency-word",
        "max-concurrency-0",
        "max-per-host-0",
        "log-format-xml",
    ],
)
def test_bad_option_values_are_usage_errors_naming_the_option(
    args: tuple[str, ...], option: str
) -> None:
    result = invoke_in_process("run", *args)  # parsing only: no database, no files

    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("option", "missing"),
    [
        ("--table", "no_such_table"),
        ("--score-column", "no_such_score"),
    ],
)
def test_unknown_table_or_column_is_a_usage_error_naming_it(
    database_url: str, image_server: ImageServer, tmp_path: Path, option: str, missing: str
) -> None:
    table = images_table(database_url)
    rows = table.insert(list(serve_valid_images(image_server, 2)))

    result = run(tmp_path, database_url, option, missing, *FAST_FETCH)

    assert result.exit_code == 2, result.output
    assert missing in result.output and option in result.output
    assert "Traceback" not in result.output
    assert_null(table, rows)
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_resume_without_a_checkpoint_is_a_usage_error(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = images_table(database_url)
    rows = table.insert(list(serve_valid_images(image_server, 2)))

    result = run(tmp_path, database_url, "--resume", *FAST_FETCH)

    assert result.exit_code == 2, result.output
    assert "--resume" in result.output and "checkpoint" in result.output.lower()
    assert_null(table, rows)
    assert not (tmp_path / CHECKPOINT_NAME).exists()


@pytest.mark.parametrize("resume", [True, False], ids=["with-resume", "without-resume"])
def test_a_corrupt_checkpoint_is_refused_and_nothing_is_written(
    database_url: str, image_server: ImageServer, tmp_path: Path, resume: bool
) -> None:
    table = images_table(database_url)
    rows = table.insert(list(serve_valid_images(image_server, 3)))
    corrupt = '{"version": 1, "total": 40, "processed": '
    (tmp_path / CHECKPOINT_NAME).write_text(corrupt, encoding="utf-8")

    result = run(tmp_path, database_url, *(["--resume"] if resume else []), *FAST_FETCH)

    assert result.exit_code not in (0, 3), result.output
    assert CHECKPOINT_NAME in result.output and "JSON" in result.output
    assert "--restart" in result.output, "the message says how to start over"
    assert "Traceback" not in result.output
    assert_null(table, rows)
    assert not table.audit_writes()
    assert (tmp_path / CHECKPOINT_NAME).read_text(encoding="utf-8") == corrupt


def test_resuming_a_checkpoint_of_another_target_is_refused(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    images = images_table(database_url)
    rows = images.insert(list(serve_valid_images(image_server, 6)))
    archive = UserTable(database_url, name="archive_images").create().install_audit()
    archive_rows = archive.insert(list(serve_valid_images(image_server, 3, prefix="archive")))
    first = run(tmp_path, database_url, "--limit", "2", "--batch-size", "2", *FAST_FETCH)
    assert first.exit_code == 0, first.output
    checkpoint_before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    written_before = images.audit_writes()

    result = run(tmp_path, database_url, "--resume", "--url-column", "title", *FAST_FETCH)

    assert result.exit_code in (1, 2), result.output
    assert "another target" in result.output, result.output
    assert "--restart" in result.output or "--checkpoint" in result.output
    assert images.audit_writes() == written_before and len(written_before) == 2
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == checkpoint_before

    other_table = run(tmp_path, database_url, "--resume", *archive.cli_options(), *FAST_FETCH)

    assert other_table.exit_code == 2, other_table.output
    assert ".backfill-progress.archive_images.json" in other_table.output  # its own file
    assert_null(archive, archive_rows)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == checkpoint_before
    assert len(rows) == 6


def test_refusing_another_targets_checkpoint_names_both_targets(
    database_url: str, tmp_path: Path
) -> None:
    UserTable(database_url, name="archive_images").create()
    theirs = Checkpoint(fingerprint="0123456789abcdef", dry_run=False, total=9, processed=2)
    theirs.target = "db.example.org:5432/app archive_images(id,url→quality_score)"
    save_checkpoint(tmp_path / ".backfill-progress.archive_images.json", theirs)

    result = run(tmp_path, database_url, "--resume", "--table", "archive_images")

    assert result.exit_code in (1, 2), result.output
    assert "db.example.org:5432/app archive_images(id,url" in result.output, "its target"
    assert "/t_" in result.output and "archive_images" in result.output, "this run's target"


# --- secrets and logs -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "pgpassword"])
def test_an_unreachable_database_is_fatal_and_the_message_hides_the_password(
    tmp_path: Path, how: str
) -> None:
    url = f"postgresql://bob:{DB_PASSWORD}@127.0.0.1:1/db"
    args: list[str] = []
    env: dict[str, str] = {}
    database_url: str | None = url
    if how == "option":
        args, database_url = ["--database-url", url], None
    elif how == "pgpassword":
        database_url, env = "postgresql://bob@127.0.0.1:1/db", {"PGPASSWORD": DB_PASSWORD}

    result = run_cli("run", *args, cwd=tmp_path, database_url=database_url, env=env)

    assert result.exit_code == 1, result.output
    assert DB_PASSWORD not in result.output
    assert url not in result.output
    assert "127.0.0.1" in result.output, "the message says which server could not be reached"
    assert "Traceback" not in result.output
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_an_unescaped_slash_in_the_password_does_not_leak_it(tmp_path: Path) -> None:
    url = "postgresql://bob:S3c/retPw@127.0.0.1:1/db"

    result = run_cli("run", cwd=tmp_path, database_url=url)

    assert result.exit_code in (1, 2), result.output
    assert "retPw" not in result.output and "S3c" not in result.output


def test_a_fatal_error_with_json_logs_is_a_json_event(tmp_path: Path) -> None:
    url = f"postgresql://bob:{DB_PASSWORD}@127.0.0.1:1/db"

    result = run_cli("run", "--log-format", "json", cwd=tmp_path, database_url=url)

    assert result.exit_code == 1
    assert DB_PASSWORD not in result.output
    events = json_lines(result.stderr)
    assert [event["event"] for event in events] == ["error"]


def _with_password(database_url: str, form: str) -> str:
    """The test database's URL carrying DB_PASSWORD, as a URI or a key=value string."""
    name = urlsplit(database_url).path.lstrip("/")
    url = with_database(database_url, name, password=DB_PASSWORD)
    if form == "keyvalue":
        url = make_conninfo("", **conninfo_to_dict(url))
    assert DB_PASSWORD in url
    return url


@pytest.mark.parametrize(
    ("log_format", "url_form"), [("text", "uri"), ("json", "uri"), ("text", "keyvalue")]
)
def test_passwords_never_reach_output_or_checkpoint(
    database_url: str, image_server: ImageServer, tmp_path: Path, log_format: str, url_form: str
) -> None:
    table = images_table(database_url)
    valid = serve_valid_images(image_server, 6)
    valid_rows = table.insert(list(valid))
    table.insert([image_server.url("/status/404"), image_server.url("/not-an-image")])
    url = _with_password(database_url, url_form)

    result = run(
        tmp_path,
        url,
        "--log-format",
        log_format,
        "--verbose",
        "--batch-size",
        "3",
        *FAST_FETCH,
        env={"PGPASSWORD": ENV_PASSWORD},
    )

    assert result.exit_code == 3, result.output
    assert_scored(table, valid_rows, valid)  # the URL with the password did reach the database
    checkpoint_text = (tmp_path / CHECKPOINT_NAME).read_text(encoding="utf-8")
    for secret in (DB_PASSWORD, ENV_PASSWORD):
        assert secret not in result.stdout
        assert secret not in result.stderr
        assert secret not in checkpoint_text
    if log_format == "json":
        events = json_lines(result.stderr)  # every line is a JSON object
        assert {"start", "summary"} <= {event["event"] for event in events}
    else:
        assert "Progress Summary" in result.stderr


def test_json_logs_are_one_event_per_line(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = images_table(database_url)
    valid_rows = table.insert(list(serve_valid_images(image_server, 8)))
    broken_rows = table.insert([image_server.url("/status/404")])

    result = run(tmp_path, database_url, "--log-format", "json", "--batch-size", "4", *FAST_FETCH)

    assert result.exit_code == 3, result.output
    events = json_lines(result.stderr)
    assert all(isinstance(event.get("event"), str) for event in events)
    names = [event["event"] for event in events]
    assert names[0] == "start" and names[-1] == "summary", names
    assert events[0]["total"] == 9
    assert [event["id"] for event in events if event["event"] == "failed"] == [
        str(broken_rows[0].id)
    ]
    summary = events[-1]
    checkpoint = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert_spec_checkpoint(checkpoint)
    for key in ("processed", "succeeded", "failed"):
        assert summary[key] == checkpoint[key], key
    assert (summary["processed"], summary["succeeded"], summary["failed"]) == (9, 8, 1)
    assert table.audit_writes() == Counter(keys(valid_rows))
    levels = [event for event in events if event["event"] == "concurrency"]
    assert levels[0]["previous"] == 0 and "auto" in levels[0]["reason"]  # the default
    assert all(event["reason"] and event["level"] >= 1 for event in levels)
    assert all(event["inFlight"] >= 1 for event in events if event["event"] == "page")


# --- the detector ---------------------------------------------------------------------------------


def test_a_model_that_cannot_load_stops_the_run_at_start_and_writes_nothing(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = images_table(database_url)
    rows = table.insert(list(serve_valid_images(image_server, 3)))
    bogus = tmp_path / "mine.onnx"
    bogus.write_bytes(b"\x08\x07not really a model")

    result = run(tmp_path, database_url, "--detector", f"onnx:{bogus}", *FAST_FETCH)

    assert result.exit_code == 1, result.output
    assert "mine.onnx is not a usable ONNX model" in result.output
    assert "Traceback" not in result.output
    assert_null(table, rows)
    assert not table.audit_writes()


def test_an_unknown_detector_is_a_usage_error(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = images_table(database_url)
    rows = table.insert(list(serve_valid_images(image_server, 2)))

    result = run(tmp_path, database_url, "--detector", "yolo", *FAST_FETCH)

    assert result.exit_code == 2, result.output
    assert "--detector 'yolo'" in result.output and "onnx:PATH" in result.output
    assert_null(table, rows)
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_the_heuristic_detector_scores_as_it_does_in_process(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    """--detector heuristic reaches the scoring processes: every row gets the heuristic's score
    (the photo without a bird too, which the heuristic cannot tell: not 55 but 'high')."""
    table = images_table(database_url)
    samples = {s.name: s for s in sample_images()}
    heuristic = load_detector(parse_detector("heuristic"))
    expected = {}
    for name in ("bird.jpg", "no-bird.jpg"):
        url = image_server.add(f"/h/{name}", samples[name].data, samples[name].content_type)
        expected[url] = score_image(samples[name].data, Thresholds(), heuristic).score
    rows = table.insert(list(expected))

    result = run(tmp_path, database_url, "--detector", "heuristic", *FAST_FETCH)

    assert result.exit_code == 0, result.output
    assert_scored(table, rows, expected)
    no_bird_url = next(url for url in expected if url.endswith("no-bird.jpg"))
    assert expected[no_bird_url] != samples["no-bird.jpg"].expected_score  # learned: 55


def test_a_model_that_does_not_fit_stops_the_run_at_start(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    """A YOLO-layout model with 3 classes and --bird-class 14: it loads, but the trial picture
    every scoring process runs at start shows that it cannot answer. Exit 1, nothing written."""
    table = images_table(database_url)
    rows = table.insert(list(serve_valid_images(image_server, 3)))
    model = yolo_layout_model(tmp_path / "three.onnx", anchors((9, 9, 4, 4, 2, 0.9), classes=3))

    result = run(
        tmp_path, database_url, "--detector", f"onnx:{model}", "--bird-class", "14", *FAST_FETCH
    )

    assert result.exit_code == 1, result.output
    assert "--bird-class 14: the model three.onnx has only 3 classes" in result.output
    assert "Traceback" not in result.output
    assert_null(table, rows)
    assert not table.audit_writes()


def test_resuming_with_another_detector_is_refused(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = images_table(database_url)
    table.insert(list(serve_valid_images(image_server, 4)))
    first = run(
        tmp_path, database_url, "--detector", "heuristic", "--limit", "2", "--batch-size", "2"
    )
    assert first.exit_code == 0, first.output
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()

    result = run(tmp_path, database_url, "--resume", *FAST_FETCH)

    assert result.exit_code == 2, result.output
    assert "--detector heuristic" in result.output and "--detector learned" in result.output
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    assert sum(score is not None for score in table.scores().values()) == 2
