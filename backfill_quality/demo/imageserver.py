"""A local HTTP/1.1 image server on 127.0.0.1 for the demo, the tests and the benchmarks.

An asyncio server (minimal HTTP/1.1 parser, keep-alive) running in a background thread, so it
serves hundreds of images per second with added latency without a thread per request. Image bytes
are registered with `add`; this module never decodes them. Every request counts one hit for its
path (without the query string), readable with `hits`.

Routes, chosen by path (`?img=<path>` names a registered image):

- any path given to `add` — 200 with the bytes, their content type, an `ETag` (from the bytes)
  and a `Last-Modified` (when they were added); `304 Not Modified` without a body when the
  request's `If-None-Match` names that ETag (or, without one, its `If-Modified-Since` is not
  older than Last-Modified). `total_hits` and `not_modified` count every request and the 304s.
- `/status/<code>` — that status (e.g. 404, 403, 500, 503) with a short text body.
- `/flaky/<n>/<key>?img=` — 503 for the first n hits of that path, then the image.
- `/retry-after/<seconds>/<key>?img=` — 429 with `Retry-After: <seconds>` on the first hit,
  then the image.
- `/retry-after-date/<seconds>/<key>?img=` — the same with an HTTP-date `Retry-After`.
- `/set-cookie/<key>?img=` — the image, with a `Set-Cookie` header (`cookie_hits` counts the
  requests to any path that came back with a `Cookie` header).
- `/slow/<ms>[?img=]` — waits <ms> before the headers, then the image (or a short text body).
- `/rate-limited/<rps>/<key>?img=` — the image, unless <rps> requests of that path were already
  served in the last second: then 429 with `Retry-After: 1`.
- `/loaded/<base_ms>/<step_ms>/<key>?img=` — the image after base_ms + step_ms x (requests of
  that path in flight - 1): a host that slows with load.
  Both log every answer (`served(path)`: time, status, requests in flight, latency).
- `/stall` — headers (Content-Length 1 MB) and 1 KB of body, then nothing until the client leaves.
- `/reset` — headers (Content-Length 1 MB), 16 KB of body, then a TCP reset.
- `/truncated` — Content-Length 1 MB, 16 KB of body, then a clean close.
- `/huge` — headers with Content-Length 1 GB; the body is never sent.
- `/chunked-huge` — a chunked body that grows without end (64 KB chunks, stops at 1 GB) until
  the client goes away; `bytes_sent("/chunked-huge")` tells how much was written.
- `/drip/<ms>` — Content-Length 1 MB, then one body byte every <ms> (each read is quick, the
  whole download is not).
- `/not-an-image` — 200 text/html.
- `/redirect/<n>?to=<path>` — n hops (302) through `/redirect/<n-1>`, then to <path>.
- `/redirect-loop` — 302 to itself, forever.
- `/redirect-to?url=<absolute url>` — 302 to that URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote

from backfill_quality.demo.wire import (
    CHUNK_BYTES,
    Request,
    abort_with_reset,
    http_date,
    read_request,
    reason_phrase,
    send,
    send_partial,
    wait_until_client_leaves,
)

_FAULT_LENGTH = 1_000_000
_HUGE_LENGTH = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Served:
    """One answer of a logged route: when (monotonic s), its status, how many requests of
    that path were in flight as it arrived (itself included), and the latency it was given."""

    at_s: float
    status: int
    in_flight: int
    latency_s: float


@dataclass(frozen=True, slots=True)
class _Image:
    data: bytes
    content_type: str
    validators: dict[str, str]
    """ETag (from the bytes) and Last-Modified (when they were added), sent with the image."""


def _validators(data: bytes) -> dict[str, str]:
    return {
        "ETag": f'"{hashlib.sha256(data).hexdigest()[:20]}"',
        "Last-Modified": email.utils.formatdate(usegmt=True),
    }


def _is_fresh(request: Request, validators: dict[str, str]) -> bool:
    """Whether a conditional GET's validators still match (RFC 9110 13.1: If-None-Match wins)."""
    if request.if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in request.if_none_match.split(",")]
        return "*" in tags or validators["ETag"] in tags
    if request.if_modified_since is not None:
        try:
            since = email.utils.parsedate_to_datetime(request.if_modified_since)
        except (TypeError, ValueError):
            return False
        modified = email.utils.parsedate_to_datetime(validators["Last-Modified"])
        return modified <= since
    return False


class ImageServer:
    """A background-thread HTTP server on 127.0.0.1; a context manager (start, stop)."""

    def __init__(self, *, latency_ms: float = 0.0) -> None:
        self.latency_s = latency_ms / 1000.0
        self.base_url = ""
        self._images: dict[str, _Image] = {}
        self._hits: Counter[str] = Counter()
        self._sent: Counter[str] = Counter()
        self._cookie_hits = 0
        self._not_modified = 0
        self._served: dict[str, list[Served]] = {}
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- public API ---------------------------------------------------------------------------

    def add(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Serve `data` at `path` (e.g. "/img/1.jpg"); returns the full URL."""
        if not path.startswith("/"):
            path = "/" + path
        with self._lock:
            self._images[path] = _Image(bytes(data), content_type, _validators(data))
        return self.url(path)

    def url(self, path: str) -> str:
        """The full URL of a path on this server."""
        if not self.base_url:
            raise RuntimeError("ImageServer is not started (use it as a context manager)")
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def hits(self, path: str) -> int:
        """How many requests were seen for `path` (query string ignored)."""
        with self._lock:
            return self._hits[path]

    def total_hits(self) -> int:
        """How many requests were seen, to any path."""
        with self._lock:
            return sum(self._hits.values())

    def not_modified(self) -> int:
        """How many requests were answered 304 Not Modified."""
        with self._lock:
            return self._not_modified

    def cookie_hits(self) -> int:
        """How many requests (to any path) carried a `Cookie` header."""
        with self._lock:
            return self._cookie_hits

    def served(self, path: str) -> list[Served]:
        """The answers of a logged route (`/rate-limited/…`, `/loaded/…`), in order."""
        with self._lock:
            return list(self._served.get(path, ()))

    def bytes_sent(self, path: str) -> int:
        """How many body bytes the streaming fault routes wrote for `path`."""
        with self._lock:
            return self._sent[path]

    def __enter__(self) -> ImageServer:
        self._thread = threading.Thread(target=self._run, name="image-server", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None:
            raise RuntimeError(f"image server failed to start: {self._error}") from self._error
        if not self.base_url:
            raise RuntimeError("image server did not start within 10 s")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.base_url = ""

    # -- server thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to __enter__, never lost silently
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._handle_connection(reader, writer)
            except asyncio.CancelledError:
                pass  # shutting down; re-raising makes asyncio log an error in Python 3.11
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    break
                with self._lock:
                    self._hits[request.path] += 1
                    self._cookie_hits += request.has_cookie
                if self.latency_s > 0:
                    await asyncio.sleep(self.latency_s)
                keep_open = await self._respond(request, reader, writer)
                if not (keep_open and request.keep_alive):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    # -- routing ------------------------------------------------------------------------------

    async def _respond(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Write one response; returns False when the connection must be closed afterwards."""
        path = request.path
        parts = path.strip("/").split("/")
        head = parts[0]
        with self._lock:
            image = self._images.get(path)
            hit_count = self._hits[path]
        if image is not None and _is_fresh(request, image.validators):
            with self._lock:
                self._not_modified += 1
            await send(writer, 304, b"", image.content_type, headers=image.validators)
            return True
        if image is not None:
            await send(
                writer,
                200,
                image.data,
                image.content_type,
                headers=image.validators,
                head_only=request.method == "HEAD",
            )
            return True
        if head == "status" and len(parts) == 2 and parts[1].isdigit():
            code = int(parts[1])
            await send(writer, code, reason_phrase(code).encode(), "text/plain")
            return True
        if head == "flaky" and len(parts) == 3 and parts[1].isdigit():
            if hit_count <= int(parts[1]):
                await send(writer, 503, b"Service Unavailable", "text/plain")
                return True
            return await self._send_named_image(request, writer)
        if head in ("retry-after", "retry-after-date") and len(parts) == 3:
            if hit_count <= 1:
                seconds = float(parts[1])
                value = str(int(seconds)) if head == "retry-after" else http_date(seconds)
                headers = {"Retry-After": value}
                await send(writer, 429, b"Too Many Requests", "text/plain", headers=headers)
                return True
            return await self._send_named_image(request, writer)
        if head == "set-cookie" and len(parts) == 2:
            with self._lock:
                image = self._images.get(request.arg("img") or "")
            body = image.data if image is not None else b"no image"
            cookie = {"Set-Cookie": f"session={parts[1]}; Path=/"}
            await send(writer, 200, body, "image/jpeg", headers=cookie)
            return True
        if head == "rate-limited" and len(parts) == 3 and parts[1].isdigit():
            return await self._rate_limited(request, writer, int(parts[1]))
        if head == "loaded" and len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit():
            return await self._loaded(request, writer, float(parts[1]), float(parts[2]))
        if head == "slow" and len(parts) == 2:
            await asyncio.sleep(float(parts[1]) / 1000.0)
            if request.arg("img") is None:
                await send(writer, 200, b"slow", "text/plain")
                return True
            return await self._send_named_image(request, writer)
        return await self._respond_fault(request, reader, writer)

    async def _respond_fault(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        path = request.path
        parts = path.strip("/").split("/")
        if path == "/stall":
            await send_partial(writer, _FAULT_LENGTH, 1024)
            await wait_until_client_leaves(reader)
            return False
        if path in ("/reset", "/truncated"):
            await send_partial(writer, _FAULT_LENGTH, 16 * 1024)
            if path == "/reset":
                abort_with_reset(writer)
            return False
        if path == "/huge":
            await send_partial(writer, _HUGE_LENGTH, 0)
            await wait_until_client_leaves(reader)
            return False
        if parts[0] == "drip" and len(parts) == 2 and parts[1].isdigit():
            await self._drip(path, float(parts[1]) / 1000.0, writer)
            return False
        if path == "/chunked-huge":
            await self._send_endless_chunks(path, writer)
            return False
        if path == "/not-an-image":
            body = b"<!doctype html><html><body><h1>Not an image</h1></body></html>"
            await send(writer, 200, body, "text/html; charset=utf-8")
            return True
        if parts[0] == "redirect" and len(parts) == 2 and parts[1].isdigit():
            hops, target = int(parts[1]), request.arg("to") or "/"
            location = f"/redirect/{hops - 1}?to={quote(target)}" if hops > 1 else target
            await send(writer, 302, b"", "text/plain", headers={"Location": location})
            return True
        if path == "/redirect-loop":
            await send(writer, 302, b"", "text/plain", headers={"Location": "/redirect-loop"})
            return True
        if path == "/redirect-to":
            location = request.arg("url") or "/"
            await send(writer, 302, b"", "text/plain", headers={"Location": location})
            return True
        await send(writer, 404, b"Not Found", "text/plain")
        return True

    async def _rate_limited(
        self, request: Request, writer: asyncio.StreamWriter, per_s: int
    ) -> bool:
        now_s = time.monotonic()
        with self._lock:
            log = self._served.setdefault(request.path, [])
            recent = 0
            for answer in reversed(log):
                if now_s - answer.at_s >= 1.0:
                    break
                recent += answer.status == 200
            status = 429 if recent >= per_s else 200
            log.append(Served(now_s, status, 1, 0.0))
        if status == 429:
            headers = {"Retry-After": "1"}
            await send(writer, 429, b"Too Many Requests", "text/plain", headers=headers)
            return True
        return await self._send_named_image(request, writer)

    async def _loaded(
        self, request: Request, writer: asyncio.StreamWriter, base_ms: float, step_ms: float
    ) -> bool:
        path = request.path
        with self._lock:
            self._in_flight[path] += 1
            in_flight = self._in_flight[path]
            latency_s = (base_ms + step_ms * (in_flight - 1)) / 1000.0
            self._served.setdefault(path, []).append(
                Served(time.monotonic(), 200, in_flight, latency_s)
            )
        try:
            await asyncio.sleep(latency_s)
        finally:
            with self._lock:
                self._in_flight[path] -= 1
        return await self._send_named_image(request, writer)

    async def _send_named_image(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        name = request.arg("img") or ""
        with self._lock:
            image = self._images.get(name)
        if image is None:
            await send(writer, 404, f"no image registered at {name!r}".encode(), "text/plain")
        else:
            await send(writer, 200, image.data, image.content_type)
        return True

    async def _drip(self, path: str, interval_s: float, writer: asyncio.StreamWriter) -> None:
        await send_partial(writer, _FAULT_LENGTH, 0)
        for _ in range(_FAULT_LENGTH):
            await asyncio.sleep(interval_s)
            writer.write(b"\x00")
            await writer.drain()
            with self._lock:
                self._sent[path] += 1

    async def _send_endless_chunks(self, path: str, writer: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head)
        chunk = f"{CHUNK_BYTES:x}\r\n".encode() + b"\xff" * CHUNK_BYTES + b"\r\n"
        sent = 0
        while sent < _HUGE_LENGTH:
            writer.write(chunk)
            await writer.drain()  # raises once the client has gone away
            sent += CHUNK_BYTES
            with self._lock:
                self._sent[path] += CHUNK_BYTES


# -- HTTP helpers ------------------------------------------------------------------------------
