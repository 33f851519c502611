"""AIMD against a gradient step for `--concurrency auto`: the measurement behind the choice.

    python bench/controller.py [--duration-s 15]

The production `ImageFetcher` downloads from the local image server as fast as the level allows
(consumers that are always hungry: the worst case for overload), once per policy and scenario:
- `loaded`: /loaded/40/15 — 40 ms alone, +15 ms for each other request in flight; what counts is
  the latency the host gave (vs 40 ms unloaded) and the requests per second;
- `slow`: /loaded/1000/0 — 1 s whatever the load; what counts is how fast the level grows
  (seconds until 40 in flight) and the images fetched in the run.
Prints one row per (policy, scenario).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backfill_quality.config import FetchSettings
from backfill_quality.demo.imageserver import ImageServer
from backfill_quality.fetching.controller import Policy
from backfill_quality.fetching.fetcher import ImageFetcher

SCENARIOS = {"loaded": "/loaded/40/15/{key}", "slow": "/loaded/1000/0/{key}"}


async def drive(url: str, policy: Policy, duration_s: float) -> tuple[int, list[int]]:
    """Fetch `url` with as many tasks as the level allows, for duration_s; (images, levels)."""
    levels: list[int] = []
    settings = FetchSettings(retries=0, timeout_s=10)
    async with ImageFetcher(settings, demand=time.monotonic) as fetcher:  # always hungry
        assert fetcher.gate.controller is not None
        fetcher.gate.controller.policy = policy
        done = 0
        stop_s = time.monotonic() + duration_s

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop_s:
                await fetcher.fetch(url)
                done += 1

        tasks = [asyncio.create_task(worker()) for _ in range(settings.max_concurrency)]
        while time.monotonic() < stop_s:
            levels.append(fetcher.gate.level)
            await asyncio.sleep(0.5)
        await asyncio.gather(*tasks, return_exceptions=True)
    return done, levels


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=15.0)
    args = parser.parse_args()
    print(
        f"{'policy':<9} {'scenario':<7} {'img/s':>6} {'latency/unloaded':>17} "
        f"{'s to 40 in flight':>18}  levels every 0.5 s"
    )
    for policy in Policy:
        for scenario, template in SCENARIOS.items():
            with ImageServer() as server:
                server.add("/a.jpg", b"\xff" * 200_000)
                path = template.format(key=policy.value)
                done, levels = asyncio.run(
                    drive(server.url(f"{path}?img=/a.jpg"), policy, args.duration_s)
                )
                served = server.served(path)
            base_s = 0.040 if scenario == "loaded" else 1.0
            later = [a.latency_s for a in served if a.at_s - served[0].at_s > 3.0]
            ratio = statistics.median(later) / base_s if later else float("nan")
            reach = next((i * 0.5 for i, level in enumerate(levels) if level >= 40), None)
            reach_text = f"{reach:.1f}" if reach is not None else "never"
            print(
                f"{policy.value:<9} {scenario:<7} {done / args.duration_s:6.1f} "
                f"{ratio:17.2f} {reach_text:>18}  {levels[::2]}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
