"""CPU time of each step of the learned detector, on one core, per image.

Usage: python bench/learned_speed.py [--photos DIR] [--repeat N]

Decodes every JPEG of DIR (default ../shared/data/birds-dev, else the demo photos) to the learned
detector's working copy, then times, as process CPU time per image (best of --repeat passes):
decode, NanoDet's boxes, the classifier on the whole picture alone, the classifier on a batch of
1 + k crops (k = 1..5), the whole detector, and score_image end to end (decode included). One
thread per session, as in the scoring processes when there is one per CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from backfill_quality.config import DetectorChoice, Thresholds  # noqa: E402
from backfill_quality.scoring.detectors.factory import (  # noqa: E402
    NANODET_MODEL,
    PRESENCE_MODEL,
    load_detector,
)
from backfill_quality.scoring.detectors.learned import WORK_SIZE  # noqa: E402
from backfill_quality.scoring.detectors.nanodet import NanoDet  # noqa: E402
from backfill_quality.scoring.detectors.presence import PresenceClassifier  # noqa: E402
from backfill_quality.scoring.detectors.runtime import open_shipped  # noqa: E402
from backfill_quality.scoring.imaging import decode_image  # noqa: E402
from backfill_quality.scoring.score import score_image  # noqa: E402

DEFAULT_PHOTOS = REPO_ROOT.parent / "shared" / "data" / "birds-dev"
DEMO_PHOTOS = REPO_ROOT / "backfill_quality" / "demo" / "photos"


def cpu_ms_per_item(items: list[object], step: Callable[[object], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for item in items:
            step(item)
        best = min(best, time.process_time() - start)
    return 1000 * best / len(items)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--photos", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = args.photos or (DEFAULT_PHOTOS if DEFAULT_PHOTOS.is_dir() else DEMO_PHOTOS)
    datas: list[object] = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
    detector = load_detector(DetectorChoice(), 1)
    presence = PresenceClassifier(open_shipped(PRESENCE_MODEL, threads=1))
    boxes = NanoDet(open_shipped(NANODET_MODEL, threads=1))
    rgbs: list[object] = [decode_image(d, work_size=WORK_SIZE).rgb for d in datas]  # type: ignore[arg-type]
    presence, boxes = detector._presence, detector._boxes
    thresholds = Thresholds()

    def rgb(item: object) -> NDArray[np.uint8]:
        assert isinstance(item, np.ndarray)
        return item

    print(f"{len(datas)} photos from {folder}, one thread, best of {args.repeat}")
    rows = [
        ("decode to the working copy", datas, lambda d: decode_image(d, work_size=WORK_SIZE)),
        ("NanoDet boxes (320 letterboxed)", rgbs, lambda r: boxes.boxes(rgb(r))),
        ("classifier, whole picture", rgbs, lambda r: presence.probabilities([rgb(r)])),
    ]
    for crops in range(1, 6):
        rows.append(
            (
                f"classifier, whole + {crops} crops",
                rgbs,
                lambda r, k=crops: presence.probabilities([rgb(r)] * (1 + k)),
            )
        )
    rows += [
        ("learned detector (all steps)", rgbs, lambda r: detector.detect(rgb(r))),
        ("score_image, decode included", datas, lambda d: score_image(d, thresholds, detector)),  # type: ignore[arg-type]
    ]
    for label, items, step in rows:
        print(f"  {label:<34} {cpu_ms_per_item(items, step, args.repeat):6.1f} ms CPU/image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
