"""The image server's side of HTTP/1.1, by hand: read a request head, send a response or a fault."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import struct
import time
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

MAX_HEADER_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    keep_alive: bool
    has_cookie: bool
    if_none_match: str | None = None
    if_modified_since: str | None = None

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Parse one request head (and discard any body); None when the client closed."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(raw) > MAX_HEADER_BYTES:
        return None
    lines = raw.decode("latin-1").split("\r\n")
    method, target, version = [*lines[0].split(" "), "", "", ""][:3]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or "0")
    if length > 0:
        await reader.readexactly(length)
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
    split = urlsplit(target)
    path = split.path or "/"
    return Request(
        method.upper(),
        path,
        parse_qs(split.query),
        keep_alive,
        "cookie" in headers,
        headers.get("if-none-match"),
        headers.get("if-modified-since"),
    )


async def send(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str,
    *,
    headers: dict[str, str] | None = None,
    head_only: bool = False,
) -> None:
    lines = [
        f"HTTP/1.1 {status} {reason_phrase(status)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if body and not head_only:
        writer.write(body)
    await writer.drain()


async def send_partial(writer: asyncio.StreamWriter, declared_bytes: int, sent_bytes: int) -> None:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {declared_bytes}\r\n\r\n"
    )
    body = (b"\xff\xd8" + b"\x00" * max(0, sent_bytes - 2))[:sent_bytes]
    writer.write(head.encode("latin-1") + body)
    await writer.drain()


async def wait_until_client_leaves(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def abort_with_reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:  # SO_LINGER 0: close() sends RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)
