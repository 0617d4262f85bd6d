"""Fold events into per-organisation aggregates — in SQL, so a run costs about one scan.

The event store is attached read-only; only events with ``id`` above the last processed
one are read (incremental), or all of them up to ``--as-of`` (reproducible run).  All
aggregates are sums, minimums, maximums or distinct sets, so folding new events into
existing aggregates gives exactly what a full run gives — and so does folding one range
on two connections at once and merging (see ``sidefold.py``).
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .enrich import Enricher
from .fold import Fold
from .rules import Rules
from .state import (
    A_BOT,
    A_CI,
    A_MIRROR,
    AGGREGATE_TABLES,
    CHANNEL_OF_KIND,
    DAY_OF_TS,
    HUMAN,
    MAPPING_TABLES,
    NETWORK_AUTOMATION,
    S_DOCS,
    S_DOWNLOAD,
    S_LINK,
    S_TELEMETRY,
    S_WEBSITE,
    STATE_SCHEMA,
    STATE_VERSION,
    UNATTRIBUTED,
    V_LOW,
    VALUE_OF_CLASS,
    attach_readonly,
    code_case,
)


def distinct_texts(events_path: Path, where: str, params: list) -> tuple[list[str], list[str]]:
    """The distinct user agents and page-view referers of a range, on a connection of its own
    (so that they are read while the main connection resolves networks)."""
    db = sqlite3.connect(":memory:")
    try:
        attach_readonly(db, events_path, "ev")
        agents = db.execute(
            f"SELECT DISTINCT e.user_agent FROM ev.events e WHERE {where} "
            "AND e.user_agent IS NOT NULL",
            params,
        ).fetchall()
        referers = db.execute(
            f"SELECT DISTINCT e.referer FROM ev.events e WHERE {where} AND e.type = 'page_view' "
            "AND e.referer IS NOT NULL",
            params,
        ).fetchall()
    finally:
        db.close()
    return [a for (a,) in agents], [r for (r,) in referers]


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
        self.events_path = events_path
        attach_readonly(self.db, events_path, "ev")

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
    ) -> Fold:
        """Start aggregating events with id > ``after_id`` (and ts ≤ ``until_ts``).

        Per-day activity is folded when this returns, so the scorer can load it; sources,
        versions and bursts are in the state once :meth:`Fold.finish` returns (see
        ``fold.py``).  With ``track_touched``, ``self.touched`` holds the organisations the
        events hit."""
        ts_filter, ts_params = (" AND e.ts <= ?", [until_ts]) if until_ts else ("", [])
        high, count = self.db.execute(
            f"SELECT max(e.id), count(*) FROM ev.events e WHERE e.id > ?{ts_filter}",
            [after_id, *ts_params],
        ).fetchone()
        fold = Fold(high or after_id, count)
        if not count:
            return fold
        where = f"e.id > ?{ts_filter} AND e.id <= ?"
        params = [after_id, *ts_params, high]
        with ThreadPoolExecutor(1) as pool:  # read the texts to classify meanwhile
            texts = pool.submit(distinct_texts, self.events_path, where, params)
            self._enrich(where, params)
            classes = self._classify_text(*texts.result())
        # two halves of about equal size, for the two connections of the fold
        (middle,) = self.db.execute(
            f"SELECT max(id) FROM (SELECT e.id FROM ev.events e WHERE {where} ORDER BY e.id "
            "LIMIT ?)",
            [*params, count // 2],
        ).fetchone()
        middle = middle or after_id
        halves = ([after_id, *ts_params, middle], [middle, *ts_params, high])
        try:
            fold.start(
                self.db, self.events_path, self._derived(where), halves, self._mapping(classes)
            )
        except BaseException:
            fold.close()
            raise
        if track_touched:
            self.touched = fold.touched()
        return fold

    def _derived(self, where: str) -> str:
        """SQL for one row per event: organisation id, day ordinal and the codes."""
        # the organisation (and whether its network is a CI or mirror one): an endpoint
        # override wins over the network; the join is left out when there are none
        if self.db.execute("SELECT 1 FROM org_endpoint LIMIT 1").fetchone():
            endpoint_join = "LEFT JOIN org_endpoint ep ON ep.endpoint_id = e.endpoint_id"
            org = f"coalesce(ep.org, nw.org, {self.unattributed})"
            network_automation = "coalesce(ep.automation, nw.automation)"
        else:
            endpoint_join, network_automation = "", "nw.automation"
            org = f"coalesce(nw.org, {self.unattributed})"
        return f"""
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

    def _mapping(self, classes: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
        """The rows of the tables the derived rows join, for the fold's own connections."""
        tables = {t: self.db.execute(f"SELECT * FROM {t}").fetchall() for t in MAPPING_TABLES}
        return tables | classes

    def _classify_text(self, agents: list[str], referers: list[str]) -> dict[str, list[tuple]]:
        """Classify each distinct user agent and referer once, in Python (few distinct
        values): the rows of ``temp.ua_class`` and ``temp.referer_class``."""
        a, sig = self.rules["automation"], self.rules["signals"]
        ci = [p.lower() for p in a["ci_user_agents"]]
        mirror = [p.lower() for p in a["mirror_user_agents"]]
        docs = [p.lower() for p in sig["docs_patterns"]]
        maintenance = [p.lower() for p in sig["maintenance_patterns"]]
        agent_rows = []
        for agent in agents:
            low = agent.lower()
            kind = (
                "mirror"
                if any(m in low for m in mirror)
                else "ci"
                if any(c in low for c in ci)
                else ""
            )
            agent_rows.append((agent, kind))
        referer_rows = [
            (r, any(d in r.lower() for d in docs), any(m in r.lower() for m in maintenance))
            for r in referers
        ]
        return {"temp.ua_class": agent_rows, "temp.referer_class": referer_rows}

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
