"""`backfill-quality status`: every kind of checkpoint, and the scores (exact or estimated)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.config import Target
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.pipeline import status
from backfill_quality.pipeline.checkpoint import Checkpoint, FailedImage, save_checkpoint
from tests.support.cli import CliResult, read_checkpoint, run_cli
from tests.support.pg import with_database
from tests.support.table import UserTable, apply_migrations, serve_valid_images

SCORES = [5, 15, 15, 42, 59, 60, 61, 79, 80, 80, 99, 100]
"""Deciles 0,1,1,4,5,6,6,7,8,8,9,9 → low 5, medium 3, high 4."""


def status_json(tmp_path: Path, database_url: str, *args: str) -> tuple[CliResult, dict[str, Any]]:
    result = run_cli("status", "--json", *args, cwd=tmp_path, database_url=database_url)
    return result, json.loads(result.stdout)


def scored_table(database_url: str, *, unscored: int = 3) -> UserTable:
    table = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    for score in SCORES:
        table.insert([f"http://h/{score}.jpg"], score=score)
    table.insert([f"http://h/new-{n}.jpg" for n in range(unscored)])
    return table


def write_checkpoint(path: Path, **fields: Any) -> Checkpoint:
    checkpoint = Checkpoint(fingerprint="f" * 16, dry_run=False, **fields)
    save_checkpoint(path, checkpoint)
    return checkpoint


def test_no_checkpoint_and_the_table_counts_exactly(tmp_path: Path, database_url: str) -> None:
    table = scored_table(database_url)

    result, report = status_json(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    assert report["checkpoints"] == [] and report["shards"] == []
    assert report["table"]["distribution"] == table.category_counts()
    assert report["table"]["distribution"] == {"high": 4, "medium": 3, "low": 5, "unscored": 3}
    assert report["table"]["histogram"] == [1, 2, 0, 0, 1, 1, 2, 1, 2, 2]
    assert report["table"]["isEstimate"] is False
    text = run_cli("status", cwd=tmp_path, database_url=database_url)
    assert text.exit_code == 0, text.output
    assert "No checkpoint found" in text.stdout
    assert "15 in all, 12 scored (80.0%), 3 left" in text.stdout
    assert "90-100" in text.stdout and "█" in text.stdout


def test_every_shard_dry_run_and_broken_checkpoint_is_listed(
    tmp_path: Path, database_url: str
) -> None:
    scored_table(database_url)
    failed = [FailedImage(id="a", url="http://h/a.jpg", error="HTTP 404")]
    write_checkpoint(
        tmp_path / ".backfill-progress.shard-0-of-3.json",
        shard="0/3",
        total=100,
        processed=40,
        succeeded=39,
        failed=1,
        failed_images=failed,
        estimated_time_remaining="1m 30s",
    )
    write_checkpoint(
        tmp_path / ".backfill-progress.shard-2-of-3.json",
        shard="2/3",
        total=50,
        processed=50,
        succeeded=50,
        finished=True,
    )
    dry = Checkpoint(fingerprint="d" * 16, dry_run=True, total=10, processed=10, succeeded=10)
    save_checkpoint(tmp_path / ".backfill-progress.dry-run.json", dry)
    (tmp_path / ".backfill-progress.json").write_text("{ not json", encoding="utf-8")
    (tmp_path / "unrelated.json").write_text("{}", encoding="utf-8")

    result, report = status_json(tmp_path, database_url)

    assert result.exit_code == 0, result.output
    by_name = {Path(c["path"]).name: c for c in report["checkpoints"]}
    assert set(by_name) == {
        ".backfill-progress.json",
        ".backfill-progress.dry-run.json",
        ".backfill-progress.shard-0-of-3.json",
        ".backfill-progress.shard-2-of-3.json",
    }
    assert "not valid JSON" in by_name[".backfill-progress.json"]["problem"]
    shard0 = by_name[".backfill-progress.shard-0-of-3.json"]
    assert (shard0["percent"], shard0["failed"], shard0["estimatedTimeRemaining"]) == (
        40.0,
        1,
        "1m 30s",
    )
    assert shard0["failedImages"][0]["error"] == "HTTP 404" and shard0["updatedAt"]
    assert by_name[".backfill-progress.dry-run.json"]["dryRun"] is True
    assert report["shards"] == [
        {
            "target": "",
            "kind": "run",
            "count": 3,
            "dryRun": False,
            "present": [0, 2],
            "missing": [1],
            "processed": 90,
            "total": 150,
            "failed": 1,
            "finished": 1,
        }
    ]

    text = run_cli("status", cwd=tmp_path, database_url=database_url)
    assert text.exit_code == 0, text.output
    out = " ".join(text.stdout.split())
    assert "shard 0/3: unfinished" in out and "processed 40/100 (40.0%)" in out
    assert "failed 1, ETA 1m 30s" in out
    assert "unreadable" in out and "not valid JSON" in out
    assert "All 3 shards: 1/3 finished, processed 90/150 (60.0%)" in out
    assert "no checkpoint yet for shard(s) 1" in out


def test_an_unreadable_database_still_shows_the_checkpoints_then_fails(
    tmp_path: Path, database_url: str
) -> None:
    write_checkpoint(tmp_path / ".backfill-progress.json", total=5, processed=2, succeeded=2)
    bad_url = with_database(database_url, "no_such_db", password="Hunter2Secret")

    result = run_cli("status", cwd=tmp_path, database_url=bad_url)

    assert result.exit_code == 1
    assert "processed 2/5" in result.stdout
    assert "could not connect" in result.stderr and "Hunter2Secret" not in result.output
    json_result = run_cli("status", "--json", cwd=tmp_path, database_url=bad_url)
    assert json_result.exit_code == 1
    report = json.loads(json_result.stdout)
    assert report["table"] is None and "no_such_db" in report["tableError"]
    assert "Hunter2Secret" not in json_result.output


def test_a_big_table_is_estimated_and_exact_counts_it(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO images (url, title, quality_score)"
            " SELECT 'http://h/' || g, 't', CASE WHEN g % 5 = 0 THEN NULL ELSE g % 101 END"
            " FROM generate_series(1, 20000) g"
        )
        conn.execute("ANALYZE images")
    truth = table.category_counts()
    monkeypatch.setattr(db, "EXACT_COUNT_LIMIT", 1000)  # "huge" for this test

    estimated = status.table_stats(database_url, Target())
    exact = status.table_stats(database_url, Target(), exact=True)

    assert exact.is_estimate is False and exact.distribution == truth
    assert estimated.is_estimate is True
    for category, count in truth.items():
        assert abs(estimated.distribution[category] - count) <= 0.15 * count + 50, (
            category,
            estimated.distribution,
            truth,
        )


def test_exact_option_is_accepted_and_matches(tmp_path: Path, database_url: str) -> None:
    table = scored_table(database_url, unscored=7)
    result, report = status_json(tmp_path, database_url, "--exact")
    assert result.exit_code == 0, result.output
    assert report["table"]["distribution"] == table.category_counts()
    assert report["table"]["unscored"] == 7 and report["table"]["scored"] == len(SCORES)


def test_each_table_keeps_its_own_default_checkpoint_and_status_lists_them_with_their_target(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    images = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)  # the score column of `images`
    photos = UserTable(database_url, name="photos").create()
    images_valid = serve_valid_images(image_server, 3, prefix="images")
    images.insert(list(images_valid))
    images_broken = images.insert([image_server.url("/status/404")])
    photos.insert(list(serve_valid_images(image_server, 2, prefix="photos")))
    photos_broken = photos.insert([image_server.url("/status/500")])
    fast = ("--retries", "0", "--timeout", "5", "--workers", "1")

    first = run_cli("run", *fast, cwd=tmp_path, database_url=database_url)
    assert first.exit_code == 3, first.output
    images_path = tmp_path / ".backfill-progress.json"  # the SPEC's default, for `images`
    images_before = images_path.read_bytes()
    second = run_cli("run", *fast, *photos.cli_options(), cwd=tmp_path, database_url=database_url)

    assert second.exit_code == 3, second.output
    assert images_path.read_bytes() == images_before, "a run over photos replaced images' file"
    images_checkpoint = read_checkpoint(images_path)
    assert [e["id"] for e in images_checkpoint["failedImages"]] == [images_broken[0].id]
    photos_path = tmp_path / ".backfill-progress.photos.json"
    photos_checkpoint = read_checkpoint(photos_path)
    assert [e["id"] for e in photos_checkpoint["failedImages"]] == [photos_broken[0].id]
    assert f"Checkpoint: {photos_path.name}" in second.stderr

    result, report = status_json(tmp_path, database_url)
    assert result.exit_code == 0, result.output
    listed = {Path(c["path"]).name: c["target"] for c in report["checkpoints"]}
    assert set(listed) == {images_path.name, photos_path.name}
    assert " images(id,url→quality_score)" in listed[images_path.name]
    assert " photos(id,url→quality_score)" in listed[photos_path.name]
    text = run_cli("status", cwd=tmp_path, database_url=database_url)
    assert text.exit_code == 0, text.output
    lines = {
        line.split(" ", 1)[0]: line for line in text.stdout.splitlines() if ".backfill" in line
    }
    assert "photos(id,url" in lines[photos_path.name], text.stdout
    assert "images(id,url" in lines[images_path.name], text.stdout


def test_shard_totals_are_per_table(tmp_path: Path) -> None:
    for table, processed in (("images", 10), ("photos", 30)):
        for index in range(2):
            checkpoint = Checkpoint(
                fingerprint=f"{table}{index}".ljust(16, "0"),
                dry_run=False,
                total=50,
                processed=processed,
                shard=f"{index}/2",
            )
            checkpoint.target = f"h:5432/db {table}(id,url→quality_score) shard {index}/2"
            path = tmp_path / f".backfill-progress.{table}.shard-{index}-of-2.json"
            save_checkpoint(path, checkpoint)

    groups = status.group_shards(status.find_checkpoints(tmp_path / ".backfill-progress.json"))

    assert [(g.processed, g.total, g.present) for g in groups] == [
        (20, 100, [0, 1]),
        (60, 100, [0, 1]),
    ]
    assert "images(" in groups[0].target and "shard" not in groups[0].target
    assert "photos(" in groups[1].target
