"""The record of one scored image: the one serializer behind `score --json` and the results table.

`result_to_dict` is the JSON contract (README, "score"); the results table (`db/results.py`)
stores exactly these keys, each in a typed column or, for `subject` and `checks`, in jsonb, and
reads them back under the same keys. `RESULT_KEYS` lists them in output order.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from backfill_quality.models import Analysis, BBox, Measurements, ScoredImage, Subject

CHECK_NAMES = ("birdSize", "positioning", "resolution", "contrast", "primarySubject")
"""The five checks, by the names they have in output (`scoring.checks.CHECKS`, in that order)."""
RESULT_KEYS = (
    "source",
    "width",
    "height",
    "score",
    "category",
    "brightness",
    "detector",
    "presence",
    "subject",
    "checks",
    "bytes",
    "contentSha256",
    "etag",
    "lastModified",
    "scorerVersion",
    "measurementVersion",
    "scoredAt",
    "fetchMs",
    "scoreMs",
)
"""Every key of a result, in output order."""


def analysis_to_dict(source: str, analysis: Analysis) -> dict[str, Any]:
    """What the image showed: keys source, width, height, score, category, brightness, detector,
    presence, subject, checks (SPEC section 3)."""
    return {"source": source} | analysis_fields(analysis)


def analysis_fields(analysis: Analysis) -> dict[str, Any]:
    """`analysis_to_dict` without the source (what a scoring process can tell)."""
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


def result_to_dict(
    source: str,
    scored: ScoredImage,
    *,
    scorer_version: str,
    measurement_version: str | None,
    scored_at: datetime,
    etag: str | None = None,
    last_modified: str | None = None,
    fetch_ms: float | None = None,
) -> dict[str, Any]:
    """The whole record of one result (`RESULT_KEYS`): the analysis, the bytes' size and
    SHA-256, the HTTP validators (None for a file), the scorer and measurement versions, when,
    and how long fetching (None for a file) and scoring took, in milliseconds."""
    record = (
        {"source": source}
        | scored.analysis
        | {
            "bytes": scored.byte_size,
            "contentSha256": scored.content_sha256,
            "etag": etag,
            "lastModified": last_modified,
            "scorerVersion": scorer_version,
            "measurementVersion": measurement_version,
            "scoredAt": scored_at.isoformat(timespec="milliseconds"),
            "fetchMs": None if fetch_ms is None else round(fetch_ms, 1),
            "scoreMs": round(scored.score_ms, 1),
        }
    )
    return {key: record[key] for key in RESULT_KEYS}


def measurements_from_record(record: Mapping[str, Any]) -> Measurements:
    """The measurements a stored result (or `analysis_fields`) holds: what the five checks read
    (width, height, brightness, subject, presence, detector), as stored (rounded to 4 decimals,
    brightness to 2)."""
    subject: Subject | None = None
    found = record.get("subject")
    if found is not None:
        box = found["bbox"]
        subject = Subject(
            bbox=BBox(float(box["x"]), float(box["y"]), float(box["width"]), float(box["height"])),
            count=int(found["count"]),
            visible_ratio=float(found["visibleRatio"]),
            confidence=float(found["confidence"]),
        )
    presence = record.get("presence")
    return Measurements(
        width=int(record["width"]),
        height=int(record["height"]),
        brightness=float(record["brightness"]),
        subject=subject,
        presence=None if presence is None else float(presence),
        detector=str(record["detector"]),
    )
