"""Fold events into per-organisation aggregates — in SQL, so a run costs about one scan.

The event store is attached read-only; only events with ``id`` above the last processed
one are read (incremental), or all of them up to ``--as-of`` (reproducible run).  All
aggregates are sums, minimums, maximums or distinct sets, so folding new events into
existing aggregates gives exactly what a full run gives.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .enrich import Enricher
from .rules import Rules

STATE_VERSION = 2
STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS orgs (
    org_key TEXT PRIMARY KEY, name TEXT, type TEXT, domain TEXT, confidence REAL, source TEXT);
CREATE TABLE IF NOT EXISTS org_network (network TEXT PRIMARY KEY, org_key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS org_endpoint (endpoint_id TEXT PRIMARY KEY, org_key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS org_day (
    org_key TEXT NOT NULL, day TEXT NOT NULL, package TEXT NOT NULL, signal TEXT NOT NULL,
    value_class TEXT NOT NULL, channel TEXT NOT NULL, automation TEXT NOT NULL,
    events INTEGER NOT NULL, maintenance INTEGER NOT NULL,
    PRIMARY KEY (org_key, day, package, signal, value_class, channel, automation)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_source (
    org_key TEXT NOT NULL, signal TEXT NOT NULL, endpoint_id TEXT NOT NULL, origin_id TEXT NOT NULL,
    automation TEXT NOT NULL, last_day TEXT NOT NULL,
    PRIMARY KEY (org_key, signal, endpoint_id, origin_id, automation)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_version (
    org_key TEXT NOT NULL, package TEXT NOT NULL, version TEXT NOT NULL, channel TEXT NOT NULL,
    first_ts TEXT NOT NULL, last_ts TEXT NOT NULL, downloads INTEGER NOT NULL, human INTEGER NOT NULL,
    PRIMARY KEY (org_key, package, version, channel));
CREATE TABLE IF NOT EXISTS burst (
    org_key TEXT NOT NULL, endpoint_id TEXT NOT NULL, minute TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (org_key, endpoint_id, minute));
CREATE TABLE IF NOT EXISTS scores (org_key TEXT PRIMARY KEY, rank INTEGER, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stage_timeline (
    org_key TEXT NOT NULL, stage TEXT NOT NULL, since TEXT NOT NULL, PRIMARY KEY (org_key, since, stage));
"""
AGGREGATE_TABLES = (
    "orgs",
    "org_network",
    "org_endpoint",
    "org_day",
    "org_source",
    "org_version",
    "burst",
)
UNATTRIBUTED = "(unattributed)"

# Folding the temporary ``batch`` of derived rows into the aggregates (one statement each:
# ``executescript`` would commit the surrounding transaction).
FOLD_STATEMENTS = (
    """
    INSERT INTO org_day
    SELECT org_key, day, coalesce(package, ''), signal, value_class, channel, automation,
           count(*), sum(maintenance)
    FROM temp.batch GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT DO UPDATE SET events = events + excluded.events,
                              maintenance = maintenance + excluded.maintenance
    """,
    """
    INSERT INTO org_source
    SELECT org_key, signal, substr(endpoint_id, 1, 16), substr(coalesce(origin_id, ''), 1, 16),
           automation, max(day)
    FROM temp.batch WHERE endpoint_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT DO UPDATE SET last_day = max(last_day, excluded.last_day)
    """,
    """
    INSERT INTO org_version
    SELECT org_key, package, version, channel, min(ts), max(ts), count(*),
           sum(automation = '')
    FROM temp.batch WHERE signal = 'download' AND version IS NOT NULL AND package IS NOT NULL
    GROUP BY 1, 2, 3, 4
    ON CONFLICT DO UPDATE SET first_ts = min(first_ts, excluded.first_ts),
        last_ts = max(last_ts, excluded.last_ts), downloads = downloads + excluded.downloads,
        human = human + excluded.human
    """,
    """
    INSERT INTO burst
    SELECT org_key, endpoint_id, substr(ts, 1, 16), count(*)
    FROM temp.batch WHERE signal = 'download' AND endpoint_id IS NOT NULL
    GROUP BY 1, 2, 3
    ON CONFLICT DO UPDATE SET n = n + excluded.n
    """,
    """
    DROP TABLE temp.batch
    """,
)


class Aggregator:
    """Owns the scorer's state database and folds event ranges into it."""

    def __init__(
        self, state: sqlite3.Connection, events_path: Path, rules: Rules, enricher: Enricher
    ) -> None:
        self.db = state
        self.rules = rules
        self.enricher = enricher
        if self.db.execute("PRAGMA user_version").fetchone()[0] != STATE_VERSION:
            # the state is derived data: an older layout is dropped and rebuilt by a full run
            for table in (*AGGREGATE_TABLES, "scores", "stage_timeline", "meta"):
                self.db.execute(f"DROP TABLE IF EXISTS {table}")
            self.db.execute(f"PRAGMA user_version = {STATE_VERSION}")
        self.db.executescript(STATE_SCHEMA)
        self.touched: set[str] = set()
        self.db.execute("ATTACH DATABASE ? AS ev", (f"file:{events_path.resolve()}?mode=ro",))

    # ------------------------------------------------------------------ bookkeeping

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def reset(self) -> None:
        for table in (*AGGREGATE_TABLES, "scores", "stage_timeline"):
            self.db.execute(f"DELETE FROM {table}")
        self.set_meta("last_event_id", "0")

    # ------------------------------------------------------------------ folding

    def fold(self, after_id: int, until_ts: str | None = None) -> tuple[int, int]:
        """Aggregate events with id > ``after_id`` (and ts ≤ ``until_ts``); returns (last id, count)."""
        where = "e.id > ?"
        params: list = [after_id]
        if until_ts:
            where += " AND e.ts <= ?"
            params.append(until_ts)
        high, count = self.db.execute(
            f"SELECT max(e.id), count(*) FROM ev.events e WHERE {where}", params
        ).fetchone()
        if not count:
            return after_id, 0
        where += " AND e.id <= ?"
        params.append(high)
        self._enrich(where, params)
        self._classify_text(where, params)
        derived = f"""
            SELECT coalesce(ep.org_key, nw.org_key, '{UNATTRIBUTED}') AS org_key,
                substr(e.ts, 1, 10) AS day, e.ts, e.package, e.version, e.endpoint_id, e.origin_id,
                CASE
                    WHEN e.type IN ('download', 'pull') THEN 'download'
                    WHEN e.type = 'page_view' AND rc.docs THEN 'docs'
                    WHEN e.type = 'page_view' THEN 'website'
                    WHEN e.type IN ('telemetry', 'link_click') THEN e.type
                    ELSE 'other' END AS signal,
                CASE WHEN e.type = 'page_view'
                    THEN coalesce(json_extract(e.data, '$.value_class'), '') ELSE '' END AS value_class,
                CASE e.route_kind WHEN 'oci' THEN 'container' WHEN 'pypi' THEN 'pypi'
                    WHEN 'file' THEN 'file' WHEN 'prefix' THEN 'file'
                    ELSE coalesce(e.route_kind, '') END AS channel,
                CASE
                    WHEN e.client_kind = 'bot' THEN 'bot'
                    WHEN o.type = 'mirror' OR ua.automation = 'mirror' THEN 'mirror'
                    WHEN o.type = 'ci' OR ua.automation = 'ci'
                        OR (e.route_kind = 'pypi' AND json_extract(e.data, '$.ci') = 1) THEN 'ci'
                    ELSE '' END AS automation,
                coalesce(rc.maintenance, 0) AS maintenance
            FROM ev.events e
            LEFT JOIN org_endpoint ep ON ep.endpoint_id = e.endpoint_id
            LEFT JOIN org_network nw ON nw.network = e.network
            LEFT JOIN orgs o ON o.org_key = coalesce(ep.org_key, nw.org_key)
            LEFT JOIN temp.ua_class ua ON ua.user_agent = e.user_agent
            LEFT JOIN temp.referer_class rc ON rc.referer = e.referer
            WHERE {where}
        """
        self.db.execute("DROP TABLE IF EXISTS temp.batch")
        self.db.execute(f"CREATE TEMP TABLE batch AS {derived}", params)
        self.touched = {
            key for (key,) in self.db.execute("SELECT DISTINCT org_key FROM temp.batch")
        }
        for statement in FOLD_STATEMENTS:
            self.db.execute(statement)
        return high, count

    def _classify_text(self, where: str, params: list) -> None:
        """Classify each distinct user agent and referer once, in Python (few distinct values)."""
        a, sig = self.rules["automation"], self.rules["signals"]
        ci = [p.lower() for p in a["ci_user_agents"]]
        mirror = [p.lower() for p in a["mirror_user_agents"]]
        docs = [p.lower() for p in sig["docs_patterns"]]
        maintenance = [p.lower() for p in sig["maintenance_patterns"]]
        self.db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS ua_class (user_agent TEXT PRIMARY KEY, automation TEXT)"
        )
        self.db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS referer_class (referer TEXT PRIMARY KEY, docs INT, maintenance INT)"
        )
        agents = self.db.execute(
            f"SELECT DISTINCT e.user_agent FROM ev.events e WHERE {where} AND e.user_agent IS NOT NULL",
            params,
        ).fetchall()
        rows = []
        for (agent,) in agents:
            low = agent.lower()
            kind = (
                "mirror"
                if any(m in low for m in mirror)
                else "ci"
                if any(c in low for c in ci)
                else ""
            )
            rows.append((agent, kind))
        self.db.executemany("INSERT OR IGNORE INTO temp.ua_class VALUES (?, ?)", rows)
        referers = self.db.execute(
            f"SELECT DISTINCT e.referer FROM ev.events e WHERE {where} AND e.type = 'page_view' "
            "AND e.referer IS NOT NULL",
            params,
        ).fetchall()
        self.db.executemany(
            "INSERT OR IGNORE INTO temp.referer_class VALUES (?, ?, ?)",
            [
                (r, any(d in r.lower() for d in docs), any(m in r.lower() for m in maintenance))
                for (r,) in referers
            ],
        )

    def _enrich(self, where: str, params: list) -> None:
        """Resolve every network not seen before (Python, once per network)."""
        for endpoint_id in self.enricher.override_endpoints:
            org = self.enricher.endpoint(endpoint_id)
            assert org is not None
            self._org(org.name, org)
            self.db.execute(
                "INSERT OR IGNORE INTO org_endpoint VALUES (?, ?)", (endpoint_id, org.name)
            )
        rows = self.db.execute(
            f"SELECT DISTINCT e.network FROM ev.events e WHERE {where} AND e.network IS NOT NULL "
            "AND e.network NOT IN (SELECT network FROM org_network)",
            params,
        ).fetchall()
        for (network,) in rows:
            org = self.enricher.network(network)
            key = org.name if org else f"net:{network}"
            self._org(key, org)
            self.db.execute("INSERT OR IGNORE INTO org_network VALUES (?, ?)", (network, key))

    def _org(self, key: str, org) -> None:  # type: ignore[no-untyped-def]
        if org is None:
            self.db.execute(
                "INSERT OR IGNORE INTO orgs VALUES (?, ?, 'unknown', NULL, 0.0, 'none')", (key, key)
            )
        else:
            self.db.execute(
                "INSERT OR IGNORE INTO orgs VALUES (?, ?, ?, ?, ?, ?)",
                (key, org.name, org.type, org.domain, org.confidence, org.source),
            )
