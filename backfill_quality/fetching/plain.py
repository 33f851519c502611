"""A GET on `LeanTransport` without httpx's Request and Response: the fetcher's path for plain URLs.

Building an `httpx.Request`, sending it through `AsyncClient.send` (auth, cookies, hooks,
timers) and wrapping the answer in an `httpx.Response` (headers, decoders, byte streams) cost
more of the event loop than the HTTP exchange itself (bench/cpuprofile.py on a real run). The
fetcher needs a status, four headers and the body, so for a URL that httpx would send exactly as
written (lower-case http(s) scheme, lower-case host name or IPv4 address, ASCII path and query
of RFC 3986 characters, no user info, no fragment, no dot segments) it sends the same request
head httpx would (Host first, then the client's headers) straight through
`LeanTransport.exchange`. Any other URL, or a run behind a proxy, goes through the httpx client:
what reaches the host is the same either way. Errors are httpx's own, raised by the transport.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import httpx

from backfill_quality.fetching.exchange import Outgoing, request_head
from backfill_quality.fetching.transport import DEFAULT_PORTS, LeanStream, LeanTransport, PoolKey

_PLAIN_URL = re.compile(
    r"(?P<scheme>https?)://(?P<host>[a-z0-9](?:[a-z0-9.\-]*[a-z0-9])?)(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<target>[/?](?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?",
    re.ASCII,
)


def plain_target(url: str) -> tuple[PoolKey, bytes, bytes] | None:
    """(scheme, host, port), the Host header and the request target of a URL httpx would send
    unchanged; None for any other URL (the caller then lets httpx build the request)."""
    match = _PLAIN_URL.fullmatch(url)
    if match is None:
        return None
    scheme, host, port_text, target = match.group("scheme", "host", "port", "target")
    path = (target or "/").partition("?")[0]
    if "/." in path or (path and path[0] != "/"):
        return None  # dot segments (httpx removes them), or a query without a path
    default_port = DEFAULT_PORTS[scheme]
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        return None
    host_header = host if port == default_port else f"{host}:{port}"
    return (scheme, host, port), host_header.encode("ascii"), (target or "/").encode("ascii")


class PlainResponse:
    """Status, reason, headers (lower-case names, repeated ones joined by ", " as httpx does)
    and the body, decoded per Content-Encoding (gzip, deflate) as httpx would."""

    __slots__ = ("_stream", "headers", "reason_phrase", "status_code")

    def __init__(
        self,
        status_code: int,
        reason: bytes,
        raw_headers: Iterable[tuple[bytes, bytes]],
        stream: LeanStream,
    ) -> None:
        self.status_code = status_code
        self.reason_phrase = reason.decode("ascii", errors="ignore")
        headers: dict[str, str] = {}
        for raw_name, raw_value in raw_headers:  # h11 gives the names in lower case
            name, value = raw_name.decode("ascii"), _text(raw_value)
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        self._stream = stream

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        decoders = _decoders(self.headers.get("content-encoding", ""))
        async for chunk in self._stream:
            data = chunk
            for decoder in decoders:
                data = decoder.decode(data)
            if data:
                yield data
        tail = b""
        for decoder in decoders:
            tail = decoder.decode(tail) + decoder.flush()
        if tail:
            yield tail

    async def aclose(self) -> None:
        await self._stream.aclose()


async def send_get(
    transport: LeanTransport,
    target: tuple[PoolKey, bytes, bytes],
    headers: Sequence[tuple[bytes, bytes]],
    timeouts: dict[str, Any],
) -> PlainResponse:
    """GET `target` (from `plain_target`) with Host and then `headers`; the response head."""
    key, host_header, path = target
    fields = [(b"Host", host_header), *headers]
    out = Outgoing("GET", path, fields, head=request_head(b"GET", path, fields))
    head, stream = await transport.exchange(key, out, timeouts)
    return PlainResponse(head.status_code, head.reason, head.headers, stream)


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class _Decoder:
    """One Content-Encoding; zlib errors become httpx.DecodingError, as in httpx."""

    __slots__ = ("_is_deflate", "_is_first", "_zlib")

    def __init__(self, encoding: str) -> None:
        self._is_deflate = encoding == "deflate"
        self._is_first = True
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS if self._is_deflate else zlib.MAX_WBITS | 16)

    def decode(self, data: bytes) -> bytes:
        was_first, self._is_first = self._is_first, False
        try:
            return self._zlib.decompress(data)
        except zlib.error as exc:
            if self._is_deflate and was_first:  # raw deflate without the zlib wrapper
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.decode(data)
            raise httpx.DecodingError(str(exc)) from exc

    def flush(self) -> bytes:
        try:
            return self._zlib.flush()
        except zlib.error as exc:  # pragma: no cover - flush does not fail on zlib >= 1.2
            raise httpx.DecodingError(str(exc)) from exc


def _decoders(content_encoding: str) -> list[_Decoder]:
    """The decoders to apply in order (the last encoding applied is undone first); unknown
    encodings are passed through, as httpx does."""
    names = [part.strip().lower() for part in content_encoding.split(",")]
    return [_Decoder("gzip" if n == "x-gzip" else n) for n in reversed(names) if n in _ZLIB_NAMES]


_ZLIB_NAMES = frozenset({"gzip", "x-gzip", "deflate"})
