"""Scale-out: N workers with `--shard K/N` on one database, as a user would run them."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backfill_quality import db
from backfill_quality.config import Shard, Target
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.errors import ConfigError
from tests.support.cli import CliResult, json_lines, read_checkpoint, run_cli
from tests.support.table import UserTable, apply_migrations, serve_valid_images

FAST = ("--retries", "0", "--timeout", "5", "--workers", "1", "--concurrency", "4")
PARTIAL_INDEX = "idx_images_quality_score_null"
UUID_QUARTER = (1 << 128) // 4


def shard_checkpoint(folder: Path, index: int, count: int, table: str = "images") -> Path:
    """A shard's checkpoint file (the table's name is in it unless it is `images`)."""
    tag = "" if table == "images" else f".{table}"
    return folder / f".backfill-progress{tag}.shard-{index}-of-{count}.json"


def run_shard(
    tmp_path: Path, database_url: str, table: UserTable, index: int, count: int, *extra: str
) -> CliResult:
    """`run --shard K/N` in its own process, with JSON logs."""
    return run_cli(
        "run",
        "--shard",
        f"{index}/{count}",
        "--log-format",
        "json",
        "--verbose",
        *FAST,
        *table.cli_options(),
        *extra,
        cwd=tmp_path,
        database_url=database_url,
        timeout_s=120,
    )


def run_workers(
    tmp_path: Path, database_url: str, table: UserTable, count: int, *extra: str
) -> list[CliResult]:
    """`run --shard K/N` for every K at the same time, each in its own process."""

    def worker(index: int) -> CliResult:
        return run_shard(tmp_path, database_url, table, index, count, *extra)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(worker, range(count)))


def scored_ids(result: CliResult) -> set[str]:
    """Ids the worker reports as scored (`row` events of --verbose JSON logs)."""
    return {str(e["id"]) for e in json_lines(result.stderr) if e["event"] == "row"}


def migrated_images(database_url: str) -> UserTable:
    table = UserTable(database_url).create(with_score_column=False)
    apply_migrations(database_url)
    return table.install_audit()


@pytest.mark.slow
def test_four_workers_score_every_row_exactly_once_each_in_its_own_slice(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    table = migrated_images(database_url)
    expected = serve_valid_images(image_server, 200)
    rows = table.insert(list(expected))
    prescored = table.insert([image_server.url(f"/old/{n}.jpg") for n in range(600)], score=42)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE images")
        for index in range(4):
            lo, hi = db.key_range_for_shard(conn, Target(), "uuid", Shard(index, 4))
            for after_id in (None, lo):
                plan = db.explain_page_query(conn, Target(), after_id=after_id, id_range=(lo, hi))
                assert PARTIAL_INDEX in plan, plan

    results = run_workers(tmp_path, database_url, table, 4)

    assert [r.exit_code for r in results] == [0, 0, 0, 0], [r.stderr[-2000:] for r in results]
    scores = table.scores()
    assert {str(r.id): scores[r.id] for r in rows} == {str(r.id): expected[r.url] for r in rows}
    assert all(scores[r.id] == 42 for r in prescored)
    audit = table.audit_writes()
    assert set(audit) == {str(r.id) for r in rows} and set(audit.values()) == {1}
    per_worker = [scored_ids(r) for r in results]
    assert sum(map(len, per_worker)) == 200 and set().union(*per_worker) == set(audit)
    fingerprints = set()
    for index, ids in enumerate(per_worker):
        assert ids, f"shard {index} scored nothing: slices are not balanced"
        slots = {uuid.UUID(i).int // UUID_QUARTER for i in ids}
        assert slots == {index}, f"shard {index} wrote rows of slices {slots}"
        checkpoint = read_checkpoint(shard_checkpoint(tmp_path, index, 4))
        assert checkpoint["shard"] == f"{index}/4" and checkpoint["finished"] is True
        assert checkpoint["processed"] == checkpoint["succeeded"] == len(ids)
        assert f"shard {index}/4" in checkpoint["target"]
        fingerprints.add(checkpoint["fingerprint"])
    assert len(fingerprints) == 4
    assert not (tmp_path / ".backfill-progress.json").exists()


@pytest.mark.slow
def test_integer_keys_are_split_into_contiguous_ranges_of_min_to_max(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    apply_migrations(database_url)  # the shard plan table (005)
    table = UserTable(database_url, name="photos", id_type="integer").create().install_audit()
    expected = serve_valid_images(image_server, 60)
    rows = table.insert(list(expected))  # keys 7, 14, …, 420

    results = run_workers(tmp_path, database_url, table, 3)

    assert [r.exit_code for r in results] == [0, 0, 0], [r.stderr[-2000:] for r in results]
    assert set(table.audit_writes().values()) == {1}
    assert len(table.audit_writes()) == len(rows)
    span = 420 - 7 + 1
    for index, result in enumerate(results):
        ids = sorted(int(i) for i in scored_ids(result))
        lo, hi = 7 + index * span // 3, 7 + (index + 1) * span // 3
        assert ids and lo <= ids[0] and ids[-1] < hi, (index, ids)


@pytest.mark.slow  # a scale-out trial with rows arriving (about 6 s)
def test_integer_workers_started_apart_while_rows_arrive_leave_no_gap(
    tmp_path: Path, database_url: str, image_server: ImageServer
) -> None:
    apply_migrations(database_url)
    table = UserTable(database_url, name="photos", id_type="integer").create().install_audit()
    expected = serve_valid_images(image_server, 60)
    urls = list(expected)
    early = table.insert(urls[:20])  # keys 7 … 140

    first = run_shard(tmp_path, database_url, table, 0, 2)  # slices min..max = 7..140
    late = table.insert(urls[20:])  # keys 147 … 420, after the first worker started
    second = run_shard(tmp_path, database_url, table, 1, 2)

    assert [first.exit_code, second.exit_code] == [0, 0], (first.stderr, second.stderr)
    for index in (0, 1):
        assert read_checkpoint(shard_checkpoint(tmp_path, index, 2, "photos"))["finished"] is True
    middle = 7 + (140 - 7 + 1) // 2  # shard 1/2 starts here, as the first worker planned
    naive_start = 7 + (420 - 7 + 1) // 2  # where bounds read by the second worker would start
    gap = {r.id for r in early + late if middle <= int(r.id) < naive_start}
    assert len(gap) == 20  # the rows the audit found unscored
    scores = table.scores()
    assert {r.id: scores[r.id] for r in early + late} == {
        r.id: expected[r.url] for r in early + late
    }
    audit = table.audit_writes()
    assert len(audit) == 60 and set(audit.values()) == {1}
    assert {int(i) for i in scored_ids(first)} == {int(r.id) for r in early if int(r.id) < middle}
    assert {int(i) for i in scored_ids(second)} == {
        int(r.id) for r in early + late if int(r.id) >= middle
    }
    with psycopg.connect(database_url) as conn:
        plan = conn.execute(
            "SELECT target, shard_count, low, high FROM backfill_quality_shard_plan"
        )
        assert plan.fetchall() == [("public.photos.id", 2, 7, 140)]


def test_integer_bounds_are_recorded_once_and_reused_until_reset(database_url: str) -> None:
    apply_migrations(database_url)
    table = UserTable(database_url, name="photos", id_type="integer").create()
    table.insert([f"http://127.0.0.1:9/{n}.jpg" for n in range(10)])  # keys 7 … 70
    target = Target(table="photos")
    with db.connect(database_url) as conn:
        first = db.key_range_for_shard(conn, target, "bigint", Shard(0, 2))
        table.insert([f"http://127.0.0.1:9/late-{n}.jpg" for n in range(90)])  # up to 700
        again = [db.key_range_for_shard(conn, target, "bigint", Shard(k, 2)) for k in (0, 1)]
        three = [db.key_range_for_shard(conn, target, "bigint", Shard(k, 3)) for k in range(3)]
        recorded = conn.execute(
            "SELECT shard_count, low, high FROM backfill_quality_shard_plan ORDER BY shard_count"
        ).fetchall()
        conn.execute("DELETE FROM backfill_quality_shard_plan")
        reset = db.key_range_for_shard(conn, target, "bigint", Shard(0, 2))

    assert first == (None, 39) and again == [(None, 39), (39, None)]
    assert three == [(None, 238), (238, 469), (469, None)]  # N = 3 has its own plan
    assert recorded == [(2, 7, 70), (3, 7, 700)]
    assert reset == (None, 7 + (700 - 7 + 1) // 2)


def test_a_worker_that_starts_while_the_plan_is_written_uses_that_plan(
    database_url: str,
) -> None:
    apply_migrations(database_url)
    table = UserTable(database_url, name="photos", id_type="integer").create()
    table.insert([f"http://127.0.0.1:9/{n}.jpg" for n in range(10)])  # keys 7 … 70
    result: list[Any] = []
    with (
        psycopg.connect(database_url) as first,
        db.connect(database_url) as second,
        db.connect(database_url) as observer,
    ):
        first.execute(  # the first worker's plan, not committed yet
            "INSERT INTO backfill_quality_shard_plan (target, shard_count, low, high)"
            " VALUES ('public.photos.id', 2, 100, 300)"
        )
        pid = second.info.backend_pid

        def start_second() -> None:
            result.append(
                db.key_range_for_shard(second, Target(table="photos"), "bigint", Shard(1, 2))
            )

        worker = threading.Thread(target=start_second)
        worker.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            waiting = observer.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if waiting == ("Lock",):
                break
            time.sleep(0.02)
        assert waiting == ("Lock",), "the second worker did not wait for the first one's plan"
        first.commit()
        worker.join(timeout=5)

    assert result == [(200, None)]


def test_integer_shards_without_the_plan_table_say_to_run_migrate(
    tmp_path: Path, database_url: str
) -> None:
    table = UserTable(database_url, name="photos", id_type="integer").create()
    table.insert(["http://127.0.0.1:9/a.jpg"])

    result = run_cli(
        "run", "--shard", "1/2", *table.cli_options(), cwd=tmp_path, database_url=database_url
    )

    assert result.exit_code == 2, result.output
    assert "backfill_quality_shard_plan" in result.stderr
    assert "backfill-quality migrate" in result.stderr
    assert "Traceback" not in result.output
    assert table.scores() == {table.rows[0].id: None}
    with db.connect(database_url) as conn, pytest.raises(ConfigError, match="migrate"):
        db.key_range_for_shard(conn, Target(table="photos"), "bigint", Shard(0, 2))


def test_text_keys_cannot_be_sharded_and_the_error_says_what_to_do(
    tmp_path: Path, database_url: str
) -> None:
    table = UserTable(database_url, name="pics", id_type="text").create()
    table.insert(["http://127.0.0.1:9/a.jpg"])

    result = run_cli(
        "run",
        "--shard",
        "0/2",
        *table.cli_options(),
        cwd=tmp_path,
        database_url=database_url,
    )

    assert result.exit_code == 2, result.output
    assert "--shard" in result.stderr and "text" in result.stderr
    assert "without --shard" in result.stderr
    assert "Traceback" not in result.output
    assert table.scores() == {table.rows[0].id: None}


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--shard-count", "4"), {"JOB_COMPLETION_INDEX": "2"}),
        ((), {"BACKFILL_SHARD": "2/4"}),
        ((), {"BACKFILL_SHARD_COUNT": "4", "JOB_COMPLETION_INDEX": "2"}),
    ],
    ids=["indexed-job", "env-shard", "env-count"],
)
def test_the_shard_can_come_from_the_environment(
    tmp_path: Path,
    database_url: str,
    image_server: ImageServer,
    args: tuple[str, ...],
    env: dict[str, str],
) -> None:
    table = migrated_images(database_url)
    expected = serve_valid_images(image_server, 24)
    rows = table.insert(list(expected))

    result = run_cli(
        "run", *args, *FAST, cwd=tmp_path, database_url=database_url, env=env, timeout_s=90
    )

    assert result.exit_code == 0, result.output
    checkpoint = read_checkpoint(shard_checkpoint(tmp_path, 2, 4))
    assert checkpoint["shard"] == "2/4"
    written = set(table.audit_writes())
    in_slice = {str(r.id) for r in rows if uuid.UUID(str(r.id)).int // UUID_QUARTER == 2}
    assert written == in_slice and checkpoint["succeeded"] == len(in_slice)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--shard", "4/4"), {}, "0 <= K < N"),
        (("--shard", "two"), {}, "--shard 0/4"),
        (("--shard-count", "4"), {}, "JOB_COMPLETION_INDEX"),
        (("--shard-count", "4"), {"JOB_COMPLETION_INDEX": "x"}, "whole number"),
        (("--shard-count", "4"), {"JOB_COMPLETION_INDEX": "4"}, "0 <= K < N"),
    ],
)
def test_bad_shards_are_usage_errors(
    tmp_path: Path, database_url: str, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_cli("run", *args, cwd=tmp_path, database_url=database_url, env=env)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_uuid_slices_tile_the_whole_key_space(database_url: str) -> None:
    bounds: list[Any] = []
    with psycopg.connect(database_url) as conn:
        for count in (1, 3, 4, 7):
            ranges = [
                db.key_range_for_shard(conn, Target(), "uuid", Shard(k, count))
                for k in range(count)
            ]
            assert ranges[0][0] is None and ranges[-1][1] is None
            for (_, hi), (lo, _) in itertools.pairwise(ranges):
                assert hi == lo and hi is not None
                bounds.append(uuid.UUID(str(hi)).int)
    assert bounds[:2] == [(1 << 128) // 3, 2 * (1 << 128) // 3]
