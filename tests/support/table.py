"""A table shaped like a user's, for the end-to-end tests: rows in, scores and an audit out.

`UserTable` creates the table (uuid, integer or text keys, extra columns such as `title` and
`created_at`, any table and column names), inserts rows (some already scored), installs an audit
trigger that records every UPDATE of the score column into `audit`, and reads it all back.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql

from backfill_quality import db
from backfill_quality.config import DetectorChoice, Target, Thresholds
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.demo.photos import photo_bytes, variant
from backfill_quality.models import BBox
from backfill_quality.scoring.detectors.factory import load_detector
from backfill_quality.scoring.score import score_image
from tests.support.http import closed_port

IdType = Literal["uuid", "integer", "text"]
RowKey = str | int

AUDIT_TABLE = "audit"
_ID_DECLARATIONS: dict[IdType, str] = {
    "uuid": "uuid PRIMARY KEY DEFAULT gen_random_uuid()",
    "integer": "bigint PRIMARY KEY",
    "text": "text PRIMARY KEY",
}
_AUDIT_FUNCTION = """
CREATE OR REPLACE FUNCTION record_score_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit (row_id, old_score, new_score)
    VALUES (to_jsonb(OLD) ->> TG_ARGV[0],
            (to_jsonb(OLD) ->> TG_ARGV[1])::integer,
            (to_jsonb(NEW) ->> TG_ARGV[1])::integer);
    RETURN NEW;
END
$$
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One inserted row: its key (as the tool reports it), URL and starting score."""

    id: RowKey
    url: str
    score: int | None


@dataclass(slots=True)
class UserTable:
    """A user's image table in the database at `database_url`."""

    database_url: str
    name: str = "images"
    id_column: str = "id"
    url_column: str = "url"
    score_column: str = "quality_score"
    id_type: IdType = "uuid"
    schema: str | None = None
    rows: list[Row] = field(default_factory=list)
    _next_key: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)

    def _ids(self) -> dict[str, sql.Identifier]:
        return {
            "table": sql.Identifier(self.schema, self.name)
            if self.schema
            else sql.Identifier(self.name),
            "id": sql.Identifier(self.id_column),
            "url": sql.Identifier(self.url_column),
            "score": sql.Identifier(self.score_column),
        }

    def create(self, *, with_score_column: bool = True, with_results: bool = True) -> UserTable:
        """Create the table with extra columns; without the score column `migrate` must add it.
        `with_results`: also its results table (the step `migrate --table` runs)."""
        score_decl = sql.SQL(", {} integer").format(sql.Identifier(self.score_column))
        statement = sql.SQL(
            "CREATE TABLE {table} ({id} {id_decl}, {url} text NOT NULL, title text,"
            " created_at timestamptz NOT NULL DEFAULT now(), width_px integer{score_decl})"
        ).format(
            id_decl=sql.SQL(_ID_DECLARATIONS[self.id_type]),
            score_decl=score_decl if with_score_column else sql.SQL(""),
            **self._ids(),
        )
        with self._connect() as conn:
            conn.execute(statement)
        if with_results:  # only the step `results-table` of `migrate`
            with db.connect(self.database_url) as conn:
                db.migrate(conn, self.target, only={"results-table"})
        return self

    @property
    def target(self) -> Target:
        return Target(
            table=self.name,
            schema=self.schema,
            id_column=self.id_column,
            url_column=self.url_column,
            score_column=self.score_column,
        )

    def results(self) -> dict[RowKey, dict[str, Any]]:
        """Every stored result by row key (uuid keys as strings), under the JSON keys."""
        with db.connect(self.database_url) as conn:
            return db.read_results(conn, self.target)

    def results_table(self) -> str:
        return db.results_table_name(self.target)

    def install_audit(self) -> UserTable:
        """Record every UPDATE of the score column (one `audit` row per row written)."""
        with self._connect() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (seq bigserial PRIMARY KEY,"
                " row_id text NOT NULL, old_score integer, new_score integer,"
                " changed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
            conn.execute(_AUDIT_FUNCTION)
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER {trigger} AFTER UPDATE OF {score} ON {table}"
                    " FOR EACH ROW EXECUTE FUNCTION record_score_update({id_name}, {score_name})"
                ).format(
                    trigger=sql.Identifier(f"audit_{self.name}"),
                    id_name=sql.Literal(self.id_column),
                    score_name=sql.Literal(self.score_column),
                    **self._ids(),
                )
            )
        return self

    def _new_key(self) -> RowKey | None:
        number = next(self._next_key)
        if self.id_type == "integer":
            return number * 7  # gaps, like a real sequence after deletes
        if self.id_type == "text":
            return f"photo-{number * 37 % 1000:03d}-{number}"  # not in insertion order
        return None  # uuid: the database's default

    def insert(self, urls: Sequence[str], *, score: int | None = None) -> list[Row]:
        """Insert one row per URL with the given starting score; returns them in order."""
        added: list[Row] = []
        with self._connect() as conn:
            for index, url in enumerate(urls):
                key = self._new_key()
                statement = sql.SQL(
                    "INSERT INTO {table} ({id}, {url}, title, width_px{score_col})"
                    " VALUES (COALESCE(%s, {default}), %s, %s, %s{score_val}) RETURNING {id}"
                ).format(
                    default=sql.SQL("gen_random_uuid()" if self.id_type == "uuid" else "NULL"),
                    score_col=sql.SQL(", {}").format(sql.Identifier(self.score_column))
                    if score is not None
                    else sql.SQL(""),
                    score_val=sql.SQL(", %s") if score is not None else sql.SQL(""),
                    **self._ids(),
                )
                params: list[Any] = [key, url, f"photo {index}", 640]
                if score is not None:
                    params.append(score)
                row = conn.execute(statement, params).fetchone()
                assert row is not None
                row_id = row[0] if isinstance(row[0], int) else str(row[0])
                added.append(Row(row_id, url, score))
        self.rows.extend(added)
        return added

    def scores(self) -> dict[RowKey, int | None]:
        """Every row's current score, by key (uuid keys as strings)."""
        query = sql.SQL("SELECT {id}, {score} FROM {table}").format(**self._ids())
        with self._connect() as conn:
            rows = conn.execute(query).fetchall()
        return {(k if isinstance(k, int) else str(k)): s for k, s in rows}

    def audit_writes(self) -> Counter[str]:
        """How many times each row's score was updated (keys as text)."""
        with self._connect() as conn:
            rows = conn.execute(f"SELECT row_id FROM {AUDIT_TABLE}").fetchall()
        return Counter(str(row_id) for (row_id,) in rows)

    def ordered_keys(self, *, unscored_only: bool = False) -> list[RowKey]:
        """Keys in the database's own order (uuid order, the column's collation for text)."""
        where = sql.SQL(" WHERE {} IS NULL" if unscored_only else "").format(
            sql.Identifier(self.score_column)
        )
        query = sql.SQL("SELECT {id} FROM {table}{where} ORDER BY {id}").format(
            where=where, **self._ids()
        )
        with self._connect() as conn:
            rows = conn.execute(query).fetchall()
        return [k if isinstance(k, int) else str(k) for (k,) in rows]

    def category_counts(self) -> dict[str, int]:
        """Rows per category computed here in SQL: high, medium, low, unscored."""
        query = sql.SQL(
            "SELECT count(*) FILTER (WHERE {score} >= 80),"
            " count(*) FILTER (WHERE {score} >= 60 AND {score} < 80),"
            " count(*) FILTER (WHERE {score} < 60), count(*) FILTER (WHERE {score} IS NULL)"
            " FROM {table}"
        ).format(**self._ids())
        with self._connect() as conn:
            row = conn.execute(query).fetchone()
        assert row is not None
        return dict(zip(("high", "medium", "low", "unscored"), map(int, row), strict=True))

    def cli_options(self) -> list[str]:
        """The `run`/`status` options that point the tool at this table (a part with a dot or a
        double quote is double-quoted, as `--table` expects)."""
        parts = [self.schema] if self.schema else []
        parts.append(self.name)
        return [
            "--table",
            ".".join(_cli_name_part(part) for part in parts),
            "--id-column",
            self.id_column,
            "--url-column",
            self.url_column,
            "--score-column",
            self.score_column,
        ]


def _cli_name_part(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if "." in name or '"' in name else name


def apply_migrations(
    database_url: str, target: Target | None = None, *, with_watch: bool = True
) -> list[str]:
    """Run every migration step in this process (for tests where `migrate` itself is not the
    point), the watch triggers included unless `with_watch` is False; returns the names of the
    steps that created something. Without a target: the default `images`, created if absent."""
    with db.connect(database_url) as conn:
        reports = db.migrate(
            conn,
            target or Target(),
            may_create_table=target is None,
            with_watch=with_watch,
        )
    return [report.step for report in reports if report.outcome == "created"]


# --- what the rows point at ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleImage:
    """Encoded bytes, their content type, and the score the tool must compute for them."""

    name: str
    data: bytes
    content_type: str
    expected_score: int


@functools.cache
def sample_images() -> tuple[SampleImage, ...]:
    """Real photographs (the demo's, JPEG and PNG) of varied quality, made once; the score each
    must get is computed by the default (learned) detector in this process."""
    duck, owl, macaw = photo_bytes("duck.jpg"), photo_bytes("owl.jpg"), photo_bytes("macaw.jpg")
    specs: list[tuple[str, bytes]] = [
        ("bird.jpg", duck),  # high
        ("bird.png", variant(photo_bytes("kingfisher.jpg"), fmt="PNG")),  # high
        ("small-dim.jpg", variant(owl, scale=0.35, brightness=0.35)),  # resolution, contrast
        ("dark.jpg", variant(duck, brightness=0.12)),  # contrast
        ("cut-off.jpg", variant(macaw, crop=BBox(0.45, 0.0, 0.55, 1.0))),  # positioning
        ("tiny-dark.png", variant(owl, scale=0.3, brightness=0.1, fmt="PNG")),
        ("no-bird.jpg", photo_bytes("nobird-dog.jpg")),  # low
    ]
    detector = load_detector(DetectorChoice())
    images: list[SampleImage] = []
    for name, data in specs:
        content_type = "image/png" if name.endswith(".png") else "image/jpeg"
        expected = score_image(data, Thresholds(), detector).score
        images.append(SampleImage(name, data, content_type, expected))
    return tuple(images)


def serve_valid_images(server: ImageServer, count: int, *, prefix: str = "img") -> dict[str, int]:
    """Serve `count` images at distinct paths; returns URL -> the score each must get."""
    samples = sample_images()
    expected: dict[str, int] = {}
    for number in range(count):
        sample = samples[number % len(samples)]
        url = server.add(f"/{prefix}/{number}-{sample.name}", sample.data, sample.content_type)
        expected[url] = sample.expected_score
    return expected


def broken_urls(server: ImageServer) -> dict[str, str]:
    """One URL per way an image can fail to load, by a short label."""
    return {
        "404": server.url("/status/404"),
        "500": server.url("/status/500"),
        "not-an-image": server.url("/not-an-image"),
        "truncated": server.url("/truncated"),
        "refused": f"http://127.0.0.1:{closed_port()}/bird.jpg",
        "file": "file:///etc/passwd",
    }
