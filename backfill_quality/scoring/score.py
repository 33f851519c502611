"""Scoring one image: bytes -> decoded working copy -> measurements -> the five checks.

`score_image` is pure (same bytes, thresholds and detector, same result, on any worker, in any
order); `score_only` is what the process pool runs; `analysis_to_dict` is the JSON contract of
`score --json`.
"""

from __future__ import annotations

from typing import Any

from backfill_quality.config import DEFAULT_MAX_PIXELS, DetectorChoice, Thresholds
from backfill_quality.models import Analysis, Measurements
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


def score_only(
    data: bytes, thresholds: Thresholds, max_pixels: int, choice: DetectorChoice, threads: int
) -> int:
    """The overall score alone: what the backfill's worker processes send back (a small record).
    The detector is built on the first call in each process and kept."""
    detector = load_detector(choice, threads)
    return score_image(data, thresholds, detector, max_pixels=max_pixels).score


def analysis_to_dict(source: str, analysis: Analysis) -> dict[str, Any]:
    """The `score --json` object: keys source, width, height, score, category, brightness, subject,
    checks (SPEC section 3)."""
    m = analysis.measurements
    subject: dict[str, Any] | None = None
    if m.subject is not None:
        box = m.subject.bbox
        subject = {
            "bbox": {
                "x": round(box.x, 4),
                "y": round(box.y, 4),
                "width": round(box.width, 4),
                "height": round(box.height, 4),
            },
            "count": m.subject.count,
            "visibleRatio": round(m.subject.visible_ratio, 4),
            "confidence": round(m.subject.confidence, 4),
        }
    return {
        "source": source,
        "width": m.width,
        "height": m.height,
        "score": analysis.score,
        "category": analysis.category,
        "brightness": round(m.brightness, 2),
        "detector": m.detector,
        "presence": None if m.presence is None else round(m.presence, 4),
        "subject": subject,
        "checks": {
            c.name: {"score": c.score, "passed": c.passed, "reason": c.reason}
            for c in analysis.checks
        },
    }
