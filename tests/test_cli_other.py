"""`migrate`, `status`, `score` and `--help` through the real command line."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image

from backfill_quality.demo.imageserver import ImageServer
from tests.support.cli import CHECKPOINT_NAME, invoke_in_process, read_checkpoint, run_cli
from tests.support.table import UserTable, apply_migrations, sample_images, serve_valid_images

COMMANDS = ("run", "score", "status", "migrate", "demo")
SCORE_KEYS = (
    {
        "source",
        "width",
        "height",
        "score",
        "category",
        "brightness",
        "subject",
        "checks",
    }
    | {
        "detector",
        "presence",
    }
    | {  # what the results table keeps too (the same record)
        "bytes",
        "contentSha256",
        "etag",
        "lastModified",
        "scorerVersion",
        "measurementVersion",
        "scoredAt",
        "fetchMs",
        "scoreMs",
    }
)
CHECK_NAMES = {"birdSize", "positioning", "resolution", "contrast", "primarySubject"}
RUN_OPTIONS = (
    "--database-url",
    "--table",
    "--id-column",
    "--url-column",
    "--score-column",
    "--batch-size",
    "--delay",
    "--concurrency",
    "--max-rps",
    "--dry-run",
    "--resume",
    "--restart",
    "--checkpoint",
    "--limit",
    "--verbose",
    "--quiet",
    "--json",
    "--timeout",
    "--max-bytes",
    "--retries",
)
"""Every option SPEC section 3 names for `run` (its `--log-format json` is now spelt `--json`;
the older spelling still works, hidden: tests/test_cli_help.py)."""
PASSWORD = "S3cretPw"


def category_of(score: int) -> str:
    return "high" if score >= 80 else "medium" if score >= 60 else "low"


# --- migrate -----------------------------------------------------------------------------------


def _schema(database_url: str) -> dict[str, Any]:
    """What `migrate` is responsible for, read from the catalogs."""
    with psycopg.connect(database_url) as conn:
        column = conn.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'images' AND column_name = 'quality_score'"
        ).fetchone()
        checks = conn.execute(
            "SELECT conname, convalidated FROM pg_constraint"
            " WHERE conrelid = 'images'::regclass AND contype = 'c'"
        ).fetchall()
        indexes = conn.execute(
            "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'images'::regclass"
            " AND NOT i.indisprimary ORDER BY 1"
        ).fetchall()
        categories = conn.execute(
            "SELECT get_quality_category(NULL), get_quality_category(80),"
            " get_quality_category(79), get_quality_category(60), get_quality_category(59)"
        ).fetchone()
    return {"column": column, "checks": checks, "indexes": indexes, "categories": categories}


def _rows(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT id, url, title, created_at, width_px, quality_score FROM images ORDER BY id"
        ).fetchall()


def test_migrate_quiet_prints_nothing_and_still_migrates(database_url: str, tmp_path: Path) -> None:
    result = run_cli("migrate", "--quiet", cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == ("", "")
    assert _schema(database_url)["column"] == ("integer",)


@pytest.mark.parametrize(
    "has_score_column", [False, True], ids=["plain-user-table", "original-schema-applied"]
)
def test_migrate_twice_on_an_existing_user_table(
    database_url: str, tmp_path: Path, has_score_column: bool
) -> None:
    table = UserTable(database_url).create(with_score_column=has_score_column)
    table.insert(["http://127.0.0.1:1/a.jpg", "http://127.0.0.1:1/b.jpg"])
    if has_score_column:
        table.insert(["http://127.0.0.1:1/c.jpg"], score=88)
    rows_before = _rows(database_url) if has_score_column else None

    first = run_cli("migrate", cwd=tmp_path, database_url=database_url)

    assert first.exit_code == 0, first.output
    steps = dict(
        re.findall(r"^([a-z-]+): +(created|already present|skipped) — ", first.stdout, re.M)
    )
    assert steps["table"] == "already present", "the user's table is used, not created"
    assert steps["score-column"] == ("already present" if has_score_column else "created")
    assert steps["watch-triggers"] == "skipped"
    schema = _schema(database_url)
    assert schema["column"] == ("integer",)
    assert ("images_quality_score_check", True) in schema["checks"], "added and validated"
    indexes = {name: valid for name, valid, _ in schema["indexes"]}
    assert indexes["idx_images_quality_score"] is True
    assert indexes["idx_images_quality_score_null"] is True
    definitions = " ".join(definition for _, _, definition in schema["indexes"])
    assert "WHERE (quality_score IS NULL)" in definitions
    assert "WHERE (quality_score IS NOT NULL)" in definitions
    assert schema["categories"] == (None, "high", "medium", "medium", "low")
    rows = _rows(database_url)
    assert len(rows) == (3 if has_score_column else 2)
    assert all(row[2] is not None and row[4] == 640 for row in rows), "other columns are kept"
    if rows_before is not None:
        assert rows == rows_before, "existing scores and columns are untouched"

    second = run_cli("migrate", cwd=tmp_path, database_url=database_url)

    assert second.exit_code == 0, second.output
    assert "created" not in second.stdout
    assert "already present" in second.stdout
    assert _schema(database_url) == schema
    assert _rows(database_url) == rows
    assert list(tmp_path.iterdir()) == [], "migrate writes no files"


def test_migrate_on_an_empty_database_creates_the_demo_table(
    database_url: str, tmp_path: Path
) -> None:
    result = run_cli("migrate", cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 0, result.output
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO images (url) VALUES ('http://example.org/a.jpg')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE images SET quality_score = 101")
        row = conn.execute("SELECT id IS NOT NULL, quality_score FROM images").fetchone()
    assert row == (True, None)


# --- status ------------------------------------------------------------------------------------


def test_status_after_a_run_matches_the_database(
    database_url: str, image_server: ImageServer, tmp_path: Path
) -> None:
    table = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    table.insert(list(serve_valid_images(image_server, 12)))
    table.insert([image_server.url("/status/404"), image_server.url("/status/410")])
    for score in (95, 70, 61, 12):
        table.insert([image_server.url(f"/prescored/{score}.jpg")], score=score)
    ran = run_cli("run", "--retries", "0", cwd=tmp_path, database_url=database_url)
    assert ran.exit_code == 3, ran.output
    expected = table.category_counts()
    assert expected["unscored"] == 2 and sum(expected.values()) == 18

    text = run_cli("status", cwd=tmp_path, database_url=database_url)
    as_json = run_cli("status", "--json", cwd=tmp_path, database_url=database_url)

    assert text.exit_code == 0, text.output
    for category in ("high", "medium", "low"):
        assert re.search(rf"\b{category}\b\W+{expected[category]}\b", text.stdout), category
    assert re.search(r"\b18\b.*\b16\b scored.*\b2\b left", text.stdout), text.stdout
    assert CHECKPOINT_NAME in text.stdout and "finished" in text.stdout
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["table"]["distribution"] == expected
    assert report["table"]["unscored"] == 2
    assert report["table"]["scored"] == 16 == sum(report["table"]["histogram"])
    checkpoint = read_checkpoint(tmp_path / CHECKPOINT_NAME)
    [summary] = report["checkpoints"]
    for key in ("total", "processed", "succeeded", "failed", "lastProcessedId", "fingerprint"):
        assert summary[key] == checkpoint[key], key


def test_status_of_another_table_without_a_checkpoint(database_url: str, tmp_path: Path) -> None:
    table = UserTable(
        database_url, "Bird Photos", "photoKey", "imageUrl", "qualityScore", "integer"
    )
    table.create()
    table.insert(["http://127.0.0.1:1/a.jpg"] * 3)
    for score in (100, 80, 79, 0):
        table.insert([f"http://127.0.0.1:1/{score}.jpg"], score=score)

    text = run_cli("status", *table.cli_options(), cwd=tmp_path, database_url=database_url)
    as_json = run_cli(
        "status", "--json", *table.cli_options(), cwd=tmp_path, database_url=database_url
    )

    assert text.exit_code == 0, text.output
    assert "No checkpoint found" in text.stdout
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["checkpoints"] == []
    assert report["table"]["distribution"] == {"high": 2, "medium": 1, "low": 1, "unscored": 3}
    assert report["table"]["distribution"] == table.category_counts()


def test_status_of_an_unknown_table_says_so(database_url: str, tmp_path: Path) -> None:
    result = run_cli("status", "--table", "no_such_table", cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 2, result.output  # as for run: an option to fix
    assert "no_such_table" in result.output and "--table" in result.output
    assert "Traceback" not in result.output


def test_unknown_table_message_lists_the_users_tables_not_the_catalogs(
    database_url: str, tmp_path: Path
) -> None:
    UserTable(database_url, name="photos").create()
    UserTable(database_url, name="uploads").create()

    result = run_cli("run", "--table", "images", cwd=tmp_path, database_url=database_url)

    assert result.exit_code == 2, result.output
    assert "photos" in result.output and "uploads" in result.output
    assert "pg_aggregate" not in result.output


@pytest.mark.parametrize("command", ["status", "migrate"])
def test_an_unreachable_database_is_fatal_without_the_password(
    tmp_path: Path, command: str
) -> None:
    url = f"postgresql://bob:{PASSWORD}@127.0.0.1:1/db"

    result = run_cli(command, cwd=tmp_path, database_url=url)

    assert result.exit_code == 1, result.output
    assert PASSWORD not in result.output and url not in result.output
    assert "127.0.0.1" in result.output
    assert "Traceback" not in result.output


# --- score -------------------------------------------------------------------------------------


def _write_samples(tmp_path: Path) -> list[tuple[Path, int]]:
    """The JPEG and PNG samples as files, with the score each must get."""
    files = []
    for sample in sample_images()[:3]:
        path = tmp_path / sample.name
        path.write_bytes(sample.data)
        files.append((path, sample.expected_score))
    return files


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def test_score_json_prints_the_contract_keys_for_files_and_urls(
    image_server: ImageServer, tmp_path: Path
) -> None:
    files = _write_samples(tmp_path)
    sample = sample_images()[1]
    url = image_server.add("/photos/bird.png", sample.data, sample.content_type)
    sources = [*(path.name for path, _ in files), url]
    expected_scores = [*(score for _, score in files), sample.expected_score]

    result = run_cli("score", *sources, "--json", cwd=tmp_path)

    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [obj["source"] for obj in objects] == sources
    sizes = [_size(path.read_bytes()) for path, _ in files] + [_size(sample.data)]
    for obj, expected_score, (width, height) in zip(objects, expected_scores, sizes, strict=True):
        assert set(obj) == SCORE_KEYS
        assert (obj["width"], obj["height"]) == (width, height)
        assert obj["score"] == expected_score
        assert obj["category"] == category_of(obj["score"])
        assert 0 <= obj["brightness"] <= 255
        assert set(obj["checks"]) == CHECK_NAMES
        for name, check in obj["checks"].items():
            assert set(check) == {"score", "passed", "reason"}, name
            assert isinstance(check["score"], int) and 0 <= check["score"] <= 100, name
            assert isinstance(check["passed"], bool) and check["reason"].strip(), name
        if obj["subject"] is not None:
            assert set(obj["subject"]) == {"bbox", "count", "visibleRatio", "confidence"}
            assert set(obj["subject"]["bbox"]) == {"x", "y", "width", "height"}
            assert all(0 <= value <= 1 for value in obj["subject"]["bbox"].values())


def test_score_prints_a_table_of_the_checks(tmp_path: Path) -> None:
    [(path, expected_score), *_] = _write_samples(tmp_path)

    result = run_cli("score", str(path), cwd=tmp_path)

    assert result.exit_code == 0, result.output
    assert f"score {expected_score}" in result.stdout
    for name in CHECK_NAMES:
        assert name in result.stdout


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_score_of_a_missing_file_and_a_404_url_exits_3_with_messages(
    image_server: ImageServer, tmp_path: Path, as_json: bool
) -> None:
    [(good, expected_score), *_] = _write_samples(tmp_path)
    missing = "no-such-photo.jpg"
    gone = image_server.url("/status/404")
    flags = ["--json"] if as_json else []

    result = run_cli("score", missing, str(good), gone, *flags, cwd=tmp_path)

    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    if as_json:
        objects = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        assert [obj["source"] for obj in objects] == [missing, str(good), gone]
        assert re.search(r"no such file|not found|cannot read", objects[0]["error"], re.I)
        assert objects[1]["score"] == expected_score, "the good image is still scored"
        assert "404" in objects[2]["error"]
    else:
        assert re.search(
            rf"{re.escape(missing)}.*(no such file|not found|cannot read)", result.output, re.I
        )
        assert re.search(rf"{re.escape(gone)}.*404", result.output)
        assert f"score {expected_score}" in result.stdout


def test_score_annotate_writes_the_image_with_the_subject(tmp_path: Path) -> None:
    [(path, _), *_] = _write_samples(tmp_path)
    out = tmp_path / "checked.png"

    result = run_cli("score", str(path), "--annotate", str(out), cwd=tmp_path)

    assert result.exit_code == 0, result.output
    with Image.open(out) as annotated, Image.open(path) as original:
        assert annotated.format == "PNG"
        assert annotated.size[0] >= original.size[0] and annotated.size[1] >= original.size[1]


# --- help and entry points ----------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = invoke_in_process(command, "--help")

    assert result.exit_code == 0, result.output
    assert f"backfill-quality {command}" in result.stdout
    if command != "demo":
        assert "Example" in result.stdout
        assert f"backfill-quality {command}" in result.stdout.split("Example", 1)[1]


def test_run_help_documents_every_option_of_the_spec() -> None:
    result = invoke_in_process("run", "--help")

    assert result.exit_code == 0, result.output
    missing = [option for option in RUN_OPTIONS if option not in result.stdout]
    assert not missing, f"undocumented options: {missing}"
    for variable in ("DATABASE_URL", "BACKFILL_BATCH_SIZE", "BACKFILL_CONCURRENCY"):
        assert variable in result.stdout


@pytest.mark.parametrize("use_console_script", [True, False], ids=["console-script", "python-m"])
def test_both_entry_points_list_every_command(tmp_path: Path, use_console_script: bool) -> None:
    result = run_cli("--help", cwd=tmp_path, use_console_script=use_console_script)

    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert re.search(rf"^\W*{command}\b", result.stdout, re.MULTILINE), command


@pytest.mark.parametrize("command", ["run", "watch", "score"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--detector", "yolo"), "--detector 'yolo': expected learned, heuristic or onnx:PATH"),
        (("--detector", "learned", "--bird-class", "3"), "--bird-class applies to --detector"),
    ],
    ids=["unknown-detector", "bird-class-without-onnx"],
)
def test_every_scoring_command_refuses_a_bad_detector_before_any_work(
    command: str, options: tuple[str, ...], message: str
) -> None:
    """--detector and --bird-class reach run, watch and score alike (parsed before any database
    or image is touched: the URL below leads nowhere)."""
    target = (
        ("photo.jpg",)
        if command == "score"
        else ("--database-url", "postgresql://x@127.0.0.1:1/db")
    )
    result = invoke_in_process(command, *target, *options)

    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
