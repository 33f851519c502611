"""One HTTP/1.1 exchange on one connection: write the request, read the head and the body.

h11 parses every response on the httpx path. The fetcher's plain path (`Outgoing.head` set:
a GET whose head is already written out) sends its bytes as they are and parses the response
head itself when it is a plain one: a final status, well-formed fields, the body framed by one
Content-Length. h11 builds and checks each request's head and parses each response's head in
about 0.3 ms of the event loop per image, a sixth of what a run spends outside scoring. Any
other response (1xx, chunked, no length, a malformed line) goes to h11 with the bytes read so
far, so what is accepted or refused, and how, stays h11's.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

import h11
import httpx

# Reads of at most 64 KB keep every buffer below glibc's mmap threshold (128 KB): larger ones
# are fresh pages each time and their page faults cost more CPU than the rest of the request
# (bench/fetch_client.py: 300 KB bodies, 2.4 -> 1.3 ms of client CPU per request).
READ_CHUNK_BYTES = 64 * 1024


MAX_HEAD_BYTES = 100 * 1024  # the largest response head accepted (as httpcore)


_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([2-9][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_FIELD_LINE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)[ \t]*"
)
_HEAD_END = re.compile(rb"\n\r?\n")  # where h11 ends a head: its lines may end in a bare LF
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(
    rb"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
)


class Head:
    """A response head parsed without h11: what the callers read of an `h11.Response`."""

    __slots__ = ("headers", "http_version", "reason", "status_code")

    def __init__(
        self,
        status_code: int,
        reason: bytes,
        http_version: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.status_code = status_code
        self.reason = reason
        self.http_version = http_version
        self.headers = headers  # names in lower case, as h11 gives them


ResponseHead = h11.Response | Head


def request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The request's head as h11 would write it, or None if a field is not one h11 would send
    unchanged (the exchange then goes through h11, which refuses it or cleans it)."""
    for name, value in headers:
        if _FIELD_NAME.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            return None
    fields = b"".join([name + b": " + value + b"\r\n" for name, value in headers])
    return b"".join((method, b" ", target, b" HTTP/1.1\r\n", fields, b"\r\n"))


def parse_head(raw: bytes) -> Head | None:
    """The head (without its final empty line) when it is a plain one: a final status and
    well-formed fields, at most one Content-Length and no Transfer-Encoding; else None."""
    lines = raw.split(b"\r\n")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    has_length = False
    for line in lines[1:]:
        field = _FIELD_LINE.fullmatch(line)
        if field is None:
            return None
        name, value = field.group(1).lower(), field.group(2)
        if name == b"content-length":
            if has_length or not value.isdigit():
                return None
            has_length = True
        elif name == b"transfer-encoding":
            return None
        headers.append((name, value))
    version, code, reason = status.group(1, 2, 3)
    return Head(int(code), reason or b"", version, headers)


class Connection:
    """One TCP (or TLS) connection and its h11 state machine."""

    __slots__ = (
        "h11",
        "idle_since_s",
        "is_reused",
        "leftover",
        "reader",
        "received_bytes",
        "writer",
    )

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.idle_since_s = 0.0
        self.is_reused = False
        self.received_bytes = 0  # in the current exchange
        self.leftover = b""  # read past a head parsed without h11: the body's first bytes

    def is_usable(self) -> bool:
        """False once the server closed its side or the socket failed."""
        reader = self.reader
        return not (
            reader.at_eof() or reader.exception() is not None or self.writer.transport.is_closing()
        )

    def abort(self) -> None:
        self.writer.transport.abort()

    def renew(self) -> None:
        """A fresh state machine for the next exchange, after a body read without h11."""
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What one exchange sends; `request` (when an httpx.Request is behind it) goes into errors."""

    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterable[bytes] | None = None
    request: httpx.Request | None = None
    head: bytes | None = None  # the request's head already written out (`request_head`)

    @property
    def is_resendable(self) -> bool:
        """An idempotent request without a body may be sent again on a fresh connection."""
        return self.method in _IDEMPOTENT_METHODS and self.body is None


class StaleConnection(Exception):
    """A reused connection died before the server sent a byte; `error` if we cannot resend."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


async def send_and_read_head(
    conn: Connection, out: Outgoing, timeouts: dict[str, Any]
) -> ResponseHead:
    """Write the request (head and body), then read up to the final response head."""
    request = out.request
    try:
        if out.head is not None:
            conn.received_bytes = 0
            conn.writer.write(out.head)
            await drain(conn.writer, timeouts.get("write"), request)
            raw, end, is_closed = await _read_raw_head(conn, timeouts.get("read"), request)
            is_crlf = end > 0 and raw.endswith(b"\r\n\r\n", 0, end)  # else h11 reads it
            head = parse_head(raw[: end - 4]) if is_crlf else None
            if head is not None and fixed_length(out, head) is not None:
                conn.leftover = raw[end:]
                return head
            _hand_to_h11(conn, out, raw, is_closed=is_closed)
        else:
            await send_request(conn, out, timeouts.get("write"))
        while True:
            event = next_event(conn, request)
            if event is h11.NEED_DATA:
                if not await receive(conn, timeouts.get("read"), request) and not (
                    conn.received_bytes
                ):
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    )
            elif type(event) is h11.Response:
                return event
            elif type(event) is not h11.InformationalResponse:  # 1xx: wait for the real one
                message = f"unexpected {getattr(event, '__name__', type(event).__name__)}"
                raise httpx.RemoteProtocolError(message, request=request)
    except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
        if conn.is_reused and not conn.received_bytes and out.is_resendable:
            raise StaleConnection(exc) from exc
        raise


async def _read_raw_head(
    conn: Connection, timeout_s: float | None, request: httpx.Request | None
) -> tuple[bytes, int, bool]:
    """What the server sent up to the end of the response head and maybe beyond, where the
    head ends (past its empty line, found as h11 finds it; -1 if it did not end within
    MAX_HEAD_BYTES or before the end of file), and whether the server closed its side."""
    raw = b""
    while True:
        data = await read_some(conn, READ_CHUNK_BYTES, timeout_s, request)
        conn.received_bytes += len(data)
        if not data:
            if not raw:
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                )
            return raw, -1, True
        raw += data
        blank = _HEAD_END.search(raw)
        if blank is not None:
            return raw, blank.end(), False
        if len(raw) > MAX_HEAD_BYTES:
            return raw, -1, False


def _hand_to_h11(conn: Connection, out: Outgoing, raw: bytes, *, is_closed: bool) -> None:
    """Let h11 parse a response whose head was read without it: it learns of the request sent
    (its head as h11 would have written it) and gets the bytes read."""
    state = conn.h11
    try:
        state.send(h11.Request(method=out.method, target=out.target, headers=out.headers))
        state.send(h11.EndOfMessage())
    except h11.LocalProtocolError as exc:  # pragma: no cover - request_head checked the fields
        raise httpx.LocalProtocolError(str(exc), request=out.request) from exc
    state.receive_data(raw)
    if is_closed:
        state.receive_data(b"")


async def send_request(conn: Connection, out: Outgoing, timeout_s: float | None) -> None:
    state = conn.h11
    conn.received_bytes = 0
    request = out.request
    try:
        head = state.send(h11.Request(method=out.method, target=out.target, headers=out.headers))
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc), request=request) from exc
    writer = conn.writer
    writer.write(head or b"")
    if out.body is not None:
        async for part in out.body:
            writer.write(state.send(h11.Data(data=part)) or b"")
            await drain(writer, timeout_s, request)
    writer.write(state.send(h11.EndOfMessage()) or b"")
    await drain(writer, timeout_s, request)


async def drain(
    writer: asyncio.StreamWriter, timeout_s: float | None, request: httpx.Request | None
) -> None:
    if not writer.transport.get_write_buffer_size():
        return  # all written to the socket already: nothing to wait for
    try:
        async with asyncio.timeout(timeout_s):
            await writer.drain()
    except TimeoutError as exc:
        message = f"could not send the request within {timeout_s:g}s"
        raise httpx.WriteTimeout(message, request=request) from exc
    except OSError as exc:
        raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc


async def receive(conn: Connection, timeout_s: float | None, request: httpx.Request | None) -> int:
    """Read what the server sent next into h11; how many bytes (0 at EOF)."""
    data = await read_some(conn, READ_CHUNK_BYTES, timeout_s, request)
    conn.h11.receive_data(data)
    conn.received_bytes += len(data)
    return len(data)


async def read_some(
    conn: Connection, most: int, timeout_s: float | None, request: httpx.Request | None
) -> bytes:
    """What the server sent next, at most `most` bytes (b"" at EOF); httpx's errors."""
    try:
        if timeout_s is None:
            return await conn.reader.read(most)
        async with asyncio.timeout(timeout_s):
            return await conn.reader.read(most)
    except TimeoutError as exc:
        message = f"no data from the server within {timeout_s:g}s"
        raise httpx.ReadTimeout(message, request=request) from exc
    except OSError as exc:  # reset, broken pipe, TLS errors
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


def fixed_length(out: Outgoing, head: ResponseHead) -> int | None:
    """The body's length when the response is framed by one Content-Length (the common case,
    read without h11: `LeanStream`); None when h11 must frame it (chunked, until close, none)."""
    if out.method == "HEAD" or head.status_code in (204, 304):
        return None
    length: int | None = None
    for name, value in head.headers:  # h11 lower-cased the names and checked the values
        if name == b"transfer-encoding" or (name == b"content-length" and length is not None):
            return None
        if name == b"content-length":
            length = int(value)
    return length


def keeps_alive(out: Outgoing, head: ResponseHead) -> bool:
    """Whether the connection may carry another exchange after this one (h11's rule: HTTP/1.1
    and no `Connection: close` on either side)."""
    if head.http_version != b"1.1":
        return False
    sent = ((name.lower(), value) for name, value in out.headers)
    for name, value in (*head.headers, *sent):
        if name == b"connection" and b"close" in (t.strip() for t in value.lower().split(b",")):
            return False
    return True


def next_event(conn: Connection, request: httpx.Request | None) -> Any:
    try:
        return conn.h11.next_event()
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
