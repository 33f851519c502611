"""Throughput of 1, 2 and 4 shard workers (`run --shard K/N`) sharing one PostgreSQL.

    python bench/scaleout.py                         # 600 rows of 1600x1200 JPEGs, 100 ms latency
    python bench/scaleout.py --rows 2000 --workers 1,2,4,8 --latency-ms 300

For each N: a fresh database (embedded PostgreSQL in bench/out/pg), `migrate`, the rows (the
same images served from 127.0.0.1 with added latency), then N console-script processes started
at once, `run --quiet --shard K/N`, each with os.cpu_count() // N scoring processes (so the
machine's cores are shared, not oversubscribed). Reports wall time from the first start to the
last exit, rows/s, and checks that every row was scored exactly once (processed sums to the
table size, no row left NULL). On one machine the workers share its cores: this measures the
coordination cost of sharding, not the speed-up of N machines (see docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

from throughput import (  # noqa: E402
    cli,
    create_database,
    drop_database,
    fill_table,
    image_plan,
    load_images,
    start_postgres,
)

from backfill_quality import db  # noqa: E402
from backfill_quality.demo.imageserver import ImageServer  # noqa: E402

OUT_DIR = BENCH_DIR / "out"


def run_workers(database_url: str, count: int, work_dir: Path) -> dict[str, Any]:
    """Start `count` shard workers at once; wall time until the last one exits."""
    cores = os.cpu_count() or 1
    scorers = max(1, cores // count)
    work_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    started = time.perf_counter()
    for index in range(count):
        shard = ["--shard", f"{index}/{count}"] if count > 1 else []
        args = ["run", "--quiet", "--workers", str(scorers), "--database-url", database_url]
        processes.append(
            subprocess.Popen(
                cli(*args, *shard),
                cwd=work_dir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    codes = [p.wait() for p in processes]
    elapsed_s = time.perf_counter() - started
    errors = [p.stderr.read().decode()[-500:] for p in processes if p.stderr and p.returncode]
    processed = 0
    for path in work_dir.glob(".backfill-progress*.json"):
        processed += json.loads(path.read_text())["processed"]
    return {
        "workers": count,
        "scoring_processes_each": scorers,
        "exit_codes": codes,
        "errors": errors,
        "elapsed_s": round(elapsed_s, 2),
        "processed": processed,
    }


def unscored(database_url: str) -> int:
    with db.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM images WHERE quality_score IS NULL").fetchone()
    return int(row[0]) if row else -1


def trial(admin_url: str, server: ImageServer, urls: list[str], count: int) -> dict[str, Any]:
    name = f"scaleout_{count}_{uuid.uuid4().hex[:8]}"
    database_url = create_database(admin_url, name)
    try:
        fill_table(database_url, urls)
        result = run_workers(database_url, count, OUT_DIR / f"scaleout-{name}")
        result["left_unscored"] = unscored(database_url)
    finally:
        drop_database(admin_url, name)
    result["rows"] = len(urls)
    result["rate_per_s"] = round(len(urls) / result["elapsed_s"], 1)
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated N values")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--distinct", type=int, default=24, help="distinct images served")
    parser.add_argument("--size", default="1600x1200")
    parser.add_argument("--json-out", type=Path, default=OUT_DIR / "scaleout.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    width, height = (int(n) for n in args.size.lower().split("x"))
    images = load_images(image_plan(args.distinct, (width, height)), OUT_DIR / "images")
    admin_url, _ = start_postgres(OUT_DIR / "pg")
    results = []
    with ImageServer(latency_ms=args.latency_ms) as server:
        paths = [server.add(f"/img/{i}.jpg", data) for i, data in enumerate(images)]
        urls = [f"{paths[i % len(paths)]}?row={i}" for i in range(args.rows)]
        for count in (int(n) for n in args.workers.split(",")):
            result = trial(admin_url, server, urls, count)
            results.append(result)
            ok = result["processed"] == args.rows and result["left_unscored"] == 0
            print(
                f"{count} worker(s) x {result['scoring_processes_each']} scoring process(es): "
                f"{args.rows} rows in {result['elapsed_s']:.1f} s = {result['rate_per_s']} rows/s"
                f"  exit {result['exit_codes']}  {'all scored once' if ok else 'CHECK FAILED'}",
                flush=True,
            )
    report = {
        "cpu_count": os.cpu_count(),
        "latency_ms": args.latency_ms,
        "size": args.size,
        "rows": args.rows,
        "load_average_after": os.getloadavg(),
        "results": results,
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"load average (1, 5, 15 min) after the trials: {os.getloadavg()}")
    return 0 if all(r["left_unscored"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
