"""Run the console script under cProfile timed by the main thread's CPU clock (not wall time).

    python bench/cpuprofile.py OUT.prof run --quiet [options…]

Wall-clock profiles of an event loop on a loaded machine are dominated by waits (epoll, the GIL,
the run queue); `time.thread_time` charges each function only the CPU the main thread spent in
it, which is what limits throughput. Read the result with `python -m pstats OUT.prof`.
"""

from __future__ import annotations

import cProfile
import sys
import time


def main() -> int:
    out_path, args = sys.argv[1], sys.argv[2:]
    sys.argv = ["backfill-quality", *args]
    from backfill_quality.cli import main as cli_main

    profiler = cProfile.Profile(time.thread_time)
    code: int | str | None = 0
    try:
        profiler.runcall(cli_main)
    except SystemExit as exc:
        code = exc.code
    finally:
        profiler.dump_stats(out_path)
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main())
