"""ONNX Runtime sessions for the detectors: the only importer of onnxruntime.

One session per model per process, created once (the scoring processes keep theirs for the whole
run). A shipped model's bytes are checked against its SHA-256 before the session is built, so a
damaged installation fails at start with a message naming the file, never with wrong boxes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from backfill_quality.errors import ModelError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
REINSTALL = "reinstall backfill-quality, or score with --detector heuristic (no models)"


@dataclass(frozen=True, slots=True)
class ShippedModel:
    """A model file that comes with the package, and the SHA-256 its bytes must have."""

    file_name: str
    sha256: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file_name


class Session:
    """A loaded model: named float32 inputs in, float32 outputs out."""

    def __init__(self, session: ort.InferenceSession, path: Path) -> None:
        self._session = session
        self.path = path
        self.input_names = [node.name for node in session.get_inputs()]
        self.input_shapes = [list(node.shape) for node in session.get_inputs()]
        self.output_names = [node.name for node in session.get_outputs()]

    def run(self, inputs: dict[str, NDArray[np.float32]]) -> list[NDArray[np.float32]]:
        try:
            outputs: list[Any] = self._session.run(self.output_names, inputs)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"model {self.path.name} failed on an image: {exc}") from exc
        return [np.asarray(output, dtype=np.float32) for output in outputs]


def open_shipped(model: ShippedModel, *, threads: int) -> Session:
    """The session of a model that ships with the package, after checking its bytes."""
    path = model.path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {path} is missing: {REINSTALL}") from None
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read ({exc.strerror}): {REINSTALL}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != model.sha256:
        raise ModelError(
            f"model file {path} is damaged (SHA-256 {digest[:12]}…, expected "
            f"{model.sha256[:12]}…): {REINSTALL}"
        )
    return _session(data, path, threads=threads)


def open_user_model(path: Path, *, threads: int) -> Session:
    """The session of a model file the user named (--detector onnx:PATH)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"--detector onnx:{path}: no such file") from None
    except IsADirectoryError:
        raise ModelError(f"--detector onnx:{path}: is a folder, not an ONNX file") from None
    except OSError as exc:
        raise ModelError(f"--detector onnx:{path}: cannot read it ({exc.strerror})") from exc
    return _session(data, path, threads=threads)


def _session(data: bytes, path: Path, *, threads: int) -> Session:
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings would interleave with our progress
    try:
        session = ort.InferenceSession(
            data, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # InvalidProtobuf, InvalidGraph, Fail, ...: all mean "not usable"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model file {path} is not a usable ONNX model ({first_line})") from exc
    return Session(session, path)
