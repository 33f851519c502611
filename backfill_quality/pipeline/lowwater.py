"""The low-water mark: the last row key such that it and every row before it are done."""

from __future__ import annotations

from collections import deque

from backfill_quality.models import PageKey


class LowWaterMark:
    """Tracks rows handed out in page order; the mark is the last key such that it and all
    before it are done. Keys are never compared, only their issue order counts: so the mark
    follows any order the pages are read in (ids, or --order-by's (value, id) across its two
    phases, values then NULLs) without knowing it."""

    def __init__(self, start: PageKey | None) -> None:
        self._mark = start
        self._issued: deque[PageKey] = deque()
        self._pending: set[PageKey] = set()
        self._done: set[PageKey] = set()

    def issue(self, row_id: PageKey) -> None:
        """Hand out a row's key (its id, or its OrderCursor); keys come in page order."""
        if row_id in self._pending or row_id in self._done:
            raise ValueError(f"row {row_id!r} was issued twice")
        self._issued.append(row_id)
        self._pending.add(row_id)

    def complete(self, row_id: PageKey) -> None:
        """Mark a row done (scored, failed or skipped), in any order."""
        if row_id not in self._pending:
            raise ValueError(f"row {row_id!r} completed but not in flight")
        self._pending.discard(row_id)
        self._done.add(row_id)
        while self._issued and self._issued[0] in self._done:
            self._mark = self._issued.popleft()
            self._done.discard(self._mark)

    @property
    def mark(self) -> PageKey | None:
        return self._mark

    @property
    def in_flight(self) -> int:
        return len(self._pending)
