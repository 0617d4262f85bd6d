"""Folding one event range on two connections, so that a run uses two cores.

SQLite runs a statement on one core, and a fold is mostly independent work over the same
rows: deriving one row per event (joins, classification), then one ``GROUP BY`` per
aggregate.  So the range is split in two halves by event id, each derived into a scratch
database by its own connection (one in the main thread, one in a side thread).  Then the
side thread groups sources, versions and bursts of both halves into a third scratch
database, while the main connection groups per-day activity straight into the state and
the scorer loads it.  Finally the main connection merges the side's aggregates with the
upserts an incremental fold uses, so the result is exactly what one connection folding
everything gives.  ``sqlite3`` releases the GIL while a statement runs: the connections and
the scorer's Python work proceed side by side.  The connections read the event store at
different moments, which is safe because it is append-only and a range is bounded by ids
(new events get higher ids).  The scratch databases live in a temporary directory that
:meth:`Fold.close` removes.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from pathlib import Path

from .state import BATCH_SELECT, CLASS_SCHEMA, GROUPINGS, STATE_SCHEMA, attach_readonly, upsert

MAIN_AGGREGATES = ("org_day",)  # grouped by the state's connection, loaded first
SIDE_AGGREGATES = ("org_source", "org_version", "burst")


class Fold:
    """One event range being folded: ``high`` is its last event id, ``count`` its size."""

    def __init__(self, high: int, count: int) -> None:
        self.high, self.count = high, count
        self._state: sqlite3.Connection | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._thread: threading.Thread | None = None
        self._side_error: BaseException | None = None
        self._main_failed = False

    def start(
        self,
        state: sqlite3.Connection,
        events_path: Path,
        derived: str,
        halves: tuple[list, list],
        mapping: dict[str, list[tuple]],
    ) -> None:
        """Derive both halves (``derived`` with each half's parameters), then fold per-day
        activity into ``state`` and start the side's aggregates; returns when ``org_day``
        holds the range."""
        self._state = state
        self._dir = tempfile.TemporaryDirectory(prefix="gatepost-score-")
        scratch = Path(self._dir.name)
        parts = (scratch / "part0.sqlite3", scratch / "part1.sqlite3")
        side_derived, main_derived = threading.Event(), threading.Event()

        def side() -> None:
            try:
                try:
                    _derive(parts[0], events_path, derived, halves[0], mapping)
                finally:
                    side_derived.set()
                main_derived.wait()
                if not self._main_failed:
                    _group(scratch / "side.sqlite3", parts, SIDE_AGGREGATES)
            except BaseException as exc:  # raised in the main thread by finish()
                self._side_error = exc

        self._thread = threading.Thread(target=side, name="gatepost-fold", daemon=True)
        self._thread.start()
        try:
            _derive(parts[1], events_path, derived, halves[1], mapping)
        except BaseException:
            self._main_failed = True
            raise
        finally:
            main_derived.set()
        side_derived.wait()
        if self._side_error is not None:
            raise self._side_error
        _attach_parts(state, parts)
        for table in MAIN_AGGREGATES:
            state.execute(upsert(table, GROUPINGS[table]))

    def touched(self) -> set[int]:
        """The organisations the range's events belong to (after :meth:`start`)."""
        if self._state is None:
            return set()
        return {org for (org,) in self._state.execute("SELECT DISTINCT org FROM temp.batch")}

    def finish(self) -> None:
        """Wait for the side's aggregates and merge them: the state now holds the range."""
        if self._thread is None or self._state is None or self._dir is None:
            return
        self._thread.join()
        if self._side_error is not None:
            raise self._side_error
        attach_readonly(self._state, Path(self._dir.name) / "side.sqlite3", "side")
        for table in SIDE_AGGREGATES:
            self._state.execute(upsert(f"main.{table}", f"SELECT * FROM side.{table} WHERE true"))
        self._state = None

    def close(self) -> None:
        """Remove the scratch databases; call once the state's connection is closed (it
        keeps them attached: a database read in a transaction cannot be detached in it)."""
        if self._thread is not None:
            self._main_failed = True  # a side still waiting must not start grouping
            self._thread.join()
        if self._dir is not None:
            self._dir.cleanup()


def _scratch(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = OFF")  # scratch data: nothing to recover
    db.execute("PRAGMA synchronous = OFF")
    return db


def _derive(
    path: Path, events_path: Path, derived: str, params: list, mapping: dict[str, list[tuple]]
) -> None:
    """One row per event of a half into ``path``'s ``batch``, with the same organisation
    mapping and classification as the state's connection."""
    db = _scratch(path)
    try:
        db.executescript(STATE_SCHEMA)  # the mapping tables the derived rows join
        for statement in CLASS_SCHEMA:
            db.execute(statement)
        db.execute("BEGIN")
        for table, rows in mapping.items():
            if rows:
                marks = ", ".join("?" * len(rows[0]))
                db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        attach_readonly(db, events_path, "ev")
        db.execute(f"CREATE TABLE main.batch AS {BATCH_SELECT.format(derived=derived)}", params)
        db.execute("COMMIT")
    finally:
        db.close()


def _attach_parts(db: sqlite3.Connection, parts: tuple[Path, Path]) -> None:
    """Both halves attached read-only, seen together as ``temp.batch``."""
    for i, path in enumerate(parts):
        attach_readonly(db, path, f"part{i}")
    db.execute("DROP VIEW IF EXISTS temp.batch")
    db.execute(
        "CREATE TEMP VIEW batch AS SELECT * FROM part0.batch UNION ALL SELECT * FROM part1.batch"
    )


def _group(path: Path, parts: tuple[Path, Path], tables: tuple[str, ...]) -> None:
    """The ``tables`` aggregates of both halves, into the scratch database ``path``."""
    db = _scratch(path)
    try:
        db.executescript(STATE_SCHEMA)
        _attach_parts(db, parts)
        db.execute("BEGIN")
        for table in tables:
            db.execute(upsert(table, GROUPINGS[table]))
        db.execute("COMMIT")
    finally:
        db.close()
