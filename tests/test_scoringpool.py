"""The scoring processes under real crashes: worker processes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from backfill_quality.config import DEFAULT_MAX_PIXELS, Thresholds
from backfill_quality.errors import BackfillError
from backfill_quality.scoring import score_only
from backfill_quality.scoringpool import KEEP_CRASHING, MAX_POOL_CRASHES, ScoringPool
from backfill_quality.synthetic import make_bird_image

PHOTO = make_bird_image(seed=7, width=1600, height=1200)


def _parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process on the machine (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        # the command name (field 2) may hold spaces and parentheses: split after its last ")"
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _is_forkserver(pid: int) -> bool:
    try:
        return b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def scoring_processes() -> list[int]:
    """The scoring workers: the processes our forkserver forked (never, say, the backends of
    the tests' embedded PostgreSQL, also grandchildren of this process)."""
    parents = _parent_pids()
    servers = {
        pid for pid, parent in parents.items() if parent == os.getpid() and _is_forkserver(pid)
    }
    return [pid for pid, parent in parents.items() if parent in servers]


def kill_scoring_processes() -> int:
    killed = 0
    for pid in scoring_processes():
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


@pytest.fixture
def give_ups() -> list[BackfillError]:
    return []


@pytest.fixture
def pool(give_ups: list[BackfillError]) -> Iterator[ScoringPool]:
    scoring_pool = ScoringPool(
        workers=1,
        thresholds=Thresholds(),
        max_pixels=DEFAULT_MAX_PIXELS,
        on_give_up=give_ups.append,
    )
    scoring_pool.start()
    scoring_pool.warm_up()
    yield scoring_pool
    scoring_pool.shutdown()


def test_a_killed_worker_is_replaced_and_the_image_still_scored(
    pool: ScoringPool, give_ups: list[BackfillError]
) -> None:
    assert kill_scoring_processes() >= 1
    score = asyncio.run(pool.score(PHOTO))
    assert score == score_only(PHOTO, Thresholds(), DEFAULT_MAX_PIXELS)
    assert give_ups == []
    assert asyncio.run(pool.score(PHOTO)) == score  # the replacement keeps working


def test_crash_after_crash_gives_up_instead_of_looping(
    pool: ScoringPool, give_ups: list[BackfillError]
) -> None:
    stop = threading.Event()

    def keep_killing() -> None:
        while not stop.is_set():
            kill_scoring_processes()
            stop.wait(0.002)

    killer = threading.Thread(target=keep_killing, daemon=True)
    killer.start()
    broken = 0
    try:
        for _ in range(MAX_POOL_CRASHES):  # each call: a crash, a replacement, a crash again
            with pytest.raises(BrokenProcessPool):
                asyncio.run(pool.score(PHOTO))
            broken += 1
            if give_ups:
                break
    finally:
        stop.set()
        killer.join()
    assert [str(error) for error in give_ups] == [KEEP_CRASHING]
    assert broken == (MAX_POOL_CRASHES + 2) // 2  # two crashes a call; gives up on crash 6


def test_no_replacement_once_the_run_is_interrupted(
    pool: ScoringPool, give_ups: list[BackfillError]
) -> None:
    pool.stop_replacing()
    assert kill_scoring_processes() >= 1
    for _ in range(2):
        with pytest.raises(BrokenProcessPool):
            asyncio.run(pool.score(PHOTO))
    assert give_ups == []
