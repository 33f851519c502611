"""What both model scripts share: hashes, the calibration photos, version warnings, the ending.

Imported by make_presence_model.py and make_nanodet_model.py (run as scripts from this folder).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "backfill_quality/demo/photos"
WEIGHTS = REPO / "backfill_quality/scoring/weights"
CALIBRATION_PHOTOS = 19
CALIB_SHA256 = "9f918d0b43e0c9a84fb6075bffb3c401065a407bb1f23279c484bb6a341245f4"
"""Over the sorted calibration photos' names and bytes: both models are calibrated on them."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check(what: str, got: str, want: str) -> None:
    """Print the hash; exit on a mismatch (a want of "@" is a placeholder: print only)."""
    status = "OK" if got == want else f"MISMATCH (expected {want})"
    print(f"{what}: sha256 {got} {status}", flush=True)
    if got != want and want != "@":
        sys.exit(f"SHA-256 mismatch for {what}")


def calibration_photos(folder: Path = PHOTOS) -> list[Path]:
    """The demo photos, sorted by name, after checking that they are the ones the hashes need."""
    photos = sorted(folder.glob("*.jpg"), key=lambda p: p.name)
    if len(photos) != CALIBRATION_PHOTOS:
        sys.exit(
            f"expected {CALIBRATION_PHOTOS} calibration photos in {folder}, found {len(photos)}"
        )
    digest = hashlib.sha256()
    for photo in photos:
        digest.update(photo.name.encode())
        digest.update(photo.read_bytes())
    check(f"calibration set ({len(photos)} photos)", digest.hexdigest(), CALIB_SHA256)
    return photos


def warn_versions(pinned: dict[str, str]) -> None:
    for package, want in pinned.items():
        try:
            got: str | None = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            got = None
        if got != want:
            print(
                f"warning: {package} {got} != pinned {want}; hashes will likely differ", flush=True
            )


def arguments(description: str | None) -> argparse.ArgumentParser:
    """--out-dir and --check; each script adds the option naming its downloaded package."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS, help="default: %(default)s")
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild in a temporary folder and compare with the model in --out-dir",
    )
    return parser


def output_path(args: argparse.Namespace, tmp: Path, model_name: str) -> Path:
    """Where to write the model: the temporary folder for --check, else --out-dir."""
    out = tmp / model_name if args.check else args.out_dir / model_name
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def finish(args: argparse.Namespace, out: Path, model_name: str, want: str) -> None:
    """Check the built model's hash; with --check, also that the committed file is the same."""
    got = sha256(out.read_bytes())
    check(str(out), got, want)
    if not args.check:
        return
    committed = args.out_dir / model_name
    have = sha256(committed.read_bytes()) if committed.exists() else "missing"
    print(f"{committed}: sha256 {have}", flush=True)
    if have != got:
        sys.exit(f"{committed} differs from the rebuilt model")
    print("check OK: the committed model is reproduced byte for byte", flush=True)
