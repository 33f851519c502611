"""Finding the bird: box, count, visible ratio and confidence from the RGB working copy.

Method. A uniform frame drawn around the photo (three or more sides) is trimmed first, so it is
not taken for the background. The picture is reduced (block means) to a coarse map of at most
MAP_LONG_SIDE cells on its long side, in CIE Lab; coarse cells average background texture
(grass, rocks, ripples) into its mean colour. Each cell's saliency is its colour distinctness
from the frame's border, the background model (for each side, the Lab distance to the K-th
nearest colour of that side's strip; the four sides are averaged so a subject touching one side
still stands out against the other three; compressed as d / (d + COLOUR_HALF_DISTANCE) so a
vivid beak does not outshine the rest of the bird), times a centre prior falling linearly with
squared distance from the centre to 1 - CENTRE_WEIGHT in the corners. The unsmoothed map is
thresholded with Otsu's method (never below MIN_THRESHOLD_SHARE of the peak), 4-connected
components are labelled, the main subject is the component with the largest saliency mass and
its box is the component's extent, unless a part of it (Otsu's split of the component's own
colour distances) is CORE_DISTINCTNESS_RATIO times as distinct from the border as the rest: then
that part is the subject (a small vivid bird inside background that also differs from the
border). Other components count as further birds only when comparable in mass and clearly
separated; the visible ratio comes from the subject's contact with each edge relative to its
extent along that edge; "no subject" is returned when nothing differs
from the border in colour (MIN_COLOUR_DISTANCE, MIN_SUBJECT_DISTANCE) or the peak does not stand
above the median (MIN_PEAK_RATIO). Measured on the development photos and dropped (no gain on
both halves of a species split, or a loss): a focus cue, geodesic and minimum-barrier distances
from the border, k-means border clusters with spread-normalized distances, a foreground/
background colour re-classification, mask opening, best-scoring rectangles, percentile boxes,
Gaussian centre priors, map smoothing; choosing among the boxes of several thresholds (Otsu x
0.5-2) by a box score (Fisher separation, centre-surround or ring colour contrast, edge density,
stability) or taking their median box, snapping box edges near the frame onto it, filling
holes or merging components across 1-cell gaps, averaging 16- and 32-cell maps, adding global
colour contrast (Cheng et al.), dropping the border side most like the centre, sub-cell box
edges, and full-frame boxes for regions touching several sides (see bench/detector_lab.py:
choosing the best of 25 thresholds with hindsight would reach CorLoc 0.97 but size-band
agreement only 0.88; no rule without the truth came near; birds filling the frame share the
border's colours, so a colour-distinctness map cannot tell them from the background). The
detector finds the most distinct subject, not specifically a bird (a raccoon is found like one).
Pure NumPy, deterministic, ~1.5 ms CPU per birds-dev working copy (bench/detector_speed.py, which
also checks that a speed-up leaves every output bit-identical).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from backfill_quality.models import BBox, Subject
from backfill_quality.scoring.detectors.base import Detection
from backfill_quality.scoring.detectors.primitives import (
    BoolMap,
    FloatMap,
    label_components,
    otsu_threshold,
    to_lab,
)
from backfill_quality.scoring.imaging import WORK_SIZE

MAP_LONG_SIDE = 32
"""Cells on the long side of the analysis map (8-px cells on the 256-px working copy): coarse
enough that background texture (grass, rocks, ripples) averages out to its mean colour, fine
enough for a bird of 5 % of the frame. Measured on birds-dev: 64 cells gave the same CorLoc
(0.79 vs 0.80) at four times the cost (~12 ms), 48 cells gave 0.74."""
MIN_MAP_CELLS = 3
"""No subject in a picture too thin to give this many cells across (a 7 x 300 strip)."""
FRAME_MAX_SHARE = 0.1
"""A uniform frame (a border drawn around the photo) is at most this share of each side."""
FRAME_TOLERANCE = 12
"""A frame line's pixels stay within this many levels (0-255, per channel) of its median..."""
FRAME_UNIFORM_SHARE = 0.9
"""...for at least this share of the line (a signature written on the frame is tolerated)."""
FRAME_MIN_SIDES = 3
"""Frames are trimmed only when found on this many sides: a uniform sky along one edge is
scenery, not a frame."""
BORDER_SHARE = 0.06
"""Width of each border strip used as the background model, as a share of the map side."""
BORDER_SAMPLES = 48
"""At most this many cells per side are kept as background colour samples."""
NEAREST_K = 4
"""Distance to the K-th nearest border colour (ignores a few stray foreground cells)."""
COLOUR_HALF_DISTANCE = 25.0
"""Lab distance that counts as half-distinct: distances are compressed as d / (d + this), so a
vivid beak does not outshine the rest of a clearly distinct bird."""
CENTRE_WEIGHT = 0.9
"""How much the centre prior lowers the corners (0: no prior, 1: corners weigh 0)."""
MIN_THRESHOLD_SHARE = 0.25
"""The binary threshold is never below this share of the map's peak."""
MIN_PEAK_RATIO = 1.5
"""No subject unless the peak saliency is at least this many times the map's median."""
MIN_COLOUR_DISTANCE = 6.0
"""No subject unless some cell differs from the border by this Lab distance (about 2-3 JND)."""
MIN_SUBJECT_DISTANCE = 6.0
"""No subject unless the 75th percentile of the main component's Lab distance to the border
reaches this: featureless generated frames reach at most 2.8; the faintest real bird in
birds-dev (a dark auklet on dark rock) 7.4, the next 9.9."""
SECOND_BIRD_MASS_SHARE = 0.35
"""Another component counts as a bird when its saliency mass is >= this share of the main one."""
SECOND_BIRD_GAP_SHARE = 0.04
"""...and it is separated from the main one by at least this share of the map's long side."""
CORE_DISTINCTNESS_RATIO = 4.0
"""A part of the main component whose mean Lab distance to the border is at least this many
times the rest's is taken as the subject, the rest as background that merely differs from the
border (a small vivid bird on a busy, colourful background). Measured: at 4, no birds-dev photo
changes and generated birds of 1.4 % of the frame are found in 4 of 10 pictures instead of 0;
at 3 or below, real birds get cut down to their most vivid part (CorLoc 0.76 at 3)."""
MIN_CORE_SPLIT_CELLS = 8
"""A main component of fewer cells is not split into core and rest."""
BOX_MARGIN_CELLS = 0.5
"""Margin added around the component's cells (half a cell: cell centres -> cell edges)."""


def detect_subject(rgb: NDArray[np.uint8]) -> Subject | None:
    """The main subject of an (h, w, 3) uint8 image, or None when nothing stands out."""
    if rgb.ndim != 3 or rgb.shape[0] < 4 or rgb.shape[1] < 4:
        return None
    top, bottom, left, right = _frame_widths(rgb)
    height, width = rgb.shape[:2]
    inner = rgb[top : height - bottom, left : width - right]
    subject = _detect_unframed(inner)
    if subject is None or inner.shape[:2] == rgb.shape[:2]:
        return subject
    box, (inner_height, inner_width) = subject.bbox, inner.shape[:2]
    bbox = BBox(
        x=(left + box.x * inner_width) / width,
        y=(top + box.y * inner_height) / height,
        width=box.width * inner_width / width,
        height=box.height * inner_height / height,
    )
    return replace(subject, bbox=bbox)


def _detect_unframed(rgb: NDArray[np.uint8]) -> Subject | None:
    """The detector proper, on a picture without a drawn frame."""
    lab = _cell_lab(rgb)
    if min(lab.shape[:2]) < MIN_MAP_CELLS:
        return None
    colour = _border_distance(lab)
    if float(colour.max()) < MIN_COLOUR_DISTANCE:
        return None
    saliency = _saliency(colour)
    peak, median = float(saliency.max()), float(np.median(saliency))
    if peak <= 0.0 or peak < MIN_PEAK_RATIO * median:
        return None
    mask = saliency >= max(otsu_threshold(saliency), MIN_THRESHOLD_SHARE * peak)
    return _subject_from_components(label_components(mask), saliency, colour, median)


def _frame_widths(rgb: NDArray[np.uint8]) -> tuple[int, int, int, int]:
    """Pixels to trim (top, bottom, left, right) for a uniform frame drawn around the photo.

    A frame would otherwise be the background model and make the whole photo look distinct.
    One pixel more than the uniform run is trimmed (the anti-aliased transition).
    """
    across = rgb.transpose(1, 0, 2)
    outer_rows = np.count_nonzero(_is_uniform(rgb[[0, -1]]))
    if outer_rows == 0 or (
        outer_rows + np.count_nonzero(_is_uniform(across[[0, -1]])) < FRAME_MIN_SIDES
    ):
        return (0, 0, 0, 0)  # the common case, decided from the four outermost lines
    sides = (rgb, rgb[::-1], across, across[::-1])
    runs = [_uniform_run(side, int(FRAME_MAX_SHARE * side.shape[0])) for side in sides]
    if sum(run > 0 for run in runs) < FRAME_MIN_SIDES:
        return (0, 0, 0, 0)
    top, bottom, left, right = (run + 1 if run else 0 for run in runs)
    return (top, bottom, left, right)


def _is_uniform(lines: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Per line: are nearly all its pixels close to the line's median colour?

    In halves of a level: twice the median is the sum of the two middle values (one value
    twice for an odd length), so no float median is needed.
    """
    values = lines.astype(np.int16)
    length = values.shape[1]
    middle = sorted({(length - 1) // 2, length // 2})
    ordered = np.partition(values, middle, axis=1)
    twice_medians = ordered[:, (length - 1) // 2] + ordered[:, length // 2]
    distance = np.abs(2 * values - twice_medians[:, None, :])
    farthest = np.maximum(np.maximum(distance[..., 0], distance[..., 1]), distance[..., 2])
    uniform: NDArray[np.bool_] = (
        np.count_nonzero(farthest <= 2 * FRAME_TOLERANCE, axis=1) / length >= FRAME_UNIFORM_SHARE
    )
    return uniform


def _uniform_run(lines: NDArray[np.uint8], max_lines: int) -> int:
    """How many lines from the start are uniform; 0 unless the run ends within max_lines."""
    if max_lines < 1:
        return 0
    uniform = _is_uniform(lines[: max_lines + 1])
    run = len(uniform) if uniform.all() else int(np.argmin(uniform))
    return run if run <= max_lines else 0


def _cell_lab(rgb: NDArray[np.uint8]) -> FloatMap:
    """CIE Lab colour per map cell (block means of the working copy)."""
    height, width = rgb.shape[:2]
    step = max(1, -(-max(height, width) // MAP_LONG_SIDE))
    rows, cols = height // step, width // step
    trimmed = rgb[: rows * step, : cols * step].reshape(rows, step, cols * step * 3)
    exact_type = np.uint16 if 255 * step * step <= np.iinfo(np.uint16).max else np.uint32
    row_sums = trimmed.sum(axis=1, dtype=exact_type).reshape(rows, cols, step, 3)
    sums = row_sums[:, :, 0].copy()
    for offset in range(1, step):  # faster than .sum(axis=2) over a short, strided axis
        sums += row_sums[:, :, offset]
    cells = sums.astype(np.float32) / (255.0 * step * step)
    return to_lab(cells)


def _border_distance(lab: FloatMap) -> FloatMap:
    """Mean over the four sides of the distance to the K-th nearest border colour.

    Squared distances as |a|^2 + |b|^2 - 2 a.b, clamped at 0 (rounding) before the selection:
    the K-th smallest of the clamped values is the clamped K-th smallest, and non-negative
    float32 values order like their bit patterns read as int32, which select faster.
    """
    rows, cols = lab.shape[:2]
    strip = max(1, round(BORDER_SHARE * max(rows, cols)))
    sides = (lab[:strip], lab[-strip:], lab[:, :strip], lab[:, -strip:])
    flat = lab.reshape(-1, 3)
    flat_sq = _squared_norms(flat)[:, None]
    total = np.zeros(rows * cols, dtype=np.float32)
    for side in sides:
        samples = side.reshape(-1, 3)
        samples = samples[:: max(1, len(samples) // BORDER_SAMPLES)]
        squared = np.add(_squared_norms(samples)[None, :], flat_sq)
        products = flat @ samples.T
        products *= 2.0
        squared -= products
        np.maximum(squared, 0.0, out=squared)
        k = min(NEAREST_K, squared.shape[1]) - 1
        squared.view(np.int32).partition(k, axis=1)
        total += np.sqrt(squared[:, k])
    total *= 0.25  # the mean of the four sides (exact: a power of two)
    distance: FloatMap = total.reshape(rows, cols)
    return distance


def _squared_norms(colours: FloatMap) -> FloatMap:
    """Per row of an (n, 3) array: x0^2 + x1^2 + x2^2, summed in that order like .sum(axis=1)."""
    squares = colours * colours
    norms: FloatMap = squares[:, 0] + squares[:, 1]
    norms += squares[:, 2]
    return norms


def _saliency(colour: FloatMap) -> FloatMap:
    """Compressed colour distinctness times the centre prior (not smoothed)."""
    rows, cols = colour.shape
    ys = (np.arange(rows, dtype=np.float32) + 0.5) / rows - 0.5
    xs = (np.arange(cols, dtype=np.float32) + 0.5) / cols - 0.5
    prior = 1.0 - CENTRE_WEIGHT * (ys[:, None] ** 2 + xs[None, :] ** 2) / 0.5
    colour = colour / (colour + COLOUR_HALF_DISTANCE)
    result: FloatMap = (colour * prior).astype(np.float32)
    return result


def _subject_from_components(
    labels: NDArray[np.int32], saliency: FloatMap, colour: FloatMap, median: float
) -> Subject | None:
    """The main component (largest saliency mass) as a Subject, None if it is not distinct."""
    masses = np.bincount(labels.ravel(), weights=saliency.ravel()).astype(np.float64, copy=False)
    masses[0] = 0.0
    if masses.max() <= 0.0:
        return None
    main_id = int(np.argmax(masses))  # the first label on ties, labels sort like components
    main = labels == main_id
    if not _quantile_reaches(colour[main], 0.75, MIN_SUBJECT_DISTANCE):
        return None
    ys, xs = np.nonzero(main)
    count = 1 + _other_birds(labels, masses, main_id, ys, xs)
    subject = _distinct_core(main, colour)
    if subject is not None:  # a small, vivid bird inside background that differs from the border
        ys, xs = np.nonzero(subject)
    else:
        subject = main
    peak = float(saliency.max())
    confidence = _clip(1.0 - median / peak, 0.0, 1.0)
    return Subject(
        bbox=_cells_box(ys, xs, subject.shape),
        count=count,
        visible_ratio=_visible_ratio(subject, ys, xs),
        confidence=confidence,
    )


def _distinct_core(main: BoolMap, colour: FloatMap) -> BoolMap | None:
    """The part of the main component far more distinct from the border than the rest of it
    (CORE_DISTINCTNESS_RATIO), or None: Otsu's split of the component's own colour distances,
    the most distinct connected piece above it (by total distance)."""
    values = colour[main]
    if values.size < MIN_CORE_SPLIT_CELLS:
        return None
    above = main & (colour >= otsu_threshold(values))
    rest_mask = main & ~above
    if not above.any() or not rest_mask.any():
        return None
    pieces = label_components(above)
    weights = np.bincount(pieces.ravel(), weights=colour.ravel())
    weights[0] = 0.0
    core: BoolMap = pieces == int(np.argmax(weights))
    rest = main & ~core
    if float(colour[core].mean()) < CORE_DISTINCTNESS_RATIO * float(colour[rest].mean()):
        return None
    return core


def _quantile_reaches(values: FloatMap, quantile: float, threshold: float) -> bool:
    """np.percentile(values, 100 * quantile) >= threshold, mostly without np.percentile.

    Its linear interpolation lies between the two order statistics around the quantile's
    position, so those two alone decide unless the threshold falls between them.
    """
    position = (values.size - 1) * quantile
    below, above = int(np.floor(position)), int(np.ceil(position))
    ordered = np.partition(values, sorted({below, above}))
    if ordered[below] >= threshold:
        return True
    if ordered[above] < threshold:
        return False
    return float(np.percentile(values, 100 * quantile)) >= threshold


def _box(mask: BoolMap) -> BBox:
    """The box around the mask's cells, normalized (bench/detector_lab.py uses it)."""
    ys, xs = np.nonzero(mask)
    return _cells_box(ys, xs, mask.shape)


def _cells_box(ys: NDArray[np.intp], xs: NDArray[np.intp], shape: tuple[int, ...]) -> BBox:
    """The box around the cells at (ys, xs) of a map of this shape, normalized."""
    rows, cols = shape
    top = max(0.0, (ys.min() + 0.5 - BOX_MARGIN_CELLS - 0.0) / rows)
    bottom = min(1.0, (ys.max() + 0.5 + BOX_MARGIN_CELLS) / rows)
    left = max(0.0, (xs.min() + 0.5 - BOX_MARGIN_CELLS) / cols)
    right = min(1.0, (xs.max() + 0.5 + BOX_MARGIN_CELLS) / cols)
    return BBox(x=float(left), y=float(top), width=float(right - left), height=float(bottom - top))


def _other_birds(
    labels: NDArray[np.int32],
    masses: NDArray[np.float64],
    main_id: int,
    main_ys: NDArray[np.intp],
    main_xs: NDArray[np.intp],
) -> int:
    """Other components comparable in mass to the main one (at main_ys, main_xs) and apart."""
    main_mass = float(masses[main_id])
    gap_cells = SECOND_BIRD_GAP_SHARE * max(labels.shape)
    count = 0
    for label in np.flatnonzero(masses >= SECOND_BIRD_MASS_SHARE * main_mass).tolist():
        if label == main_id:
            continue
        ys, xs = np.nonzero(labels == label)
        gap_y = max(0, max(ys.min() - main_ys.max(), main_ys.min() - ys.max()) - 1)
        gap_x = max(0, max(xs.min() - main_xs.max(), main_xs.min() - xs.max()) - 1)
        if max(gap_y, gap_x) >= gap_cells:
            count += 1
    return count


def _visible_ratio(mask: BoolMap, ys: NDArray[np.intp], xs: NDArray[np.intp]) -> float:
    """Share of the subject inside the frame, estimated from its contact with each edge.

    A contact as long as the component's extent along that edge means the subject is cut
    through its widest part (about half missing); a short contact means a slight crop.
    (ys, xs) are the mask's cells.
    """
    height = ys.max() - ys.min() + 1
    width = xs.max() - xs.min() + 1
    contacts = (
        (mask[0].sum(), width),
        (mask[-1].sum(), width),
        (mask[:, 0].sum(), height),
        (mask[:, -1].sum(), height),
    )
    visible = 1.0
    for contact, extent in contacts:
        if contact > 0:
            visible *= 1.0 - 0.5 * min(1.0, contact / extent) ** 1.5
    return _clip(float(visible), 0.05, 1.0)


def _clip(value: float, low: float, high: float) -> float:
    """np.clip for one finite float, without its per-call overhead."""
    return min(max(value, low), high)


class HeuristicDetector:
    """The colour-distinctness detector behind the common interface: fast, no models, and honest
    that it finds the most distinct subject, not a bird (it cannot say whether one is there)."""

    name = "heuristic"
    work_size = WORK_SIZE

    def detect(self, rgb: NDArray[np.uint8]) -> Detection:
        return Detection(subject=detect_subject(rgb), presence=None)
