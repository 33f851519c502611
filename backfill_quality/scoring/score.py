"""Scoring one image: bytes -> decoded working copy -> measurements -> the five checks.

`score_image` is pure (same bytes, thresholds and detector, same result, on any worker, in any
order); `score_for_run` is what the process pool runs. The JSON contract of a result is
`backfill_quality.results`.
"""

from __future__ import annotations

import hashlib
import time

from backfill_quality.config import DEFAULT_MAX_PIXELS, DetectorChoice, Thresholds
from backfill_quality.models import Analysis, Measurements, ScoredImage
from backfill_quality.results import analysis_fields
from backfill_quality.scoring.checks import evaluate
from backfill_quality.scoring.detectors.base import Detector
from backfill_quality.scoring.detectors.factory import load_detector
from backfill_quality.scoring.imaging import decode_image, measure_brightness


def measure(
    data: bytes, detector: Detector, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Measurements:
    """Decode the image once, at the size the detector needs, and take every measurement."""
    image = decode_image(data, max_pixels=max_pixels, work_size=detector.work_size)
    found = detector.detect(image.rgb)
    return Measurements(
        width=image.width,
        height=image.height,
        brightness=measure_brightness(image.rgb),
        subject=found.subject,
        presence=found.presence,
        detector=detector.name,
    )


def score_image(
    data: bytes,
    thresholds: Thresholds,
    detector: Detector,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Analysis:
    """Score one encoded image; raises DecodeError when the bytes are not a usable image."""
    return evaluate(measure(data, detector, max_pixels=max_pixels), thresholds)


def score_for_run(
    data: bytes, thresholds: Thresholds, max_pixels: int, choice: DetectorChoice, threads: int
) -> ScoredImage:
    """What the backfill's worker processes send back (a small record): the analysis, the
    bytes' size and SHA-256, and the scoring time. The detector is built on the first call in
    each process and kept."""
    started_s = time.perf_counter()
    detector = load_detector(choice, threads)
    analysis = score_image(data, thresholds, detector, max_pixels=max_pixels)
    return describe(data, analysis, (time.perf_counter() - started_s) * 1000)


def describe(data: bytes, analysis: Analysis, score_ms: float) -> ScoredImage:
    """The analysis of `data` in its JSON form, with the bytes' size and SHA-256."""
    return ScoredImage(
        analysis=analysis_fields(analysis),
        byte_size=len(data),
        content_sha256=hashlib.sha256(data).hexdigest(),
        score_ms=score_ms,
    )
