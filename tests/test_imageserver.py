"""The local image server: image routes, fault routes, keep-alive, latency, clean stop."""

from __future__ import annotations

import concurrent.futures
import email.utils
import socket
import time
from datetime import UTC, datetime

import httpx
import pytest

from backfill_quality.demo.imageserver import ImageServer
from tests.support.http import make_image_bytes


def raw_get(server: ImageServer, path: str, *, wait_s: float = 1.0) -> bytes:
    """Send one GET on a fresh socket and return whatever arrives until close or timeout."""
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return received


def test_serves_registered_images_and_counts_hits(image_server: ImageServer) -> None:
    png = make_image_bytes(image_format="PNG")
    url = image_server.add("img/a.png", png, "image/png")
    assert url == image_server.base_url + "/img/a.png"
    response = httpx.get(url + "?v=1")
    assert response.status_code == 200
    assert response.content == png
    assert response.headers["content-type"] == "image/png"
    assert int(response.headers["content-length"]) == len(png)
    assert image_server.hits("/img/a.png") == 1  # the query string is not part of the key
    assert image_server.hits("/img/b.png") == 0


def test_keep_alive_serves_several_requests_on_one_connection(image_server: ImageServer) -> None:
    image_server.add("/a.jpg", b"AAAA")
    port = int(image_server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"GET /a.jpg HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        received = b""
        while received.count(b"AAAA") < 2:
            chunk = sock.recv(65536)
            assert chunk, "the server closed a keep-alive connection"
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 2


def test_latency_is_added_per_request_in_parallel() -> None:
    with ImageServer(latency_ms=200) as server:
        url = server.add("/a.jpg", b"x" * 300_000)
        limits = httpx.Limits(max_connections=16)
        with (
            httpx.Client(limits=limits) as client,
            concurrent.futures.ThreadPoolExecutor(16) as pool,
        ):
            started = time.monotonic()
            sizes = list(pool.map(lambda _: len(client.get(url).content), range(16)))
            elapsed_s = time.monotonic() - started
    assert sizes == [300_000] * 16
    # 16 requests overlap: each waits 0.2 s, together far less than 16 x 0.2 s one after another
    assert 0.2 <= elapsed_s < 3.0


def test_status_routes_and_unknown_paths(image_server: ImageServer) -> None:
    for code, phrase in ((404, "Not Found"), (403, "Forbidden"), (503, "Service Unavailable")):
        response = httpx.get(image_server.url(f"/status/{code}"))
        assert (response.status_code, response.reason_phrase) == (code, phrase)
    assert httpx.get(image_server.url("/nothing/here")).status_code == 404


def test_flaky_fails_n_times_then_serves_the_image(image_server: ImageServer) -> None:
    image_server.add("/a.jpg", b"IMG")
    url = image_server.url("/flaky/2/k1?img=/a.jpg")
    codes = [httpx.get(url).status_code for _ in range(4)]
    assert codes == [503, 503, 200, 200]
    assert httpx.get(image_server.url("/flaky/2/k2?img=/a.jpg")).status_code == 503  # own key


def test_retry_after_routes_send_both_header_forms(image_server: ImageServer) -> None:
    image_server.add("/a.jpg", b"IMG")
    first = httpx.get(image_server.url("/retry-after/7/k?img=/a.jpg"))
    assert (first.status_code, first.headers["retry-after"]) == (429, "7")
    assert httpx.get(image_server.url("/retry-after/7/k?img=/a.jpg")).content == b"IMG"
    dated = httpx.get(image_server.url("/retry-after-date/30/k?img=/a.jpg"))
    assert dated.status_code == 429
    when = email.utils.parsedate_to_datetime(dated.headers["retry-after"])
    assert 28 <= (when - datetime.now(UTC)).total_seconds() <= 31


def test_slow_delays_the_headers(image_server: ImageServer) -> None:
    started = time.monotonic()
    assert httpx.get(image_server.url("/slow/300")).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_stall_and_huge_send_headers_then_hold(image_server: ImageServer) -> None:
    stalled = raw_get(image_server, "/stall", wait_s=0.3)
    assert b"Content-Length: 1000000" in stalled
    assert 1024 <= len(stalled) < 2000
    huge = raw_get(image_server, "/huge", wait_s=0.3)
    assert b"Content-Length: 1000000000" in huge
    assert huge.endswith(b"\r\n\r\n")


def test_truncated_closes_cleanly_and_reset_aborts(image_server: ImageServer) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="received 16384 bytes"):
        httpx.get(image_server.url("/truncated"))
    with pytest.raises(httpx.ReadError):
        httpx.get(image_server.url("/reset"))


def test_chunked_huge_stops_when_the_client_leaves(image_server: ImageServer) -> None:
    with httpx.stream("GET", image_server.url("/chunked-huge")) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > 2_000_000:
                break
    time.sleep(0.3)
    sent = image_server.bytes_sent("/chunked-huge")
    time.sleep(0.2)
    assert image_server.bytes_sent("/chunked-huge") == sent  # it stopped
    assert 2_000_000 < sent < 64_000_000


def test_not_an_image_is_html(image_server: ImageServer) -> None:
    response = httpx.get(image_server.url("/not-an-image"))
    assert response.headers["content-type"].startswith("text/html")
    assert b"<html>" in response.content


def test_redirect_routes(image_server: ImageServer) -> None:
    chain = httpx.get(image_server.url("/redirect/2?to=/status/204"))
    assert (chain.status_code, chain.headers["location"]) == (302, "/redirect/1?to=/status/204")
    assert httpx.get(image_server.url("/redirect/1?to=/x")).headers["location"] == "/x"
    assert httpx.get(image_server.url("/redirect-loop")).headers["location"] == "/redirect-loop"
    target = httpx.get(image_server.url("/redirect-to?url=http://127.0.0.1:9/a.jpg"))
    assert target.headers["location"] == "http://127.0.0.1:9/a.jpg"
    followed = httpx.get(image_server.url("/redirect/3?to=/status/204"), follow_redirects=True)
    assert followed.status_code == 204


def test_stops_cleanly_and_frees_the_port() -> None:
    with ImageServer() as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        raw_get(server, "/stall", wait_s=0.05)  # a connection left hanging must not block exit
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    with pytest.raises(RuntimeError, match="not started"):
        server.url("/a.jpg")
