"""Cost of one checkpoint save as failures accumulate (a checkpoint is saved after every page).

Usage: python bench/checkpoint_save.py [--failures 0,1000,10000,100000] [--repeat 5]

For each number of failed images: the median wall time of `save_checkpoint` (text, temp file,
fsync, rename) once every entry has been saved before (the steady state of a run), the file size,
and, in the same run, the time of encoding the same checkpoint the way it was written before
(`json.dumps(checkpoint.to_json(), indent=2)`, which re-redacts and re-encodes every failure at
every save), with their ratio. Nothing here is imported by the package.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from backfill_quality.pipeline.checkpoint import Checkpoint, FailedImage, save_checkpoint  # noqa: E402


def checkpoint_with(failures: int) -> Checkpoint:
    checkpoint = Checkpoint(fingerprint="bench", dry_run=False, processed=failures, failed=failures)
    checkpoint.failed_images = [
        FailedImage(
            id=row,
            url=f"https://cdn.example.com/photos/2024/{row:08d}.jpg",
            error="HTTP 404 Not Found (not retried)",
        )
        for row in range(failures)
    ]
    return checkpoint


def encode_as_before(checkpoint: Checkpoint) -> str:
    """The save's text as it was built before: every failure redacted and encoded again."""
    return json.dumps(checkpoint.to_json(), indent=2, ensure_ascii=False) + "\n"


def median_ms(action: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--failures", default="0,1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'failures':>9} {'save ms':>9} {'size KB':>9} {'old encode ms':>14} {'ratio':>7}")
    with tempfile.TemporaryDirectory(prefix="bq-bench-") as folder:
        path = Path(folder) / "checkpoint.json"
        for failures in (int(n) for n in args.failures.split(",")):
            checkpoint = checkpoint_with(failures)
            save_checkpoint(path, checkpoint)  # each entry is encoded at its first save
            save_ms = median_ms(partial(save_checkpoint, path, checkpoint), args.repeat)
            old_ms = median_ms(partial(encode_as_before, checkpoint), args.repeat)
            size_kb = path.stat().st_size / 1024
            ratio = old_ms / save_ms if save_ms else float("inf")
            print(f"{failures:>9} {save_ms:>9.1f} {size_kb:>9.0f} {old_ms:>14.1f} {ratio:>6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
