"""Thumbnails for the report's cards: fetched with the project's fetcher (its limits, retries and
private-network rule), a bounded number at a time, shrunk to small JPEGs as `data:` URIs.

A thumbnail that cannot be made (the URL is gone, the bytes are not an image) is a reason, not an
error: the card shows a placeholder with it and the page is built all the same.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable
from dataclasses import dataclass

from backfill_quality.config import FetchSettings
from backfill_quality.errors import BackfillError
from backfill_quality.fetching.fetcher import ImageFetcher
from backfill_quality.scoring.thumbnail import make_thumbnail

DEFAULT_THUMBNAIL_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A `data:` URI, or why there is none."""

    data_uri: str | None
    problem: str | None = None


async def _one(fetcher: ImageFetcher, url: str) -> Thumbnail:
    try:
        fetched = await fetcher.fetch(url)
        jpeg = await asyncio.to_thread(make_thumbnail, fetched.data)
    except BackfillError as exc:
        return Thumbnail(None, str(exc))
    return Thumbnail("data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"))


async def _all(urls: list[str], settings: FetchSettings) -> list[Thumbnail]:
    async with ImageFetcher(settings) as fetcher:
        return list(await asyncio.gather(*(_one(fetcher, url) for url in urls)))


def make_thumbnails(urls: Iterable[str], settings: FetchSettings) -> dict[str, Thumbnail]:
    """URL -> its thumbnail (each URL fetched once, `settings.concurrency` at a time)."""
    unique = list(dict.fromkeys(urls))
    if not unique:
        return {}
    return dict(zip(unique, asyncio.run(_all(unique, settings)), strict=True))
