"""What the scoring processes run, kept apart so the main process never imports NumPy or Pillow.

The main process only pickles a reference to `score_in_worker`; the worker imports the scoring
code (preloaded once by the forkserver, so each worker starts ready).
"""

from __future__ import annotations

import os
import signal
from multiprocessing.connection import Connection

from backfill_quality.config import DetectorChoice, Thresholds
from backfill_quality.models import ScoredImage
from backfill_quality.pipeline.lifeline import die_with_parent, hold_lifeline

SCORING_MODULE = "backfill_quality.scoring.score"


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
