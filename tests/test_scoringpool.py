"""The scoring processes under real crashes: worker processes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

import pytest

from backfill_quality.config import DEFAULT_MAX_PIXELS, DetectorChoice, Thresholds
from backfill_quality.demo.photos import photo_bytes
from backfill_quality.errors import BackfillError
from backfill_quality.pipeline.scoringpool import (
    KEEP_CRASHING,
    MAX_POOL_CRASHES,
    RESTARTED,
    ScoringPool,
)
from backfill_quality.scoring.score import score_for_run
from tests.support.faults import kill_scoring_workers

PHOTO = photo_bytes("owl.jpg")


@pytest.fixture
def give_ups() -> list[BackfillError]:
    return []


@pytest.fixture
def restarts() -> list[str]:
    return []


@pytest.fixture
def pool(give_ups: list[BackfillError], restarts: list[str]) -> Iterator[ScoringPool]:
    scoring_pool = ScoringPool(
        workers=1,
        thresholds=Thresholds(),
        max_pixels=DEFAULT_MAX_PIXELS,
        detector=DetectorChoice(),
        on_give_up=give_ups.append,
        on_restart=restarts.append,
    )
    scoring_pool.start()
    scoring_pool.warm_up()
    yield scoring_pool
    scoring_pool.shutdown()


def test_a_killed_worker_is_replaced_and_the_image_still_scored(
    pool: ScoringPool, give_ups: list[BackfillError], restarts: list[str]
) -> None:
    assert kill_scoring_workers(os.getpid()) >= 1
    scored = asyncio.run(pool.score(PHOTO))
    expected = score_for_run(PHOTO, Thresholds(), DEFAULT_MAX_PIXELS, DetectorChoice(), 1)
    assert scored.analysis == expected.analysis
    assert scored.content_sha256 == expected.content_sha256
    assert give_ups == []
    assert restarts == [RESTARTED]
    again = asyncio.run(pool.score(PHOTO))  # the replacement keeps working
    assert again.analysis == scored.analysis


def test_crash_after_crash_gives_up_instead_of_looping(
    pool: ScoringPool, give_ups: list[BackfillError], restarts: list[str]
) -> None:
    stop = threading.Event()

    def keep_killing() -> None:
        while not stop.is_set():
            kill_scoring_workers(os.getpid())
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
    assert restarts == [RESTARTED] * MAX_POOL_CRASHES
    assert broken == (MAX_POOL_CRASHES + 2) // 2  # two crashes a call; gives up on crash 6


def test_no_replacement_once_the_run_is_interrupted(
    pool: ScoringPool, give_ups: list[BackfillError], restarts: list[str]
) -> None:
    pool.stop_replacing()
    assert kill_scoring_workers(os.getpid()) >= 1
    for _ in range(2):
        with pytest.raises(BrokenProcessPool):
            asyncio.run(pool.score(PHOTO))
    assert give_ups == []
    assert restarts == []
