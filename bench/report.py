"""The review report's build time and size for 1 000 and 100 000 result rows (issue 14).

For each N: a fresh database on the embedded PostgreSQL (bench/out/pg), `images` and its results
table created by `migrate`, N rows and N results inserted by SQL `generate_series` (scores,
categories, checks and boxes drawn at random, scored_at spread over 26 weeks), the images served
from 127.0.0.1 (distinct URLs, generated birds), then `report` built in this process:

- without thumbnails (the SQL and the page: what grows with the table),
- with thumbnails at the default gallery size,
- with --per-gallery 125 (9 galleries: about 1 000 cards) for the page's size.

    python bench/report.py                      # 1000,100000
    python bench/report.py --rows 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

from throughput import create_database, drop_database, start_postgres  # noqa: E402

from backfill_quality import db  # noqa: E402
from backfill_quality.config import Target  # noqa: E402
from backfill_quality.demo.imageserver import ImageServer  # noqa: E402
from backfill_quality.demo.synthetic import make_bird_image  # noqa: E402
from backfill_quality.report.build import ReportSettings, build_report  # noqa: E402

OUT_DIR = BENCH_DIR / "out"
DISTINCT_IMAGES = 40

FILL = """
INSERT INTO images (id, url, quality_score)
SELECT md5('row' || i)::uuid, %(base)s || '/img/' || mod(i, %(distinct)s) || '.jpg?row=' || i,
       NULL
FROM generate_series(1, %(rows)s) i;
WITH drawn AS (
    SELECT id, url, (random() * 100)::int AS score, random() AS r1, random() AS r2,
           random() AS r3, random() AS r4, random() AS r5
    FROM images
)
INSERT INTO images_quality_results (image_id, source, width, height, score, category, brightness,
    detector, presence, subject, checks, bytes, content_sha256, scorer_version, scored_at,
    fetch_ms, score_ms)
SELECT id, url, 1600, 1200, score,
       CASE WHEN score >= 80 THEN 'high' WHEN score >= 60 THEN 'medium' ELSE 'low' END,
       120.0, 'learned', 0.95,
       jsonb_build_object('bbox', jsonb_build_object('x', 0.1 + r1 * 0.4, 'y', 0.1 + r2 * 0.4,
           'width', 0.2 + r3 * 0.3, 'height', 0.2 + r4 * 0.3), 'count', 1 + (r5 * 2)::int,
           'visibleRatio', 1.0, 'confidence', 0.9),
       jsonb_build_object(
           'birdSize', jsonb_build_object('score', score, 'passed', r1 > 0.2, 'reason', 'size'),
           'positioning', jsonb_build_object('score', score, 'passed', r2 > 0.1, 'reason', 'pos'),
           'resolution', jsonb_build_object('score', score, 'passed', r3 > 0.05, 'reason', 'res'),
           'contrast', jsonb_build_object('score', score, 'passed', r4 > 0.15, 'reason', 'con'),
           'primarySubject', jsonb_build_object('score', score, 'passed', r5 > 0.1,
               'reason', 'one')),
       250000, md5(id::text), 'learned-0123456789abcdef',
       now() - random() * interval '182 days', 40.0, 30.0
    FROM drawn;
UPDATE images i SET quality_score = r.score FROM images_quality_results r WHERE r.image_id = i.id;
ANALYZE images; ANALYZE images_quality_results;
"""


def fill(database_url: str, base_url: str, rows: int) -> None:
    with db.connect(database_url) as conn:
        db.migrate(conn, Target(), may_create_table=True)
    import psycopg  # the benchmark's own SQL (the package keeps psycopg in db/)

    with psycopg.connect(database_url, autocommit=True) as conn:
        params = {"base": base_url, "distinct": DISTINCT_IMAGES, "rows": rows}
        for statement in filter(str.strip, FILL.split(";")):
            conn.execute(statement, params if "%(" in statement else None)


def build(database_url: str, out: Path, **options: Any) -> dict[str, Any]:
    started_s = time.perf_counter()
    figures = build_report(
        ReportSettings(
            database_url=database_url,
            out=out,
            checkpoint=out.with_suffix(".progress.json"),
            **options,
        )
    ).figures
    cards = sum(len(ids) for ids in figures["galleries"].values())
    return {
        "seconds": round(time.perf_counter() - started_s, 3),
        "bytes": figures["bytes"],
        "cards": cards,
        "thumbnails": figures["thumbnails"]["made"],
        "results": figures["results"],
    }


def trial(admin_url: str, server: ImageServer, rows: int) -> dict[str, Any]:
    name = f"report_{rows}_{uuid.uuid4().hex[:8]}"
    database_url = create_database(admin_url, name)
    work = OUT_DIR / name
    work.mkdir(parents=True, exist_ok=True)
    try:
        started_s = time.perf_counter()
        fill(database_url, server.base_url, rows)
        fill_s = time.perf_counter() - started_s
        plain = build(database_url, work / "plain.html", has_thumbnails=False)
        default = build(database_url, work / "default.html")
        thousand = build(database_url, work / "thousand.html", per_gallery=125)
    finally:
        drop_database(admin_url, name)
    return {
        "rows": rows,
        "fill_s": round(fill_s, 1),
        "no_thumbnails": plain,
        "default": default,
        "per_gallery_125": thousand,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", default="1000,100000", help="comma-separated N values")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json-out", type=Path, default=OUT_DIR / "report.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    admin_url, _ = start_postgres(OUT_DIR / "pg")
    images = [
        make_bird_image(seed=i, width=1600, height=1200, birds=[(0.3, 0.25, 0.4, 0.5)])
        for i in range(DISTINCT_IMAGES)
    ]
    results = []
    with ImageServer() as server:
        for i, data in enumerate(images):
            server.add(f"/img/{i}.jpg", data)
        for rows in (int(n) for n in args.rows.split(",")):
            for _ in range(args.repeat):
                result = trial(admin_url, server, rows)
                results.append(result)
                for kind in ("no_thumbnails", "default", "per_gallery_125"):
                    r = result[kind]
                    print(
                        f"{rows:>7} rows  {kind:<16} {r['seconds']:>6.2f} s"
                        f"  {r['bytes'] / 1e6:>6.2f} MB  {r['cards']:>4} cards"
                        f"  {r['thumbnails']:>4} thumbnails",
                        flush=True,
                    )
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(
        json.dumps({"load_average_after": os.getloadavg(), "results": results}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
