"""Where the birds are: NanoDet (COCO-80, bird = class 14), boxes with their scores.

The network sees the picture letterboxed in a square (INPUT_SIZE: long side to it, centred,
padded with the mean colour), BGR, normalized with its training mean and std. Each of its three
strides (8, 16, 32) gives, per cell, 80 sigmoid class scores and, per side (left, top, right,
bottom), a distribution over 11 distances in strides (Generalized Focal Loss): the expected
distance from the cell's centre is the box edge. Edges are NOT clipped to the picture: a bird cut
by the frame may get a box that runs past it, into the padding, which tells how much of the bird
the frame shows (the visible ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from backfill_quality.scoring.detectors.boxes import suppress_duplicates
from backfill_quality.scoring.detectors.runtime import Session
from backfill_quality.scoring.imaging import resize_rgb

INPUT_SIZE = 320
"""Side of the square input. Measured on birds-dev (NanoDet alone, int8 calibrated on birds-dev):
CorLoc 0.940 at 320 letterboxed, 0.927 stretched, 0.913 at 416, 0.910 at 256; the shipped build
(calibrated on the demo photos) 0.950 at 320. 320 costs about 10 ms on one core."""
STRIDES = (8, 16, 32)
BINS = 11
"""Distance bins per side (0-10 strides)."""
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)
MIN_BOX_SCORE = 0.05
"""Boxes below this bird score are not considered at all (the presence model decides whether
there is a bird; this only keeps the suppression step small)."""
DUPLICATE_IOU = 0.5


@dataclass(frozen=True, slots=True)
class ScoredBox:
    """A box normalized to the picture (corners, may run past 0-1) and its bird score."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float


class NanoDet:
    """Bird boxes of an RGB picture, best first, duplicates suppressed."""

    def __init__(self, session: Session, *, bird_class: int = 14) -> None:
        self._session = session
        self._input = session.input_names[0]
        self._bird_class = bird_class
        names = session.output_names
        self._order = [names.index(f"cls_s{s}") for s in STRIDES] + [
            names.index(f"reg_s{s}") for s in STRIDES
        ]

    def boxes(self, rgb: NDArray[np.uint8]) -> list[ScoredBox]:
        batch, (scale_x, scale_y, pad_x, pad_y) = network_input(rgb)
        outputs = self._session.run({self._input: batch})
        ordered = [outputs[i] for i in self._order]
        corners, scores = [], []
        for level, stride in enumerate(STRIDES):
            level_corners, level_scores = decode_level(
                ordered[level][0, :, self._bird_class], ordered[level + 3][0], stride
            )
            keep = level_scores >= MIN_BOX_SCORE
            corners.append(level_corners[keep])
            scores.append(level_scores[keep])
        all_corners = np.concatenate(corners)
        all_corners[:, 0::2] = (all_corners[:, 0::2] - pad_x) / scale_x
        all_corners[:, 1::2] = (all_corners[:, 1::2] - pad_y) / scale_y
        all_scores = np.concatenate(scores)
        kept = suppress_duplicates(all_corners, all_scores, DUPLICATE_IOU)
        return [_scored_box(all_corners[i], float(all_scores[i])) for i in kept]


def _scored_box(corners: NDArray[np.float32], score: float) -> ScoredBox:
    x1, y1, x2, y2 = (float(value) for value in corners)
    return ScoredBox(x1, y1, x2, y2, score)


def network_input(
    rgb: NDArray[np.uint8],
) -> tuple[NDArray[np.float32], tuple[float, float, float, float]]:
    """(1, 3, S, S): the picture letterboxed, BGR, (x - mean) / std (the padding is the mean,
    so 0); and (scale_x, scale_y, pad_x, pad_y) that map input pixels to the picture's 0-1."""
    height, width = rgb.shape[:2]
    scale = INPUT_SIZE / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
    resized = resize_rgb(rgb, new_w, new_h).astype(np.float32)[:, :, ::-1]
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.float32)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = (resized - MEAN_BGR) / STD_BGR
    batch = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)
    return batch, (float(new_w), float(new_h), float(pad_x), float(pad_y))


def decode_level(
    scores: NDArray[np.float32], distances: NDArray[np.float32], stride: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """One stride: (cells,) bird scores and (cells, 44) distance logits -> (cells, 4) corners in
    input pixels, unclipped, and the scores. Cells are row-major; a cell's centre is
    ((col + 0.5) * stride, (row + 0.5) * stride)."""
    cols = -(-INPUT_SIZE // stride)
    index = np.arange(scores.shape[0], dtype=np.float32)
    rows, col = np.divmod(index, np.float32(cols))
    centre_x, centre_y = (col + 0.5) * stride, (rows + 0.5) * stride
    logits = distances.reshape(-1, 4, BINS)
    logits = logits - logits.max(axis=2, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=2, keepdims=True)
    expected = (weights @ np.arange(BINS, dtype=np.float32)) * stride  # left, top, right, bottom
    corners = np.stack(
        [
            centre_x - expected[:, 0],
            centre_y - expected[:, 1],
            centre_x + expected[:, 2],
            centre_y + expected[:, 3],
        ],
        axis=1,
    )
    return corners.astype(np.float32), scores.astype(np.float32)
