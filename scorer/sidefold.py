"""The side fold: sources, versions and bursts of an event range, folded on a second
connection and thread while the main connection folds per-day activity.

SQLite runs a statement on one core, and a full run is mostly independent ``GROUP BY``s
over the same derived rows.  The side fold derives its own rows (the same SQL, the same
organisation mapping) into a scratch database, groups them there, and the main connection
merges the partial aggregates with the upserts an incremental fold uses — so the result is
exactly what one connection folding everything gives.  ``sqlite3`` releases the GIL while a
statement runs: the two connections, and the scorer's Python work on timelines, use
separate cores.  The scratch database lives in a temporary directory removed afterwards.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .state import CLASS_SCHEMA, SIDE_GROUPINGS, STATE_SCHEMA, attach_events, upsert


class SideFold(threading.Thread):
    """Folds ``SIDE_GROUPINGS`` of the rows ``derived`` selects into a scratch database."""

    def __init__(
        self, events_path: Path, derived: str, params: list, mapping: dict[str, list[tuple]]
    ) -> None:
        super().__init__(name="gatepost-side-fold", daemon=True)
        self._dir = tempfile.TemporaryDirectory(prefix="gatepost-score-")
        self.path = Path(self._dir.name) / "side.sqlite3"
        self.events_path = events_path
        self.derived, self.params, self.mapping = derived, params, mapping
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            try:
                self._fold(db)
            finally:
                db.close()
        except BaseException as exc:  # handed to the main thread by merge_into()
            self.error = exc

    def _fold(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode = OFF")  # scratch: nothing to recover
        db.execute("PRAGMA synchronous = OFF")
        db.executescript(STATE_SCHEMA)
        for statement in CLASS_SCHEMA:
            db.execute(statement)
        attach_events(db, self.events_path)
        db.execute("BEGIN")
        for table, rows in self.mapping.items():
            if rows:
                marks = ", ".join("?" * len(rows[0]))
                db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        db.execute(f"CREATE TEMP TABLE batch AS {self.derived}", self.params)
        for table, select in SIDE_GROUPINGS.items():
            db.execute(upsert(table, select))
        db.execute("COMMIT")

    def merge_into(self, state: sqlite3.Connection) -> None:
        """Wait for the fold, then merge its aggregates into ``state``'s (which keeps the
        scratch database attached until it is closed: a database read in a transaction
        cannot be detached before the transaction ends)."""
        self.join()
        if self.error is not None:
            raise self.error
        state.execute("ATTACH DATABASE ? AS side", (str(self.path),))
        for table in SIDE_GROUPINGS:
            state.execute(upsert(f"main.{table}", f"SELECT * FROM side.{table} WHERE true"))

    def remove(self) -> None:
        """Wait for the fold and remove the scratch database (once no connection uses it)."""
        self.join()
        self._dir.cleanup()


@dataclass
class Fold:
    """An event range being folded: ``high`` is its last event id, ``count`` its size."""

    high: int
    count: int
    side: SideFold | None = None
    state: sqlite3.Connection | None = None

    def finish(self) -> None:
        """Wait for the side fold and merge it: all aggregates now include the range."""
        if self.side is not None and self.state is not None:
            self.side.merge_into(self.state)
            self.state = None

    def close(self) -> None:
        """Remove the side fold's scratch database; call after closing the state connection."""
        if self.side is not None:
            self.side.remove()
