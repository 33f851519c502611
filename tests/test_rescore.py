"""`rescore`: stale rows refreshed with as few downloads as possible, each row one guarded write.

Real PostgreSQL, the real image server (its request and 304 counters), the real command line.
Rows are first scored by a real `run` (the heuristic detector: fast), then rescored.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.config import DetectorChoice, Thresholds
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.demo.photos import photo_bytes, variant
from backfill_quality.pipeline.runlock import TargetLock
from backfill_quality.results import measurements_from_record
from backfill_quality.scoring.checks import evaluate
from backfill_quality.scoring.version import versions
from tests.support.cli import cli_env, json_lines, read_checkpoint, run_cli
from tests.support.results import a_result
from tests.support.table import IdType, UserTable, apply_migrations, sample_images

QUICK = ("--retries", "0", "--timeout", "10", "--json")
FAST = ("--concurrency", "4", *QUICK)
HEURISTIC = ("--detector", "heuristic")
STRICTER = ("--threshold", "min_pixels=400000")
HEURISTIC_NOW = versions(DetectorChoice("heuristic"), Thresholds())
STRICTER_NOW = versions(DetectorChoice("heuristic"), Thresholds(min_pixels=400_000))
LEARNED_NOW = versions(DetectorChoice(), Thresholds())


def cli(command: str, table: UserTable, cwd: Path, *extra: str) -> Any:
    return run_cli(
        command,
        *table.cli_options(),
        *FAST,
        *extra,
        cwd=cwd,
        database_url=table.database_url,
        timeout_s=180,
    )


def summary_of(result: Any) -> dict[str, Any]:
    [summary] = [e for e in json_lines(result.stderr) if e.get("event") == "summary"]
    return summary


def versions_counted(table: UserTable, cwd: Path, *options: str) -> dict[str, Any]:
    """`status --json`'s scored rows by scorer version (current for these options)."""
    result = run_cli(
        "status", *table.cli_options(), "--json", *options, cwd=cwd, database_url=table.database_url
    )
    assert result.exit_code == 0, result.output
    counted: dict[str, Any] = json.loads(result.stdout)["table"]["versions"]
    return counted


def scored_table(
    database_url: str,
    urls: list[str],
    cwd: Path,
    *,
    id_type: IdType = "integer",
    schema: str | None = None,
) -> UserTable:
    """A user's table whose rows were scored by a real run with the heuristic detector."""
    if schema is not None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    table = UserTable(
        database_url,
        name="Bird Photos",
        id_column="photo key",
        url_column="photo_url",
        score_column="quality",
        id_type=id_type,
        schema=schema,
    ).create()
    table.insert(urls)
    ran = cli("run", table, cwd, *HEURISTIC)
    assert ran.exit_code == 0, ran.output
    assert all(score is not None for score in table.scores().values())
    return table


def serve(server: ImageServer, names: list[str]) -> list[str]:
    """Serve each sample image (by index into sample_images, cycling) at its own path."""
    samples = sample_images()
    return [
        server.add(f"/p/{i}-{name}", samples[i % len(samples)].data, "image/jpeg")
        for i, name in enumerate(names)
    ]


# --- caching: the four paths -------------------------------------------------------------------


@pytest.mark.parametrize(("id_type", "schema"), [("integer", None), ("text", "Media Files")])
def test_a_threshold_change_is_recomputed_from_the_table_without_a_request(
    database_url: str,
    tmp_path: Path,
    image_server: ImageServer,
    id_type: IdType,
    schema: str | None,
) -> None:
    urls = serve(image_server, [f"img{i}.jpg" for i in range(5)])
    table = scored_table(database_url, urls, tmp_path, id_type=id_type, schema=schema)
    before = table.results()
    hits = image_server.total_hits()

    result = cli("rescore", table, tmp_path, *HEURISTIC, *STRICTER)

    assert result.exit_code == 0, result.output
    assert image_server.total_hits() == hits  # not one request
    summary = summary_of(result)
    assert summary["rescore"] == {
        "recomputed": 5,
        "revalidated": 0,
        "reusedByHash": 0,
        "fullyRescored": 0,
        "skipped": 0,
        "failed": 0,
    }
    after = table.results()
    scores = table.scores()
    stricter = Thresholds(min_pixels=400_000)
    for key, record in after.items():
        expected = evaluate(measurements_from_record(before[key]), stricter)
        assert record["score"] == expected.score == scores[key]
        assert record["scorerVersion"] == STRICTER_NOW.scorer
        assert record["measurementVersion"] == STRICTER_NOW.measurement
        assert record["contentSha256"] == before[key]["contentSha256"]
        assert record["etag"] == before[key]["etag"]
    assert any(after[k]["score"] != before[k]["score"] for k in after)  # the change mattered
    again = cli("rescore", table, tmp_path, *HEURISTIC, *STRICTER)
    assert again.exit_code == 0, again.output
    assert summary_of(again)["total"] == 0  # nothing is stale any more


def test_a_detector_change_revalidates_reuses_duplicates_and_rescores_changed_bytes(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    duck, owl = photo_bytes("duck.jpg"), photo_bytes("owl.jpg")
    heron, swans = photo_bytes("heron.jpg"), photo_bytes("swans.jpg")
    dark_owl = variant(owl, brightness=0.4)
    urls = [
        image_server.add("/a/1.jpg", duck),  # stage 1: fully rescored
        image_server.add("/b/1.jpg", owl),  # stage 1: fully rescored
        image_server.add("/a/2.jpg", duck),  # the same bytes elsewhere: 304, reused
        image_server.add("/a/3.jpg", duck),  # likewise
        image_server.add("/c/1.jpg", heron),  # will serve the owl: 200, reused by hash
        image_server.add("/d/1.jpg", duck),  # will serve new bytes: 200, fully rescored
        image_server.add("/e/1.jpg", swans),  # no twin: one unconditional GET, fully rescored
        image_server.add("/e/2.jpg", swans),  # in flight with /e/1: waits for it, then 304
    ]
    table = scored_table(database_url, urls, tmp_path, id_type="uuid")
    image_server.add("/c/1.jpg", owl)
    image_server.add("/d/1.jpg", dark_owl)
    first_two = ", ".join(f"'{url}'" for url in urls[:2])

    stage_one = cli("rescore", table, tmp_path, "--where", f"t.photo_url IN ({first_two})")

    assert stage_one.exit_code == 0, stage_one.output
    assert summary_of(stage_one)["rescore"]["fullyRescored"] == 2
    assert versions_counted(table, tmp_path) == {
        "scorerVersion": LEARNED_NOW.scorer,
        "current": 2,
        "stale": 6,
        "unknown": 0,
    }
    hits = image_server.total_hits()

    stage_two = cli("rescore", table, tmp_path)

    assert stage_two.exit_code == 0, stage_two.output
    counts = summary_of(stage_two)["rescore"]
    assert counts == {
        "recomputed": 0,
        "revalidated": 3,
        "reusedByHash": 1,
        "fullyRescored": 2,
        "skipped": 0,
        "failed": 0,
    }
    assert image_server.not_modified() == 3
    assert image_server.total_hits() - hits == 6  # one request per row, no second GET
    results = table.results()
    by_url = {record["source"]: record for record in results.values()}
    assert {r["scorerVersion"] for r in results.values()} == {LEARNED_NOW.scorer}
    for url, first in ((urls[2], urls[0]), (urls[3], urls[0]), (urls[7], urls[6])):
        assert by_url[url]["score"] == by_url[first]["score"]  # the same result, its own URL
        assert by_url[url]["checks"] == by_url[first]["checks"]
    assert by_url[urls[4]]["contentSha256"] == by_url[urls[1]]["contentSha256"]
    assert by_url[urls[4]]["score"] == by_url[urls[1]]["score"]
    assert by_url[urls[5]]["contentSha256"] != by_url[urls[0]]["contentSha256"]
    scores = table.scores()
    assert all(scores[key] == record["score"] for key, record in results.items())


# --- which rows --------------------------------------------------------------------------------


def test_where_all_unknown_rows_dry_run_and_a_bad_where(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    urls = serve(image_server, [f"img{i}.jpg" for i in range(4)])
    table = scored_table(database_url, urls, tmp_path)
    [unknown] = table.insert([image_server.add("/old.jpg", sample_images()[0].data)], score=42)
    hits = image_server.total_hits()
    counted = versions_counted(table, tmp_path, *HEURISTIC)
    assert (counted["current"], counted["stale"], counted["unknown"]) == (4, 0, 1)
    counted = versions_counted(table, tmp_path, *HEURISTIC, *STRICTER)
    assert (counted["current"], counted["stale"], counted["unknown"]) == (0, 4, 1)

    bad = cli("rescore", table, tmp_path, *HEURISTIC, "--where", "r.categroy = 'low'")
    assert bad.exit_code == 2, bad.output
    assert "--where" in bad.stderr and "categroy" in bad.stderr
    assert "Traceback" not in bad.output
    escaping = cli("rescore", table, tmp_path, *HEURISTIC, "--where", "true) OR (true")
    assert escaping.exit_code == 2, escaping.output
    assert "parenthesis" in escaping.stderr

    before = table.results()
    dry = cli("rescore", table, tmp_path, *HEURISTIC, *STRICTER, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert summary_of(dry)["rescore"] == {"wouldRecompute": 4, "wouldFetch": 1, "failed": 0}
    assert table.results() == before and image_server.total_hits() == hits

    # the current version already: only the row without a result is stale; its bytes are
    # those of a row scored by this version, so it is downloaded once and not decoded
    plain = cli("rescore", table, tmp_path, *HEURISTIC)
    assert plain.exit_code == 0, plain.output
    assert summary_of(plain)["rescore"]["reusedByHash"] == 1
    assert table.results()[unknown.id]["scorerVersion"] == HEURISTIC_NOW.scorer
    assert image_server.total_hits() == hits + 1

    # rows 0 and 4 share their bytes; row 1 is titled "photo 1": two rows are left
    sha = table.results()[unknown.id]["contentSha256"]
    where = f"r.content_sha256 <> '{sha}' AND t.title <> 'photo 1'"
    narrowed = cli("rescore", table, tmp_path, *HEURISTIC, "--all", "--where", where)
    assert narrowed.exit_code == 0, narrowed.output
    assert summary_of(narrowed)["total"] == 2
    assert summary_of(narrowed)["rescore"]["recomputed"] == 2
    assert image_server.total_hits() == hits + 1


# --- the guard ---------------------------------------------------------------------------------


def _write(url: str, table: UserTable, row: db.StoredRow, score: int) -> list[db.WriteResult]:
    record = a_result(score) | {"scorerVersion": "new-version"}
    write = db.RescoreWrite(row.id, row.score, row.version, record)
    with db.connect(url) as conn:
        return db.write_rescores(conn, table.target, [write])


@pytest.mark.parametrize("has_result", [True, False])
def test_two_rescores_of_one_row_at_once_write_it_once(database_url: str, has_result: bool) -> None:
    table = UserTable(database_url, id_type="integer").create()
    [row] = table.insert(["http://h/x.jpg"], score=None if has_result else 50)
    if has_result:
        with db.connect(database_url) as conn:
            db.write_score_results(conn, table.target, [(row.id, a_result(50))])
    selection = db.Selection("new-version", "m", is_all=True)
    with db.connect(database_url) as conn:
        [stored] = db.fetch_rescore_page(conn, table.target, selection, after_id=None, limit=10)
    assert stored.version == ("learned-0123456789abcdef" if has_result else None)
    # the first writer holds its transaction open while the second one starts; it keeps the
    # score it read (a threshold change that leaves this row's score alone): only the version
    # tells the second writer that the row changed
    first = psycopg.connect(database_url)
    record = a_result(50) | {"scorerVersion": "new-version"}
    write = db.RescoreWrite(stored.id, stored.score, stored.version, record)
    statement = db.rescore.rescore_statement(table.target, has_result=has_result)
    with psycopg.RawCursor(first) as cur:
        cur.execute(statement, db.rescore._parameters(write))
        assert cur.rowcount == 1
    second: list[list[db.WriteResult]] = []
    racer = threading.Thread(target=lambda: second.append(_write(database_url, table, stored, 90)))
    racer.start()
    time.sleep(0.5)
    assert racer.is_alive()  # waiting for the first writer's lock
    first.commit()
    first.close()
    racer.join(timeout=30)

    assert [r.is_written for r in second[0]] == [False]
    assert table.scores()[stored.id] == 50
    assert table.results()[stored.id]["score"] == 50


def test_a_row_reset_since_it_was_read_is_skipped(database_url: str) -> None:
    table = UserTable(database_url, id_type="text").create()
    [row] = table.insert(["http://h/x.jpg"], score=50)
    with db.connect(database_url) as conn:
        selection = db.Selection("new-version", "m")
        [stored] = db.fetch_rescore_page(conn, table.target, selection, after_id=None, limit=10)
        conn.execute(f"UPDATE images SET quality_score = NULL WHERE id = '{row.id}'")
    assert [r.is_written for r in _write(database_url, table, stored, 80)] == [False]
    assert table.scores()[row.id] is None and table.results() == {}


# --- interrupted and resumed -------------------------------------------------------------------


@pytest.mark.slow  # an interrupt trial (about 6 s)
def test_a_rescore_interrupted_and_resumed_rescores_every_row_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    with ImageServer(latency_ms=150) as server:
        urls = serve(server, [f"img{i}.jpg" for i in range(24)])
        table = scored_table(database_url, urls, tmp_path).install_audit()
        [run_checkpoint] = list(tmp_path.glob(".backfill-progress*.json"))
        run_saved = run_checkpoint.read_bytes()
        args = [sys.executable, "-m", "backfill_quality", "rescore", *table.cli_options(), *QUICK]
        process = subprocess.Popen(
            [*args, "--concurrency", "1", "--batch-size", "4"],
            cwd=tmp_path,
            env=cli_env(database_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            paths = list(tmp_path.glob(".backfill-progress.rescore*.json"))
            if paths and read_checkpoint(paths[0]).get("processed", 0) >= 4:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        [checkpoint] = list(tmp_path.glob(".backfill-progress.rescore*.json"))
        saved = read_checkpoint(checkpoint)
        assert 0 < saved["processed"] < 24 and not saved["finished"]

        resumed = cli("rescore", table, tmp_path, "--resume")

    assert resumed.exit_code == 0, resumed.output
    writes = table.audit_writes()
    assert set(writes) == {str(key) for key in table.scores()}
    assert set(writes.values()) == {1}, writes  # every row rewritten exactly once
    assert {r["scorerVersion"] for r in table.results().values()} == {LEARNED_NOW.scorer}
    assert read_checkpoint(checkpoint)["finished"] is True
    assert summary_of(resumed)["processed"] == 24
    assert run_checkpoint != checkpoint and run_checkpoint.read_bytes() == run_saved


@pytest.mark.slow  # a kill trial (about 7 s)
def test_a_rescore_all_killed_after_writes_past_its_checkpoint_resumes_without_rewriting_them(
    database_url: str, tmp_path: Path
) -> None:
    """SIGKILL `rescore --all` once rows past its last checkpoint save are written: --resume
    must not take them again (with --all the version guard alone would let them through)."""
    with ImageServer(latency_ms=150) as server:
        urls = serve(server, [f"img{i}.jpg" for i in range(24)])
        table = scored_table(database_url, urls, tmp_path).install_audit()
        args = [sys.executable, "-m", "backfill_quality", "rescore", *table.cli_options(), *QUICK]
        process = subprocess.Popen(
            [*args, "--all", "--concurrency", "1", "--batch-size", "8"],
            cwd=tmp_path,
            env=cli_env(database_url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        saved = 0
        while time.monotonic() < deadline and process.poll() is None:
            paths = list(tmp_path.glob(".backfill-progress.rescore*.json"))
            saved = read_checkpoint(paths[0]).get("processed", 0) if paths else 0
            if saved >= 8 and sum(table.audit_writes().values()) >= saved + 2:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        [path] = list(tmp_path.glob(".backfill-progress.rescore*.json"))
        killed = read_checkpoint(path)
        written_before = table.audit_writes()
        assert not killed["finished"]
        assert sum(written_before.values()) > killed["processed"]  # rows past the mark
        assert set(written_before.values()) == {1}

        resumed = cli("rescore", table, tmp_path, "--all", "--resume")

    assert resumed.exit_code == 0, resumed.output
    writes = table.audit_writes()
    assert set(writes) == {str(key) for key in table.scores()}
    assert set(writes.values()) == {1}, writes  # every row rewritten exactly once
    assert {r["scorerVersion"] for r in table.results().values()} == {LEARNED_NOW.scorer}
    assert read_checkpoint(path)["finished"] is True


@pytest.mark.parametrize(
    "is_all",
    [False, pytest.param(True, marks=pytest.mark.slow)],  # --all: about 7 s more
)
def test_two_shards_of_a_rescore_cover_every_stale_row_exactly_once(
    database_url: str, tmp_path: Path, image_server: ImageServer, is_all: bool
) -> None:
    urls = serve(image_server, [f"img{i}.jpg" for i in range(10)])
    table = scored_table(database_url, urls, tmp_path).install_audit()
    apply_migrations(database_url, table.target, with_watch=False)  # the shard plan's table
    every = ("--all",) if is_all else ()
    shards = [
        cli("rescore", table, tmp_path, *HEURISTIC, *STRICTER, *every, "--shard", f"{k}/2")
        for k in range(2)
    ]
    for shard in shards:
        assert shard.exit_code == 0, shard.output
    processed = [summary_of(shard)["processed"] for shard in shards]
    assert all(n > 0 for n in processed) and sum(processed) == 10, processed
    writes = table.audit_writes()
    assert set(writes) == {str(key) for key in table.scores()}
    assert set(writes.values()) == {1}, writes
    assert {r["scorerVersion"] for r in table.results().values()} == {STRICTER_NOW.scorer}
    checkpoints = sorted(p.name for p in tmp_path.glob(".backfill-progress.rescore*.json"))
    assert len(checkpoints) == 2 and all("shard" in name for name in checkpoints), checkpoints
    status = run_cli(
        "status", *table.cli_options(), "--json", cwd=tmp_path, database_url=database_url
    )
    [group] = json.loads(status.stdout)["shards"]  # the two shards of one rescore, together
    assert (group["count"], group["present"], group["missing"]) == (2, [0, 1], [])
    assert (group["kind"], group["processed"], group["finished"]) == ("rescore", 10, 2)
    assert "rescore of" in group["target"] and "shard" not in group["target"]
    again = cli("rescore", table, tmp_path, *HEURISTIC, *STRICTER, "--shard", "1/2")
    assert again.exit_code == 0, again.output
    assert summary_of(again)["processed"] == 0


def test_rescore_takes_the_runs_lock(database_url: str, tmp_path: Path) -> None:
    table = UserTable(database_url, id_type="integer").create()
    table.insert(["http://h/x.jpg"], score=50)
    with db.connect(database_url) as conn:
        TargetLock(table.target, None, command="run").ensure(conn)
        result = cli("rescore", table, tmp_path)
        dry = cli("rescore", table, tmp_path, "--dry-run")
    assert result.exit_code == 4, result.output
    assert "another process is already scoring" in result.stderr
    assert dry.exit_code == 0, dry.output  # a dry run takes no lock
    assert summary_of(dry)["rescore"]["wouldFetch"] == 1
    assert table.scores() == {table.rows[0].id: 50}


def test_a_results_table_of_an_earlier_version_gets_its_new_column_from_migrate(
    database_url: str, tmp_path: Path, image_server: ImageServer
) -> None:
    table = UserTable(database_url, id_type="integer").create()
    table.insert(serve(image_server, ["a.jpg"]))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE images_quality_results DROP COLUMN measurement_version")

    refused = cli("run", table, tmp_path, *HEURISTIC)
    assert refused.exit_code == 2, refused.output
    assert "measurement_version" in refused.stderr and "backfill-quality migrate" in refused.stderr
    assert table.scores() == {table.rows[0].id: None}  # nothing written
    migrated = run_cli(
        "migrate", "--table", "images", cwd=tmp_path, database_url=database_url, timeout_s=120
    )
    assert migrated.exit_code == 0, migrated.output
    assert "measurement_version" in migrated.output
    again = run_cli("migrate", "--table", "images", cwd=tmp_path, database_url=database_url)
    assert "results-table" in again.output and "measurement_version" not in again.output
    ran = cli("run", table, tmp_path, *HEURISTIC)
    assert ran.exit_code == 0, ran.output
    [record] = table.results().values()
    assert record["measurementVersion"] == HEURISTIC_NOW.measurement
