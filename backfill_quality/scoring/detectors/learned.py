"""The default detector: two small networks, each used for what it measured best at.

- Where might birds be? NanoDet's boxes (nanodet.py), best bird score first.
- Is each a bird? EfficientNet-Lite0's bird probability (presence.py) of the whole picture and,
  in the same batch, of a crop around each of the CANDIDATES best distinct boxes. NanoDet's bird
  scores are soft (its median on a clear bird is about 0.35) while the classifier separates birds
  from other animals almost perfectly (AUC 0.999 on birds-dev): it verifies NanoDet's proposals.
- There is a bird when the whole picture or a verified box reaches PRESENCE_THRESHOLD (the
  classifier's natural 0.5), or NanoDet itself is that sure of a box.
- The bird is the best verified box (else NanoDet's best); the count is the verified boxes
  that are distinct (neither inside another one nor a box around a group of them).
- The visible ratio is the share of the box inside the frame: NanoDet's edges are not clipped.
When the classifier sees a bird that NanoDet does not box, the heuristic detector's box is used,
with the probability as its confidence.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from backfill_quality.models import Subject
from backfill_quality.scoring.detectors.base import Detection
from backfill_quality.scoring.detectors.boxes import clipped_bbox, visible_share
from backfill_quality.scoring.detectors.heuristic import detect_subject
from backfill_quality.scoring.detectors.nanodet import NanoDet, ScoredBox
from backfill_quality.scoring.detectors.presence import PresenceClassifier
from backfill_quality.scoring.imaging import WORK_SIZE as HEURISTIC_WORK_SIZE
from backfill_quality.scoring.imaging import resize_rgb

PRESENCE_THRESHOLD = 0.5
"""A bird when the classifier's bird probability of the picture or of a box reaches this, ..."""
BOX_PRESENCE_THRESHOLD = 0.5
"""... or NanoDet's best bird box does."""
CANDIDATES = 5
"""Distinct boxes verified by the classifier, in one batch with the whole picture (about 5 ms of
CPU a crop, bench/learned_speed.py); the count cannot exceed it ("several" is what the
primarySubject check reads)."""
MIN_CANDIDATE_SCORE = 0.1
"""NanoDet boxes below this bird score are not candidates."""
VERIFIED_THRESHOLD = 0.3
"""A candidate box is a bird (for the count and the choice of box) from this probability."""
DISTINCT_OVERLAP = 0.3
"""Two boxes are the same bird when their intersection covers this share of the smaller."""
CROP_MARGIN = 0.1
"""The classifier sees a candidate with this share of its size around it on each side."""
WORK_SIZE = 1024
"""Long side of the working copy. NanoDet sees 320 px whatever it is, but the classifier's crops
come from it, and it fails on small crops (the demo owl: 0.54 at 246 x 180 px, 0.18 at 123 x 90).
Measured (bench/accuracy.py --counting, bench/throughput.py on 800-4000 px photos): at 640,
exact counts on 1-5 pasted dev birds 8, 7, 6, 7, 2 of 10 and 34 CPU ms per image; at 1024,
9, 8, 7, 8, 3 of 10 and 42 ms. birds-dev's 500-px photos are seen at full size either way."""


class LearnedDetector:
    """Box proposals from NanoDet, verified by the bird classifier."""

    name = "learned"
    work_size = WORK_SIZE

    def __init__(self, presence: PresenceClassifier, boxes: NanoDet) -> None:
        self._presence = presence
        self._boxes = boxes

    def detect(self, rgb: NDArray[np.uint8]) -> Detection:
        boxes = self._boxes.boxes(rgb)
        candidates = distinct(
            [box for box in boxes if box.score >= MIN_CANDIDATE_SCORE], CANDIDATES
        )
        whole, *verified = self._presence.probabilities(
            [rgb, *(crop(rgb, box) for box in candidates)]
        )
        top_score = boxes[0].score if boxes else 0.0
        presence = max([whole, top_score, *verified])
        is_bird = (
            max([whole, *verified]) >= PRESENCE_THRESHOLD or top_score >= BOX_PRESENCE_THRESHOLD
        )
        if not is_bird:
            return Detection(subject=None, presence=presence)
        birds = [
            box for box, p in zip(candidates, verified, strict=True) if p >= VERIFIED_THRESHOLD
        ]
        birds = without_groups(birds)
        best = birds[0] if birds else (boxes[0] if boxes else None)
        if best is None:
            return Detection(subject=self._fallback(rgb, whole), presence=presence)
        corners = (best.x1, best.y1, best.x2, best.y2)
        confirmed = dict(zip(map(id, candidates), verified, strict=True))
        subject = Subject(
            bbox=clipped_bbox(*corners),
            count=max(1, len(birds)),
            visible_ratio=visible_share(*corners),
            # the classifier's probability for the box it confirmed, else NanoDet's own score
            confidence=max(best.score, confirmed.get(id(best), 0.0)),
        )
        return Detection(subject=subject, presence=presence)

    @staticmethod
    def _fallback(rgb: NDArray[np.uint8], probability: float) -> Subject | None:
        """The heuristic's subject, found on the small copy it was measured on."""
        height, width = rgb.shape[:2]
        scale = min(1.0, HEURISTIC_WORK_SIZE / max(height, width))
        small = resize_rgb(rgb, max(1, round(width * scale)), max(1, round(height * scale)))
        found = detect_subject(small)
        return None if found is None else replace(found, count=1, confidence=probability)


def overlap_of_smaller(a: ScoredBox, b: ScoredBox) -> float:
    """Intersection over the smaller box's area."""
    inter_w = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    inter_h = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    smaller = min(area(a), area(b))
    return inter_w * inter_h / smaller if smaller > 0 else 0.0


def area(box: ScoredBox) -> float:
    return max(0.0, box.x2 - box.x1) * max(0.0, box.y2 - box.y1)


def distinct(boxes: list[ScoredBox], limit: int) -> list[ScoredBox]:
    """Up to `limit` boxes, best first, none mostly covering a better one."""
    kept: list[ScoredBox] = []
    for box in boxes:
        if all(overlap_of_smaller(box, other) < DISTINCT_OVERLAP for other in kept):
            kept.append(box)
            if len(kept) == limit:
                break
    return kept


def without_groups(boxes: list[ScoredBox]) -> list[ScoredBox]:
    """The boxes less those that hold two or more smaller ones (a box around a group)."""
    return [
        box
        for box in boxes
        if sum(area(other) < area(box) and overlap_of_smaller(box, other) >= 0.8 for other in boxes)
        < 2
    ]


def crop(rgb: NDArray[np.uint8], box: ScoredBox) -> NDArray[np.uint8]:
    """The picture inside the box and a margin around it (at least 4 x 4 pixels)."""
    height, width = rgb.shape[:2]
    margin_x, margin_y = CROP_MARGIN * (box.x2 - box.x1), CROP_MARGIN * (box.y2 - box.y1)
    left = min(width - 4, max(0, int((box.x1 - margin_x) * width)))
    top = min(height - 4, max(0, int((box.y1 - margin_y) * height)))
    right = max(left + 4, min(width, int(np.ceil((box.x2 + margin_x) * width))))
    bottom = max(top + 4, min(height, int(np.ceil((box.y2 + margin_y) * height))))
    return np.ascontiguousarray(rgb[top:bottom, left:right])
