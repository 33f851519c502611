"""Scoring one image: bytes -> decoded working copy -> measurements -> the five checks.

`score_image` is pure (same bytes and thresholds, same result, on any worker, in any order) and is
what the process pool runs; `analysis_to_dict` is the JSON contract of `score --json`.
"""

from __future__ import annotations

from typing import Any

from backfill_quality.config import DEFAULT_MAX_PIXELS, Thresholds
from backfill_quality.models import Analysis, Measurements
from backfill_quality.scoring.checks import evaluate
from backfill_quality.scoring.detectors.heuristic import detect_subject
from backfill_quality.scoring.imaging import decode_image, measure_brightness


def measure(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Measurements:
    """Decode the image once and take every measurement the checks read."""
    image = decode_image(data, max_pixels=max_pixels)
    return Measurements(
        width=image.width,
        height=image.height,
        brightness=measure_brightness(image.rgb),
        subject=detect_subject(image.rgb),
    )


def score_image(
    data: bytes, thresholds: Thresholds, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Analysis:
    """Score one encoded image; raises DecodeError when the bytes are not a usable image."""
    return evaluate(measure(data, max_pixels=max_pixels), thresholds)


def score_only(data: bytes, thresholds: Thresholds, max_pixels: int) -> int:
    """The overall score alone: what the backfill's worker processes send back (a small record)."""
    return score_image(data, thresholds, max_pixels=max_pixels).score


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
        "subject": subject,
        "checks": {
            c.name: {"score": c.score, "passed": c.passed, "reason": c.reason}
            for c in analysis.checks
        },
    }
