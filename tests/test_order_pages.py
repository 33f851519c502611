"""`--order-by` pages against a real PostgreSQL: every unscored row once, in the column's order
(ties by key, NULLs last by key), for integer, uuid and text keys, in another schema, across
page boundaries, with counts, failed-row checks and shards following the same cursor.

One database per module (the walks only read), built once: the tables hold every sortable type.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from backfill_quality import db
from backfill_quality.config import OrderBy, Shard, Target
from backfill_quality.errors import CheckpointError, ConfigError
from backfill_quality.models import OrderCursor, PageKey, RowId
from backfill_quality.pipeline.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from backfill_quality.pipeline.lowwater import LowWaterMark
from tests.support.pg import with_database

ROWS = 45
SCHEMA = "media"
KEYS = {
    "integer": "bigint PRIMARY KEY",
    "uuid": "uuid PRIMARY KEY",
    "text": "text PRIMARY KEY",
}
COLUMNS = {
    "rank": "integer",
    "created_at": "timestamptz",
    "label": "text",
    "price": "numeric",
    "ref": "uuid",
    "flag": "boolean",
    "day": "date",
    "ratio": "double precision",
    "taken": "timestamp",
}


@dataclass(frozen=True, slots=True)
class Table:
    target: Target
    key_type: str


def _value(column: str, rng: random.Random) -> Any:
    """A value with many ties (and about one NULL in four)."""
    if rng.random() < 0.25:
        return None
    base = datetime(2024, 1, 1, tzinfo=UTC)
    return {
        "rank": rng.randint(1, 6),
        "created_at": base + timedelta(microseconds=rng.choice([1, 7, 123456, 10**9 + 5])),
        "label": rng.choice(["ant", "bee", "cat", "dog"]),
        "price": rng.choice([Decimal("1.50"), Decimal("1.5"), Decimal("2"), Decimal("-3.25")]),
        "ref": rng.choice([uuid.UUID(int=n * 2**120) for n in (1, 2, 255)]),
        "flag": rng.choice([True, False]),
        "day": date(2024, 2, 29) + timedelta(days=rng.choice([0, 1, 366])),
        "ratio": rng.choice([0.1, 1 / 3, 2.0000000000000004, -1e-300]),
        "taken": datetime(2024, 1, 1) + timedelta(microseconds=rng.choice([3, 999999])),
    }[column]


def _key(key_type: str, number: int) -> Any:
    if key_type == "integer":
        return number * 7
    if key_type == "uuid":
        return uuid.UUID(int=random.Random(number).getrandbits(128))
    return f"photo-{number * 37 % 1000:03d}-{number}"


@pytest.fixture(scope="module")
def order_db(pg_admin_url: str) -> Iterator[str]:
    name = "t_order_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(pg_admin_url, name)
    rng = random.Random(13)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        for key_type, key_sql in KEYS.items():
            table = sql.Identifier(SCHEMA, f"photos_{key_type}")
            extra = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id " + key_sql + ", url text NOT NULL,"
                    " quality_score integer, tags jsonb, " + extra + ")"
                ).format(table)
            )
            for number in range(1, ROWS + 1):
                values = [_value(column, rng) for column in COLUMNS]
                score = 50 if number % 9 == 0 else None  # scored rows are never read
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (id, url, quality_score, " + ", ".join(COLUMNS) + ")"
                        " VALUES (" + ", ".join(["%s"] * (3 + len(COLUMNS))) + ")"
                    ).format(table),
                    [_key(key_type, number), f"http://h/{number}", score, *values],
                )
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def conn(order_db: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(order_db) as connection:
        yield connection


def table_of(key_type: str) -> Target:
    return Target(table=f"photos_{key_type}", schema=SCHEMA)


def _row_id(value: Any) -> RowId:
    return value if isinstance(value, int) else str(value)


def expected_order(
    conn: psycopg.Connection[Any], target: Target, column: str, *, descending: bool
) -> tuple[list[RowId], list[RowId]]:
    """(every row, the unscored rows) in the order a run must take them, sorted here in Python:
    values by (value, key) in the direction, then the NULLs by key ascending. The key's rank
    comes from the database (`ORDER BY id`: uuid order, text in the column's collation)."""
    table = sql.Identifier(SCHEMA, target.table)
    rows = conn.execute(
        sql.SQL("SELECT id, {}, quality_score IS NULL FROM {} ORDER BY id").format(
            sql.Identifier(column), table
        )
    ).fetchall()
    ranked = [
        (rank, _row_id(key), value, unscored) for rank, (key, value, unscored) in enumerate(rows)
    ]
    values = sorted(
        (r for r in ranked if r[2] is not None), key=lambda r: (r[2], r[0]), reverse=descending
    )
    nulls = [r for r in ranked if r[2] is None]
    every = [r[1] for r in [*values, *nulls]]
    return every, [r[1] for r in [*values, *nulls] if r[3]]


def walk(
    conn: psycopg.Connection[Any],
    target: Target,
    order: db.PageOrder,
    *,
    limit: int,
    id_range: db.IdRange | None = None,
) -> tuple[list[RowId], list[int]]:
    """Every row the pages give, page after page from the last row's key; and before each page
    the count of the rows left after that key."""
    taken: list[RowId] = []
    counts: list[int] = []
    after: PageKey | None = None
    while True:
        counts.append(
            db.count_unscored(conn, target, after_id=after, id_range=id_range, order=order)
        )
        page = db.fetch_page(
            conn, target, after_id=after, limit=limit, id_range=id_range, order=order
        )
        taken += [row.id for row in page]
        if len(page) < limit:
            return taken, counts
        after = page[-1].key


@pytest.mark.parametrize("key_type", list(KEYS))
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_pages_take_every_unscored_row_once_in_the_columns_order(
    conn: psycopg.Connection[Any], key_type: str, descending: bool
) -> None:
    target = table_of(key_type)
    for column, column_sql in COLUMNS.items():
        order = db.check_order(conn, target, OrderBy(column, descending))
        _, expected = expected_order(conn, target, column, descending=descending)
        taken, counts = walk(conn, target, order, limit=4)
        assert taken == expected, (column, column_sql)
        # before each page: the rows left after the cursor, counted with the same condition
        assert counts == [len(expected) - 4 * page for page in range(len(counts))], column


def test_the_cursor_value_keeps_its_type_exactly(conn: psycopg.Connection[Any]) -> None:
    """Microseconds, 17 significant digits, numeric scale: the page after a tie starts after
    exactly that row (a rounded value would repeat or skip the rest of the tie)."""
    target = table_of("integer")
    for column in ("created_at", "ratio", "price", "taken"):
        order = db.check_order(conn, target, OrderBy(column))
        _, expected = expected_order(conn, target, column, descending=False)
        taken, _ = walk(conn, target, order, limit=1)
        assert taken == expected, column


def test_failed_rows_after_a_cursor_are_found_in_its_order(
    conn: psycopg.Connection[Any],
) -> None:
    """On resume, the failed rows past the mark are found in the run's order, NULLs last."""
    target = table_of("text")
    for descending in (False, True):
        order = db.check_order(conn, target, OrderBy("rank", descending))
        every, _ = expected_order(conn, target, "rank", descending=descending)
        values = dict(
            conn.execute(
                sql.SQL("SELECT id, rank::text FROM {}").format(
                    sql.Identifier(SCHEMA, target.table)
                )
            ).fetchall()
        )
        for position in (3, len(every) - 5):  # in the values, then in the NULLs
            key = every[position]
            cursor = OrderCursor(values[key], key)
            after = db.ids_after(conn, target, every, cursor, id_type="text", order=order)
            assert after == set(every[position + 1 :]), (descending, position)


def test_shards_keep_their_id_ranges_in_the_order(conn: psycopg.Connection[Any]) -> None:
    target = table_of("uuid")
    order = db.check_order(conn, target, OrderBy("created_at", True))
    _, expected = expected_order(conn, target, "created_at", descending=True)
    taken: list[RowId] = []
    for index in range(3):
        id_range = db.key_range_for_shard(conn, target, "uuid", Shard(index, 3))
        shard_rows, _ = walk(conn, target, order, limit=3, id_range=id_range)
        lo, hi = id_range
        assert all((lo is None or str(r) >= lo) and (hi is None or str(r) < hi) for r in shard_rows)
        assert shard_rows == [r for r in expected if r in set(shard_rows)]  # the order kept
        taken += shard_rows
    assert sorted(map(str, taken)) == sorted(map(str, expected))


@pytest.mark.parametrize(
    ("column", "says"),
    [
        ("nope", "column 'nope' does not exist in table 'media.photos_integer' (columns: id, url"),
        ("tags", "has type jsonb, which cannot be a priority order; supported types: bigint"),
        ("quality_score", "that is the score column"),
    ],
)
def test_an_unusable_column_is_refused_with_what_to_do(
    conn: psycopg.Connection[Any], column: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        db.check_order(conn, table_of("integer"), OrderBy(column))
    assert str(caught.value).startswith(f"--order-by {column}: ")
    assert says in str(caught.value)


def test_the_low_water_mark_follows_the_issue_order_across_the_two_phases() -> None:
    """Keys are never compared: a NULL-phase key with a smaller id than a values-phase key
    comes later, and the mark passes a key only when everything issued before it is done."""
    values = [OrderCursor("9", 5), OrderCursor("3", 40)]  # descending: 9 before 3
    nulls = [OrderCursor(None, 1), OrderCursor(None, 2)]
    mark = LowWaterMark(OrderCursor("10", 7))
    for key in [*values, *nulls]:
        mark.issue(key)
    mark.complete(nulls[0])
    mark.complete(values[1])
    assert mark.mark == OrderCursor("10", 7)  # values[0] still in flight
    mark.complete(values[0])
    assert mark.mark == nulls[0]
    mark.complete(nulls[1])
    assert mark.mark == nulls[1] and mark.in_flight == 0


def test_the_checkpoint_keeps_the_composite_cursor_and_reads_files_without_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cp.json"
    checkpoint = Checkpoint(fingerprint="f", dry_run=False, order_by=OrderBy("created_at", True))
    checkpoint.order_type = "timestamp with time zone"
    checkpoint.cursor = OrderCursor("2024-01-01T00:00:00.000007+00:00", "b7")
    save_checkpoint(path, checkpoint)

    saved = json.loads(path.read_text())
    loaded = load_checkpoint(path)

    assert saved["lastProcessedId"] == "b7"
    assert saved["orderBy"] == {
        "column": "created_at",
        "descending": True,
        "type": "timestamp with time zone",
        "cursor": {"phase": "values", "value": "2024-01-01T00:00:00.000007+00:00", "id": "b7"},
    }
    assert loaded is not None and loaded.cursor == checkpoint.cursor
    assert loaded.order_by == OrderBy("created_at", True)

    loaded.cursor = OrderCursor(None, 12)  # the NULLs phase
    save_checkpoint(path, loaded)
    assert json.loads(path.read_text())["orderBy"]["cursor"] == {
        "phase": "nulls",
        "value": None,
        "id": 12,
    }

    del saved["orderBy"]  # a file written before the option existed
    path.write_text(json.dumps(saved))
    old = load_checkpoint(path)
    assert old is not None and old.order_by is None and old.cursor == "b7"

    saved["orderBy"] = {"column": "x", "descending": False, "type": "integer", "cursor": {}}
    path.write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match=r"has orderBy.cursor without exactly phase"):
        load_checkpoint(path)


def test_migrate_order_by_on_a_new_database_creates_the_table_then_its_index(
    database_url: str,
) -> None:
    order_by = OrderBy("created_at", descending=True)
    with db.connect(database_url) as fresh:
        first = db.migrate(fresh, Target(), may_create_table=True, order_by=order_by)
        second = db.migrate(fresh, Target(), may_create_table=True, order_by=order_by)
        plain = db.plan_migration(fresh, Target())
        order = db.check_order(fresh, Target(), order_by)
        is_served = db.has_order_index(fresh, Target(), order, None)
        definition = fresh.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
            ["idx_images_created_at_desc_quality_score_null"],
        ).fetchone()

    assert [(p.step, p.outcome) for p in first][-1] == ("order-index", "created")
    assert [(p.step, p.outcome) for p in second][-1] == ("order-index", "already present")
    assert "order-index" not in [p.step for p in plain]  # only when asked for
    assert definition is not None and definition[0].endswith(
        "USING btree (created_at DESC, id DESC) WHERE (quality_score IS NULL)"
    )
    assert order.sql_type == "timestamp with time zone" and is_served
