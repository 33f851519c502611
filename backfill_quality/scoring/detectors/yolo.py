"""A user's own detector (--detector onnx:PATH): a YOLO-family model exported to ONNX in the
Ultralytics layout (YOLOv8 and later: `yolo export format=onnx`).

Input: (1, 3, S, S) RGB scaled to 0-1, the picture letterboxed (aspect kept, padded with grey
114). Output: (1, 4 + classes, anchors) (or its transpose), per anchor the box centre, width and
height in input pixels and one score per class. The class `bird_class` (COCO: 14) is the bird;
its best score is the presence, boxes above MIN_SCORE are birds.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from backfill_quality.errors import ModelError
from backfill_quality.models import Subject
from backfill_quality.scoring.detectors.base import Detection
from backfill_quality.scoring.detectors.boxes import (
    clipped_bbox,
    count_confident,
    suppress_duplicates,
    visible_share,
)
from backfill_quality.scoring.detectors.runtime import Session
from backfill_quality.scoring.imaging import resize_rgb

DEFAULT_INPUT_SIZE = 640
PAD_GREY = 114
MIN_SCORE = 0.25
"""Ultralytics' own default confidence: a box below it is not a bird."""
DUPLICATE_IOU = 0.5
COUNT_SHARE_OF_TOP = 0.5
NMS_EXPORT_COLUMNS = 6
"""An export with NMS built in gives (1, detections, 6) rows: corners, score, class."""


class YoloDetector:
    """Birds found by the user's model."""

    def __init__(self, session: Session, *, bird_class: int) -> None:
        self._session = session
        self._input = session.input_names[0]
        self._bird_class = bird_class
        shape = session.input_shapes[0]
        height, width = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
        self._height = height if isinstance(height, int) else DEFAULT_INPUT_SIZE
        self._width = width if isinstance(width, int) else DEFAULT_INPUT_SIZE
        self.work_size = max(self._height, self._width)
        self.name = f"onnx:{session.path.name}"

    def detect(self, rgb: NDArray[np.uint8]) -> Detection:
        batch, scale, pad_x, pad_y = letterbox(rgb, self._height, self._width)
        output = self._session.run({self._input: batch})[0]
        table = anchors_by_row(output, self._session.path.name)
        classes = table.shape[1] - 4
        if self._bird_class >= classes:
            raise ModelError(
                f"--bird-class {self._bird_class}: the model {self._session.path.name} has only "
                f"{classes} classes (0-{classes - 1})"
            )
        scores = table[:, 4 + self._bird_class]
        presence = float(scores.max()) if scores.size else 0.0
        keep = scores >= MIN_SCORE
        if not keep.any():
            return Detection(subject=None, presence=presence)
        centre_x, centre_y, box_w, box_h = table[keep, :4].T
        height, width = rgb.shape[:2]
        corners = np.stack(
            [
                (centre_x - box_w / 2 - pad_x) / scale / width,
                (centre_y - box_h / 2 - pad_y) / scale / height,
                (centre_x + box_w / 2 - pad_x) / scale / width,
                (centre_y + box_h / 2 - pad_y) / scale / height,
            ],
            axis=1,
        ).astype(np.float32)
        kept_scores = scores[keep].astype(np.float32)
        order = suppress_duplicates(corners, kept_scores, DUPLICATE_IOU)
        best = corners[order[0]]
        subject = Subject(
            bbox=clipped_bbox(*map(float, best)),
            count=count_confident(
                [float(kept_scores[i]) for i in order],
                min_score=MIN_SCORE,
                min_share_of_top=COUNT_SHARE_OF_TOP,
            ),
            visible_ratio=visible_share(*map(float, best)),
            confidence=float(kept_scores[order[0]]),
        )
        return Detection(subject=subject, presence=presence)


def letterbox(
    rgb: NDArray[np.uint8], input_h: int, input_w: int
) -> tuple[NDArray[np.float32], float, int, int]:
    """(1, 3, input_h, input_w) RGB 0-1, the picture scaled to fit and centred on grey; and the
    scale and padding that map input pixels back to the picture."""
    height, width = rgb.shape[:2]
    scale = min(input_w / width, input_h / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    pad_x, pad_y = (input_w - new_w) // 2, (input_h - new_h) // 2
    canvas = np.full((input_h, input_w, 3), PAD_GREY, dtype=np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resize_rgb(rgb, new_w, new_h)
    batch = canvas.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    return np.ascontiguousarray(batch, dtype=np.float32), scale, pad_x, pad_y


def anchors_by_row(output: NDArray[np.float32], model_name: str) -> NDArray[np.float32]:
    """(anchors, 4 + classes) from the model's (1, 4 + classes, anchors) or its transpose."""
    if output.ndim == 3 and output.shape[2] == NMS_EXPORT_COLUMNS:
        raise ModelError(
            f"model {model_name} gives {output.shape[1]} final detections (x1, y1, x2, y2, "
            "score, class): it was exported with NMS built in; export it without (nms=False)"
        )
    if output.ndim != 3 or output.shape[0] != 1 or min(output.shape[1:]) < 5:
        raise ModelError(
            f"model {model_name} does not give Ultralytics YOLO output (1, 4 + classes, anchors): "
            f"its first output has shape {tuple(output.shape)}"
        )
    table: NDArray[np.float32] = output[0]
    # anchors outnumber 4 + classes in every real export (8400 anchors at 640 px)
    return table.T if table.shape[0] < table.shape[1] else table
