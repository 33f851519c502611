"""The scoring processes under real crashes: worker processes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import pickle
import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

import pytest

from backfill_quality.config import DEFAULT_MAX_PIXELS, DetectorChoice, Thresholds
from backfill_quality.demo.photos import photo_bytes
from backfill_quality.errors import BackfillError, DecodeError
from backfill_quality.models import ScoredImage
from backfill_quality.pipeline.scoringpool import (
    KEEP_CRASHING,
    MAX_POOL_CRASHES,
    RESTARTED,
    ScoringPool,
)
from backfill_quality.pipeline.worker import encode_answer
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
def workers() -> int:
    return 1


@pytest.fixture
def pool(give_ups: list[BackfillError], restarts: list[str], workers: int) -> Iterator[ScoringPool]:
    scoring_pool = ScoringPool(
        workers=workers,
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


def test_an_image_larger_than_the_socket_buffer_arrives_whole(
    pool: ScoringPool, restarts: list[str]
) -> None:
    from PIL import Image

    rng = random.Random(7)
    noise = Image.frombytes("RGB", (1400, 1400), rng.randbytes(1400 * 1400 * 3))
    encoded = io.BytesIO()
    noise.save(encoded, "JPEG", quality=95)
    data = encoded.getvalue()
    assert len(data) > 2_000_000  # several times what a socket holds

    async def both() -> list[ScoredImage]:
        return await asyncio.gather(pool.score(data), pool.score(PHOTO))

    big, small = asyncio.run(both())
    assert (big.byte_size, big.content_sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert small.content_sha256 == hashlib.sha256(PHOTO).hexdigest()
    assert restarts == []


def test_bytes_that_are_no_image_raise_decode_error_and_the_process_stays(
    pool: ScoringPool, restarts: list[str]
) -> None:
    pid = pool.pids[0]
    with pytest.raises(DecodeError):
        asyncio.run(pool.score(b"not an image at all"))
    assert asyncio.run(pool.score(PHOTO)).content_sha256 == hashlib.sha256(PHOTO).hexdigest()
    assert pool.pids == [pid] and restarts == []


@pytest.mark.parametrize("workers", [2])
def test_one_process_killed_holding_two_images_is_replaced_once_and_both_scored_again(
    pool: ScoringPool, give_ups: list[BackfillError], restarts: list[str]
) -> None:
    victim, survivor = pool.pids

    async def four_then_kill() -> list[ScoredImage]:
        scoring = [asyncio.ensure_future(pool.score(PHOTO)) for _ in range(4)]
        await asyncio.sleep(0.01)  # two images sent to each process, none answered yet
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        return await asyncio.gather(*scoring)

    scored = asyncio.run(four_then_kill())
    assert {s.content_sha256 for s in scored} == {hashlib.sha256(PHOTO).hexdigest()}
    assert restarts == [RESTARTED]  # one death, one replacement, however many images it held
    assert give_ups == []
    assert survivor in pool.pids and victim not in pool.pids


def test_images_are_scored_in_the_order_they_came_none_overtakes_one_waiting(
    pool: ScoringPool,
) -> None:
    order: list[str] = []

    async def scenario() -> None:
        async def first_then_fourth() -> None:
            await pool.score(PHOTO)
            order.append("first")
            # asks in the same turn its room is given back, while "third" still waits for room
            await pool.score(PHOTO)
            order.append("fourth")

        async def one(name: str) -> None:
            await pool.score(PHOTO)
            order.append(name)

        leader = asyncio.ensure_future(first_then_fourth())
        await asyncio.sleep(0)
        await asyncio.gather(leader, one("second"), one("third"))

    asyncio.run(scenario())
    assert order == ["first", "second", "third", "fourth"]


def test_shutdown_kills_a_process_that_does_not_end_in_time(pool: ScoringPool) -> None:
    (pid,) = pool.pids
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # hung: it will never read that its socket closed
    started_s = time.monotonic()
    pool.shutdown(wait_s=0.5)
    assert time.monotonic() - started_s < 5
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)


class _TwoArgumentError(Exception):
    """An exception pickle cannot rebuild (its constructor wants two arguments, it got one)."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


def test_an_error_the_main_process_could_not_rebuild_arrives_as_text() -> None:
    is_ok, error = pickle.loads(encode_answer((False, _TwoArgumentError("decoder", "exploded"))))
    assert is_ok is False
    assert isinstance(error, RuntimeError)
    assert "decoder: exploded" in str(error) and "_TwoArgumentError" in str(error)
    plain = pickle.loads(encode_answer((False, DecodeError("not an image"))))
    assert plain[0] is False and isinstance(plain[1], DecodeError)
