"""LeanTransport against a real HTTP server on 127.0.0.1 that counts its connections.

The fault matrix through ImageFetcher (timeouts, resets, truncation, byte cap, redirects, …) is
in test_fetch.py, which runs on this transport; here: the pool, keep-alive and the raw errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

import httpx
import pytest

from backfill_quality.config import FetchSettings
from backfill_quality.errors import FetchError
from backfill_quality.fetching.exchange import Outgoing, request_head
from backfill_quality.fetching.fetcher import ImageFetcher
from backfill_quality.fetching.transport import LeanTransport
from tests.support.http import closed_port

BODY = b"\xff\xd8" + b"x" * 998


@dataclass
class Seen:
    """One request as the server read it."""

    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class CountingServer:
    """An HTTP/1.1 server in the test's event loop; behaviour chosen by path.

    /img (1000 bytes) · /slow (100 ms, then /img) · /big (2 MB, written as the client reads) ·
    /stall (head and 10 of 100 bytes, then nothing) · /trickle (100 bytes, 10 every 60 ms) ·
    /truncated (10 of 100 bytes, then close) ·
    /garbage (not HTTP) · /close (`Connection: close`) · /chunked (3 chunks) · /echo (what it got)
    · /gzip, /deflate, /raw-deflate (/img's body with that Content-Encoding) · /extra (/img and
    four bytes more than its Content-Length) · the raw answers of `_RAW` (1xx first, a head in
    pieces, folded or malformed fields, 304, HTTP/1.0, a head cut short)
    """

    drops_second_request: bool = False  # close a kept-alive connection instead of answering
    connections: int = 0
    open_connections: int = 0
    max_open_connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> CountingServer:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def until(self, condition: Callable[[], bool], limit_s: float = 2.0) -> None:
        deadline_s = time.monotonic() + limit_s
        while not condition():
            assert time.monotonic() < deadline_s, "the server never saw it"
            await asyncio.sleep(0.01)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open_connections += 1
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        try:
            await self._serve(self.connections, reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()
            self._tasks.discard(task)

    async def _serve(
        self, connection: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        served = 0
        while head := await _read_head(reader):
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            served += 1
            if served > 1 and self.drops_second_request:
                return
            seen = Seen(connection, method, target, headers, body)
            self.requests.append(seen)
            if not await _respond(seen, reader, writer):
                return


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""  # the client closed the connection


async def _respond(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Answer one request; False when the connection must close afterwards."""
    path = seen.target.split("?")[0]
    if path == "/slow":
        await asyncio.sleep(0.1)
    if path in ("/img", "/slow"):
        writer.write(_head(200, len(BODY)) + BODY)
    elif path == "/echo":
        echo = f"{seen.method} {seen.target} host={seen.headers['host']} {len(seen.body)}"
        writer.write(_head(200, len(echo)) + echo.encode())
    elif path in _ENCODED:
        encoding, data = _ENCODED[path]
        writer.write(_head(200, len(data), f"Content-Encoding: {encoding}\r\n") + data)
    elif path in _RAW:  # odd but valid (or broken) answers, written as they are, in pieces
        for piece in _RAW[path]:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.005)
        return path not in _RAW_THEN_CLOSE
    elif path == "/extra":  # four bytes more than its Content-Length says
        writer.write(_head(200, len(BODY)) + BODY + b"junk")
    elif path == "/close":
        writer.write(_head(200, len(BODY), "Connection: close\r\n") + BODY)
    elif path == "/chunked":
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"3\r\nabc\r\n4\r\ndefg\r\n2\r\nhi\r\n0\r\n\r\n")
    elif path == "/big":
        writer.write(_head(200, 2_000_000))
        for _ in range(2_000):
            writer.write(b"\x00" * 1000)
            await writer.drain()
    elif path == "/trickle":  # 100 bytes, 10 every 60 ms
        writer.write(_head(200, 100))
        for _ in range(10):
            await writer.drain()
            await asyncio.sleep(0.06)
            writer.write(b"0123456789")
    elif path in ("/stall", "/truncated"):
        writer.write(_head(200, 100) + b"0123456789")
        await writer.drain()
        if path == "/stall":
            await reader.read()  # until the client leaves
        return False
    elif path == "/garbage":
        writer.write(b"HELLO THERE\r\n\r\n")
        await writer.drain()
        return False
    await writer.drain()
    return path != "/close"


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


_ENCODED = {
    "/gzip": ("gzip", gzip.compress(BODY)),
    "/deflate": ("deflate", zlib.compress(BODY)),
    "/raw-deflate": ("deflate", _raw_deflate(BODY)),
}


def _head(status: int, length: int, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} OK\r\nContent-Length: {length}\r\n{extra}\r\n".encode()


_RAW: dict[str, list[bytes]] = {
    "/continue": [b"HTTP/1.1 100 Continue\r\n\r\n", _head(200, 4) + b"abcd"],
    "/split": [b"HTTP/1.1 2", b"00 OK\r\nContent-Len", b"gth: 4\r", b"\n\r", b"\nab", b"cd"],
    "/folded": [b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 4\r\n\r\nabcd"],
    "/no-reason": [b"HTTP/1.1 200\r\nX-Spaced:   v  \r\nCONTENT-LENGTH: 0004\r\n\r\nabcd"],
    "/twice": [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd"],
    "/not-modified": [b'HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: "x"\r\n\r\n'],
    "/http10": [b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nabcd"],
    "/bare-lf": [b"HTTP/1.1 200 OK\nContent-Length: 4\n\nabcd"],
    "/cut-head": [b"HTTP/1.1 200 OK\r\nContent-Le"],
    "/bad-field": [b"HTTP/1.1 200 OK\r\nBad Field: x\r\nContent-Length: 4\r\n\r\nabcd"],
}
_RAW_THEN_CLOSE = {"/http10", "/cut-head", "/bad-field"}


Scenario = Callable[[CountingServer, httpx.AsyncClient], Awaitable[None]]


def run(
    scenario: Scenario,
    transport: LeanTransport | None = None,
    *,
    drops_second_request: bool = False,
) -> None:
    """Run `scenario` with a fresh server and a client on `transport` (a default LeanTransport)."""

    async def main() -> None:
        async with (
            CountingServer(drops_second_request=drops_second_request) as server,
            client_on(transport or LeanTransport()) as client,
        ):
            await scenario(server, client)

    asyncio.run(main())


@contextlib.asynccontextmanager
async def client_on(
    transport: LeanTransport, timeout_s: float = 2.0
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=transport, timeout=timeout_s) as client:
        yield client


# -- keep-alive --------------------------------------------------------------------------------


def test_sequential_requests_share_one_connection() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        for _ in range(5):
            response = await client.get(server.url("/img"))
            assert (response.status_code, response.content) == (200, BODY)
        chunked = await client.get(server.url("/chunked"))
        assert chunked.content == b"abcdefghi"
        assert server.connections == 1
        assert [seen.connection for seen in server.requests] == [1] * 6

    run(scenario)


def test_request_line_headers_and_body_reach_the_server() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        response = await client.post(server.url("/echo?a=1&b=%20x"), content=b"z" * 3000)
        assert response.text == f"POST /echo?a=1&b=%20x host=127.0.0.1:{server.port} 3000"
        assert response.http_version == "HTTP/1.1"
        assert response.reason_phrase == "OK"

    run(scenario)


def test_a_partly_read_response_closes_its_connection() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", server.url("/big")) as response:
            first = await response.aiter_bytes().__anext__()
            assert 0 < len(first) < 2_000_000
        await server.until(lambda: server.open_connections == 0)  # the server saw it close
        assert (await client.get(server.url("/img"))).content == BODY
        assert server.connections == 2

    run(scenario)


def test_a_long_body_read_in_parts_keeps_its_connection() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", server.url("/big")) as response:
            parts = [part async for part in response.aiter_raw()]
        assert len(parts) > 2  # streamed as it arrives, not gathered whole
        assert b"".join(parts) == b"\x00" * 2_000_000
        assert (await client.get(server.url("/img"))).content == BODY
        assert server.connections == 1

    run(scenario)


def test_bytes_past_the_declared_length_are_not_taken_for_the_next_response() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        assert (await client.get(server.url("/extra"))).content == BODY
        assert (await client.get(server.url("/img"))).content == BODY
        assert server.connections == 2  # the connection that carried junk was closed

    run(scenario)


def test_a_response_with_connection_close_is_not_reused() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        assert (await client.get(server.url("/close"))).content == BODY
        assert (await client.get(server.url("/img"))).content == BODY
        assert server.connections == 2

    run(scenario)


def test_an_unread_body_already_received_keeps_the_connection() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", server.url("/img")) as response:
            assert response.status_code == 200  # the body is never read (as for a redirect)
        await client.get(server.url("/img"))
        assert server.connections == 1

    run(scenario)


def test_a_connection_the_server_dropped_while_idle_is_replaced_transparently() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        for _ in range(3):
            assert (await client.get(server.url("/img"))).content == BODY
        assert server.connections == 3
        assert len(server.requests) == 3

    run(scenario, drops_second_request=True)


def test_idle_connections_expire() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        await client.get(server.url("/img"))
        await asyncio.sleep(0.15)
        await client.get(server.url("/img"))
        assert server.connections == 2

    run(scenario, LeanTransport(keepalive_expiry_s=0.1))


def test_idle_connections_are_capped_over_all_hosts() -> None:
    async def main() -> None:
        async with (
            CountingServer() as first,
            CountingServer() as second,
            client_on(LeanTransport(max_connections=4, max_idle_connections=1)) as client,
        ):
            await client.get(first.url("/img"))
            await client.get(second.url("/img"))  # the idle one to `first` is closed
            await first.until(lambda: first.open_connections == 0)
            await client.get(first.url("/img"))
            await client.get(second.url("/img"))
            assert (first.connections, second.connections) == (2, 2)

    asyncio.run(main())


def test_aclose_closes_idle_connections() -> None:
    async def main() -> None:
        async with CountingServer() as server:
            transport = LeanTransport()
            async with client_on(transport) as client:
                await asyncio.gather(*(client.get(server.url("/slow")) for _ in range(3)))
                assert server.open_connections == 3
            await server.until(lambda: server.open_connections == 0)

    asyncio.run(main())


# -- the pool limit ----------------------------------------------------------------------------


def test_requests_over_the_pool_limit_wait_for_a_connection() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.get(server.url("/slow")) for _ in range(6)))
        assert all(response.content == BODY for response in responses)
        assert (server.connections, server.max_open_connections) == (2, 2)
        assert time.monotonic() - started >= 0.3  # three rounds of 100 ms

    run(scenario, LeanTransport(max_connections=2))


def test_pool_timeout_when_every_connection_stays_busy() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", server.url("/stall")):
            with pytest.raises(httpx.PoolTimeout) as caught:
                await client.get(server.url("/img"), timeout=httpx.Timeout(2.0, pool=0.1))
            assert caught.value.request.url.path == "/img"
        assert (await client.get(server.url("/img"))).content == BODY  # the slot came back

    run(scenario, LeanTransport(max_connections=1))


# -- errors ------------------------------------------------------------------------------------


def test_read_timeout_mid_body() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await client.get(server.url("/stall"), timeout=httpx.Timeout(2.0, read=0.1))
        assert caught.value.request.url.path == "/stall"

    run(scenario)


def test_a_body_that_keeps_coming_never_times_out_however_long_it_takes() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        started_s = time.monotonic()
        response = await client.get(server.url("/trickle"), timeout=httpx.Timeout(2.0, read=0.2))
        assert response.content == b"0123456789" * 10
        assert time.monotonic() - started_s > 0.4  # longer than the read timeout, twice over

    run(scenario)


def test_truncated_body_names_the_byte_counts() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError, match=r"received 10 bytes, expected 100"):
            await client.get(server.url("/truncated"))
        assert (await client.get(server.url("/img"))).content == BODY

    run(scenario)


def test_a_response_that_is_not_http_is_a_protocol_error() -> None:
    async def scenario(server: CountingServer, client: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.get(server.url("/garbage"))
        assert caught.value.request.url.path == "/garbage"

    run(scenario)


def test_connect_timeout(blackhole_port: int) -> None:
    async def main() -> None:
        async with client_on(LeanTransport(), timeout_s=0.2) as client:
            with pytest.raises(httpx.ConnectTimeout):
                await client.get(f"http://127.0.0.1:{blackhole_port}/a.jpg")

    asyncio.run(main())


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_closed_port_is_connection_refused(scheme: str) -> None:
    port = closed_port()

    async def main() -> None:
        async with client_on(LeanTransport()) as client:
            with pytest.raises(httpx.ConnectError) as caught:
                await client.get(f"{scheme}://127.0.0.1:{port}/a.jpg")
            assert isinstance(caught.value.__cause__, ConnectionRefusedError)

    asyncio.run(main())
    fetcher_settings = FetchSettings(timeout_s=0.5, retries=0)

    async def fetch() -> None:
        async with ImageFetcher(fetcher_settings) as fetcher:
            await fetcher.fetch(f"{scheme}://127.0.0.1:{port}/a.jpg")

    with pytest.raises(FetchError, match=rf"^connection refused \(127\.0\.0\.1:{port}\)$"):
        asyncio.run(fetch())


def test_the_fetcher_runs_on_the_lean_transport() -> None:
    async def main() -> None:
        async with CountingServer() as server, ImageFetcher(FetchSettings()) as fetcher:
            for _ in range(3):
                assert (await fetcher.fetch(server.url("/img"))).data == BODY
            assert server.connections == 1
            assert server.requests[0].headers["user-agent"].startswith("backfill-quality/")

    asyncio.run(main())


# -- ImageFetcher's plain path: no httpx Request or Response for a plain URL -------------------


def _fetch_all(
    monkeypatch: pytest.MonkeyPatch, paths: list[str]
) -> tuple[CountingServer, list[bytes], int]:
    """Fetch `paths` with one ImageFetcher; the server, the bodies and how many requests went
    through httpx.AsyncClient.send (counted, then sent on unchanged)."""
    through_httpx = 0
    send = httpx.AsyncClient.send

    async def counting_send(
        client: httpx.AsyncClient, request: httpx.Request, **kwargs: bool
    ) -> httpx.Response:
        nonlocal through_httpx
        through_httpx += 1
        return await send(client, request, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", counting_send)
    bodies: list[bytes] = []

    async def main() -> CountingServer:
        async with CountingServer() as server, ImageFetcher(FetchSettings()) as fetcher:
            for path in paths:
                bodies.append((await fetcher.fetch(server.url(path))).data)
            return server

    return asyncio.run(main()), bodies, through_httpx


def test_a_plain_url_is_fetched_without_httpx_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    server, bodies, through_httpx = _fetch_all(monkeypatch, ["/img", "/img?size=2&x=a%20b"])
    assert bodies == [BODY, BODY]
    assert [seen.target for seen in server.requests] == ["/img", "/img?size=2&x=a%20b"]
    assert through_httpx == 0
    assert server.connections == 1  # kept alive across both


def test_other_urls_go_through_httpx_and_both_paths_send_the_same_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a dot segment and a fragment: httpx rewrites them, so they take the httpx path
    server, bodies, through_httpx = _fetch_all(monkeypatch, ["/echo?a=1", "/x/../echo?a=1#top"])
    plain, via_httpx = server.requests
    assert through_httpx == 1
    assert (plain.target, via_httpx.target) == ("/echo?a=1", "/echo?a=1")
    assert list(plain.headers.items()) == list(via_httpx.headers.items())
    assert next(iter(plain.headers)) == "host"
    assert plain.headers["host"] == f"127.0.0.1:{server.port}"
    assert plain.headers["accept-encoding"] == "gzip, deflate"
    assert bodies[0] == bodies[1]


@pytest.mark.parametrize("path", ["/gzip", "/deflate", "/raw-deflate"])
def test_the_plain_path_decodes_content_encoding_as_httpx_does(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    _, bodies, through_httpx = _fetch_all(monkeypatch, [path, f"/x/..{path}"])
    assert bodies == [BODY, BODY]
    assert through_httpx == 1


# -- the plain path's own head parser: it answers exactly as h11 does, or hands over to h11 ------

PATHS = ["/img", *_RAW, "/chunked", "/close", "/extra", "/truncated", "/gzip", "/garbage", "/img"]


async def _exchange_outcomes(
    server: CountingServer, *, plain: bool, parsers: dict[str, str] | None = None
) -> list[object]:
    """Each of PATHS in turn on one transport: status, reason, version, headers and body, or
    the error's type and text; with the request head written out (`plain`) or through h11.
    `parsers` gets which parser read each answer's head (`Head`: ours, `Response`: h11's)."""
    outcomes: list[object] = []
    transport = LeanTransport()
    try:
        for path in PATHS:
            target = path.encode()
            fields = [(b"Host", f"127.0.0.1:{server.port}".encode()), (b"Accept", b"*/*")]
            head = request_head(b"GET", target, fields) if plain else None
            out = Outgoing("GET", target, fields, head=head)
            key = ("http", "127.0.0.1", server.port)
            try:
                response, stream = await transport.exchange(key, out, {"read": 2.0})
                body = b"".join([part async for part in stream])
            except httpx.HTTPError as exc:
                outcomes.append((path, type(exc).__name__, str(exc)))
                continue
            if parsers is not None:
                parsers[path] = type(response).__name__
            headers = [(bytes(name), bytes(value)) for name, value in response.headers]
            version = bytes(response.http_version)
            outcomes.append((path, response.status_code, bytes(response.reason), version, headers))
            outcomes.append(body)
    finally:
        await transport.aclose()
    return outcomes


def test_the_plain_path_reads_every_answer_as_h11_does() -> None:
    parsers: dict[str, str] = {}

    async def main() -> tuple[list[object], list[object], int, int]:
        async with CountingServer() as plain_server, CountingServer() as h11_server:
            plain = await _exchange_outcomes(plain_server, plain=True, parsers=parsers)
            through_h11 = await _exchange_outcomes(h11_server, plain=False)
            return plain, through_h11, plain_server.connections, h11_server.connections

    plain, through_h11, plain_connections, h11_connections = asyncio.run(main())
    assert plain == through_h11
    assert plain_connections == h11_connections  # the same connections kept and closed
    by_path = {outcome[0]: outcome for outcome in plain if isinstance(outcome, tuple)}
    assert by_path["/split"][1] == 200 and by_path["/continue"][1] == 200
    assert by_path["/no-reason"][4] == [(b"x-spaced", b"v"), (b"content-length", b"0004")]
    assert by_path["/not-modified"][1] == 304
    assert by_path["/garbage"][1] == "RemoteProtocolError"
    assert by_path["/cut-head"][1] == "RemoteProtocolError"
    assert by_path["/bad-field"][1] == "RemoteProtocolError"
    ours = {path for path, parser in parsers.items() if parser == "Head"}
    assert ours == {"/img", "/split", "/no-reason", "/http10", "/close", "/extra", "/gzip"}
    assert parsers["/continue"] == parsers["/chunked"] == parsers["/folded"] == "Response"


def test_a_request_field_h11_would_refuse_goes_to_h11() -> None:
    assert request_head(b"GET", b"/a", [(b"Host", b"h"), (b"If-None-Match", b'"x"')]) == (
        b'GET /a HTTP/1.1\r\nHost: h\r\nIf-None-Match: "x"\r\n\r\n'
    )
    assert request_head(b"GET", b"/a", [(b"Host", b"h"), (b"X-Bad", b"x\r\nInjected: 1")]) is None
    assert request_head(b"GET", b"/a", [(b"Bad Name", b"x")]) is None
