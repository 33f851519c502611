"""Subject-detection accuracy on real photographs with ground-truth boxes.

Usage: python bench/accuracy.py [--manifest PATH] [--verbose]

Reads `manifest.csv` (file, width, height, bbox_x, bbox_y, bbox_w, bbox_h, n_birds, ...; boxes
normalized 0-1), decodes every image through `decode_image` exactly like production, runs
`detect_subject`, and prints CorLoc (share of bird images with IoU >= 0.5), mean IoU, size-band
agreement (< 15 % / 15-80 % / > 80 % of the image), the no-bird behaviour, timings, and the same
figures for the trivial centred 0.7 x 0.7 box. The detector's figures are also given per half of
a species split (half A: the species the detector was tuned on, half B: the others, a check
against overfitting to 90 photos).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from backfill_quality.config import Thresholds  # noqa: E402
from backfill_quality.models import BBox, Subject  # noqa: E402
from backfill_quality.scoring.detectors.heuristic import detect_subject  # noqa: E402
from backfill_quality.scoring.imaging import WorkingImage, decode_image  # noqa: E402

DEFAULT_MANIFEST = REPO_ROOT.parent / "shared" / "data" / "birds-dev" / "manifest.csv"
BASELINE_BOX = BBox(0.15, 0.15, 0.7, 0.7)
SMALL_AREA, LARGE_AREA = 0.15, 0.80
CORLOC_IOU = 0.5
TUNING_SPECIES = (
    "Black_Footed_Albatross",
    "Crested_Auklet",
    "Laysan_Albatross",
    "Parakeet_Auklet",
    "Rhinoceros_Auklet",
)
"""Half A of the species split (tuning); the other five species of birds-dev are half B."""

Detector = Callable[[WorkingImage], Subject | None]


@dataclass(frozen=True, slots=True)
class Sample:
    file: str
    truth: BBox | None
    image: WorkingImage
    decode_ms: float


@dataclass(frozen=True, slots=True)
class Report:
    corloc: float
    mean_iou: float
    band_agreement: float
    no_subject_on_empty: int
    empty_total: int
    detect_ms: float
    """Wall-clock time per image."""
    detect_cpu_ms: float
    """Process CPU time per image: less inflated than wall time when the machine is busy."""


def iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two normalized boxes."""
    inter_w = max(0.0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    inter_h = max(0.0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    inter = inter_w * inter_h
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def size_band(area: float) -> int:
    return 0 if area < SMALL_AREA else (2 if area > LARGE_AREA else 1)


def load_samples(manifest: Path) -> list[Sample]:
    samples = []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            data = (manifest.parent / row["file"]).read_bytes()
            start = time.perf_counter()
            image = decode_image(data)
            decode_ms = (time.perf_counter() - start) * 1000
            truth = None
            if row["bbox_w"]:
                truth = BBox(*(float(row[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")))
            samples.append(Sample(row["file"], truth, image, decode_ms))
    return samples


def evaluate(samples: list[Sample], detector: Detector, *, verbose: bool = False) -> Report:
    ious, bands, empty_none, timings, cpu_timings = [], [], 0, [], []
    for sample in samples:
        start, cpu_start = time.perf_counter(), time.process_time()
        subject = detector(sample.image)
        timings.append((time.perf_counter() - start) * 1000)
        cpu_timings.append((time.process_time() - cpu_start) * 1000)
        if sample.truth is None:
            empty_none += subject is None
            continue
        score = iou(subject.bbox, sample.truth) if subject else 0.0
        ious.append(score)
        found_area = subject.bbox.area if subject else 0.0
        bands.append(size_band(found_area) == size_band(sample.truth.area))
        if verbose:
            print(
                f"  {score:4.2f} {'ok ' if score >= CORLOC_IOU else 'MISS'} {sample.file} {subject}"
            )
    empty_total = sum(s.truth is None for s in samples)
    return Report(
        corloc=sum(v >= CORLOC_IOU for v in ious) / len(ious),
        mean_iou=statistics.fmean(ious),
        band_agreement=sum(bands) / len(bands),
        no_subject_on_empty=empty_none,
        empty_total=empty_total,
        detect_ms=statistics.fmean(timings),
        detect_cpu_ms=statistics.fmean(cpu_timings),
    )


def split_halves(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(half A, half B) of the bird photos by species; the no-bird photos go with neither."""
    birds = [s for s in samples if s.truth is not None]
    half_a = [s for s in birds if any(f"_{name}_" in s.file for name in TUNING_SPECIES)]
    return half_a, [s for s in birds if s not in half_a]


def baseline(_: WorkingImage) -> Subject:
    return Subject(BASELINE_BOX, count=1, visible_ratio=1.0, confidence=0.0)


def production(image: WorkingImage) -> Subject | None:
    return detect_subject(image.rgb)


def print_report(name: str, report: Report) -> None:
    print(
        f"{name:<22} CorLoc {report.corloc:.3f}  mean IoU {report.mean_iou:.3f}  "
        f"size-band {report.band_agreement:.3f}  no-subject on no-bird "
        f"{report.no_subject_on_empty}/{report.empty_total}  "
        f"detect {report.detect_ms:.2f} ms/image ({report.detect_cpu_ms:.2f} ms CPU)"
    )


def print_empty_scores(manifest: Path, samples: list[Sample]) -> None:
    """Overall scores the no-bird photos get through the production scoring path."""
    try:
        from backfill_quality.scoring.score import score_image
    except ImportError:
        print("no-bird overall scores: backfill_quality.scoring.score not available")
        return
    scores = []
    for sample in samples:
        if sample.truth is None:
            analysis = score_image((manifest.parent / sample.file).read_bytes(), Thresholds())
            scores.append(f"{analysis.score}({analysis.category[0]})")
    print("no-bird overall scores:", " ".join(scores))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--verbose", action="store_true", help="one line per bird image")
    args = parser.parse_args()
    if not args.manifest.is_file():
        print(f"manifest not found: {args.manifest}", file=sys.stderr)
        return 2
    samples = load_samples(args.manifest)
    birds = sum(s.truth is not None for s in samples)
    print(f"{args.manifest}: {birds} bird photos, {len(samples) - birds} without a bird")
    print(
        f"decode: {statistics.fmean(s.decode_ms for s in samples):.2f} ms/image (to working copy)"
    )
    detect_subject(samples[0].image.rgb)  # warm-up
    print_report("detector", evaluate(samples, production, verbose=args.verbose))
    half_a, half_b = split_halves(samples)
    print_report("  half A (tuning)", evaluate(half_a, production))
    print_report("  half B (check)", evaluate(half_b, production))
    print_report("baseline centred 0.7", evaluate(samples, baseline))
    print_empty_scores(args.manifest, samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
