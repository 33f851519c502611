"""The scoring processes of a run: start, warm up, score one image, survive crashes, shut down.

Kept apart from the runner because it is a different kind of thing: the runner schedules rows on
one event loop, while this owns operating-system processes and their failure modes (a process
killed by the kernel must be replaced and the images it held scored again, and a crash repeated
with no success in between must end the run instead of looping). The scoring processes import
NumPy and Pillow; this module does not, it starts them on `worker.serve`.

Each scoring process has a socket to the main process, read and written by the run's event loop
itself: an image goes out as it came from the host (one system call, no pickling), the answer
comes back as a small pickled record, and a process that dies is seen as the end of its socket.
`concurrent.futures.ProcessPoolExecutor` did this with two helper threads that pickled every
image and woke each other (and the loop) for every task: about 0.6 ms of the main process's CPU
per image, a quarter of what the run spent outside scoring (docs/concurrency.md). Each process
holds at most `TASKS_PER_PROCESS` images: one it scores, the next waiting in its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import pickle
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from typing import Any

from backfill_quality.config import DetectorChoice, Thresholds, available_cpus
from backfill_quality.errors import BackfillError
from backfill_quality.models import ScoredImage
from backfill_quality.pipeline.lifeline import FORKSERVER_PRELOAD_MODULE, Lifeline, start_forkserver
from backfill_quality.pipeline.worker import FRAME_HEAD, SCORE, SCORING_MODULE, WARM_UP, serve

MAX_POOL_CRASHES = 5
"""Scoring-process crashes in a row, with no image scored in between, before the run gives up."""
KEEP_CRASHING = (
    "the scoring processes keep crashing; try `backfill-quality score --verbose` on one of the "
    "images to see why"
)
RESTARTED = (
    "a scoring process died (killed by the system: out of memory?); new ones were started and "
    "the images it held are scored again"
)
DIED = "a scoring process died"
TASKS_PER_PROCESS = 2
"""Images handed to one process at a time: one scored, the next ready behind it."""
SEND_BUFFER_BYTES = 1024 * 1024
"""Asked of the kernel for each socket (it may give less); an image larger waits for room."""
ANSWER_READ_BYTES = 64 * 1024
EXIT_WAIT_S = 10.0
"""At shutdown: how long a process may take to finish the image it scores before it is killed."""


class _Process:
    """One scoring process, its end of the socket, and the answers it owes, in order."""

    __slots__ = ("answers", "channel", "inbox", "is_dead", "load", "process", "sending")

    def __init__(self, process: BaseProcess, channel: socket.socket) -> None:
        self.process = process
        self.channel = channel
        # one per task sent, oldest first; None: nobody waits for it any more
        self.answers: deque[asyncio.Future[Any] | None] = deque()
        self.inbox = bytearray()  # answer bytes received, not yet a whole frame
        self.is_dead = False
        self.load = 0  # images given to this process and not yet answered or failed
        self.sending = asyncio.Lock()  # one frame at a time on the socket


class ScoringPool:
    """`workers` scoring processes; a process that dies is replaced, once per death.

    `on_give_up` receives a `BackfillError` when more than MAX_POOL_CRASHES crashes come in a row
    with no image scored in between (the caller stops the run); `on_restart` receives a message
    for the user each time a process is replaced.
    """

    def __init__(
        self,
        *,
        workers: int,
        thresholds: Thresholds,
        max_pixels: int,
        detector: DetectorChoice,
        on_give_up: Callable[[BackfillError], None],
        on_restart: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.workers = workers
        self._thresholds = thresholds
        self._max_pixels = max_pixels
        self._detector = detector
        # processes x threads = the CPUs we may use: each model session gets its share
        self._threads = max(1, available_cpus() // workers)
        self._on_give_up = on_give_up
        self._on_restart = on_restart
        self._lifeline: Lifeline | None = None
        self._processes: list[_Process] = []
        self._retired: list[_Process] = []  # dead and replaced; their sockets close at the end
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop reading the sockets
        self._waiters: deque[asyncio.Future[_Process]] = deque()  # images waiting for room
        self._crashes = 0
        self._is_replacing = True
        self._outstanding = 0  # images handed to the pool and not yet scored
        self._waited_s = 0.0
        self._counted_until_s = time.monotonic()

    @property
    def pids(self) -> list[int | None]:
        """The process ids of the scoring processes (None before they start)."""
        return [entry.process.pid for entry in self._processes]

    def waited_s(self) -> float:
        """Seconds the scoring processes have waited for images so far, averaged over them
        (2 processes, one idle for 1 s: 0.5). What `--concurrency auto` grows on."""
        self._count_idle()
        return self._waited_s

    def _count_idle(self) -> None:
        now_s = time.monotonic()
        idle = max(0, self.workers - self._outstanding)
        self._waited_s += (now_s - self._counted_until_s) * idle / self.workers
        self._counted_until_s = now_s

    def start(self) -> None:
        """Start the scoring processes (each loads the scoring code on its first task, e.g.
        `warm_up`). Every process it starts dies with this one, however this one ends
        (`lifeline.py`)."""
        self._lifeline = Lifeline()
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([FORKSERVER_PRELOAD_MODULE, SCORING_MODULE])
        start_forkserver()
        self._processes = [self._spawn() for _ in range(self.workers)]

    def warm_up(self) -> None:
        """Have every scoring process load the detector now, so the first images do not wait
        for it; raises what loading raised (a missing or damaged model file). Blocking: run it
        on a helper thread, before the first `score`."""
        processes = list(self._processes)
        try:
            for entry in processes:
                entry.channel.sendall(FRAME_HEAD.pack(1) + WARM_UP)
            for entry in processes:
                is_ok, value = _read_answer(entry.channel)
                if not is_ok:
                    raise value
        except (OSError, EOFError):  # shut down meanwhile (the run stopped), or a process died:
            return  # its first image will tell

    async def score(self, data: bytes) -> ScoredImage:
        """The analysis of one encoded image, computed in a scoring process.

        Raises DecodeError for unusable bytes, and BrokenProcessPool when the process scoring it
        died twice (the first time it is retried: a crash caused by another image may have taken
        it along).
        """
        try:
            score = await self._score_once(data)
        except BrokenProcessPool:
            score = await self._score_once(data)
        self._crashes = 0
        return score

    def stop_replacing(self) -> None:
        """The run is being interrupted: a process that dies from now on is not replaced."""
        self._is_replacing = False

    def detach(self) -> None:
        """Stop reading the sockets on this event loop (call it on the loop, before `shutdown`
        from another thread)."""
        loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        for entry in (*self._processes, *self._retired):
            if not entry.is_dead:
                loop.remove_reader(entry.channel.fileno())

    def shutdown(self, wait_s: float = EXIT_WAIT_S) -> None:
        """Stop the processes: each ends once it has finished the image it is scoring (the
        images waiting behind it are dropped); one that takes longer than `wait_s` is killed."""
        entries, self._processes, self._retired = [*self._processes, *self._retired], [], []
        for entry in entries:
            with contextlib.suppress(OSError):
                entry.channel.shutdown(socket.SHUT_RDWR)  # wakes a warm-up blocked on it
            entry.channel.close()
        deadline_s = time.monotonic() + wait_s
        for entry in entries:
            entry.process.join(max(0.0, deadline_s - time.monotonic()))
            if entry.process.exitcode is None:
                entry.process.kill()
                entry.process.join()
        if self._lifeline is not None:
            self._lifeline.close()  # a scoring process still exiting goes too
            self._lifeline = None

    # -- one image ------------------------------------------------------------------------------

    async def _score_once(self, data: bytes) -> ScoredImage:
        """Score in a scoring process; a dead process is replaced (once per death) and
        BrokenProcessPool raised. Crash after crash with no success in between is fatal."""
        self._bind()
        self._count_idle()
        self._outstanding += 1
        entry: _Process | None = None
        try:
            entry = await self._take()
            result: ScoredImage = await self._ask(entry, data)
            return result
        except BrokenProcessPool:
            if entry is not None and entry in self._processes and self._is_replacing:
                self._crashes += 1
                if self._crashes > MAX_POOL_CRASHES:
                    self._on_give_up(BackfillError(KEEP_CRASHING))
                else:
                    self._replace(entry)
                    self._on_restart(RESTARTED)
            raise
        finally:
            self._count_idle()
            self._outstanding -= 1
            if entry is not None:
                self._release(entry)

    async def _take(self) -> _Process:
        """The least busy process with room for one more image, in the order the images came
        (a later one never overtakes one waiting); a dead one not replaced yet counts as having
        room: the attempt fails at once."""
        if not self._processes:
            raise BrokenProcessPool("the scoring processes were shut down")
        if not self._waiters:
            entry = min(self._processes, key=_load)
            if entry.load < TASKS_PER_PROCESS:
                entry.load += 1
                return entry
        waiter: asyncio.Future[_Process] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # given room, then cancelled: pass it on
                self._release(waiter.result())
            raise

    def _release(self, entry: _Process) -> None:
        """One image fewer for `entry`; the room goes to the images waiting, oldest first."""
        entry.load -= 1
        while self._waiters and self._processes:
            free = min(self._processes, key=_load)
            if free.load >= TASKS_PER_PROCESS:
                return
            waiter = self._waiters.popleft()
            if not waiter.done():
                free.load += 1
                waiter.set_result(free)

    async def _ask(self, entry: _Process, data: bytes) -> Any:
        """Send one image to `entry` and wait for its answer (raised if it is an exception)."""
        if entry.is_dead:
            raise BrokenProcessPool(DIED)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        async with entry.sending:
            if entry.is_dead:
                raise BrokenProcessPool(DIED)
            entry.answers.append(answer)
            head = FRAME_HEAD.pack(len(data) + 1) + SCORE
            sent = 0
            try:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    sent = entry.channel.sendmsg([head, data])
                if sent < len(head):
                    await loop.sock_sendall(entry.channel, (head + data)[sent:])
                elif sent < len(head) + len(data):
                    await loop.sock_sendall(entry.channel, memoryview(data)[sent - len(head) :])
            except OSError:  # its end is closed: the process died
                self._bury(entry)
            except asyncio.CancelledError:  # half a frame may be out: the socket is unusable
                self._bury(entry)
                raise
        return await answer

    # -- the processes --------------------------------------------------------------------------

    def _spawn(self) -> _Process:
        """A new scoring process (forkserver, since the main process runs threads)."""
        assert self._lifeline is not None, "start() the pool first"
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end, option in ((ours, socket.SO_SNDBUF), (theirs, socket.SO_RCVBUF)):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, option, SEND_BUFFER_BYTES)
        process = multiprocessing.get_context("forkserver").Process(
            target=serve,
            args=(
                theirs,
                self._lifeline.reader,
                self._thresholds,
                self._max_pixels,
                self._detector,
                self._threads,
            ),
            name="backfill-quality-scorer",
            daemon=True,
        )
        try:
            process.start()
        finally:
            theirs.close()
        entry = _Process(process, ours)
        if self._loop is not None:
            self._listen(self._loop, entry)
        return entry

    def _bind(self) -> None:
        """Read the sockets on the running loop (a new loop: answers owed to the old one are
        dropped as they come)."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        self._loop = loop
        self._waiters.clear()
        for entry in self._processes:
            entry.answers = deque(None for _ in entry.answers)
            entry.sending = asyncio.Lock()
            if not entry.is_dead:
                self._listen(loop, entry)

    def _listen(self, loop: asyncio.AbstractEventLoop, entry: _Process) -> None:
        entry.channel.setblocking(False)
        loop.add_reader(entry.channel.fileno(), self._on_readable, entry)

    def _on_readable(self, entry: _Process) -> None:
        """On the loop: answers from `entry` (each fulfils the oldest one owed), or its end."""
        try:
            chunk = entry.channel.recv(ANSWER_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._bury(entry)
            return
        inbox = entry.inbox
        inbox += chunk
        head_size = FRAME_HEAD.size
        while len(inbox) >= head_size:
            end = head_size + FRAME_HEAD.unpack_from(inbox)[0]
            if len(inbox) < end:
                return
            try:
                is_ok, value = pickle.loads(inbox[head_size:end])
            except Exception:  # not an answer: the stream is corrupt, the process unusable
                self._bury(entry)
                return
            del inbox[:end]
            answer = entry.answers.popleft() if entry.answers else None
            if answer is None or answer.done():
                continue
            if is_ok:
                answer.set_result(value)
            else:
                answer.set_exception(value)

    def _bury(self, entry: _Process) -> None:
        """`entry` died (or its socket broke): every image it held fails with BrokenProcessPool."""
        if entry.is_dead:
            return
        entry.is_dead = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(entry.channel.fileno())
        with contextlib.suppress(OSError):
            entry.process.kill()  # a process whose socket broke would be of no use either
        answers, entry.answers = entry.answers, deque()
        for answer in answers:
            if answer is not None and not answer.done():
                answer.set_exception(BrokenProcessPool(DIED))

    def _replace(self, entry: _Process) -> None:
        """A new process in the place of `entry`, which is buried if it was not yet."""
        self._bury(entry)
        self._processes[self._processes.index(entry)] = self._spawn()
        self._retired.append(entry)


def _load(entry: _Process) -> int:
    return entry.load


def _read_answer(channel: socket.socket) -> tuple[bool, Any]:
    """One answer frame, read blocking (the warm-up's, before the loop reads the sockets)."""
    head = _recv_exactly(channel, FRAME_HEAD.size)
    payload = _recv_exactly(channel, FRAME_HEAD.unpack(head)[0])
    answer: tuple[bool, Any] = pickle.loads(payload)
    return answer


def _recv_exactly(channel: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    while size > 0:
        part = channel.recv(size)
        if not part:
            raise EOFError("a scoring process closed its socket")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)
