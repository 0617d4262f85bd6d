"""One scoring run: fold new events (or all, for ``--full`` / ``--as-of``), then score.

State lives in its own SQLite file (default ``data/scores.sqlite3``).  A run is
incremental by default: only events after the last processed id are read.  When the
rules, the enrichment sources or the event store itself changed, the run starts over.
``--as-of`` runs are computed from scratch in memory, ignore later events, and never
touch the saved state — same data + same time + same rules → same output.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .aggregate import Aggregator
from .enrich import Enricher
from .rules import Rules
from .score import day_index, load_extras, load_orgs, profile_org, rank_key, score_org


@dataclass
class ScoreRun:
    organisations: list[dict[str, Any]]
    events_read: int
    full: bool
    as_of: str
    seconds: float


def parse_as_of(text: str | None) -> dt.datetime:
    if not text:
        return dt.datetime.now(dt.UTC)
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--as-of {text!r} is not an ISO 8601 time (e.g. 2026-06-01T00:00:00Z)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def as_of_ts(value: dt.datetime) -> str:
    """The event-store timestamp format, inclusive upper bound."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def score(
    events_db: str | Path,
    state_db: str | Path | None,
    rules: Rules,
    enricher: Enricher,
    *,
    full: bool = False,
    as_of: str | None = None,
) -> ScoreRun:
    started = time.perf_counter()
    events_path = Path(events_db)
    if not events_path.exists():
        raise FileNotFoundError(f"{events_path}: no event store here")
    moment = parse_as_of(as_of)
    reproducible = as_of is not None
    if reproducible or state_db is None:
        conn = sqlite3.connect(":memory:", uri=True)
    else:
        Path(state_db).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(state_db)
    conn.isolation_level = None
    fold = None
    try:
        agg = Aggregator(conn, events_path, rules, enricher)
        conn.execute("BEGIN")
        fingerprint = json.dumps(
            [
                rules.digest,
                enricher.sources_digest,
                str(events_path.resolve()),
                _store_identity(conn),
            ]
        )
        if full or reproducible or agg.meta("fingerprint") != fingerprint:
            agg.reset()
            full = True
        agg.set_meta("fingerprint", fingerprint)
        last = int(agg.meta("last_event_id") or 0)
        as_of_day = day_index(moment.date().isoformat())
        # Scores depend on the day (windows move daily): a same-day incremental run only
        # rescores the organisations that new events touched and keeps the others.
        same_day = not full and agg.meta("scored_day") == str(as_of_day)
        fold = agg.fold(last, as_of_ts(moment) if reproducible else None, track_touched=same_day)
        # per-day activity is folded: load it and build timelines while sources, versions
        # and bursts fold (fold.py)
        only = agg.touched if same_day else None
        orgs = load_orgs(conn, rules, as_of_day, only)
        profiles = {org_id: profile_org(org, rules, as_of_day) for org_id, org in orgs.items()}
        fold.finish()
        high, count = fold.high, fold.count
        agg.set_meta("last_event_id", str(high))
        extras = load_extras(conn, as_of_day, only)
        fresh = [
            score_org(org, profiles[org.id], extras[org.id], rules, as_of_day)
            for org in orgs.values()
        ]
        fresh = [d for d in fresh if d["first_seen"] is not None]
        kept: list[dict[str, Any]] = []
        if only is not None:
            updated = {d["organisation"] for d in fresh}
            kept = [json.loads(doc) for (key, doc) in conn.execute("SELECT org_key, doc FROM scores")
                    if key not in updated]  # fmt: skip
        docs = sorted(fresh + kept, key=rank_key)
        agg.set_meta("scored_day", str(as_of_day))
        conn.execute("DELETE FROM scores")
        conn.execute("DELETE FROM stage_timeline")
        for rank, (key, doc) in enumerate(((d["organisation"], d) for d in docs), 1):
            conn.execute(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?)", (key, rank, json.dumps(doc))
            )
            conn.executemany(
                "INSERT OR IGNORE INTO stage_timeline VALUES (?, ?, ?)",
                [(key, t["stage"], t["since"]) for t in doc["timeline"]],
            )
        conn.execute("COMMIT")
    finally:
        conn.close()
        if fold is not None:
            fold.close()
    return ScoreRun(
        docs, count, full, moment.isoformat().replace("+00:00", "Z"), time.perf_counter() - started
    )


def _store_identity(conn: sqlite3.Connection) -> str:
    """Changes when the event store is replaced (ids would restart): its first event."""
    row = conn.execute(
        "SELECT min(id), (SELECT ts FROM ev.events ORDER BY id LIMIT 1) FROM ev.events"
    ).fetchone()
    return f"{row[0]}:{row[1]}"
