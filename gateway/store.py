"""The event store: one SQLite table whose schema is the contract with the scorer.

Every column is documented in ``docs/events.md``.  The schema version lives in
``PRAGMA user_version``; :data:`MIGRATIONS` upgrades older files in place.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 2

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS events (
        id             INTEGER PRIMARY KEY,
        ts             TEXT    NOT NULL,
        type           TEXT    NOT NULL,
        adapter        TEXT    NOT NULL,
        host           TEXT    NOT NULL,
        route_id       TEXT,
        route_kind     TEXT,
        package        TEXT,
        version        TEXT,
        vars           TEXT    NOT NULL DEFAULT '{}',
        method         TEXT    NOT NULL,
        path           TEXT    NOT NULL,
        query          TEXT    NOT NULL DEFAULT '',
        status         INTEGER NOT NULL,
        bytes_sent     INTEGER,
        duration_ms    REAL,
        outcome        TEXT    NOT NULL DEFAULT 'ok',
        upstream       TEXT,
        user_agent     TEXT,
        referer        TEXT,
        referer_domain TEXT,
        client_kind    TEXT,
        client_version TEXT,
        dnt            INTEGER NOT NULL DEFAULT 0,
        network        TEXT,
        endpoint_id    TEXT,
        origin_id      TEXT,
        data           TEXT    NOT NULL DEFAULT '{}',
        source_hash    TEXT
    );
    CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
    CREATE UNIQUE INDEX IF NOT EXISTS events_source_hash ON events (source_hash)
        WHERE source_hash IS NOT NULL;
    """,
    # Identical source lines carry identical timestamps, so (ts, source_hash) is as unique as
    # source_hash alone; led by ts, imports of time-ordered logs append to the index instead
    # of inserting at random places (4x faster on large imports).
    2: """
    DROP INDEX IF EXISTS events_source_hash;
    CREATE UNIQUE INDEX IF NOT EXISTS events_source ON events (ts, source_hash)
        WHERE source_hash IS NOT NULL;
    """,
}

COLUMNS: tuple[str, ...] = (
    "ts", "type", "adapter", "host", "route_id", "route_kind", "package", "version", "vars",
    "method", "path", "query", "status", "bytes_sent", "duration_ms", "outcome", "upstream",
    "user_agent", "referer", "referer_domain", "client_kind", "client_version", "dnt",
    "network", "endpoint_id", "origin_id", "data", "source_hash",
)  # fmt: skip

INSERT_SQL = (
    f"INSERT OR IGNORE INTO events ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to :data:`SCHEMA_VERSION`; returns the version found before."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise RuntimeError(
            f"event store has schema version {found}, newer than this gateway ({SCHEMA_VERSION})"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.executescript(f"BEGIN; {MIGRATIONS[version]} PRAGMA user_version={version}; COMMIT;")
    return found


def open_store(path: str | Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A synchronous connection with the schema in place (CLI, tests, scorer setup).

    ``check_same_thread=False`` lets the connection be handed to one other thread
    (the importer's writer), which then is its only user."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    migrate(conn)
    return conn


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection for readers such as the scorer: it can never write events."""
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn
