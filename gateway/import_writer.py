"""The import's writer process: inserts batches of rows while the importer parses the next.

A thread does not help: the sqlite3 module holds the GIL while it binds each row, and two
threads take turns instead of overlapping.  A child process works on the second core.
Batches arrive as consecutive pickles on stdin (from the parent only), ``None`` ends them;
the totals go back as one JSON line on stdout.

    python -m gateway.import_writer DB
"""

from __future__ import annotations

import contextlib
import json
import pickle
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from .store import INSERT_SQL, open_store


class BatchWriter:
    """The parent's side: ``put`` batches, ``close`` for (imported, duplicates)."""

    def __init__(self, db_path: Path) -> None:
        open_store(db_path).close()  # a store that cannot be opened fails here, before parsing
        self._process = subprocess.Popen(
            [sys.executable, "-m", "gateway.import_writer", str(db_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin, self._stdout = self._process.stdin, self._process.stdout

    def put(self, batch: list[tuple]) -> None:
        if batch:
            with contextlib.suppress(BrokenPipeError):  # the writer died: close() reports it
                pickle.dump(batch, self._stdin, protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> tuple[int, int]:
        with contextlib.suppress(BrokenPipeError):
            pickle.dump(None, self._stdin)
            self._stdin.close()
        answer = self._stdout.read()
        self._process.wait()
        try:
            totals = json.loads(answer)
        except ValueError:
            raise sqlite3.Error(
                f"the import writer ended unexpectedly (exit {self._process.returncode})"
            ) from None
        if totals["error"]:
            raise sqlite3.Error(f"writing events failed: {totals['error']}")
        return totals["imported"], totals["duplicates"]


def write_batches(db_path: str) -> dict:
    """One transaction per batch until ``None``; after an error, read on without writing
    so the parent never blocks on a full pipe."""
    conn = open_store(db_path)
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: a whole batch's index pages stay cached
    totals = {"imported": 0, "duplicates": 0, "error": ""}
    source = sys.stdin.buffer
    while (batch := pickle.load(source)) is not None:
        if totals["error"]:
            continue
        try:
            before = conn.total_changes
            conn.execute("BEGIN")
            conn.executemany(INSERT_SQL, batch)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            totals["error"] = str(exc)
            continue
        added = conn.total_changes - before
        totals["imported"] += added
        totals["duplicates"] += len(batch) - added
    conn.close()
    return totals


def main() -> None:
    # Ctrl-C goes to the parent, which sends ``None`` after its last batch:
    # what it sent is always committed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout.write(json.dumps(write_batches(sys.argv[1])) + "\n")


if __name__ == "__main__":
    main()
