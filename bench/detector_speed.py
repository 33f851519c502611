"""CPU time of `detect_subject` per image, and a check that its outputs did not change.

Usage: python bench/detector_speed.py [--record | --check] [--repeat N] [--reference PATH]
                                      [--baseline PATH]

Inputs: the working copy (`decode_image`) of every photo in birds-dev, generated birds and empty
scenes (`synthetic`, several seeds, sizes and boxes), the same pictures with a drawn frame (so
frame trimming runs), and a few odd arrays (flat, random noise, thin strips, tiny).

`--record` stores every output (exact floats) in the reference (default
`bench/out/detector-reference.json`, git-ignored); `--check` compares with it: "identical" when
every Subject is bit-identical, "equal after rounding" when only float last digits differ
(boxes, visible ratio and confidence within 1e-9, counts and None/not-None identical), else
lists the differing inputs and exits 1. Timing: process CPU time of one pass over all inputs,
best of `--repeat` (default 5), reported per image. `--baseline PATH` loads another version of
`subject.py` (e.g. a copy saved before a change) and times both, alternating passes, so a busy
shared machine slows them alike; the ratio is the figure to compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from backfill_quality.demo.synthetic import make_bird_image, make_empty_image  # noqa: E402
from backfill_quality.models import Subject  # noqa: E402
from backfill_quality.scoring.detectors.heuristic import detect_subject  # noqa: E402
from backfill_quality.scoring.imaging import decode_image  # noqa: E402

PHOTO_DIR = REPO_ROOT.parent / "shared" / "data" / "birds-dev"
DEFAULT_REFERENCE = REPO_ROOT / "bench" / "out" / "detector-reference.json"
TOLERANCE = 1e-9

Detector = Callable[[NDArray[np.uint8]], Subject | None]
Output = list[float] | None
"""[x, y, width, height, count, visible_ratio, confidence], or None for no subject."""

_SIZES = ((1600, 1200), (1200, 1600), (800, 600), (3000, 2000), (640, 640), (500, 280))
_BOXES = (
    ((0.3, 0.25, 0.4, 0.5),),
    ((0.05, 0.1, 0.15, 0.2),),
    ((0.1, 0.3, 0.25, 0.3), (0.6, 0.35, 0.25, 0.3)),
    ((-0.1, -0.1, 0.5, 0.5),),
    ((0.6, 0.5, 0.5, 0.6),),
    ((0.02, 0.02, 0.96, 0.96),),
)


def build_inputs() -> dict[str, NDArray[np.uint8]]:
    """Every input by name, in a fixed order."""
    inputs: dict[str, NDArray[np.uint8]] = {}
    for path in sorted(PHOTO_DIR.glob("*.jpg")):
        inputs[path.name] = decode_image(path.read_bytes()).rgb
    for seed in range(30):
        width, height = _SIZES[seed % len(_SIZES)]
        boxes = _BOXES[seed % len(_BOXES)]
        data = make_bird_image(seed=seed, width=width, height=height, birds=boxes)
        inputs[f"bird-{seed}-{width}x{height}"] = decode_image(data).rgb
    for seed in range(10):
        width, height = _SIZES[(seed + 1) % len(_SIZES)]
        data = make_empty_image(seed=seed, width=width, height=height)
        inputs[f"empty-{seed}-{width}x{height}"] = decode_image(data).rgb
    birds = [name for name in inputs if name.startswith("bird-")]
    for index, name in enumerate(birds[:8]):
        widths = ((6, 6), (5, 5), (0, 0)) if index % 2 else ((3, 9), (0, 4), (0, 0))
        colour = 255 if index % 4 == 1 else 0
        inputs[f"framed-{name}"] = np.pad(inputs[name], widths, constant_values=colour)
    inputs.update(_odd_inputs())
    return inputs


def _odd_inputs() -> dict[str, NDArray[np.uint8]]:
    rng = np.random.default_rng(0)
    return {
        "flat-0": np.zeros((192, 256, 3), np.uint8),
        "flat-255": np.full((192, 256, 3), 255, np.uint8),
        "tiny-2x2": np.zeros((2, 2, 3), np.uint8),
        "noise-7x300": rng.integers(0, 255, (7, 300, 3), dtype=np.uint8),
        "noise-40x30": rng.integers(0, 255, (40, 30, 3), dtype=np.uint8),
        "noise-150x200": rng.integers(0, 255, (150, 200, 3), dtype=np.uint8),
        "strip-12x256": rng.integers(0, 255, (12, 256, 3), dtype=np.uint8),
        "small-5x5": rng.integers(0, 255, (5, 5, 3), dtype=np.uint8),
    }


def as_output(subject: Subject | None) -> Output:
    if subject is None:
        return None
    box = subject.bbox
    values = (box.x, box.y, box.width, box.height, subject.count)
    return [*values, subject.visible_ratio, subject.confidence]


def compare(reference: dict[str, Output], outputs: dict[str, Output]) -> tuple[str, list[str]]:
    """("identical" | "equal after rounding" | "DIFFERENT", the names that differ)."""
    if reference == outputs:
        return "identical", []
    differing = []
    for name in sorted(set(reference) | set(outputs)):
        old, new = reference.get(name, "missing"), outputs.get(name, "missing")
        if old is None or new is None or isinstance(old, str) or isinstance(new, str):
            if old != new:
                differing.append(name)
        elif old[4] != new[4] or any(abs(a - b) > TOLERANCE for a, b in zip(old, new, strict=True)):
            differing.append(name)
    return ("DIFFERENT" if differing else "equal after rounding"), differing


def time_per_image_ms(
    detectors: list[Detector], images: list[NDArray[np.uint8]], repeat: int
) -> list[float]:
    """Per detector: best-of-`repeat` process CPU time of one pass, per image, in ms."""
    best_s = [float("inf")] * len(detectors)
    for _ in range(repeat):
        for index, detector in enumerate(detectors):
            start = time.process_time()
            for rgb in images:
                detector(rgb)
            best_s[index] = min(best_s[index], time.process_time() - start)
    return [1000.0 * seconds / len(images) for seconds in best_s]


def load_detector(path: Path) -> Detector:
    """`detect_subject` of another copy of subject.py."""
    spec = importlib.util.spec_from_file_location("baseline_subject", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    detector: Detector = module.detect_subject
    return detector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--record", action="store_true", help="store the outputs as the reference")
    mode.add_argument("--check", action="store_true", help="compare the outputs with it")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--baseline", type=Path, help="another subject.py to time alongside")
    args = parser.parse_args()

    inputs = build_inputs()
    outputs = {name: as_output(detect_subject(rgb)) for name, rgb in inputs.items()}
    found = sum(output is not None for output in outputs.values())
    print(f"{len(inputs)} inputs ({found} with a subject)")
    status = 0
    if args.record:
        args.reference.parent.mkdir(parents=True, exist_ok=True)
        args.reference.write_text(json.dumps(outputs, indent=1))
        print(f"reference recorded: {args.reference}")
    elif args.check:
        reference = json.loads(args.reference.read_text())
        verdict, differing = compare(reference, outputs)
        print(f"check against {args.reference.name}: {verdict}")
        for name in differing:
            print(f"  {name}: {reference.get(name)} -> {outputs.get(name)}")
        status = 1 if differing else 0
    detectors = [detect_subject] + ([load_detector(args.baseline)] if args.baseline else [])
    photos = [rgb for name, rgb in inputs.items() if name.endswith(".jpg")]
    for label, images in (("birds-dev photos", photos), ("all inputs", list(inputs.values()))):
        times_ms = time_per_image_ms(detectors, images, args.repeat)
        line = f"detect_subject: {times_ms[0]:.3f} ms CPU/image on {len(images)} {label}"
        if args.baseline:
            line += f"; baseline {times_ms[1]:.3f} (x{times_ms[1] / times_ms[0]:.2f} faster)"
        print(f"{line} (best of {args.repeat})")
    return status


if __name__ == "__main__":
    sys.exit(main())
