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
import os
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
        # the child imports this very package, installed or not
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "gateway.import_writer", str(db_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin, self._stdout = self._process.stdin, self._process.stdout
        self._outcome: tuple[int, int] | Exception | None = None

    def put(self, batch: list[tuple]) -> None:
        """Hand a batch to the writer; when the writer has stopped on an error (a full disk,
        say), raise that error now instead of parsing the rest of the input for nothing."""
        if not batch:
            return
        try:
            pickle.dump(batch, self._stdin, protocol=pickle.HIGHEST_PROTOCOL)
        except BrokenPipeError:
            self.close()  # raises the writer's error
            raise  # pragma: no cover - close() always raises when the writer stopped early

    def close(self) -> tuple[int, int]:
        """Wait for the writer to commit what it was sent; its totals, or its error.
        Safe to call again: the outcome of the first call is repeated."""
        if self._outcome is None:
            self._outcome = self._finish()
        if isinstance(self._outcome, Exception):
            raise self._outcome
        return self._outcome

    def _finish(self) -> tuple[int, int] | Exception:
        with contextlib.suppress(BrokenPipeError):
            pickle.dump(None, self._stdin)
        with contextlib.suppress(BrokenPipeError):
            self._stdin.close()
        answer = self._stdout.read()
        self._process.wait()
        try:
            totals = json.loads(answer)
        except ValueError:
            return sqlite3.Error(
                f"the import writer ended unexpectedly (exit {self._process.returncode})"
            )
        if totals["error"]:
            return sqlite3.Error(f"writing events failed: {totals['error']}")
        return totals["imported"], totals["duplicates"]


def write_batches(db_path: str) -> dict:
    """One transaction per batch until ``None``.  On an error it stops at once: the parent
    sees its pipe close and reports the error without reading the rest of its input."""
    conn = open_store(db_path)
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: a whole batch's index pages stay cached
    totals = {"imported": 0, "duplicates": 0, "error": ""}
    source = sys.stdin.buffer
    while (batch := pickle.load(source)) is not None:
        try:
            before = conn.total_changes
            conn.execute("BEGIN")
            conn.executemany(INSERT_SQL, batch)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            totals["error"] = str(exc)
            break
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
