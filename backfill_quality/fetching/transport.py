"""A lean HTTP/1.1 transport for httpx: asyncio streams, h11 parsing, a keep-alive pool per host.

httpcore's pool bookkeeping and anyio cost several times the CPU of the request itself
(bench/fetch_client.py); the backfill is CPU-bound, so `ImageFetcher` plugs this in instead.
It does what the fetcher needs and no more: HTTP/1.1 only, no proxies, no HTTP/2.

- One pool per (scheme, host, port): at most `max_connections` open at once (more requests wait,
  up to the pool timeout), idle ones reused last-in first-out. A connection goes back to the pool
  only when h11 says both sides finished the exchange; otherwise it is closed.
- Idle connections expire after `keepalive_expiry_s` and are capped at `max_idle_connections`
  over all hosts (the oldest is closed first), so a run over many hosts keeps few sockets open.
- A GET on a reused connection that the server had already closed is sent again, once, on a new
  connection (the race every keep-alive client has).
- Timeouts come from `request.extensions["timeout"]` (connect, read for each read, write, pool)
  and errors are httpx's own, so callers cannot tell this transport from httpx's default one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from typing import Any

import h11
import httpx

from backfill_quality.fetching.exchange import (
    READ_CHUNK_BYTES,
    Connection,
    Outgoing,
    ResponseHead,
    StaleConnection,
    fixed_length,
    keeps_alive,
    next_event,
    read_some,
    receive,
    send_and_read_head,
)

DEFAULT_PORTS = {"http": 80, "https": 443}
STREAM_LIMIT_BYTES = 256 * 1024  # asyncio buffers up to twice this before pausing the socket

PoolKey = tuple[str, str, int]


class _HostPool:
    """The connections of one (scheme, host, port)."""

    __slots__ = ("idle", "slots", "users")

    def __init__(self, max_connections: int) -> None:
        self.idle: deque[Connection] = deque()
        self.slots = asyncio.Semaphore(max_connections)
        self.users = 0  # requests holding or waiting for a slot


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio streams with a keep-alive pool per host."""

    def __init__(
        self,
        *,
        max_connections: int = 10,
        max_idle_connections: int | None = None,
        keepalive_expiry_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.max_idle_connections = max_idle_connections or max_connections
        self.keepalive_expiry_s = keepalive_expiry_s
        self._ssl_context = ssl_context
        self._pools: dict[PoolKey, _HostPool] = {}
        self._idle: dict[Connection, _HostPool] = {}  # every idle connection, oldest first
        self._is_closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme '{scheme}'", request=request)
        host = url.raw_host.decode("ascii")  # IDNA-encoded, IPv6 without brackets
        headers = request.headers
        has_body = "content-length" in headers or "transfer-encoding" in headers
        body = (
            request.stream
            if has_body and isinstance(request.stream, httpx.AsyncByteStream)
            else None
        )
        out = Outgoing(request.method, url.raw_path, headers.raw, body, request)
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        head, stream = await self.exchange(
            (scheme, host, url.port or DEFAULT_PORTS[scheme]), out, timeouts
        )
        assert isinstance(head, h11.Response), "h11 parses every response of this path"
        return httpx.Response(
            head.status_code,
            headers=head.headers.raw_items(),
            stream=stream,
            extensions={"http_version": b"HTTP/" + head.http_version, "reason_phrase": head.reason},
        )

    async def exchange(
        self, key: PoolKey, out: Outgoing, timeouts: dict[str, Any]
    ) -> tuple[ResponseHead, LeanStream]:
        """Send `out` to (scheme, host, port): the response head, and its body as a stream
        that gives the connection back when it ends or is closed. No httpx objects are built:
        `ImageFetcher` calls this directly (see `plain.py`), httpx clients through
        `handle_async_request`."""
        if self._is_closed:
            raise RuntimeError("LeanTransport used after aclose()")
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _HostPool(self.max_connections)
        pool.users += 1
        try:
            await _acquire_slot(pool, timeouts.get("pool"), key[1], out.request)
        except BaseException:
            pool.users -= 1
            self._forget_if_unused(key, pool)
            raise
        try:
            conn, head = await self._exchange_head(key, pool, out, timeouts)
        except BaseException:
            self._release(key, pool, None)
            raise
        stream = LeanStream(self, key, pool, conn, out.request, timeouts.get("read"))
        length = fixed_length(out, head)
        if length is not None:
            stream.read_without_h11(length, keep_alive=keeps_alive(out, head))
        return head, stream

    async def aclose(self) -> None:
        self._is_closed = True
        idle, self._idle = list(self._idle), {}
        for pool in self._pools.values():
            pool.idle.clear()
        for conn in idle:
            conn.writer.close()
        for conn in idle:
            with contextlib.suppress(OSError):  # ssl.SSLError is an OSError
                await conn.writer.wait_closed()

    # -- connections ----------------------------------------------------------------------------

    async def _exchange_head(
        self, key: PoolKey, pool: _HostPool, out: Outgoing, timeouts: dict[str, Any]
    ) -> tuple[Connection, ResponseHead]:
        """Send the request on an idle or new connection; the connection and the response head."""
        conn = self._take_idle(pool)
        if conn is not None:
            try:
                return conn, await send_and_read_head(conn, out, timeouts)
            except StaleConnection:
                conn.abort()  # the server closed it while idle: once more on a new connection
            except BaseException:
                conn.abort()
                raise
        conn = await self._connect(key, out.request, timeouts.get("connect"))
        try:
            return conn, await send_and_read_head(conn, out, timeouts)
        except StaleConnection as stale:
            conn.abort()
            raise stale.error from stale.error.__cause__
        except BaseException:
            conn.abort()
            raise

    async def _connect(
        self, key: PoolKey, request: httpx.Request | None, timeout_s: float | None
    ) -> Connection:
        scheme, host, port = key
        context = self._tls_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                    limit=STREAM_LIMIT_BYTES,
                )
        except TimeoutError as exc:
            message = f"could not connect to {host}:{port} within {timeout_s:g}s"
            raise httpx.ConnectTimeout(message, request=request) from exc
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Connection(reader, writer)

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()  # loaded on first https only
        return self._ssl_context

    # -- the pool -------------------------------------------------------------------------------

    def _take_idle(self, pool: _HostPool) -> Connection | None:
        expired_before_s = time.monotonic() - self.keepalive_expiry_s
        while pool.idle:
            conn = pool.idle.pop()
            del self._idle[conn]
            if conn.idle_since_s > expired_before_s and conn.is_usable():
                conn.is_reused = True
                return conn
            conn.abort()
        return None

    def _release(self, key: PoolKey, pool: _HostPool, conn: Connection | None) -> None:
        """Give back a slot; `conn` goes idle if its exchange finished cleanly, else closes."""
        if conn is not None:
            state = conn.h11
            if state.our_state is h11.DONE and state.their_state is h11.DONE:
                state.start_next_cycle()
            if (
                state.our_state is h11.IDLE
                and state.their_state is h11.IDLE
                and not self._is_closed
            ):
                conn.idle_since_s = time.monotonic()
                pool.idle.append(conn)
                self._idle[conn] = pool
                self._expire_idle(conn.idle_since_s)
            else:
                conn.abort()
        pool.users -= 1
        pool.slots.release()
        self._forget_if_unused(key, pool)

    def _expire_idle(self, now_s: float) -> None:
        """Close idle connections past their expiry, and the oldest ones over the idle cap."""
        idle = self._idle
        expired_before_s = now_s - self.keepalive_expiry_s
        while idle:
            oldest = next(iter(idle))
            if len(idle) <= self.max_idle_connections and oldest.idle_since_s > expired_before_s:
                return
            pool = idle.pop(oldest)
            pool.idle.remove(oldest)
            oldest.abort()

    def _forget_if_unused(self, key: PoolKey, pool: _HostPool) -> None:
        if pool.users == 0 and not pool.idle and self._pools.get(key) is pool:
            del self._pools[key]


class LeanStream(httpx.AsyncByteStream):
    """The response body, chunk by chunk as it arrives; closing it gives the connection back.

    A body framed by one Content-Length (`read_without_h11`) is read straight from the socket's
    stream: h11 would parse and copy every chunk twice more, which cost more of the event loop
    than the rest of the download (bench/fetch_client.py). The connection then gets a fresh h11
    state machine for its next exchange."""

    def __init__(
        self,
        transport: LeanTransport,
        key: PoolKey,
        pool: _HostPool,
        conn: Connection,
        request: httpx.Request | None,
        read_timeout_s: float | None,
    ) -> None:
        self._transport = transport
        self._key = key
        self._pool = pool
        self._conn: Connection | None = conn
        self._request = request
        self._read_timeout_s = read_timeout_s
        self._length = -1  # the body's length when read without h11, else -1
        self._left = 0  # bytes of it still to read
        self._keep_alive = False
        self._is_started = False
        self._watch: asyncio.TimerHandle | None = None  # the read timeout's timer
        self._read_started_s = 0.0
        self._is_reading = False
        self._has_timed_out = False

    def read_without_h11(self, length: int, *, keep_alive: bool) -> None:
        """The body is `length` bytes: read them without h11; `keep_alive`: the connection may
        carry another exchange afterwards."""
        self._length = self._left = length
        self._keep_alive = keep_alive

    def __aiter__(self) -> LeanStream:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        if self._length >= 0:
            return await self._next_counted(conn)
        try:
            while True:
                event = next_event(conn, self._request)
                if event is h11.NEED_DATA:
                    await receive(conn, self._read_timeout_s, self._request)
                elif type(event) is h11.Data:
                    return bytes(event.data)
                elif type(event) is h11.EndOfMessage:
                    break
                else:
                    message = f"unexpected {getattr(event, '__name__', type(event).__name__)}"
                    raise httpx.RemoteProtocolError(message, request=self._request)
        except BaseException:
            self._give_back(None)
            raise
        self._give_back(conn)
        raise StopAsyncIteration

    async def _next_counted(self, conn: Connection) -> bytes:
        """The next part of a body of known length; at its end the connection goes back."""
        try:
            if not self._is_started:
                self._is_started = True
                data = self._take_buffered(conn)
                if data:
                    return data
            if self._left == 0:
                self._finish_counted(conn)
                raise StopAsyncIteration
            data = await self._read_part(conn, min(self._left, READ_CHUNK_BYTES))
            if not data:
                received = self._length - self._left
                message = (
                    "peer closed connection without sending complete message body: "
                    f"received {received} bytes, expected {self._length}"
                )
                raise httpx.RemoteProtocolError(message, request=self._request)
            self._left -= len(data)
            return data
        except StopAsyncIteration:
            raise
        except BaseException:
            self._give_back(None)
            raise

    async def _read_part(self, conn: Connection, most: int) -> bytes:
        """`read_some`, the read timeout kept by one timer per body instead of one per read: a
        body comes in several reads, most of them already buffered, and an `asyncio.timeout`
        for each cost more of the event loop than the read itself."""
        timeout_s = self._read_timeout_s
        if timeout_s is None:
            return await read_some(conn, most, None, self._request)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._read_started_s = loop.time()
        if self._watch is None:
            self._watch = loop.call_at(self._read_started_s + timeout_s, self._on_watch, task)
        cancelling = task.cancelling()
        self._is_reading = True
        try:
            return await conn.reader.read(most)
        except asyncio.CancelledError:
            if self._has_timed_out and task.uncancel() <= cancelling:
                message = f"no data from the server within {timeout_s:g}s"
                raise httpx.ReadTimeout(message, request=self._request) from None
            raise
        except OSError as exc:  # reset, broken pipe, TLS errors
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=self._request) from exc
        finally:
            self._is_reading = False

    def _on_watch(self, task: asyncio.Task[Any]) -> None:
        """The body's timer: a read waiting for `read_timeout_s` is cancelled (ReadTimeout)."""
        self._watch = None
        if not self._is_reading or self._read_timeout_s is None:
            return  # the next read sets the timer again
        loop = asyncio.get_running_loop()
        due_s = self._read_started_s + self._read_timeout_s
        if loop.time() < due_s:
            self._watch = loop.call_at(due_s, self._on_watch, task)
            return
        self._has_timed_out = True
        task.cancel()

    def _take_buffered(self, conn: Connection) -> bytes:
        """What was received past the response head (the body's first bytes)."""
        if conn.leftover:
            data, is_closed, conn.leftover = conn.leftover, False, b""
        else:
            data, is_closed = conn.h11.trailing_data
        if is_closed or len(data) > self._left:  # the server closed, or sent more than declared
            self._keep_alive = False
            data = data[: self._left]
        self._left -= len(data)
        return data

    def _finish_counted(self, conn: Connection) -> None:
        if self._keep_alive and not conn.reader.at_eof():
            conn.renew()
            self._give_back(conn)
        else:
            self._give_back(None)

    async def aclose(self) -> None:
        """Keep the connection if the rest of the body is already buffered, else close it."""
        conn = self._conn
        if conn is None:
            return
        if self._length >= 0:
            if not self._is_started:
                self._is_started = True
                self._take_buffered(conn)
            if self._left == 0:
                self._finish_counted(conn)
            else:
                self._give_back(None)
            return
        try:
            while (event := conn.h11.next_event()) is not h11.NEED_DATA:
                if type(event) is h11.EndOfMessage:
                    self._give_back(conn)
                    return
                if type(event) is not h11.Data:
                    break
        except h11.RemoteProtocolError:
            pass
        self._give_back(None)

    def _give_back(self, conn: Connection | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._conn is None:
            return
        if conn is None:
            self._conn.abort()
        self._conn = None
        self._transport._release(self._key, self._pool, conn)


async def _acquire_slot(
    pool: _HostPool, timeout_s: float | None, host: str, request: httpx.Request | None
) -> None:
    if not pool.slots.locked():
        await pool.slots.acquire()  # returns at once
        return
    try:
        async with asyncio.timeout(timeout_s):
            await pool.slots.acquire()
    except TimeoutError as exc:
        message = f"no free connection to {host} within {timeout_s:g}s"
        raise httpx.PoolTimeout(message, request=request) from exc
