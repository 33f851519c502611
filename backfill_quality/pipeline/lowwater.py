"""The low-water mark: the greatest row id such that it and every row before it are done."""

from __future__ import annotations

from collections import deque

from backfill_quality.models import RowId


class LowWaterMark:
    """Tracks rows handed out in key order; the mark is the greatest id such that it and all
    before it are done. Ids are never compared: only their issue order counts."""

    def __init__(self, start: RowId | None) -> None:
        self._mark = start
        self._issued: deque[RowId] = deque()
        self._pending: set[RowId] = set()
        self._done: set[RowId] = set()

    def issue(self, row_id: RowId) -> None:
        """Hand out a row; ids come in strictly increasing key order."""
        if row_id in self._pending or row_id in self._done:
            raise ValueError(f"row {row_id!r} was issued twice")
        self._issued.append(row_id)
        self._pending.add(row_id)

    def complete(self, row_id: RowId) -> None:
        """Mark a row done (scored, failed or skipped), in any order."""
        if row_id not in self._pending:
            raise ValueError(f"row {row_id!r} completed but not in flight")
        self._pending.discard(row_id)
        self._done.add(row_id)
        while self._issued and self._issued[0] in self._done:
            self._mark = self._issued.popleft()
            self._done.discard(self._mark)

    @property
    def mark(self) -> RowId | None:
        return self._mark

    @property
    def in_flight(self) -> int:
        return len(self._pending)
