"""ImageFetcher against a real HTTP server on 127.0.0.1: every fault of SPEC section 7."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import random
import time
from datetime import UTC, datetime

import httpx
import pytest

from backfill_quality.config import FetchSettings
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.errors import FetchError
from backfill_quality.fetching.failures import parse_retry_after
from backfill_quality.fetching.fetcher import (
    Fetched,
    ImageFetcher,
    RateLimiter,
    backoff_delay_s,
    fetch_one,
    proxy_configured,
)
from backfill_quality.fetching.urls import is_blocked_address, validate_url
from tests.support.http import closed_port, make_image_bytes
from tests.support.timing import BUSY_MACHINE_S

FAST = FetchSettings(
    timeout_s=0.3,
    retries=3,
    backoff_base_s=0.01,
    backoff_cap_s=0.02,
    retry_after_cap_s=0.5,
    max_bytes=2_000_000,
)


def settings(**changes: object) -> FetchSettings:
    values = {name: getattr(FAST, name) for name in FetchSettings.__slots__}
    values.update(changes)
    return FetchSettings(**values)  # type: ignore[arg-type]


def fetch(url: str, fetch_settings: FetchSettings = FAST) -> Fetched:
    async def run() -> Fetched:
        async with ImageFetcher(fetch_settings) as fetcher:
            return await fetcher.fetch(url)

    return asyncio.run(run())


def fetch_error(url: str, fetch_settings: FetchSettings = FAST) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch(url, fetch_settings)
    return caught.value


@pytest.fixture
def jpeg(image_server: ImageServer) -> bytes:
    data = make_image_bytes()
    image_server.add("/img/a.jpg", data)
    return data


# -- success -----------------------------------------------------------------------------------


def test_fetches_the_image_bytes_in_one_attempt(image_server: ImageServer, jpeg: bytes) -> None:
    result = fetch(image_server.url("/img/a.jpg"))
    assert result == Fetched(
        jpeg, 1, image_server.url("/img/a.jpg"), result.etag, result.last_modified
    )
    assert result.etag == f'"{hashlib.sha256(jpeg).hexdigest()[:20]}"'  # handed through as sent
    assert result.last_modified is not None and result.last_modified.endswith(" GMT")
    assert image_server.hits("/img/a.jpg") == 1


def test_fetch_one_is_the_sync_convenience(image_server: ImageServer, jpeg: bytes) -> None:
    assert fetch_one(image_server.url("/img/a.jpg"), FAST).data == jpeg


def test_cookies_set_by_an_image_host_are_never_sent_back(
    image_server: ImageServer, jpeg: bytes
) -> None:
    async def run() -> list[bytes]:
        async with ImageFetcher(FAST) as fetcher:
            urls = [image_server.url(f"/set-cookie/{n}?img=/img/a.jpg") for n in range(3)]
            urls.append(image_server.url("/img/a.jpg"))
            return [(await fetcher.fetch(url)).data for url in urls]

    assert asyncio.run(run()) == [jpeg] * 4
    assert image_server.hits("/set-cookie/0") == 1
    assert image_server.cookie_hits() == 0


def test_an_http_proxy_from_the_environment_is_used(
    image_server: ImageServer, jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the test server answers a proxy's absolute-form request for any host by its path
    monkeypatch.setenv("HTTP_PROXY", image_server.base_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert proxy_configured()

    result = fetch("http://bird-cdn.invalid/img/a.jpg")

    assert result.data == jpeg
    assert image_server.hits("/img/a.jpg") == 1


def test_without_a_proxy_the_lean_transport_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert not proxy_configured()


def test_body_that_is_not_an_image_is_returned_as_bytes(image_server: ImageServer) -> None:
    url = image_server.add("/blob", b"definitely not a jpeg", "application/octet-stream")
    assert fetch(url).data == b"definitely not a jpeg"


# -- timeouts, refused, resets -----------------------------------------------------------------


def test_connect_timeout_is_retried_then_reported(blackhole_port: int) -> None:
    started = time.monotonic()
    err = fetch_error(f"http://127.0.0.1:{blackhole_port}/x.jpg", settings(retries=1))
    assert str(err) == "timed out after 2 attempts (connect timeout 0.3s)"
    assert (err.attempts, err.retryable) == (2, True)
    assert time.monotonic() - started < BUSY_MACHINE_S  # two 0.3 s timeouts, not a hang


def test_read_timeout_when_the_server_stalls_mid_body(image_server: ImageServer) -> None:
    err = fetch_error(image_server.url("/stall"), settings(retries=1))
    assert str(err) == "timed out after 2 attempts (read timeout 0.3s)"
    assert image_server.hits("/stall") == 2


def test_slow_drip_is_cut_by_the_whole_download_deadline(image_server: ImageServer) -> None:
    started = time.monotonic()
    err = fetch_error(image_server.url("/drip/20"), settings(timeout_s=0.2, retries=0))
    assert str(err) == "timed out (download took longer than 0.8s)"
    # the deadline cut it (1 MB at a byte per 20 ms would take hours); never before 0.8 s
    assert 0.7 < time.monotonic() - started < 0.8 + BUSY_MACHINE_S
    assert image_server.bytes_sent("/drip/20") > 10  # every single read was quick


def test_connection_refused_names_the_address() -> None:
    port = closed_port()
    err = fetch_error(f"http://127.0.0.1:{port}/a.jpg", settings(retries=2))
    assert str(err) == f"connection refused after 3 attempts (127.0.0.1:{port})"
    assert err.attempts == 3


def test_reset_mid_body_is_retried(image_server: ImageServer) -> None:
    err = fetch_error(image_server.url("/reset"), settings(retries=1))
    assert str(err).startswith("connection reset after 2 attempts")
    assert image_server.hits("/reset") == 2


def test_truncated_body_is_reported_with_byte_counts(image_server: ImageServer) -> None:
    err = fetch_error(image_server.url("/truncated"), settings(retries=0))
    assert str(err) == "connection closed mid-response (got 16384 of 1000000 bytes)"
    assert err.retryable


# -- status codes ------------------------------------------------------------------------------


def test_5xx_is_retried_then_fails_with_the_attempt_count(image_server: ImageServer) -> None:
    err = fetch_error(image_server.url("/status/503"))
    assert str(err) == "HTTP 503 Service Unavailable after 4 attempts"
    assert (err.attempts, err.retryable) == (4, True)
    assert image_server.hits("/status/503") == 4


@pytest.mark.parametrize("code", [500, 502, 408, 429])
def test_other_transient_statuses_are_retried(image_server: ImageServer, code: int) -> None:
    err = fetch_error(image_server.url(f"/status/{code}"), settings(retries=1))
    assert err.attempts == 2
    assert image_server.hits(f"/status/{code}") == 2


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410])
def test_client_errors_are_not_retried(image_server: ImageServer, code: int) -> None:
    err = fetch_error(image_server.url(f"/status/{code}"))
    assert str(err).startswith(f"HTTP {code} ")
    assert "attempts" not in str(err)
    assert (err.attempts, err.retryable) == (1, False)
    assert image_server.hits(f"/status/{code}") == 1


def test_404_message(image_server: ImageServer) -> None:
    assert str(fetch_error(image_server.url("/status/404"))) == "HTTP 404 Not Found"


def test_flaky_server_succeeds_on_a_later_attempt(image_server: ImageServer, jpeg: bytes) -> None:
    result = fetch(image_server.url("/flaky/2/k?img=/img/a.jpg"))
    assert (result.data, result.attempts) == (jpeg, 3)


def test_retry_after_seconds_is_honoured(image_server: ImageServer, jpeg: bytes) -> None:
    started = time.monotonic()
    result = fetch(
        image_server.url("/retry-after/1/k?img=/img/a.jpg"), settings(retry_after_cap_s=5)
    )
    elapsed_s = time.monotonic() - started
    assert (result.data, result.attempts) == (jpeg, 2)
    assert 0.95 <= elapsed_s < 1.0 + BUSY_MACHINE_S  # waited the second it was asked to


def test_retry_after_is_capped(image_server: ImageServer, jpeg: bytes) -> None:
    started = time.monotonic()
    result = fetch(image_server.url("/retry-after/30/k?img=/img/a.jpg"))  # cap 0.5 s
    assert result.attempts == 2
    assert 0.45 <= time.monotonic() - started < 0.5 + BUSY_MACHINE_S  # far under 30 s


def test_retry_after_http_date_is_honoured_and_capped(
    image_server: ImageServer, jpeg: bytes
) -> None:
    started = time.monotonic()
    result = fetch(image_server.url("/retry-after-date/30/k?img=/img/a.jpg"))  # cap 0.5 s
    assert result.attempts == 2
    # The jittered backoff alone would wait at most 0.02 s: the date was read and capped (30 s
    # would be waited without the cap).
    assert 0.45 <= time.monotonic() - started < 0.5 + BUSY_MACHINE_S


def test_parse_retry_after_both_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("", now) is None


# -- redirects ---------------------------------------------------------------------------------


def test_redirects_are_followed(image_server: ImageServer, jpeg: bytes) -> None:
    result = fetch(image_server.url("/redirect/3?to=/img/a.jpg"))
    assert (result.data, result.attempts) == (jpeg, 1)
    assert result.final_url == image_server.url("/img/a.jpg")
    assert [image_server.hits(f"/redirect/{n}") for n in (3, 2, 1)] == [1, 1, 1]


def test_redirects_are_bounded(image_server: ImageServer, jpeg: bytes) -> None:
    assert fetch(image_server.url("/redirect/2?to=/img/a.jpg"), settings(max_redirects=2)).data
    err = fetch_error(image_server.url("/redirect/3?to=/img/a.jpg"), settings(max_redirects=2))
    assert str(err) == "redirect loop / too many redirects (2)"
    assert image_server.hits("/img/a.jpg") == 1


def test_redirect_loop_is_refused_without_retrying(image_server: ImageServer) -> None:
    err = fetch_error(image_server.url("/redirect-loop"))
    assert str(err) == "redirect loop / too many redirects (5)"
    assert (err.attempts, err.retryable) == (1, False)
    assert image_server.hits("/redirect-loop") == 6  # the first request and 5 hops


def test_redirect_to_a_file_url_is_refused(image_server: ImageServer) -> None:
    err = fetch_error(image_server.url("/redirect-to?url=file:///etc/passwd"))
    assert str(err) == "URL scheme 'file' is not allowed (only http, https)"


# -- size limits and content type --------------------------------------------------------------


def test_content_length_over_the_limit_is_refused_without_reading(
    image_server: ImageServer,
) -> None:
    started = time.monotonic()
    err = fetch_error(image_server.url("/huge"), settings(max_bytes=25_000_000))
    assert str(err) == "body larger than 25 MB limit (Content-Length 1000000000)"
    assert (err.attempts, err.retryable) == (1, False)
    # the body is never sent: reading it would have ended in a timeout, not this message
    assert time.monotonic() - started < BUSY_MACHINE_S


def test_a_real_image_over_the_limit_is_refused(image_server: ImageServer, jpeg: bytes) -> None:
    err = fetch_error(image_server.url("/img/a.jpg"), settings(max_bytes=100))
    assert str(err) == f"body larger than 100 bytes limit (Content-Length {len(jpeg)})"


def test_chunked_body_over_the_limit_stops_early(image_server: ImageServer) -> None:
    err = fetch_error(image_server.url("/chunked-huge"), settings(max_bytes=1_000_000))
    assert str(err) == "body larger than 1 MB limit (stopped reading)"
    sent_bytes = _settled(lambda: image_server.bytes_sent("/chunked-huge"))
    assert 1_000_000 < sent_bytes < 64_000_000  # far from the 1 GB the server would send


def test_html_body_fails_fast_as_not_an_image(image_server: ImageServer) -> None:
    err = fetch_error(image_server.url("/not-an-image"))
    assert str(err) == "not an image (content-type text/html)"
    assert (err.attempts, err.retryable) == (1, False)
    assert image_server.hits("/not-an-image") == 1


# -- URL validation and private networks -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "URL scheme 'file' is not allowed (only http, https)"),
        ("ftp://example.com/a.jpg", "URL scheme 'ftp' is not allowed (only http, https)"),
        (
            "data:image/png;base64,iVBORw0KGgo=",
            "URL scheme 'data' is not allowed (only http, https)",
        ),
        ("", "empty URL"),
        ("   ", "empty URL"),
        ("http://example.com/" + "a" * 8200, "URL is too long (8219 characters; limit 8192)"),
        ("example.com/a.jpg", "URL has no scheme (only http, https are allowed)"),
        ("http:///a.jpg", "URL has no host"),
        ("http://example.com:99999/a.jpg", "malformed URL (Port out of range 0-65535)"),
    ],
)
def test_bad_urls_are_refused_before_any_request(url: str, message: str) -> None:
    with pytest.raises(FetchError) as caught:
        validate_url(url)
    assert str(caught.value) == message
    err = fetch_error(url)
    assert (str(err), err.attempts, err.retryable) == (message, 1, False)


def test_good_urls_pass_validation() -> None:
    assert validate_url(" https://example.com/a.jpg ") == "https://example.com/a.jpg"
    assert validate_url("HTTP://example.com/a.jpg") == "HTTP://example.com/a.jpg"


def test_deny_private_networks_refuses_loopback(image_server: ImageServer, jpeg: bytes) -> None:
    for url in (
        image_server.url("/img/a.jpg"),
        image_server.url("/img/a.jpg").replace("127.0.0.1", "localhost"),
    ):
        err = fetch_error(url, settings(deny_private_networks=True))
        assert "private or internal address (127.0.0.1" in str(err) or "(::1)" in str(err)
        assert (err.attempts, err.retryable) == (1, False)
    assert image_server.hits("/img/a.jpg") == 0


def test_deny_private_networks_refuses_a_redirect_to_loopback(
    image_server: ImageServer, jpeg: bytes
) -> None:
    target = image_server.url("/img/a.jpg")

    def public_host_redirects(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "93.184.216.34"  # never contacted: a mock transport answers
        return httpx.Response(302, headers={"Location": target})

    async def run() -> None:
        transport = httpx.MockTransport(public_host_redirects)
        async with ImageFetcher(settings(deny_private_networks=True), transport=transport) as f:
            await f.fetch("http://93.184.216.34/a.jpg")

    with pytest.raises(FetchError, match=r"resolves to a private or internal address \(127"):
        asyncio.run(run())
    assert image_server.hits("/img/a.jpg") == 0


@pytest.mark.parametrize(
    ("address", "is_blocked"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("fd00:ec2::254", True),
        ("fe80::1", True),
        ("::ffff:127.0.0.1", True),
        ("8.8.8.8", False),
        ("93.184.216.34", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_blocked_addresses(address: str, is_blocked: bool) -> None:
    assert is_blocked_address(ipaddress.ip_address(address)) is is_blocked


# -- rate limit and backoff --------------------------------------------------------------------


def test_max_rps_holds_across_concurrent_tasks(image_server: ImageServer, jpeg: bytes) -> None:
    url = image_server.url("/img/a.jpg")

    async def run() -> float:
        async with ImageFetcher(settings(max_rps=40.0, concurrency=16)) as fetcher:
            started = time.monotonic()
            await asyncio.gather(*(fetcher.fetch(url) for _ in range(41)))
            return time.monotonic() - started

    elapsed_s = asyncio.run(run())
    assert image_server.hits("/img/a.jpg") == 41
    # the first request is free, then one every 25 ms: never faster (a busy machine is slower)
    assert 0.95 <= elapsed_s < 1.0 + BUSY_MACHINE_S


def test_waiting_for_a_rate_limit_slot_is_not_download_time(
    image_server: ImageServer, jpeg: bytes
) -> None:
    """16 downloads at 4 per second: the last waits ~3.75 s for its turn, far beyond the 0.8 s
    an attempt may take (4 x --timeout 0.2 s); the wait must not make it time out."""
    url = image_server.url("/img/a.jpg")

    async def run() -> tuple[list[Fetched], float]:
        async with ImageFetcher(settings(max_rps=4.0, concurrency=16, timeout_s=0.2)) as fetcher:
            started = time.monotonic()
            fetched = await asyncio.gather(*(fetcher.fetch(url) for _ in range(16)))
            return fetched, time.monotonic() - started

    fetched, elapsed_s = asyncio.run(run())
    assert [(f.data, f.attempts) for f in fetched] == [(jpeg, 1)] * 16
    assert 3.7 <= elapsed_s < 3.75 + BUSY_MACHINE_S


def test_rate_limiter_slots_are_evenly_spaced() -> None:
    """The n-th caller (in arrival order) never goes before n/rate: a sleep can end late on a
    busy machine, never early, so only the lower bounds are exact."""

    async def run() -> list[float]:
        limiter = RateLimiter(50.0)
        started = time.monotonic()

        async def one() -> float:
            await limiter.acquire()
            return time.monotonic() - started

        return await asyncio.gather(*(one() for _ in range(26)))  # in arrival order

    times_s = asyncio.run(run())
    clock_tolerance_s = 0.002  # asyncio may wake a timer up to its clock resolution early
    assert len(times_s) == 26
    assert all(t >= n * 0.02 - clock_tolerance_s for n, t in enumerate(times_s)), times_s
    assert times_s[-1] < 0.5 + BUSY_MACHINE_S


def test_backoff_has_full_jitter_within_bounds() -> None:
    rng = random.Random(7)
    for retry_index in range(8):
        ceiling_s = min(2.0, 0.1 * 2**retry_index)
        delays_s = [backoff_delay_s(retry_index, 0.1, 2.0, rng) for _ in range(400)]
        assert all(0.0 <= d <= ceiling_s for d in delays_s)
        assert min(delays_s) < 0.1 * ceiling_s  # full jitter reaches near zero
        assert max(delays_s) > 0.9 * ceiling_s  # and near the ceiling
    assert backoff_delay_s(40, 0.5, 30.0, rng) <= 30.0


def test_retries_wait_with_backoff(image_server: ImageServer) -> None:
    started = time.monotonic()
    fetch_error(image_server.url("/status/500"), settings(backoff_base_s=0.1, backoff_cap_s=0.2))
    assert image_server.hits("/status/500") == 4  # the attempt and 3 retries
    # Three waits, each uniform in [0, 0.1], [0, 0.2], [0, 0.2]: at most 0.5 s of waiting.
    assert time.monotonic() - started < 0.5 + BUSY_MACHINE_S


def _settled(read: object, wait_s: float = 0.1, limit_s: float = 3.0) -> int:
    """Poll `read()` until its value stops changing."""
    assert callable(read)
    deadline_s = time.monotonic() + limit_s
    previous = -1
    while time.monotonic() < deadline_s:
        current = int(read())
        if current == previous:
            return current
        previous = current
        time.sleep(wait_s)
    raise AssertionError("value kept changing")
