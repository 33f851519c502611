"""What the scoring processes run, kept apart so the main process never imports NumPy or Pillow.

Each scoring process serves one socket (`serve`): the main process writes a frame per task and
reads back a frame per answer, in order. A frame is its length (8 bytes, big-endian), then its
payload; a task's payload is its kind (one byte: `WARM_UP` or `SCORE`) and, for a score, the
image's bytes as they came from the host (no pickling, no copy on the way out); an answer's
payload is a pickled `(is_ok, ScoredImage | None | exception)`. The scoring code is imported by
the forkserver once, so each process starts ready.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
from multiprocessing.connection import Connection
from typing import Any

from backfill_quality.config import DetectorChoice, Thresholds
from backfill_quality.models import ScoredImage
from backfill_quality.pipeline.lifeline import die_with_parent, hold_lifeline

SCORING_MODULE = "backfill_quality.scoring.score"
FRAME_HEAD = struct.Struct("!Q")
WARM_UP = b"W"
SCORE = b"S"


def prepare_worker(lifeline: Connection) -> None:
    """The start of every scoring process: it leaves SIGINT/SIGTERM to the main process, which
    stops it in order, and dies with the main process and with the forkserver (`lifeline.py`)."""
    forkserver = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(forkserver)
    hold_lifeline(lifeline)


def score_in_worker(
    data: bytes, thresholds: Thresholds, max_pixels: int, detector: DetectorChoice, threads: int
) -> ScoredImage:
    """The analysis of one encoded image (raises DecodeError for unusable bytes)."""
    from backfill_quality.scoring.score import score_for_run

    return score_for_run(data, thresholds, max_pixels, detector, threads)


def warm_up(detector: DetectorChoice, threads: int) -> None:
    """Run once per process at start: the scoring code and the detector's models are loaded
    before the first image (a missing or damaged model file fails the run here, at once)."""
    from backfill_quality.scoring.detectors.factory import load_detector

    load_detector(detector, threads)


def serve(
    channel: socket.socket,
    lifeline: Connection,
    thresholds: Thresholds,
    max_pixels: int,
    detector: DetectorChoice,
    threads: int,
) -> None:
    """A scoring process: answer each task read from `channel` until the main process closes
    it (or dies: then the lifeline ends this process)."""
    prepare_worker(lifeline)
    while (task := _read_frame(channel)) is not None:
        kind, data = task[:1], bytes(memoryview(task)[1:])  # the image: one copy, no more
        answer: tuple[bool, Any]
        try:
            if kind == WARM_UP:
                warm_up(detector, threads)
                answer = (True, None)
            else:
                answer = (True, score_in_worker(data, thresholds, max_pixels, detector, threads))
        except Exception as exc:  # the main process raises it where the image was awaited
            answer = (False, exc)
        payload = encode_answer(answer)
        try:
            channel.sendall(FRAME_HEAD.pack(len(payload)) + payload)
        except OSError:  # the main process closed its end: the run is over
            return


def encode_answer(answer: tuple[bool, Any]) -> bytes:
    """The answer pickled; an exception that could not be rebuilt on the other side (pickling
    or unpickling fails) goes as a RuntimeError with its text, never as a broken stream."""
    is_ok, value = answer
    try:
        payload = pickle.dumps(answer)
        if not is_ok:
            pickle.loads(payload)  # errors are rare: check that the main process can read it
    except Exception as exc:
        payload = pickle.dumps((False, RuntimeError(f"{value!r} (sent as text: {exc!r})")))
    return payload


def _read_frame(channel: socket.socket) -> bytearray | None:
    """The next frame's payload; None when the main process closed its end."""
    head = _read_exactly(channel, FRAME_HEAD.size)
    if head is None:
        return None
    return _read_exactly(channel, FRAME_HEAD.unpack(head)[0])


def _read_exactly(channel: socket.socket, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        try:
            received = channel.recv_into(view[got:])
        except OSError:
            return None
        if received == 0:
            return None
        got += received
    return buffer
