"""`run --order-by` and `migrate --order-by` end to end: the real command line, a real
PostgreSQL, the real image server, real signals.

The order of the writes is read from the audit trigger (one row per UPDATE, numbered): with one
download and one scoring process at a time, rows are written in the order they were taken.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from backfill_quality.demo.imageserver import ImageServer
from tests.support.cli import (
    CHECKPOINT_NAME,
    CliResult,
    invoke_in_process,
    read_checkpoint,
    run_cli,
)
from tests.support.faults import start_run, wait_until
from tests.support.http import make_image_bytes
from tests.support.table import AUDIT_TABLE, RowKey, UserTable, apply_migrations

ONE_AT_A_TIME = (
    *("--concurrency", "1", "--workers", "1", "--batch-size", "3"),
    *("--detector", "heuristic", "--retries", "0", "--timeout", "10"),
)
"""One download and one scoring process: the writes come in the order the rows were taken."""
RANKS = [3, None, 1, 3, 2, None, 1, 3, 2, 5, None, 1, 2, 3]
"""The order column of the rows, with ties and NULLs."""
SLOW_INDEX_WARNING = "no index serves this order"
CHECKPOINT = ".backfill-progress.photos.json"


# --- helpers ------------------------------------------------------------------------------------


def run(tmp_path: Path, table: UserTable, *args: str) -> CliResult:
    return run_cli(
        "run", *table.cli_options(), *ONE_AT_A_TIME, *args,
        cwd=tmp_path, database_url=table.database_url,
    )  # fmt: skip


def ranked_table(
    database_url: str, server: ImageServer, *, id_type: str = "integer", schema: str | None = None,
    url_path: str = "", ranks: Sequence[int | None] = RANKS,
) -> UserTable:  # fmt: skip
    """A table whose rows point at small images and carry `rank`; row 5 already scored."""
    table = UserTable(database_url, name="photos", id_type=id_type, schema=schema)  # type: ignore[arg-type]
    if schema:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    table.create()
    image = server.add("/img/small.jpg", make_image_bytes())
    urls = [server.url(url_path + "?img=/img/small.jpg") if url_path else image for _ in ranks]
    rows = table.insert(urls)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN rank integer").format(_name(table)))
        for row, rank in zip(rows, ranks, strict=True):
            set_rank(conn, table, row.id, rank)
        conn.execute(
            sql.SQL("UPDATE {} SET quality_score = 77 WHERE id = %s").format(_name(table)),
            [rows[5].id],
        )
    return table.install_audit()  # after the row scored beforehand: it counts the run's writes


def _name(table: UserTable) -> sql.Identifier:
    return sql.Identifier(*filter(None, (table.schema, table.name)))


def set_rank(
    conn: psycopg.Connection[Any], table: UserTable, key: RowKey, rank: int | None
) -> None:
    conn.execute(sql.SQL("UPDATE {} SET rank = %s WHERE id = %s").format(_name(table)), [rank, key])


def insert_ranked(table: UserTable, url: str, rank: int | None) -> RowKey:
    (row,) = table.insert([url])
    with psycopg.connect(table.database_url, autocommit=True) as conn:
        set_rank(conn, table, row.id, rank)
    return row.id


def expected_order(table: UserTable, *, descending: bool = False) -> list[RowKey]:
    """The unscored rows as the run must take them, sorted here: values by (rank, key rank)
    in the direction, then the NULLs by key ascending (key rank: the database's ORDER BY id)."""
    query = sql.SQL("SELECT id, rank FROM {} WHERE quality_score IS NULL ORDER BY id")
    with psycopg.connect(table.database_url) as conn:
        rows = conn.execute(query.format(_name(table))).fetchall()
    keyed = [(i, k if isinstance(k, int) else str(k), r) for i, (k, r) in enumerate(rows)]
    values = sorted((x for x in keyed if x[2] is not None), key=lambda x: (x[2], x[0]))
    if descending:
        values.reverse()
    return [k for _, k, _ in values] + [k for _, k, r in keyed if r is None]


def write_order(table: UserTable) -> list[str]:
    """Row keys (as text) in the order their scores were written."""
    with psycopg.connect(table.database_url) as conn:
        rows = conn.execute(f"SELECT row_id FROM {AUDIT_TABLE} ORDER BY seq").fetchall()
    return [str(row_id) for (row_id,) in rows]


def as_text(keys: Sequence[RowKey]) -> list[str]:
    return [str(k) for k in keys]


# --- the order ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("id_type", "schema", "descending"),
    [("uuid", None, False), ("text", "media", True)],
    ids=["uuid-ascending", "text-key-other-schema-descending"],
)
def test_rows_are_written_in_the_columns_order_ties_by_key_nulls_last(
    database_url: str, tmp_path: Path, id_type: str, schema: str | None, descending: bool
) -> None:
    with ImageServer() as server:
        table = ranked_table(database_url, server, id_type=id_type, schema=schema)
        expected = expected_order(table, descending=descending)
        direction = ["--descending"] if descending else []

        result = run(tmp_path, table, "--order-by", "rank", *direction)

    assert result.exit_code == 0, result.output
    assert write_order(table) == as_text(expected)  # each once, in the order
    assert len(expected) == len(RANKS) - 1 and None not in table.scores().values()
    name = f"{schema}.photos" if schema else "photos"
    checkpoint = read_checkpoint(tmp_path / CHECKPOINT_NAME.replace("progress", f"progress.{name}"))
    order = checkpoint["orderBy"]
    assert (order["column"], order["descending"], order["type"]) == ("rank", descending, "integer")
    assert order["cursor"] == {"phase": "nulls", "value": None, "id": expected[-1]}
    assert checkpoint["finished"] is True and checkpoint["lastProcessedId"] == expected[-1]


@pytest.mark.slow  # an interrupt trial (about 6 s)
def test_sigint_then_resume_continues_at_the_composite_cursor(
    database_url: str, tmp_path: Path
) -> None:
    """Interrupted mid-run, a resume starts right after the saved (rank, id): rows inserted
    meanwhile after it are taken, those before it are left for the next run; nothing is
    written twice or missed."""
    with ImageServer() as server:
        table = ranked_table(database_url, server, url_path="/slow/200")
        expected = expected_order(table)
        url = server.url("/slow/200?img=/img/small.jpg")
        background = start_run(
            *table.cli_options(), *ONE_AT_A_TIME, "--order-by", "rank",
            cwd=tmp_path, database_url=database_url,
        )  # fmt: skip
        wait_until(lambda: len(write_order(table)) >= 3, timeout_s=60, what="three writes")
        # inserted while the run goes on: one sorts before its cursor, two after (a value, a NULL)
        before = insert_ranked(table, url, 0)
        after = insert_ranked(table, url, 4)
        null_after = insert_ranked(table, url, None)  # integer keys grow: after every NULL row
        wait_until(lambda: len(write_order(table)) >= 6, timeout_s=60, what="six writes")
        background.send(signal.SIGINT)
        interrupted = background.wait(timeout_s=60)

        assert interrupted.exit_code == 130, interrupted.output
        checkpoint = read_checkpoint(tmp_path / CHECKPOINT)
        cursor = checkpoint["orderBy"]["cursor"]
        assert cursor["phase"] == "values" and checkpoint["finished"] is False
        position = expected.index(cursor["id"])
        assert cursor["value"] == str(ranks_by_key(table)[cursor["id"]])
        written_first = write_order(table)
        # the low-water mark: every row up to the cursor, in the order, is written
        assert set(as_text(expected[: position + 1])) <= set(written_first)
        assert table.scores()[before] is None

        resumed = run(tmp_path, table, "--order-by", "rank", "--resume")

        assert resumed.exit_code == 0, resumed.output
        written = write_order(table)
        assert sorted(written) == sorted(set(written)), "a row was written twice"
        scores = table.scores()
        assert scores[before] is None  # before the cursor: left for the next run
        assert scores[after] is not None and scores[null_after] is not None
        assert all(scores[key] is not None for key in expected)
        resumed_rows = written[len(written_first) :]
        assert str(expected[position]) not in resumed_rows
        # the resumed run took its rows in the order, from right after the cursor
        order_now = as_text([*expected[:10], after, *expected[10:], null_after])
        assert resumed_rows == [key for key in order_now if key in set(resumed_rows)]

        again = run(tmp_path, table, "--order-by", "rank")  # a new run takes the one left

    assert again.exit_code == 0, again.output
    assert write_order(table)[len(written) :] == [str(before)]


def test_status_shows_the_order_and_where_its_cursor_is(database_url: str, tmp_path: Path) -> None:
    with ImageServer() as server:
        table = ranked_table(database_url, server)
        expected = expected_order(table, descending=True)
        limited = run(tmp_path, table, "--order-by", "rank", "--descending", "--limit", "4")
        assert limited.exit_code == 0, limited.output
        cursor = read_checkpoint(tmp_path / CHECKPOINT)["orderBy"]["cursor"]
        assert cursor == {"phase": "values", "value": "3", "id": expected[3]}

        text = run_cli("status", *table.cli_options(), cwd=tmp_path, database_url=database_url)

        assert text.exit_code == 0, text.output
        out = " ".join(text.stdout.split())
        assert f"order by rank descending, cursor at rank = 3, id {expected[3]}" in out, out
        # the report reads the checkpoint of a run in an order too (its last run, its failures)
        report = run_cli(
            "report", *table.cli_options(), "--no-thumbnails", "--json",
            cwd=tmp_path, database_url=database_url,
        )  # fmt: skip
        assert report.exit_code == 0, report.output
        figures = json.loads(report.stdout)
        assert figures["failed"] == 0 and figures["lastRun"]["processed"] == 4, figures

        resumed = run(tmp_path, table, "--order-by", "rank", "--descending", "--resume")
    assert resumed.exit_code == 0, resumed.output
    after = run_cli("status", *table.cli_options(), cwd=tmp_path, database_url=database_url)
    out = " ".join(after.stdout.split())
    assert f"order by rank descending, cursor in the NULLs of rank, id {expected[-1]}" in out, out


def ranks_by_key(table: UserTable) -> dict[RowKey, int | None]:
    with psycopg.connect(table.database_url) as conn:
        rows = conn.execute(sql.SQL("SELECT id, rank FROM {}").format(_name(table))).fetchall()
    return {(k if isinstance(k, int) else str(k)): r for k, r in rows}


def test_shards_split_by_key_range_each_in_the_order(database_url: str, tmp_path: Path) -> None:
    with ImageServer() as server:
        table = ranked_table(database_url, server)
        apply_migrations(database_url, table.target)  # the shard plan table
        expected = as_text(expected_order(table, descending=True))
        results = [
            run(tmp_path, table, "--order-by", "rank", "--descending", "--shard", f"{k}/2")
            for k in range(2)
        ]

    assert [r.exit_code for r in results] == [0, 0], [r.output for r in results]
    written = write_order(table)
    assert sorted(written) == sorted(expected)  # every row once
    counts = [
        read_checkpoint(tmp_path / f".backfill-progress.photos.shard-{k}-of-2.json")["processed"]
        for k in range(2)
    ]
    first, second = written[: counts[0]], written[counts[0] :]
    assert first and second
    assert max(map(int, first)) < min(map(int, second))  # contiguous key ranges
    for shard_rows in (first, second):
        assert shard_rows == [key for key in expected if key in set(shard_rows)]


# --- the index -----------------------------------------------------------------------------------


def test_without_the_index_the_run_warns_and_migrate_order_by_creates_it(
    database_url: str, tmp_path: Path
) -> None:
    with ImageServer() as server:
        table = ranked_table(database_url, server)
        apply_migrations(database_url, table.target)  # the unscored rows' index on id only
        options = table.cli_options()

        slow = run(tmp_path, table, "--order-by", "rank", "--limit", "2")
        printed = run_cli(
            "migrate", *options, "--order-by", "rank", "--sql",
            cwd=tmp_path, database_url=database_url,
        )  # fmt: skip
        migrated = run_cli(
            "migrate", *options, "--order-by", "rank", cwd=tmp_path, database_url=database_url
        )
        again = run_cli(
            "migrate", *options, "--order-by", "rank", cwd=tmp_path, database_url=database_url
        )
        fast = run(tmp_path, table, "--order-by", "rank", "--resume")

    assert slow.exit_code == 0, slow.output
    assert SLOW_INDEX_WARNING in slow.stderr
    assert "backfill-quality migrate --table photos" in slow.stderr
    assert "--order-by rank`. Continuing" in slow.stderr
    index = "idx_photos_rank_quality_score_null"
    assert printed.exit_code == 0, printed.output
    assert "-- order-index: created" in printed.stdout
    assert (
        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{index}" ON "public"."photos"'
        ' ("rank", "id") WHERE "quality_score" IS NULL;' in printed.stdout
    )
    assert migrated.exit_code == 0, migrated.output
    assert re.search(
        rf"^order-index: +created — public\.{index}, built CONCURRENTLY$", migrated.stdout, re.M
    )
    assert again.exit_code == 0, again.output
    assert re.search(rf"^order-index: +already present — public\.{index}$", again.stdout, re.M)
    plain = run_cli("migrate", *options, cwd=tmp_path, database_url=database_url)
    assert plain.exit_code == 0 and "order-index" not in plain.stdout  # only when asked for
    assert fast.exit_code == 0, fast.output
    assert SLOW_INDEX_WARNING not in fast.stderr
    assert len(write_order(table)) == len(RANKS) - 1


# --- refusals ---------------------------------------------------------------------------------


def test_bad_columns_and_another_order_on_resume_are_refused_with_exit_2(
    database_url: str, tmp_path: Path
) -> None:
    with ImageServer() as server:
        table = ranked_table(database_url, server, ranks=[2, 1, None, 1, 3, 4, 5, 6])
        missing = run(tmp_path, table, "--order-by", "ranking")
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE photos ADD COLUMN photo_meta jsonb")
        unsortable = run(tmp_path, table, "--order-by", "photo_meta")
        started = run(tmp_path, table, "--order-by", "rank", "--descending", "--limit", "2")
        other = run(tmp_path, table, "--order-by", "rank", "--resume")
        none = run(tmp_path, table, "--resume")
        fresh = run(tmp_path, table, "--order-by", "rank")  # neither --resume nor --restart

    assert missing.exit_code == 2, missing.output
    assert "--order-by ranking: column 'ranking' does not exist in table 'photos'" in missing.stderr
    assert "Traceback" not in missing.output
    assert unsortable.exit_code == 2, unsortable.output
    assert "column 'photo_meta' of 'photos' has type jsonb, which cannot be a priority order" in (
        unsortable.stderr
    )
    assert started.exit_code == 0, started.output
    for refused, ours in ((other, "order by rank"), (none, "no --order-by (key order)")):
        assert refused.exit_code == 2, refused.output
        assert "was written by a run in order by rank descending" in refused.stderr
        assert f"this run asks for {ours}" in refused.stderr
        assert "resume with --order-by rank --descending, or --restart" in refused.stderr
    assert fresh.exit_code == 2, fresh.output
    assert (
        "an unfinished run's checkpoint in order by rank descending exists at "
        f"{CHECKPOINT}; this run asks for order by rank. Add --resume with --order-by rank "
        "--descending to continue it, or --restart"
    ) in " ".join(fresh.stderr.split())
    assert len(write_order(table)) == 2  # the refusals wrote nothing


def test_descending_alone_and_watch_order_by_are_refused() -> None:
    alone = invoke_in_process("run", "--descending")
    watch = invoke_in_process("watch", "--order-by", "created_at")

    assert alone.exit_code == 2
    assert "--descending needs --order-by COLUMN" in alone.output
    assert watch.exit_code == 2
    assert "watch does not take a priority order" in watch.output
    assert "backfill-quality run --order-by COLUMN" in watch.output
