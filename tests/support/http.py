"""HTTP for the tests: a real image server on 127.0.0.1, small images, unreachable ports."""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Iterator

import pytest
from PIL import Image

from backfill_quality.demo.imageserver import ImageServer


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    """A fresh ImageServer (no added latency) for one test."""
    with ImageServer() as server:
        yield server


def make_image_bytes(
    width: int = 64,
    height: int = 48,
    color: tuple[int, int, int] = (90, 140, 200),
    image_format: str = "JPEG",
) -> bytes:
    """A small valid image (JPEG by default, or "PNG") of one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=image_format)
    return buffer.getvalue()


def closed_port() -> int:
    """A loopback port with nothing listening (connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A loopback port whose listener never accepts and whose backlog is full: connects hang.

    Linux drops a SYN when the accept queue is full, so a new connection attempt neither
    succeeds nor is refused until the client's connect timeout fires.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    for _ in range(4):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in [*fillers, listener]:
            sock.close()
