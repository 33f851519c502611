"""Is there a bird? EfficientNet-Lite0 (ImageNet-1k), the summed probability of its bird classes.

ImageNet has 59 bird classes (indices 7-24, 80-100, 127-146); the probability that the picture
shows a bird is the sum of their softmax probabilities. Measured on birds-dev (300 birds, 32
raccoons; docs/scoring.md): AUC 0.999, no raccoon above 0.06, about 2 % of birds below 0.2.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from backfill_quality.scoring.detectors.runtime import Session
from backfill_quality.scoring.imaging import resize_rgb

INPUT_SIZE = 224
BIRD_CLASSES = np.r_[7:25, 80:101, 127:147]
"""The ImageNet-1k class indices that are birds (cock, hen, ostrich ... albatross)."""
PIXEL_CENTRE = 127.0
PIXEL_SCALE = 128.0
"""The network's input is RGB as (x - 127) / 128 (EfficientNet-Lite's training; ImageNet's
mean/std normalization measured worse: AUC 0.995 instead of 0.999)."""


class PresenceClassifier:
    """The probability that an RGB picture shows a bird."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._input = session.input_names[0]

    def probability(self, rgb: NDArray[np.uint8]) -> float:
        """For the whole picture (its centre square)."""
        return self.probabilities([rgb])[0]

    def probabilities(self, pictures: list[NDArray[np.uint8]]) -> list[float]:
        """For each picture (the whole photo, crops of it), in one batch."""
        batch = np.concatenate([centre_crop_input(rgb) for rgb in pictures])
        probs = self._session.run({self._input: batch})[0]
        birds = probs[:, BIRD_CLASSES].sum(axis=1, dtype=np.float64)
        return [float(p) for p in np.clip(birds, 0.0, 1.0)]


def centre_crop_input(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """The (1, 3, 224, 224) input: shorter side to 224 (bilinear), the centre square, scaled."""
    height, width = max(1, rgb.shape[0]), max(1, rgb.shape[1])
    scale = INPUT_SIZE / min(height, width)
    new_w = max(INPUT_SIZE, round(width * scale))
    new_h = max(INPUT_SIZE, round(height * scale))
    resized = resize_rgb(rgb, new_w, new_h)
    left, top = (new_w - INPUT_SIZE) // 2, (new_h - INPUT_SIZE) // 2
    square = resized[top : top + INPUT_SIZE, left : left + INPUT_SIZE].astype(np.float32)
    square -= PIXEL_CENTRE
    square /= PIXEL_SCALE
    return np.ascontiguousarray(square.transpose(2, 0, 1)[None])
