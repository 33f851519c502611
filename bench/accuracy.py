"""How well each detector mode finds the bird, and how well the score tells bird photos from others.

Usage: python bench/accuracy.py [--manifest PATH] [--detector MODE ...] [--verbose] [--json OUT]

Reads `manifest.csv` (file, width, height, bbox_x, bbox_y, bbox_w, bbox_h, n_birds, ...; boxes
normalized 0-1; n_birds 0 = no bird) and scores every photo through the production path
(`score_image`: decode at the detector's working size, detect, the five checks). For each mode
(default: learned, heuristic, and the trivial centred 0.7 x 0.7 box) it prints:
- CorLoc (share of bird photos whose box has IoU >= 0.5 with the truth), mean IoU, size-band
  agreement (< 15 % / 15-80 % / > 80 % of the image);
- bird-vs-no-bird AUC of the overall score, the share of no-bird photos scored "low", the share of
  bird photos called "no bird", and the AUC of the presence probability where the mode has one;
- CPU ms per image, decode included;
each on all photos and on the two halves of a species split (half A: five species, half B: the
other five; the no-bird photos count in both halves), so a figure that holds on one half only
shows. `--counting` adds constructed pictures of 1-5 separated birds (crops of the dev photos'
boxes, pasted on a blurred photo background at test time; nothing is saved) and reports how often
each mode counts them right.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from backfill_quality.config import Thresholds, parse_detector  # noqa: E402
from backfill_quality.models import BBox, Subject  # noqa: E402
from backfill_quality.scoring.detectors.base import Detection, Detector  # noqa: E402
from backfill_quality.scoring.detectors.factory import load_detector  # noqa: E402
from backfill_quality.scoring.imaging import WORK_SIZE  # noqa: E402
from backfill_quality.scoring.score import score_image  # noqa: E402

DEFAULT_MANIFEST = REPO_ROOT.parent / "shared" / "data" / "birds-dev" / "manifest.csv"
DEFAULT_MODES = ("learned", "heuristic", "centred")
BASELINE_BOX = BBox(0.15, 0.15, 0.7, 0.7)
SMALL_AREA, LARGE_AREA = 0.15, 0.80
CORLOC_IOU = 0.5
SPLIT_A = (
    "Black_Footed_Albatross",
    "Crested_Auklet",
    "Laysan_Albatross",
    "Parakeet_Auklet",
    "Rhinoceros_Auklet",
)
"""Half A of the species split; the other five species of birds-dev are half B."""


class CentredBox:
    """The trivial baseline: a centred 0.7 x 0.7 box on every photo, one bird, no presence."""

    name = "centred"
    work_size = WORK_SIZE

    def detect(self, rgb: NDArray[np.uint8]) -> Detection:
        return Detection(Subject(BASELINE_BOX, 1, 1.0, 0.0), presence=None)


@dataclass(frozen=True, slots=True)
class Photo:
    file: str
    truth: BBox | None
    data: bytes

    @property
    def half(self) -> str:
        return "A" if any(f"_{name}_" in self.file for name in SPLIT_A) else "B"


@dataclass(frozen=True, slots=True)
class Result:
    photo: Photo
    subject: Subject | None
    presence: float | None
    score: int
    category: str
    cpu_ms: float


@dataclass(frozen=True, slots=True)
class Figures:
    birds: int
    no_birds: int
    corloc: float
    mean_iou: float
    size_band: float
    score_auc: float
    no_bird_low: float
    bird_called_no_bird: float
    presence_auc: float | None
    cpu_ms: float


def iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two normalized boxes."""
    inter_w = max(0.0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    inter_h = max(0.0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    inter = inter_w * inter_h
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def size_band(area: float) -> int:
    return 0 if area < SMALL_AREA else (2 if area > LARGE_AREA else 1)


def auc(positives: list[float], negatives: list[float]) -> float:
    """Probability that a random positive ranks above a random negative (ties count half)."""
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def load_photos(manifest: Path) -> list[Photo]:
    photos = []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            truth = None
            if row["bbox_w"]:
                truth = BBox(*(float(row[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")))
            photos.append(Photo(row["file"], truth, (manifest.parent / row["file"]).read_bytes()))
    return photos


def run_mode(photos: list[Photo], detector: Detector, *, verbose: bool) -> list[Result]:
    thresholds = Thresholds()
    score_image(photos[0].data, thresholds, detector)  # warm-up
    results = []
    for photo in photos:
        start = time.process_time()
        analysis = score_image(photo.data, thresholds, detector)
        cpu_ms = (time.process_time() - start) * 1000
        m = analysis.measurements
        result = Result(photo, m.subject, m.presence, analysis.score, analysis.category, cpu_ms)
        results.append(result)
        if verbose:
            overlap = iou(m.subject.bbox, photo.truth) if m.subject and photo.truth else 0.0
            print(f"  {photo.file:55s} IoU {overlap:4.2f} score {analysis.score:3d} {m.presence}")
    return results


def figures(results: list[Result]) -> Figures:
    birds = [r for r in results if r.photo.truth is not None]
    empty = [r for r in results if r.photo.truth is None]
    overlaps, bands = [], []
    for r in birds:
        truth = r.photo.truth
        assert truth is not None
        overlaps.append(iou(r.subject.bbox, truth) if r.subject else 0.0)
        found = r.subject.bbox.area if r.subject else 0.0
        bands.append(size_band(found) == size_band(truth.area))
    presence_auc = None
    if all(r.presence is not None for r in results):
        presence_auc = auc(
            [r.presence for r in birds if r.presence is not None],
            [r.presence for r in empty if r.presence is not None],
        )
    return Figures(
        birds=len(birds),
        no_birds=len(empty),
        corloc=sum(v >= CORLOC_IOU for v in overlaps) / len(birds),
        mean_iou=statistics.fmean(overlaps),
        size_band=sum(bands) / len(birds),
        score_auc=auc([r.score for r in birds], [r.score for r in empty]),
        no_bird_low=sum(r.category == "low" for r in empty) / len(empty) if empty else 0.0,
        bird_called_no_bird=sum(r.subject is None for r in birds) / len(birds),
        presence_auc=presence_auc,
        cpu_ms=statistics.fmean(r.cpu_ms for r in results),
    )


def print_figures(label: str, f: Figures) -> None:
    presence = "  -  " if f.presence_auc is None else f"{f.presence_auc:.3f}"
    print(
        f"{label:<22} {f.birds:>4}/{f.no_birds:<3} CorLoc {f.corloc:.3f}  mean IoU {f.mean_iou:.3f}"
        f"  size-band {f.size_band:.3f}  score AUC {f.score_auc:.3f}  no-bird low "
        f"{f.no_bird_low:.3f}  bird->none {f.bird_called_no_bird:.3f}  presence AUC {presence}"
        f"  {f.cpu_ms:5.1f} ms CPU"
    )


def make_detector(mode: str) -> Detector:
    return CentredBox() if mode == "centred" else load_detector(parse_detector(mode), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--detector", action="append", dest="modes", metavar="MODE")
    parser.add_argument("--counting", action="store_true", help="also constructed flocks")
    parser.add_argument("--verbose", action="store_true", help="one line per photo")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    if not args.manifest.is_file():
        print(f"manifest not found: {args.manifest}", file=sys.stderr)
        return 2
    photos = load_photos(args.manifest)
    birds = sum(p.truth is not None for p in photos)
    print(f"{args.manifest}: {birds} bird photos, {len(photos) - birds} without a bird")
    report: dict[str, dict[str, object]] = {}
    for mode in args.modes or DEFAULT_MODES:
        results = run_mode(photos, make_detector(mode), verbose=args.verbose)
        by_half = {
            half: [r for r in results if r.photo.truth is None or r.photo.half == half]
            for half in ("A", "B")
        }
        report[mode] = {"all": asdict(figures(results))}
        print_figures(mode, figures(results))
        for half, subset in by_half.items():
            report[mode][half] = asdict(figures(subset))
            print_figures(f"  half {half}", figures(subset))
        if args.counting:
            from bench.flocks import count_accuracy

            counts = count_accuracy(photos, make_detector(mode))
            report[mode]["counting"] = counts
            print(f"  counting: {counts}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
