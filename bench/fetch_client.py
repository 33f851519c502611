"""Which HTTP set-up downloads images fastest? Requests/s and CPU per request, by numbers.

The image server runs in a child process (so client and server CPU are measured apart) with
added latency per request; the client keeps N requests in flight for a fixed time with each
set-up and prints one table row per (set-up, in-flight) pair.

    python bench/fetch_client.py                        # 16/32/64 in flight, 100 ms, 300 KB
    python bench/fetch_client.py --in-flight 16 --duration-s 3 --setups fetcher,clients-4
    python bench/fetch_client.py --in-flight 16,64 --setups fetcher,lean,raw-asyncio

`fetcher` is the production path (ImageFetcher on LeanTransport), `lean` a bare httpx client on
LeanTransport, `clients-N` N httpx clients on httpx's own transport (httpcore + anyio) and
`raw-asyncio` a floor: a keep-alive client on asyncio streams with no checks at all.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from backfill_quality.config import FetchSettings
from backfill_quality.fetching.fetcher import ImageFetcher
from backfill_quality.fetching.transport import LeanTransport

Get = Callable[[str], Awaitable[int]]

SERVER_CODE = """
import os, sys, time
from backfill_quality.demo.imageserver import ImageServer
latency_ms, n_images, size_bytes = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
with ImageServer(latency_ms=latency_ms) as server:
    for i in range(n_images):
        server.add(f"/img/{i}.jpg", os.urandom(size_bytes))
    print(server.base_url, flush=True)
    sys.stdin.read()
"""


@dataclass(frozen=True, slots=True)
class Result:
    setup: str
    in_flight: int
    requests: int
    elapsed_s: float
    client_cpu_s: float
    server_cpu_s: float

    def row(self) -> str:
        rate = self.requests / self.elapsed_s
        return (
            f"{self.setup:<24} {self.in_flight:>4} {rate:>9.1f} "
            f"{1000 * self.client_cpu_s / self.requests:>13.2f} "
            f"{100 * self.client_cpu_s / self.elapsed_s:>10.0f}% "
            f"{1000 * self.server_cpu_s / self.requests:>13.2f}"
        )


HEADER = (
    f"{'setup':<24} {'N':>4} {'req/s':>9} {'client ms/req':>13} {'client CPU':>11} "
    f"{'server ms/req':>13}"
)


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def fetcher_setup(in_flight: int) -> AsyncIterator[Get]:
    """The production path: ImageFetcher (one AsyncClient on LeanTransport)."""
    async with ImageFetcher(FetchSettings(concurrency=in_flight, timeout_s=30)) as fetcher:

        async def get(url: str) -> int:
            return len((await fetcher.fetch(url)).data)

        yield get


@asynccontextmanager
async def lean_setup(in_flight: int) -> AsyncIterator[Get]:
    """A bare AsyncClient on LeanTransport: httpx's client layer without the fetcher's checks."""
    transport = LeanTransport(max_connections=in_flight)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(30.0)) as client:

        async def get(url: str) -> int:
            async with client.stream("GET", url) as response:
                total = 0
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                return total

        yield get


def httpx_setup(
    n_clients: int, pool_factor: float = 1.0, http1_only: bool = True
) -> Callable[[int], Any]:
    """`n_clients` AsyncClients used round-robin, each pooled for its share of the load."""

    @asynccontextmanager
    async def setup(in_flight: int) -> AsyncIterator[Get]:
        per_client = max(1, int(pool_factor * in_flight / n_clients + 0.999))
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        clients = [
            httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0, pool=None))
            for _ in range(n_clients)
        ]
        turn = itertools.cycle(clients)

        async def get(url: str) -> int:
            async with next(turn).stream("GET", url) as response:
                total = 0
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                return total

        try:
            yield get
        finally:
            for client in clients:
                await client.aclose()

    return setup


@asynccontextmanager
async def raw_asyncio_setup(in_flight: int) -> AsyncIterator[Get]:
    """A floor, not a candidate: a minimal keep-alive HTTP/1.1 client on asyncio streams."""
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(url: str) -> int:
        rest = url.split("//", 1)[1]
        hostport, path = rest.split("/", 1)
        host, port = hostport.split(":")
        reader, writer = idle.pop() if idle else await asyncio.open_connection(host, int(port))
        writer.write(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        body = await reader.readexactly(length)
        idle.append((reader, writer))
        return len(body)

    try:
        yield get
    finally:
        for _, writer in idle:
            writer.close()


SETUPS: dict[str, Any] = {
    "fetcher": fetcher_setup,
    "lean": lean_setup,
    "clients-1": httpx_setup(1),
    "clients-1-pool2x": httpx_setup(1, pool_factor=2.0),
    "clients-2": httpx_setup(2),
    "clients-4": httpx_setup(4),
    "clients-8": httpx_setup(8),
    "raw-asyncio": raw_asyncio_setup,
}


async def measure(
    setup_name: str, in_flight: int, urls: list[str], duration_s: float, server_pid: int
) -> Result:
    async with SETUPS[setup_name](in_flight) as get:
        await asyncio.gather(*(get(url) for url in urls[:in_flight]))  # warm the pool
        next_url = itertools.cycle(urls)
        count = 0
        stop_at = time.monotonic() + duration_s

        async def worker() -> None:
            nonlocal count
            while time.monotonic() < stop_at:
                await get(next(next_url))
                count += 1

        cpu0, server0, t0 = time.process_time(), process_cpu_s(server_pid), time.monotonic()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed_s = time.monotonic() - t0
        cpu_s, server_s = time.process_time() - cpu0, process_cpu_s(server_pid) - server0
    return Result(setup_name, in_flight, count, elapsed_s, cpu_s, server_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--in-flight", default="16,32,64")
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--size-kb", type=int, default=300)
    parser.add_argument("--duration-s", type=float, default=4.0)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE, str(args.latency_ms), "64", str(args.size_kb * 1000)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        urls = [f"{base_url}/img/{i}.jpg" for i in range(64)]
        print(f"# {args.latency_ms:g} ms latency, {args.size_kb} KB bodies, {os.cpu_count()} CPUs")
        print(HEADER)
        for n, name in itertools.product(
            (int(x) for x in args.in_flight.split(",")), args.setups.split(",")
        ):
            result = asyncio.run(measure(name, n, urls, args.duration_s, server.pid))
            print(result.row(), flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
