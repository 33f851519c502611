"""Counting on constructed flocks: 1-5 dev-photo birds pasted apart on a blurred background."""

from __future__ import annotations

import random
from collections import Counter
from typing import Protocol

from backfill_quality.config import Thresholds
from backfill_quality.demo.compose import BirdCrop, compose_flock
from backfill_quality.models import BBox
from backfill_quality.scoring.detectors.base import Detector
from backfill_quality.scoring.score import score_image

FLOCKS_PER_SIZE = 10
MAX_BIRDS = 5


class Photo(Protocol):
    file: str
    truth: BBox | None
    data: bytes


def count_accuracy(photos: list[Photo], detector: Detector, *, seed: int = 7) -> dict[str, str]:
    """For n = 1..5 birds: how many of FLOCKS_PER_SIZE flocks were counted right, and the counts
    given ('4/10 (n=2: 4, n=1: 6)')."""
    rng = random.Random(seed)
    crops = [BirdCrop(p.data, p.truth) for p in photos if p.truth is not None]
    backgrounds = [p.data for p in photos if p.truth is None]
    results = {}
    for n in range(1, MAX_BIRDS + 1):
        counted: Counter[int] = Counter()
        for trial in range(FLOCKS_PER_SIZE):
            flock, _ = compose_flock(rng.sample(crops, n), rng.choice(backgrounds), seed=trial)
            subject = score_image(flock, Thresholds(), detector).measurements.subject
            counted[subject.count if subject else 0] += 1
        given = ", ".join(f"{k}: {v}" for k, v in sorted(counted.items()))
        results[str(n)] = f"{counted[n]}/{FLOCKS_PER_SIZE} ({given})"
    return results
