"""Downloading images: timeouts, byte cap, retries with backoff, rate limit, redirects.

URL policy lives in `urls.py`, the translation of failures into reasons in `failures.py`. One
`ImageFetcher` per run is shared by all tasks; its `gate` (`gate.py`) bounds how many fetches run
at once, per host and in all, and with `--concurrency auto` moves that number
(`controller.py`) from the latencies and pushback the attempts report to it.

Choices worth knowing:
- `retries` counts RE-tries: retries=3 means at most 4 attempts. Connect errors, timeouts, resets,
  truncated bodies, 5xx, 408 and 429 are retried; `Retry-After` (seconds or HTTP-date) is honoured
  up to `retry_after_cap_s`, otherwise the wait is exponential backoff with full jitter.
- A `text/*` Content-Type (an HTML error page, typically) fails at once with "not an image
  (content-type text/html)" without reading the body; any other body is returned as bytes and
  decoding decides.
- Redirects are followed by hand (at most `max_redirects` hops); each hop is validated and, with
  `deny_private_networks`, its host is resolved and refused if any address is not public. The
  check happens before the connection (httpx resolves again), so it is a policy guard, not a
  defence against DNS rebinding.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol
from urllib.parse import urljoin

import httpx

from backfill_quality.config import FetchSettings
from backfill_quality.errors import FetchError
from backfill_quality.fetching.controller import LevelChange
from backfill_quality.fetching.failures import (
    REDIRECT_STATUSES,
    AttemptError,
    status_error,
    translate_httpx_error,
)
from backfill_quality.fetching.gate import DemandProbe, FetchGate, host_of
from backfill_quality.fetching.plain import plain_target, send_get
from backfill_quality.fetching.transport import LeanTransport
from backfill_quality.fetching.urls import (
    ensure_public_host,
    validate_url,
)

USER_AGENT = "backfill-quality/0.1 (+image quality backfill)"
REQUEST_HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept": "image/*, */*;q=0.5",
    "Accept-Encoding": "gzip, deflate",  # what both paths decode (plain.py, httpx)
}
KEEPALIVE_EXPIRY_S = 30.0  # idle connections are closed after this
DOWNLOAD_DEADLINE_FACTOR = 4  # a whole attempt may take at most 4 x timeout_s


@dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded body, how many attempts it took, the URL it finally came from, and the
    response's validators (`ETag`, `Last-Modified`, as sent; None when absent), and the seconds
    the download took once it had its slot (retries included; None when not downloaded)."""

    data: bytes
    attempts: int
    final_url: str
    etag: str | None = None
    last_modified: str | None = None
    download_s: float | None = field(default=None, compare=False)
    is_not_modified: bool = False
    """The host answered 304 to the validators sent (`fetch(url, validators=…)`): no body."""


@dataclass(frozen=True, slots=True)
class Validators:
    """What a conditional GET sends: the stored `ETag` and `Last-Modified` (None: not sent)."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> list[tuple[str, str]]:
        """If-None-Match and If-Modified-Since, for the validators there are."""
        found = [("If-None-Match", self.etag), ("If-Modified-Since", self.last_modified)]
        return [(name, value) for name, value in found if value]


NOT_MODIFIED = 304
_Body = tuple[bytes, str, float, str | None, str | None, bool]
"""body, final URL, seconds to the last hop's head, ETag, Last-Modified, 304"""


def backoff_delay_s(
    retry_index: int, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """Full-jitter backoff: uniform in [0, min(cap_s, base_s * 2**retry_index)]."""
    ceiling_s = min(cap_s, base_s * 2.0 ** min(retry_index, 60))
    return (rng or random.Random()).uniform(0.0, ceiling_s)


def format_bytes(n_bytes: int) -> str:
    """25_000_000 -> '25 MB' (decimal units, as the --max-bytes option reads)."""
    for unit_bytes, unit in ((1_000_000_000, "GB"), (1_000_000, "MB"), (1_000, "KB")):
        if n_bytes >= unit_bytes:
            value = n_bytes / unit_bytes
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n_bytes} bytes"


class RateLimiter:
    """Requests per second shared by all tasks of one event loop (a bucket of one token).

    Each caller is given the next free slot `1/rate` after the previous one, so the rate holds
    over any window and callers are served in arrival order.
    """

    def __init__(self, rate_per_s: float) -> None:
        self._interval_s = 1.0 / rate_per_s
        self._next_slot_s = 0.0

    async def acquire(self) -> None:
        now_s = time.monotonic()
        slot_s = max(now_s, self._next_slot_s)
        self._next_slot_s = slot_s + self._interval_s
        if slot_s > now_s:
            await asyncio.sleep(slot_s - now_s)


class _Answer(Protocol):
    """What the fetcher reads of a response: httpx.Response and plain.PlainResponse both are."""

    @property
    def status_code(self) -> int: ...

    @property
    def reason_phrase(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class _Deadline:
    """The time limit of one download attempt, which waiting for a --max-rps slot does not use:
    with more downloads in flight than the rate allows per deadline, the wait would otherwise
    fail healthy images as timed out."""

    def __init__(self, timeout: asyncio.Timeout, limit_s: float) -> None:
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        timeout.reschedule(self._loop.time() + limit_s)

    async def paused(self, wait: Awaitable[None]) -> None:
        """Await `wait` with the clock stopped; the time left is the same afterwards."""
        when = self._timeout.when()
        left_s = None if when is None else when - self._loop.time()
        self._timeout.reschedule(None)
        await wait
        if left_s is not None:
            self._timeout.reschedule(self._loop.time() + left_s)


class ImageFetcher:
    """The HTTP client of one run; an async context manager shared by all fetch tasks."""

    def __init__(
        self,
        settings: FetchSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        demand: DemandProbe | None = None,
        on_level_change: Callable[[LevelChange], None] | None = None,
    ) -> None:
        self.settings = settings
        self.gate = FetchGate(settings, demand=demand, on_change=on_level_change)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._lean: LeanTransport | None = None
        self._lean_headers: list[tuple[bytes, bytes]] = []
        self._limiter = RateLimiter(settings.max_rps) if settings.max_rps else None
        self._timeouts = request_timeout(settings).as_dict()
        self._extensions = {"timeout": self._timeouts}
        self._rng = random.Random()

    async def __aenter__(self) -> ImageFetcher:
        transport = self._transport
        if transport is None and not proxy_configured():
            # ours: plain URLs skip the httpx client (plain.py), the others share its pool
            transport = self._lean = lean_transport(self.settings)
        self._client = build_client(self.settings, transport=transport)
        self._lean_headers = list(self._client.headers.raw)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def fetch(self, url: str, *, validators: Validators | None = None) -> Fetched:
        """Download one image with retries; raises FetchError with `.attempts` set.

        With `validators`, the GET is conditional: a 304 comes back as `is_not_modified` with
        no data (and the validators of the 304, or those sent when it has none)."""
        conditional = validators.headers() if validators is not None else []
        max_attempts = self.settings.retries + 1
        gate = self.gate
        host = host_of(url)
        async with gate.hold(host):
            held_s = time.perf_counter()  # fetch_ms: the download, not the wait for a slot
            for attempt in range(1, max_attempts + 1):
                async with gate.attempt(host) as sent_s:
                    try:
                        body = await self._attempt(url, conditional)
                        data, final_url, head_s, etag, last_modified, is_not_modified = body
                    except AttemptError as err:
                        if err.pushback is not None:
                            gate.pushed_back(host, err.pushback, sent_s, err.retry_after_s)
                        if not err.retryable or attempt == max_attempts:
                            raise err.to_fetch_error(attempt) from (err.__cause__ or err)
                        delay_s = self._delay_before_retry_s(err, attempt)
                    else:
                        gate.answered(host, head_s)
                        download_s = time.perf_counter() - held_s
                        if is_not_modified and validators is not None:
                            etag = etag or validators.etag
                            last_modified = last_modified or validators.last_modified
                        return Fetched(
                            data,
                            attempt,
                            final_url,
                            etag,
                            last_modified,
                            download_s=download_s,
                            is_not_modified=is_not_modified,
                        )
                await asyncio.sleep(delay_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay_before_retry_s(self, err: AttemptError, attempt: int) -> float:
        s = self.settings
        if err.retry_after_s is not None:
            return min(err.retry_after_s, s.retry_after_cap_s)
        return backoff_delay_s(attempt - 1, s.backoff_base_s, s.backoff_cap_s, self._rng)

    async def _attempt(self, url: str, conditional: list[tuple[str, str]]) -> _Body:
        deadline_s = self.settings.timeout_s * DOWNLOAD_DEADLINE_FACTOR
        try:
            async with asyncio.timeout(None) as timeout:
                deadline = _Deadline(timeout, deadline_s)
                return await self._follow_redirects(url, deadline, conditional)
        except TimeoutError as exc:
            detail = f"download took longer than {deadline_s:g}s"
            raise AttemptError("timed out", detail, retryable=True) from exc

    async def _follow_redirects(
        self, url: str, deadline: _Deadline, conditional: list[tuple[str, str]]
    ) -> _Body:
        """The body, the URL it came from, the seconds the last hop took to its head, the
        response's ETag and Last-Modified, and whether it was a 304 to `conditional`."""
        client = self._client
        if client is None:
            raise RuntimeError("ImageFetcher used outside 'async with'")
        current = url
        for _hop in range(self.settings.max_redirects + 1):
            current = _checked_url(current)
            if self.settings.deny_private_networks:
                await ensure_public_host(current)
            if self._limiter is not None:
                await deadline.paused(self._limiter.acquire())
            sent_s = time.monotonic()
            try:
                response = await self._send(client, current, conditional)
                try:
                    head_s = time.monotonic() - sent_s
                    location = response.headers.get("location")
                    if response.status_code in REDIRECT_STATUSES and location:
                        current = urljoin(current, location)
                        continue
                    headers = response.headers
                    etag, modified = headers.get("etag"), headers.get("last-modified")
                    if conditional and response.status_code == NOT_MODIFIED:
                        return b"", current, head_s, etag, modified, True
                    body = await self._read_body(response)
                    return body, current, head_s, etag, modified, False
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                raise translate_httpx_error(exc, current, self.settings.timeout_s) from exc
        raise AttemptError(
            f"redirect loop / too many redirects ({self.settings.max_redirects})", retryable=False
        )

    async def _send(
        self, client: httpx.AsyncClient, url: str, conditional: list[tuple[str, str]]
    ) -> _Answer:
        """GET `url`, the body still to read: on our transport without httpx objects when the
        URL is plain (plain.py), else through the httpx client. `conditional`: If-None-Match and
        If-Modified-Since, added to the client's headers."""
        if self._lean is not None and (target := plain_target(url)) is not None:
            headers = self._lean_headers
            if conditional:
                extra = [(n.encode(), v.encode("latin-1", "replace")) for n, v in conditional]
                headers = [*headers, *extra]
            return await send_get(self._lean, target, headers, self._timeouts)
        # built here, not by client.stream(): its URL merging and query-parameter copy parse
        # every URL three times (0.1 ms of the event loop per image)
        sent = client.headers
        if conditional:
            sent = httpx.Headers(client.headers)
            sent.update(dict(conditional))
        request = httpx.Request("GET", url, headers=sent, extensions=self._extensions)
        return await client.send(request, stream=True)

    async def _read_body(self, response: _Answer) -> bytes:
        if not 200 <= response.status_code < 300:
            retry_after = response.headers.get("retry-after")
            raise status_error(response.status_code, response.reason_phrase, retry_after)
        max_bytes = self.settings.max_bytes
        limit = f"body larger than {format_bytes(max_bytes)} limit"
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise AttemptError(limit, f"Content-Length {declared}", retryable=False)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type.startswith("text/"):
            raise AttemptError(f"not an image (content-type {content_type})", retryable=False)
        chunks: list[bytes] = []
        total_bytes = 0
        async for chunk in response.aiter_bytes():
            total_bytes += len(chunk)
            if total_bytes > max_bytes:
                raise AttemptError(limit, "stopped reading", retryable=False)
            chunks.append(chunk)
        return b"".join(chunks)


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing a response sets, so it stays empty and nothing is sent back."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _ImageClient(httpx.AsyncClient):
    """httpx's client without cookies: fetching images needs no session, a jar filled by every
    host of a long run would grow with it, and filling it cost ~0.15 ms of the event loop per
    response (11 % of a download's CPU, measured with 247 KB JPEGs and 16 in flight)."""

    @property  # type: ignore[misc]  # read-only: a cookie jar cannot be set either
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES


_NO_COOKIES = _NoCookies()


def proxy_configured() -> bool:
    """Whether the environment names a proxy (HTTP_PROXY, HTTPS_PROXY or ALL_PROXY, any case).

    LeanTransport only talks to the image hosts themselves, so behind a proxy the client keeps
    httpx's own transport, which honours these variables and NO_PROXY (at httpcore's CPU cost).
    """
    proxies = urllib.request.getproxies()
    return any(scheme in proxies for scheme in ("http", "https", "all"))


def request_timeout(settings: FetchSettings) -> httpx.Timeout:
    """Connect, read and write timeouts of one request; waiting for a pooled connection is
    bounded by the fetch slots instead."""
    return httpx.Timeout(settings.timeout_s, pool=None)


def build_client(
    settings: FetchSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """One HTTP/1.1 client on `LeanTransport` (or on `transport`); redirects are followed by hand.

    httpcore's pool costs several times the CPU of the request itself, so the default transport
    is our own (backfill_quality.fetching.transport; see bench/fetch_client.py).
    """
    if transport is None and not proxy_configured():
        transport = lean_transport(settings)
    return _ImageClient(
        timeout=request_timeout(settings),
        follow_redirects=False,
        headers=REQUEST_HEADERS,
        transport=transport,
    )


def lean_transport(settings: FetchSettings) -> LeanTransport:
    return LeanTransport(
        max_connections=settings.per_host_limit,
        keepalive_expiry_s=KEEPALIVE_EXPIRY_S,
        ssl_context=httpx.create_ssl_context(),  # the CA bundle httpx would use, loaded once
    )


def fetch_one(url: str, settings: FetchSettings) -> Fetched:
    """Download one image (for the `score` command); raises FetchError."""

    async def run() -> Fetched:
        async with ImageFetcher(settings) as fetcher:
            return await fetcher.fetch(url)

    return asyncio.run(run())


def _checked_url(url: str) -> str:
    try:
        return validate_url(url)
    except FetchError as exc:
        raise AttemptError(str(exc), retryable=False) from exc
