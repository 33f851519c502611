"""Result records for the database tests that write scores without running the scorer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from backfill_quality.config import Thresholds
from backfill_quality.models import BBox, Measurements, RowId, ScoredImage, Subject
from backfill_quality.results import analysis_fields, result_to_dict
from backfill_quality.scoring.checks import evaluate

SOURCE = "http://h/bird.jpg"


def a_result(score: int, source: str = SOURCE) -> dict[str, Any]:
    """A whole, realistic record (a bird found in a 1200x800 picture) carrying `score`."""
    subject = Subject(BBox(0.3, 0.25, 0.4, 0.5), count=1, visible_ratio=1.0, confidence=0.9)
    measured = Measurements(1200, 800, 120.0, subject, presence=0.97, detector="learned")
    analysis = evaluate(measured, Thresholds())
    category = "high" if score >= 80 else "medium" if score >= 60 else "low"
    fields = analysis_fields(replace(analysis, score=score, category=category))
    scored = ScoredImage(fields, 1234, "ab" * 32, 7.5)
    return result_to_dict(
        source,
        scored,
        scorer_version="learned-0123456789abcdef",
        measurement_version="learned-m0123456789abcdef",
        scored_at=datetime.now(UTC),
        etag='"v1"',
        last_modified="Wed, 21 Oct 2015 07:28:00 GMT",
        fetch_ms=12.5,
    )


def with_results(scores: Sequence[tuple[RowId, int]]) -> list[tuple[RowId, Mapping[str, Any]]]:
    """(key, score) pairs -> the (key, record) pairs `db.write_scores` takes."""
    return [(key, a_result(score)) for key, score in scores]
