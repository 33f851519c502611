"""Small frozen records passed between layers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

RowId = str | int
Category = Literal["high", "medium", "low"]


@dataclass(frozen=True, slots=True)
class OrderCursor:
    """A row's place in a `--order-by` run: its order value and its key (ties by the key).

    `value` is the column's value as text (dates and times in ISO 8601), cast back to the
    column's type by the page query; None: the value is NULL, and the row belongs to the second
    phase (NULLs last, in key order).
    """

    value: str | None
    id: RowId

    @property
    def is_null(self) -> bool:
        return self.value is None


PageKey = RowId | OrderCursor
"""What a page starts after: the last row's id, or with --order-by its (value, id)."""


@dataclass(frozen=True, slots=True)
class ImageRow:
    """One row to score: its primary key and image URL (and, with --order-by, its place)."""

    id: RowId
    url: str
    order_key: OrderCursor | None = None

    @property
    def key(self) -> PageKey:
        """The key the next page starts after when this row is the last one read."""
        return self.id if self.order_key is None else self.order_key


@dataclass(frozen=True, slots=True)
class BBox:
    """A box normalized to the image: 0-1, (x, y) is the top-left corner."""

    x: float
    y: float
    width: float
    height: float

    @property
    def area(self) -> float:
        return self.width * self.height


@dataclass(frozen=True, slots=True)
class Subject:
    """The main subject (the bird) found by the detector."""

    bbox: BBox
    count: int
    visible_ratio: float
    confidence: float


@dataclass(frozen=True, slots=True)
class Measurements:
    """What the checks read from one decoded image."""

    width: int
    height: int
    brightness: float
    subject: Subject | None
    presence: float | None = None
    """Probability (0-1) that a bird is in the picture; None when the detector cannot tell."""
    detector: str = "heuristic"
    """The name of the detector that found the subject."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check: an integer score 0-100, pass/fail and a human-readable reason."""

    name: str
    score: int
    passed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Analysis:
    """The full result of scoring one image."""

    measurements: Measurements
    checks: tuple[CheckResult, ...]
    score: int
    category: Category


@dataclass(frozen=True, slots=True)
class ScoredImage:
    """What a scoring process sends back for one image: the analysis, already in its JSON form
    (`results.analysis_fields`: plain dicts cross the process boundary several times faster
    than the nested records), the size and SHA-256 (hex) of the bytes, and the scoring time."""

    analysis: dict[str, Any]
    byte_size: int
    content_sha256: str
    score_ms: float

    @property
    def score(self) -> int:
        return int(self.analysis["score"])


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one row: a score with its result record, or an error message (never both).

    `result` is the record `results.result_to_dict` made (what the score was made of), written
    with the score in one statement."""

    row: ImageRow
    score: int | None = None
    error: str | None = None
    attempts: int = 1
    result: Mapping[str, Any] | None = None

    @property
    def is_success(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The end of a run, for the final report: counts, timing, and the failed rows (id, url, error).

    `interrupted` is 'SIGINT' or 'SIGTERM' when a signal stopped the run, else None. `total`
    is every row the run had left (and those it resumed after), even with a `limit`.
    """

    total: int
    processed: int
    succeeded: int
    failed: int
    skipped: int
    elapsed_s: float
    rate_per_s: float
    dry_run: bool
    interrupted: str | None
    failed_images: tuple[tuple[RowId, str, str], ...]
    checkpoint_path: str
    limit: int | None = None
    """--limit: the run stopped after this many rows (`total` counts every row left)."""
    score_histogram: tuple[int, ...] = ()
    """Rows scored, by decile (0-9 … 90-100); empty when nothing was counted."""
    rescore: dict[str, int] | None = None
    """A rescore's rows by path (recomputed, revalidated, reusedByHash, fullyRescored, skipped,
    failed; a dry run: wouldRecompute, wouldFetch); None for a run."""
