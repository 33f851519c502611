"""The detector a `DetectorChoice` names, built once per process with its model sessions."""

from __future__ import annotations

import functools

import numpy as np

from backfill_quality.config import DetectorChoice
from backfill_quality.scoring.detectors.base import Detector
from backfill_quality.scoring.detectors.heuristic import HeuristicDetector
from backfill_quality.scoring.detectors.learned import LearnedDetector
from backfill_quality.scoring.detectors.nanodet import NanoDet
from backfill_quality.scoring.detectors.presence import PresenceClassifier
from backfill_quality.scoring.detectors.runtime import ShippedModel, open_shipped, open_user_model
from backfill_quality.scoring.detectors.yolo import YoloDetector

PRESENCE_MODEL = ShippedModel(
    "presence-efficientnet-lite0-int8.onnx",
    "1b08280e47d3e1fbe05e50a6b370efa724b5204b203b59d2ada6c17022a17f47",
)
NANODET_MODEL = ShippedModel(
    "nanodet-coco-int8.onnx",
    "d766a7673fff06d9c63d09258eb0543237ea4c1ee7e6ad5e52ff26e0d9d347a9",
)
SHIPPED_MODELS = (PRESENCE_MODEL, NANODET_MODEL)


TRIAL_PICTURE_SIZE = (48, 64, 3)


@functools.cache
def load_detector(choice: DetectorChoice, threads: int = 1) -> Detector:
    """The detector for `choice`, its sessions using `threads` threads each; cached, so each
    process builds it once. A grey picture goes through it first, so a model that loads but
    does not fit (input shape, output layout, --bird-class) fails here, at start, not on every
    image. Raises ModelError when a model file is missing or unusable."""
    detector = _build(choice, threads)
    detector.detect(np.full(TRIAL_PICTURE_SIZE, 128, dtype=np.uint8))
    return detector


def _build(choice: DetectorChoice, threads: int) -> Detector:
    if choice.kind == "heuristic":
        return HeuristicDetector()
    if choice.kind == "onnx":
        assert choice.model_path is not None  # DetectorChoice guarantees it
        session = open_user_model(choice.model_path, threads=threads)
        return YoloDetector(session, bird_class=choice.bird_class)
    presence = PresenceClassifier(open_shipped(PRESENCE_MODEL, threads=threads))
    boxes = NanoDet(open_shipped(NANODET_MODEL, threads=threads))
    return LearnedDetector(presence, boxes)
