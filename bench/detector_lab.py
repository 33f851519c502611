"""Detector experiments on birds-dev: the threshold oracle and ways to choose among thresholds.

Usage: python bench/detector_lab.py [--manifest PATH] [--verbose]

The production detector thresholds its saliency map once (Otsu). This lab recomputes the same
map for every bird photo through the detector's own private steps (so it stays in step
with `backfill_quality.scoring.detectors.heuristic`; module constants can be
patched before `prepare` to sweep them), then
builds one candidate box per threshold Otsu x MULTIPLIERS (geometric, 0.5-2.0) and prints, for
each way of picking a box, CorLoc / mean IoU / size-band agreement on all photos and on each half
of the species split (A: tuning species, B: check species; see bench/accuracy.py).

Rows: `otsu` (the production rule, must match bench/accuracy.py), `oracle` (best candidate with
hindsight: the ceiling for any rule choosing among these candidates), fixed multipliers (how
narrow the peak is), ground-truth-free box scores choosing the candidate (Fisher separation,
centre-surround contrast, Lab contrast with a ring, edge density on the box's inner band at
working-copy resolution, stability across neighbouring thresholds, rank mixes), ensembles
(coordinate-wise median of the boxes over a window of thresholds, or over the thresholds whose
Otsu between-class variance is within a share of the best), and snapping box edges near the frame
to the frame (the large-bird case). Results of the last round are in the docstring of
`backfill_quality/scoring/detectors/heuristic.py` (the "measured and dropped" list) and in the
closing note of issue 6. Nothing here is imported by the package.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from accuracy import (  # noqa: E402
    CORLOC_IOU,
    DEFAULT_MANIFEST,
    TUNING_SPECIES,
    Sample,
    iou,
    load_samples,
    size_band,
)

from backfill_quality.models import BBox  # noqa: E402
from backfill_quality.scoring.detectors import heuristic as det  # noqa: E402
from backfill_quality.scoring.detectors import primitives  # noqa: E402

FloatMap = NDArray[np.float32]
MULTIPLIERS = tuple(float(v) for v in np.round(np.geomspace(0.5, 2.0, 25), 3))
"""Threshold multipliers of Otsu's threshold; the middle one is exactly 1.0."""
NEAR_OTSU = tuple(m for m in MULTIPLIERS if 0.8 <= m <= 1.25)


@dataclass(frozen=True, slots=True)
class Candidate:
    multiplier: float
    threshold: float
    mask: NDArray[np.bool_]
    """The main component (largest saliency mass) at this threshold, in map cells."""
    cells: tuple[int, int, int, int]
    """Its extent in map cells: top, bottom (exclusive), left, right (exclusive)."""
    box: BBox
    """Its box as production computes it, normalized to the whole photo (frame undone)."""


@dataclass(slots=True)
class Prepared:
    file: str
    truth: BBox
    half: str
    saliency: FloatMap
    lab: FloatMap
    gradient: FloatMap
    """Luminance gradient magnitude of the whole working copy (for edge density)."""
    candidates: tuple[Candidate, ...]
    cache: dict[tuple[str, float], float] = field(default_factory=dict)


def _to_frame(box: BBox, shape: tuple[int, ...], frame: tuple[int, int, int, int]) -> BBox:
    top, bottom, left, right = frame
    height, width = shape[:2]
    inner_h, inner_w = height - top - bottom, width - left - right
    return BBox(
        (left + box.x * inner_w) / width,
        (top + box.y * inner_h) / height,
        box.width * inner_w / width,
        box.height * inner_h / height,
    )


def _gradient(rgb: NDArray[np.uint8]) -> FloatMap:
    grey = rgb.astype(np.float32).mean(axis=2)
    gy, gx = np.zeros_like(grey), np.zeros_like(grey)
    gy[1:-1] = grey[2:] - grey[:-2]
    gx[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
    result: FloatMap = np.hypot(gx, gy).astype(np.float32)
    return result


def prepare(sample: Sample) -> Prepared | None:
    """The detector's maps and one candidate per multiplier; None without truth or subject."""
    rgb = sample.image.rgb
    frame = det._frame_widths(rgb)
    top, bottom, left, right = frame
    inner = rgb[top : rgb.shape[0] - bottom, left : rgb.shape[1] - right]
    lab = det._cell_lab(inner)
    saliency = det._saliency(det._border_distance(lab))
    peak, otsu = float(saliency.max()), primitives.otsu_threshold(saliency)
    candidates = []
    for multiplier in MULTIPLIERS:
        threshold = max(multiplier * otsu, det.MIN_THRESHOLD_SHARE * peak)
        labels = primitives.label_components(saliency >= threshold)
        ids, inverse = np.unique(labels, return_inverse=True)
        masses = np.bincount(inverse.ravel(), weights=saliency.ravel())
        masses[ids == 0] = 0.0
        if masses.max() <= 0:
            continue
        main = labels == ids[int(np.argmax(masses))]
        ys, xs = np.nonzero(main)
        cells = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
        box = _to_frame(det._box(main), rgb.shape, frame)
        candidates.append(Candidate(multiplier, threshold, main, cells, box))
    if sample.truth is None or not any(c.multiplier == 1.0 for c in candidates):
        return None
    half = "A" if any(f"_{name}_" in sample.file for name in TUNING_SPECIES) else "B"
    return Prepared(
        sample.file, sample.truth, half, saliency, lab, _gradient(rgb), tuple(candidates)
    )


# --- ground-truth-free box scores (higher is better) ---------------------------------------

BoxScore = Callable[[Prepared, Candidate], float]


def _inside(prep: Prepared, cand: Candidate) -> NDArray[np.bool_]:
    top, bottom, left, right = cand.cells
    inside = np.zeros(prep.saliency.shape, bool)
    inside[top:bottom, left:right] = True
    return inside


def _ring(prep: Prepared, cand: Candidate, share: float = 0.25) -> NDArray[np.bool_]:
    top, bottom, left, right = cand.cells
    dy, dx = max(1, round(share * (bottom - top))), max(1, round(share * (right - left)))
    ring = np.zeros(prep.saliency.shape, bool)
    ring[max(0, top - dy) : bottom + dy, max(0, left - dx) : right + dx] = True
    ring[top:bottom, left:right] = False
    return ring


def fisher(prep: Prepared, cand: Candidate) -> float:
    """Fisher separation of saliency inside vs outside the box."""
    inside = _inside(prep, cand)
    if inside.all():
        return 0.0
    a, b = prep.saliency[inside], prep.saliency[~inside]
    return float((a.mean() - b.mean()) ** 2 / (a.var() + b.var() + 1e-9))


def centre_surround(prep: Prepared, cand: Candidate) -> float:
    """Mean saliency in the box minus the mean in a ring around it (clipped to the frame)."""
    ring = _ring(prep, cand)
    outside = float(prep.saliency[ring].mean()) if ring.any() else 0.0
    return float(prep.saliency[_inside(prep, cand)].mean()) - outside


def colour_contrast(prep: Prepared, cand: Candidate) -> float:
    """Lab distance between the mean colours of the box and of its ring."""
    ring = _ring(prep, cand)
    if not ring.any():
        return 0.0
    inside = prep.lab[_inside(prep, cand)].mean(axis=0)
    return float(np.linalg.norm(inside - prep.lab[ring].mean(axis=0)))


def edge_density(prep: Prepared, cand: Candidate, band_share: float = 0.1) -> float:
    """Mean gradient in the box's inner band minus that in a band just outside (Alexe et al.)."""
    grad, box = prep.gradient, cand.box
    height, width = grad.shape
    x0, y0 = int(box.x * width), int(box.y * height)
    x1 = max(x0 + 2, int((box.x + box.width) * width))
    y1 = max(y0 + 2, int((box.y + box.height) * height))
    dx, dy = max(1, int(band_share * (x1 - x0))), max(1, int(band_share * (y1 - y0)))
    inner, core = grad[y0:y1, x0:x1], grad[y0 + dy : y1 - dy, x0 + dx : x1 - dx]
    outer = grad[max(0, y0 - dy) : y1 + dy, max(0, x0 - dx) : x1 + dx]
    band = (inner.sum() - core.sum()) / max(1, inner.size - core.size)
    ring = (outer.sum() - inner.sum()) / max(1, outer.size - inner.size)
    return float(band - ring)


def stability(prep: Prepared, cand: Candidate) -> float:
    """Mean IoU of this box with the boxes of the neighbouring thresholds."""
    index = prep.candidates.index(cand)
    around = [prep.candidates[i] for i in (index - 1, index + 1) if 0 <= i < len(prep.candidates)]
    return statistics.fmean(iou(cand.box, c.box) for c in around) if around else 0.0


def _cached(score: BoxScore, prep: Prepared, cand: Candidate) -> float:
    key = (score.__name__, cand.multiplier)
    if key not in prep.cache:
        prep.cache[key] = score(prep, cand)
    return prep.cache[key]


def rank_mix(*scores: BoxScore) -> BoxScore:
    """Sum of the candidate's per-photo ranks under several scores (no scale constants)."""

    def mixed(prep: Prepared, cand: Candidate) -> float:
        total = 0
        for score in scores:
            values = sorted(_cached(score, prep, other) for other in prep.candidates)
            total += values.index(_cached(score, prep, cand))
        return float(total)

    mixed.__name__ = "+".join(score.__name__ for score in scores)  # the cache key
    return mixed


# --- ways to pick a box ----------------------------------------------------------------------

Selector = Callable[[Prepared], BBox]


def at(multiplier: float) -> Selector:
    def select(prep: Prepared) -> BBox:
        return min(prep.candidates, key=lambda c: abs(np.log(c.multiplier / multiplier))).box

    return select


def oracle(prep: Prepared) -> BBox:
    return max((c.box for c in prep.candidates), key=lambda box: iou(box, prep.truth))


def by_score(score: BoxScore, window: tuple[float, ...] = MULTIPLIERS) -> Selector:
    def select(prep: Prepared) -> BBox:
        pool = [c for c in prep.candidates if c.multiplier in window]
        return max(pool, key=lambda c: _cached(score, prep, c)).box

    return select


def _median_box(boxes: list[BBox]) -> BBox:
    x0 = float(np.median([b.x for b in boxes]))
    y0 = float(np.median([b.y for b in boxes]))
    x1 = float(np.median([b.x + b.width for b in boxes]))
    y1 = float(np.median([b.y + b.height for b in boxes]))
    return BBox(x0, y0, x1 - x0, y1 - y0)


def median_over(low: float, high: float) -> Selector:
    """Coordinate-wise median of the boxes for multipliers in [low, high]."""

    def select(prep: Prepared) -> BBox:
        return _median_box([c.box for c in prep.candidates if low <= c.multiplier <= high])

    return select


def median_flat_otsu(share: float) -> Selector:
    """Median box over the thresholds whose between-class variance is >= share of the best."""

    def select(prep: Prepared) -> BBox:
        values = prep.saliency.ravel()

        def between(threshold: float) -> float:
            above = values >= threshold
            w1 = float(above.mean())
            if w1 in (0.0, 1.0):
                return 0.0
            gap = float(values[above].mean() - values[~above].mean())
            return w1 * (1.0 - w1) * gap**2

        scored = [(c, between(c.threshold)) for c in prep.candidates]
        best = max(v for _, v in scored)
        return _median_box([c.box for c, v in scored if v >= share * best])

    return select


def snap_to_frame(gap_share: float, min_edges: int) -> Selector:
    """Otsu's box with edges within gap_share of the frame moved onto it (>= min_edges such)."""

    def select(prep: Prepared) -> BBox:
        box = at(1.0)(prep)
        x0, y0, x1, y1 = box.x, box.y, box.x + box.width, box.y + box.height
        near = (x0 <= gap_share, y0 <= gap_share, x1 >= 1 - gap_share, y1 >= 1 - gap_share)
        if sum(near) < min_edges:
            return box
        x0, y0 = (0.0 if near[0] else x0), (0.0 if near[1] else y0)
        x1, y1 = (1.0 if near[2] else x1), (1.0 if near[3] else y1)
        return BBox(x0, y0, x1 - x0, y1 - y0)

    return select


SELECTORS: dict[str, Selector] = {
    "otsu (production rule)": at(1.0),
    "oracle (hindsight)": oracle,
    **{f"fixed x{m}": at(m) for m in (0.84, 0.92, 1.06, 1.19)},
    "fisher": by_score(fisher),
    "centre-surround": by_score(centre_surround),
    "colour contrast": by_score(colour_contrast),
    "edge density": by_score(edge_density),
    "stability": by_score(stability),
    "fisher+stability (ranks)": by_score(rank_mix(fisher, stability)),
    "cs+edge+stability (ranks)": by_score(rank_mix(centre_surround, edge_density, stability)),
    "fisher, x0.8-1.25": by_score(fisher, NEAR_OTSU),
    "centre-surround, x0.8-1.25": by_score(centre_surround, NEAR_OTSU),
    "edge density, x0.8-1.25": by_score(edge_density, NEAR_OTSU),
    "median box x0.8-1.25": median_over(0.8, 1.25),
    "median box x0.6-1.6": median_over(0.6, 1.6),
    "median box, flat Otsu 0.95": median_flat_otsu(0.95),
    "median box, flat Otsu 0.85": median_flat_otsu(0.85),
    "snap 7 % edges, >=1": snap_to_frame(0.07, 1),
    "snap 10 % edges, >=3": snap_to_frame(0.10, 3),
}


def figures(preps: list[Prepared], select: Selector) -> tuple[float, float, float]:
    ious, bands = [], []
    for prep in preps:
        box = select(prep)
        ious.append(iou(box, prep.truth))
        bands.append(size_band(box.area) == size_band(prep.truth.area))
    corloc = sum(v >= CORLOC_IOU for v in ious) / len(ious)
    return corloc, statistics.fmean(ious), sum(bands) / len(bands)


def report(name: str, preps: list[Prepared], select: Selector) -> None:
    parts = []
    for label in ("all", "A", "B"):
        subset = [p for p in preps if label in ("all", p.half)]
        corloc, mean_iou, band = figures(subset, select)
        parts.append(f"{label} {corloc:.3f}/{mean_iou:.3f}/{band:.3f}")
    print(f"{name:<28} " + "   ".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--verbose", action="store_true", help="per photo: IoU per multiplier")
    args = parser.parse_args()
    preps = [p for p in map(prepare, load_samples(args.manifest)) if p is not None]
    print(f"{len(preps)} bird photos; {len(MULTIPLIERS)} candidates, Otsu x 0.5 ... x 2.0")
    print(f"{'rule':<28} CorLoc/mean IoU/size-band: all photos, half A, half B")
    for name, select in SELECTORS.items():
        report(name, preps, select)
    if args.verbose:
        print("IoU per multiplier:", " ".join(f"{m:.2f}" for m in MULTIPLIERS))
        for prep in preps:
            row = " ".join(f"{iou(c.box, prep.truth):.2f}" for c in prep.candidates)
            print(f"  {prep.half} truth {prep.truth.area:.2f}  {row}  {prep.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
