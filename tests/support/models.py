"""Small real ONNX models with known answers, built with onnx.helper (the detectors' tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def yolo_layout_model(path: Path, rows: np.ndarray, *, size: int = 640) -> Path:
    """A real ONNX model in the Ultralytics layout whose output (1, 4 + classes, anchors) is
    `rows` (+ 0 x the mean of the image, so the input is used): a detector with known answers."""
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(rows.shape))
    answer = numpy_helper.from_array(rows.astype(np.float32), "answer")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["answer", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(nodes, "yolo", [image], [output], [answer, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def anchors(*boxes: tuple[float, float, float, float, int, float], classes: int = 80) -> np.ndarray:
    """(1, 4 + classes, 200): anchors (cx, cy, w, h) in input pixels with one class score, then
    empty anchors (a real export has thousands: 8400 at 640 px)."""
    rows = np.zeros((1, 4 + classes, 200), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(boxes):
        rows[0, :4, i] = (cx, cy, w, h)
        rows[0, 4 + cls, i] = score
    return rows
