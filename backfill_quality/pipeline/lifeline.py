"""The processes a run starts die with it, however it dies (SIGKILL, the OOM killer, a container
runtime that kills only the main PID).

multiprocessing alone does not guarantee it: each scoring process holds the write ends of the
pipes by which the forkserver and the resource tracker would notice that the main process is
gone, and waits on its task queue, whose write end it holds too. Left alone, all of them live on
(they ignore SIGTERM, as the scoring processes leave signals to the main process). So each level
watches the one above:

- every scoring process holds a *lifeline*: the read end of a pipe whose only write end is in the
  main process. End of file means the main process has gone, and the scoring process exits at
  once (a daemon thread waits for it, so this holds while it scores; portable beyond Linux). A
  scoring process started after the main process died reads end of file at once: no race.
- on Linux the kernel's parent-death signal adds a guarantee that needs no thread: the forkserver
  gets SIGKILL when the main process ends, each scoring process when the forkserver ends. The
  signal fires when the parent *thread* ends, so the forkserver gets it only when the main thread
  started it (`start_forkserver`); the forkserver forks from its only thread.
- the forkserver and the resource tracker also exit on their own once the scoring processes are
  gone (end of file on their pipes); the tracker first unlinks what the dead run left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing.forkserver
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection, Pipe

PARENT_PID_VARIABLE = "_BACKFILL_QUALITY_FORKSERVER_PARENT_PID"
"""Set only while the main thread starts the forkserver: the pid the forkserver must die with."""
FORKSERVER_PRELOAD_MODULE = "backfill_quality.pipeline.forkserver_preload"
"""Imported by the forkserver when it starts; it calls `die_with_starter`."""
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ORPHAN_EXIT_CODE = 1


class Lifeline:
    """A pipe from the main process to its scoring processes: they exit when it is cut.

    The main process keeps the write end (never written) and passes `reader` to each scoring
    process it starts; `close` when no scoring process is left. The end of the main process, by
    any means, closes the write end.
    """

    def __init__(self) -> None:
        self.reader, self._writer = Pipe(duplex=False)

    def close(self) -> None:
        self._writer.close()
        self.reader.close()


def hold_lifeline(reader: Connection) -> None:
    """In a scoring process: exit at once when the main process is gone (see `Lifeline`)."""
    threading.Thread(target=_exit_when_cut, args=(reader,), name="lifeline", daemon=True).start()


def _exit_when_cut(reader: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        while True:
            reader.recv_bytes()  # nothing is ever sent: returns only by end of file
    os._exit(ORPHAN_EXIT_CODE)


def die_with_parent(expected_parent: int) -> None:
    """Linux: the kernel sends SIGKILL to this process when its parent (thread) ends.

    If the parent is no longer `expected_parent` once that is set, it ended before: exit now.
    Elsewhere nothing happens (the lifelines still hold).
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # refused (a sandbox without prctl): the lifelines still hold
    if os.getppid() != expected_parent:
        os._exit(ORPHAN_EXIT_CODE)


def die_with_starter() -> None:
    """In the forkserver: die with the main process, if its main thread started us."""
    parent = os.environ.pop(PARENT_PID_VARIABLE, None)
    if parent is not None and parent.isdigit():
        die_with_parent(int(parent))


def start_forkserver() -> None:
    """Start the forkserver now (if not running), so that it dies with this process.

    Only from the main thread (see the module's docstring); from another, the forkserver starts
    on first use as usual, tied to this process by the scoring processes' lifelines alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    os.environ[PARENT_PID_VARIABLE] = str(os.getpid())
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.pop(PARENT_PID_VARIABLE, None)
