"""What every detector returns, and the interface the scorer calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from backfill_quality.models import Subject


@dataclass(frozen=True, slots=True)
class Detection:
    """The bird a detector found (None: no bird), and its belief that a bird is there at all."""

    subject: Subject | None
    presence: float | None
    """Probability 0-1 that the picture shows a bird; None when the detector cannot tell."""


class Detector(Protocol):
    """Finds the bird in an RGB working copy whose long side is at most `work_size`."""

    @property
    def name(self) -> str: ...

    @property
    def work_size(self) -> int: ...

    def detect(self, rgb: NDArray[np.uint8]) -> Detection: ...
