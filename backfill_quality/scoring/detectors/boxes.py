"""Box arithmetic shared by the box detectors: overlap, suppression of duplicates, counting,
and how much of a box the frame shows."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from backfill_quality.models import BBox

Boxes = NDArray[np.float32]
"""(n, 4) corners x1, y1, x2, y2."""


def suppress_duplicates(boxes: Boxes, scores: NDArray[np.float32], max_iou: float) -> list[int]:
    """Greedy non-maximum suppression: indices of the boxes kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0, None
    )
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        inter_w = np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(
            boxes[best, 0], boxes[rest, 0]
        )
        inter_h = np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(
            boxes[best, 1], boxes[rest, 1]
        )
        inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
        overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= max_iou]
    return keep


def count_confident(scores: list[float], *, min_score: float, min_share_of_top: float) -> int:
    """How many boxes are birds: a score of at least `min_score` and `min_share_of_top` of the
    best box's score (a far weaker box beside a clear bird is more often a part of it)."""
    if not scores:
        return 0
    floor = max(min_score, min_share_of_top * max(scores))
    return sum(score >= floor for score in scores)


def visible_share(x1: float, y1: float, x2: float, y2: float) -> float:
    """The share of a normalized box (corners may lie outside 0-1) that the frame shows."""
    area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    if area <= 0.0:
        return 1.0
    inside = max(0.0, min(x2, 1.0) - max(x1, 0.0)) * max(0.0, min(y2, 1.0) - max(y1, 0.0))
    return inside / area


def clipped_bbox(x1: float, y1: float, x2: float, y2: float) -> BBox:
    """The part of a normalized box inside the frame, as a BBox."""
    left, top = min(max(x1, 0.0), 1.0), min(max(y1, 0.0), 1.0)
    right, bottom = min(max(x2, 0.0), 1.0), min(max(y2, 0.0), 1.0)
    return BBox(left, top, max(0.0, right - left), max(0.0, bottom - top))
