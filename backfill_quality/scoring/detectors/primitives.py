"""Image primitives of the heuristic detector: sRGB to Lab, Otsu's threshold, 4-connected labels."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatMap = NDArray[np.float32]
BoolMap = NDArray[np.bool_]


_RGB_TO_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
    dtype=np.float32,
)
_WHITE_XYZ = np.array([0.9505, 1.0, 1.089], dtype=np.float32)


def to_lab(srgb: FloatMap) -> FloatMap:
    """sRGB (0-1) to CIE Lab (D65)."""
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE_XYZ
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.stack(
        [
            116.0 * f[..., 1] - 16.0,
            500.0 * (f[..., 0] - f[..., 1]),
            200.0 * (f[..., 1] - f[..., 2]),
        ],
        axis=-1,
    )
    result: FloatMap = lab.astype(np.float32)
    return result


def otsu_threshold(values: FloatMap, bins: int = 64) -> float:
    """Otsu's threshold of the values.

    The histogram is np.histogram's, counted from its edges by their definition (half-open
    bins, the last one closed), which skips most of np.histogram's overhead.
    """
    edges = np.histogram_bin_edges(values, bins=bins)
    bin_index = np.searchsorted(edges, values.ravel(), side="right") - 1
    hist = np.bincount(np.minimum(bin_index, bins - 1), minlength=bins)
    weights = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2.0
    w0 = np.cumsum(weights)
    w1 = w0[-1] - w0
    m0 = np.cumsum(weights * centres)
    mean0 = m0 / np.maximum(w0, 1e-9)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1e-9)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def label_components(mask: BoolMap) -> NDArray[np.int32]:
    """4-connected component labels: 0 = background, a component's label is 1 + the flat index
    of its first cell in raster order (so labels sort like the components' first cells).

    Union-find over the horizontal runs of each row: a run joins the runs of the row above that
    share a column with it; the root is the earliest run, whose start is the component's first
    cell. Labels are painted back as +label/-label steps at each run's ends, summed along rows.
    """
    rows, cols = mask.shape
    steps = np.zeros((rows, cols + 2), dtype=np.int8)
    steps[:, 1:-1] = mask
    changes = np.diff(steps, axis=1)
    run_rows, run_starts = np.nonzero(changes == 1)
    run_ends = np.nonzero(changes == -1)[1]
    roots = run_roots(run_rows.tolist(), run_starts.tolist(), run_ends.tolist())
    run_labels = (run_rows * cols + run_starts + 1)[roots].astype(np.int32)
    painted = np.zeros((rows, cols + 1), dtype=np.int32)
    painted[run_rows, run_starts] = run_labels
    painted[run_rows, run_ends] = -run_labels
    labels: NDArray[np.int32] = np.cumsum(painted[:, :cols], axis=1, dtype=np.int32)
    return labels


def run_roots(run_rows: list[int], starts: list[int], ends: list[int]) -> list[int]:
    """For each run (raster order, end exclusive), the index of its component's earliest run."""
    parent = list(range(len(starts)))

    def find(run: int) -> int:
        while parent[run] != run:
            parent[run] = parent[parent[run]]
            run = parent[run]
        return run

    above_first = above_end = row_first = 0
    for run, row in enumerate(run_rows):
        if run == 0 or row != run_rows[run - 1]:
            touches = run > 0 and run_rows[run - 1] == row - 1
            above_first, above_end = (row_first, run) if touches else (run, run)
            row_first = run
        while above_first < above_end and ends[above_first] <= starts[run]:
            above_first += 1  # runs above that end before this one cannot touch later ones
        other = above_first
        while other < above_end and starts[other] < ends[run]:
            first, second = sorted((find(run), find(other)))
            parent[second] = first
            other += 1
    return [find(run) for run in range(len(starts))]
