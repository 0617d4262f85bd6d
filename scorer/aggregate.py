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

STATE_VERSION = 4

# The state keeps small integers where the aggregates sort and group: organisation ids,
# day ordinals (``datetime.date.toordinal``) and the codes below.  Sorting 1M derived rows
# by integers instead of text keys is ~2.5x faster, and the fold is mostly such sorts.
SIGNALS = ("other", "download", "docs", "website", "telemetry", "link_click")
S_DOWNLOAD, S_DOCS, S_WEBSITE, S_TELEMETRY, S_LINK = 1, 2, 3, 4, 5
VALUE_OF_CLASS = {"medium": 1, "high": 2}  # page value classes; anything else counts as low
V_LOW, V_MEDIUM, V_HIGH = 0, 1, 2
CHANNELS = ("other", "file", "container", "pypi")  # download channels, by route kind:
CHANNEL_OF_KIND = {"file": 1, "prefix": 1, "oci": 2, "pypi": 3}
AUTOMATION = ("", "ci", "mirror", "bot")  # "" = human
HUMAN, A_CI, A_MIRROR, A_BOT = 0, 1, 2, 3
NETWORK_AUTOMATION = {"ci": A_CI, "mirror": A_MIRROR}  # network types whose traffic is automated


# Each derived row's category for ``org_day``: signal and page value class;
# CATEGORIES[c] names it, CATEGORY_SIGNAL[c] its signal.
CATEGORIES = ("download", "docs_low", "docs_medium", "docs_high", "web_low", "web_medium",
              "web_high", "telemetry", "link", "other")  # fmt: skip
CATEGORY_SIGNAL = ("download", "docs", "docs", "docs", "website", "website", "website",
                   "telemetry", "link_click", "other")  # fmt: skip
C_DOWNLOAD, C_DOCS = 0, (1, 2, 3)
CATEGORY_SQL = (
    f"CASE signal WHEN {S_DOWNLOAD} THEN 0 WHEN {S_DOCS} THEN 1 + value_class "
    f"WHEN {S_WEBSITE} THEN 4 + value_class WHEN {S_TELEMETRY} THEN 7 WHEN {S_LINK} THEN 8 "
    "ELSE 9 END"
)
# ``org_day`` holds one count per organisation, day and *day code*: the category, the
# automation kind, the download channel and whether the page is about maintenance, packed
# into one small integer.  Folding is then one narrow GROUP BY; the scorer unpacks codes
# when it loads (see ``unpack_day_code``).
DAY_CODE_SQL = (
    f"((({CATEGORY_SQL}) * 4 + automation) * 4 "
    f"+ CASE WHEN signal = {S_DOWNLOAD} THEN channel ELSE 0 END) * 2 + maintenance"
)
DAY_CODES = len(CATEGORIES) * len(AUTOMATION) * len(CHANNELS) * 2


def unpack_day_code(code: int) -> tuple[int, int, int, bool]:
    """(category, automation, channel, maintenance) of an ``org_day`` code."""
    return code >> 5, (code >> 3) & 3, (code >> 1) & 3, bool(code & 1)


# SQL: an ISO timestamp's day ordinal (julianday('0001-01-01') = 1721425.5, ordinal 1).
DAY_OF_TS = "CAST(julianday(substr({ts}, 1, 10)) - 1721424.5 AS INTEGER)"

STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS orgs (
    id INTEGER PRIMARY KEY, org_key TEXT NOT NULL UNIQUE, name TEXT, type TEXT, domain TEXT,
    confidence REAL, source TEXT);
CREATE TABLE IF NOT EXISTS org_network (
    network TEXT PRIMARY KEY, org INTEGER NOT NULL, automation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS org_endpoint (
    endpoint_id TEXT PRIMARY KEY, org INTEGER NOT NULL, automation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS org_day (
    org INTEGER NOT NULL, day INTEGER NOT NULL, code INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (org, day, code)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_source (
    org INTEGER NOT NULL, signal INTEGER NOT NULL, endpoint_id TEXT NOT NULL,
    origin_id TEXT NOT NULL, automation INTEGER NOT NULL, last_day INTEGER NOT NULL,
    PRIMARY KEY (org, signal, endpoint_id, origin_id, automation)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS org_version (
    org INTEGER NOT NULL, package TEXT NOT NULL, version TEXT NOT NULL, channel INTEGER NOT NULL,
    first_ts TEXT NOT NULL, last_ts TEXT NOT NULL, downloads INTEGER NOT NULL, human INTEGER NOT NULL,
    PRIMARY KEY (org, package, version, channel));
CREATE TABLE IF NOT EXISTS burst (
    org INTEGER NOT NULL, endpoint_id TEXT NOT NULL, minute INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (org, endpoint_id, minute)) WITHOUT ROWID;
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
    f"""
    INSERT INTO org_day
    SELECT org, day, {DAY_CODE_SQL}, count(*) FROM temp.batch GROUP BY 1, 2, 3
    ON CONFLICT DO UPDATE SET n = n + excluded.n
    """,
    """
    INSERT INTO org_source
    SELECT org, signal, endpoint_id, origin_id, automation, max(day)
    FROM temp.batch WHERE endpoint_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT DO UPDATE SET last_day = max(last_day, excluded.last_day)
    """,
    f"""
    INSERT INTO org_version
    SELECT org, package, version, channel, min(ts), max(ts), count(*), sum(automation = {HUMAN})
    FROM temp.batch WHERE signal = {S_DOWNLOAD} AND version IS NOT NULL AND package != ''
    GROUP BY 1, 2, 3, 4
    ON CONFLICT DO UPDATE SET first_ts = min(first_ts, excluded.first_ts),
        last_ts = max(last_ts, excluded.last_ts), downloads = downloads + excluded.downloads,
        human = human + excluded.human
    """,
    f"""
    INSERT INTO burst
    SELECT org, endpoint_id,
           day * 1440 + CAST(substr(ts, 12, 2) AS INTEGER) * 60 + CAST(substr(ts, 15, 2) AS INTEGER),
           count(*)
    FROM temp.batch WHERE signal = {S_DOWNLOAD} AND endpoint_id IS NOT NULL
    GROUP BY 1, 2, 3
    ON CONFLICT DO UPDATE SET n = n + excluded.n
    """,
    """
    DROP TABLE temp.batch
    """,
)


def code_case(column: str, codes: dict[str, int]) -> str:
    """SQL mapping the text ``column`` to its code (0 for anything else)."""
    whens = " ".join(f"WHEN '{name}' THEN {code}" for name, code in codes.items())
    return f"CASE {column} {whens} ELSE 0 END"


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
        self.touched: set[int] = set()
        self.unattributed = 0  # the id of UNATTRIBUTED, set by fold()
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

    def fold(
        self, after_id: int, until_ts: str | None = None, *, track_touched: bool = False
    ) -> tuple[int, int]:
        """Aggregate events with id > ``after_id`` (and ts ≤ ``until_ts``); returns (last id,
        count).  With ``track_touched``, ``self.touched`` holds the organisations they hit."""
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
        # the organisation (and whether its network is a CI or mirror one): an endpoint
        # override wins over the network; the join is left out when there are none
        if self.db.execute("SELECT 1 FROM org_endpoint LIMIT 1").fetchone():
            endpoint_join = "LEFT JOIN org_endpoint ep ON ep.endpoint_id = e.endpoint_id"
            org = f"coalesce(ep.org, nw.org, {self.unattributed})"
            network_automation = "coalesce(ep.automation, nw.automation)"
        else:
            endpoint_join, network_automation = "", "nw.automation"
            org = f"coalesce(nw.org, {self.unattributed})"
        derived = f"""
            SELECT {org} AS org,
                {DAY_OF_TS.format(ts="e.ts")} AS day, e.ts, coalesce(e.package, '') AS package,
                e.version, substr(e.endpoint_id, 1, 16) AS endpoint_id,
                substr(coalesce(e.origin_id, ''), 1, 16) AS origin_id,
                CASE
                    WHEN e.type IN ('download', 'pull') THEN {S_DOWNLOAD}
                    WHEN e.type = 'page_view' AND rc.docs THEN {S_DOCS}
                    WHEN e.type = 'page_view' THEN {S_WEBSITE}
                    WHEN e.type = 'telemetry' THEN {S_TELEMETRY}
                    WHEN e.type = 'link_click' THEN {S_LINK}
                    ELSE 0 END AS signal,
                CASE WHEN e.type = 'page_view'
                    THEN {code_case("json_extract(e.data, '$.value_class')", VALUE_OF_CLASS)}
                    ELSE {V_LOW} END AS value_class,
                {code_case("e.route_kind", CHANNEL_OF_KIND)} AS channel,
                CASE
                    WHEN e.client_kind = 'bot' THEN {A_BOT}
                    WHEN {network_automation} = {A_MIRROR} OR ua.automation = 'mirror' THEN {A_MIRROR}
                    WHEN {network_automation} = {A_CI} OR ua.automation = 'ci'
                        OR (e.route_kind = 'pypi' AND json_extract(e.data, '$.ci') = 1) THEN {A_CI}
                    ELSE {HUMAN} END AS automation,
                coalesce(rc.maintenance, 0) AS maintenance
            FROM ev.events e
            {endpoint_join}
            LEFT JOIN org_network nw ON nw.network = e.network
            LEFT JOIN temp.ua_class ua ON ua.user_agent = e.user_agent
            LEFT JOIN temp.referer_class rc ON rc.referer = e.referer
            WHERE {where}
        """
        self.db.execute("DROP TABLE IF EXISTS temp.batch")
        self.db.execute(f"CREATE TEMP TABLE batch AS {derived}", params)
        if track_touched:
            self.touched = {o for (o,) in self.db.execute("SELECT DISTINCT org FROM temp.batch")}
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
        self.unattributed = self._org(UNATTRIBUTED, None)
        for endpoint_id in self.enricher.override_endpoints:
            org = self.enricher.endpoint(endpoint_id)
            assert org is not None
            self.db.execute(
                "INSERT OR IGNORE INTO org_endpoint VALUES (?, ?, ?)",
                (endpoint_id, self._org(org.name, org), NETWORK_AUTOMATION.get(org.type, HUMAN)),
            )
        rows = self.db.execute(
            f"SELECT DISTINCT e.network FROM ev.events e WHERE {where} AND e.network IS NOT NULL "
            "AND e.network NOT IN (SELECT network FROM org_network)",
            params,
        ).fetchall()
        for (network,) in rows:
            org = self.enricher.network(network)
            org_id = self._org(org.name if org else f"net:{network}", org)
            automation = NETWORK_AUTOMATION.get(org.type, HUMAN) if org else HUMAN
            self.db.execute(
                "INSERT OR IGNORE INTO org_network VALUES (?, ?, ?)", (network, org_id, automation)
            )

    def _org(self, key: str, org) -> int:  # type: ignore[no-untyped-def]
        """The organisation's id, created on first sight."""
        if org is None:
            values = (key, key, "unknown", None, 0.0, "none")
        else:
            values = (key, org.name, org.type, org.domain, org.confidence, org.source)
        self.db.execute(
            "INSERT OR IGNORE INTO orgs (org_key, name, type, domain, confidence, source) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            values,
        )
        return self.db.execute("SELECT id FROM orgs WHERE org_key = ?", (key,)).fetchone()[0]
