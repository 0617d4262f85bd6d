"""The asynchronous, batched event sink: requests never wait for SQLite.

Handlers call :meth:`EventSink.put` (a deque append).  One writer task drains the
buffer every ``flush_interval`` seconds or ``batch_size`` events, in one transaction
with ``executemany``.  Write failures (locked, disk full, file deleted) are retried
with backoff while requests keep being served; when the bounded buffer is full new
events are dropped, counted and logged, never silently.  :meth:`close` flushes all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from .events import Event
from .rows import RowBuilder
from .store import INSERT_SQL, PRAGMAS, open_store

log = logging.getLogger("gateway.sink")


@dataclass(slots=True)
class SinkStats:
    enqueued: int = 0
    written: int = 0
    dropped: int = 0
    write_errors: int = 0
    batches: int = 0


def _prepare(path: Path) -> None:
    """Create the file and apply schema migrations (synchronously, off the event loop)."""
    open_store(path).close()


class EventSink:
    """Bounded in-memory buffer + one writer task on the running event loop."""

    def __init__(
        self,
        db_path: str | Path,
        rows: RowBuilder,
        *,
        queue_size: int = 100_000,
        batch_size: int = 1_000,
        flush_interval: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self.db_path = Path(db_path)
        self._rows = rows
        self._buf: deque[Event] = deque()
        self._max = queue_size
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max_backoff = max_backoff
        self._wake: asyncio.Event | None = None
        self._idle = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._conn: aiosqlite.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        self._last_drop_log = 0.0
        self.stats = SinkStats()

    # ------------------------------------------------------------------ producer side

    def put(self, event: Event) -> bool:
        """Enqueue without waiting; ``False`` (and a counted drop) when the buffer is full."""
        if len(self._buf) >= self._max or self._closing:
            self.stats.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log > 1.0:
                self._last_drop_log = now
                log.warning(
                    "event buffer full or closing: dropped %d events so far", self.stats.dropped
                )
            return False
        self._buf.append(event)
        self.stats.enqueued += 1
        if self._idle:
            self._idle = False
            self._wake.set()  # type: ignore[union-attr]
        return True

    @property
    def pending(self) -> int:
        return len(self._buf)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.running:
            return
        self._closing = False
        self._wake = asyncio.Event()
        try:
            await self._open()
        except (sqlite3.Error, OSError) as exc:
            # Serve anyway; the writer retries opening with backoff.
            log.error("cannot open event store %s: %s (will retry)", self.db_path, exc)
        self._task = asyncio.create_task(self._run(), name="gatepost-event-writer")

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, write everything buffered, close the database."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                lost = len(self._buf)
                self.stats.dropped += lost
                self._buf.clear()
                self._task.cancel()
                log.error("event store unwritable at shutdown: dropped %d buffered events", lost)
        await self._close_conn()
        log.info(
            "event sink closed: written=%d dropped=%d errors=%d",
            self.stats.written,
            self.stats.dropped,
            self.stats.write_errors,
        )

    # ------------------------------------------------------------------ writer

    async def _open(self) -> None:
        await asyncio.to_thread(_prepare, self.db_path)
        conn = await aiosqlite.connect(self.db_path)
        try:
            for pragma in PRAGMAS:
                await conn.execute(pragma)
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        st = os.stat(self.db_path)
        self._conn, self._file_id = conn, (st.st_dev, st.st_ino)

    async def _close_conn(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close()
            except (sqlite3.Error, OSError, ValueError) as exc:
                log.warning("closing event store: %s", exc)

    def _file_replaced(self) -> bool:
        try:
            st = os.stat(self.db_path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._file_id

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._buf:
                if self._closing:
                    return
                self._idle = True
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._buf) < self._batch_size and not self._closing:
                await asyncio.sleep(self._interval)
            n = min(len(self._buf), self._batch_size)
            batch = [self._buf.popleft() for _ in range(n)]
            await self._write_with_retry(batch)

    async def _write_with_retry(self, batch: list[Event]) -> None:
        rows = [self._rows.row(e) for e in batch]
        delay = 0.05
        while True:
            try:
                if self._conn is None or self._file_replaced():
                    await self._close_conn()
                    await self._open()
                assert self._conn is not None
                await self._conn.executemany(INSERT_SQL, rows)
                await self._conn.commit()
                self.stats.written += len(rows)
                self.stats.batches += 1
                return
            except (sqlite3.Error, OSError, ValueError) as exc:
                self.stats.write_errors += 1
                log.error(
                    "event store write failed (%s); %d events held, %d buffered, retrying in %.2fs",
                    exc,
                    len(rows),
                    len(self._buf),
                    delay,
                )
                if self._conn is not None:
                    try:
                        await self._conn.rollback()
                    except (sqlite3.Error, OSError, ValueError):
                        await self._close_conn()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
