"""The scorer's state: its schema, the codes its aggregates are keyed by, and the SQL that
folds derived rows into them.

The state is derived data (rebuilt from the event store whenever its layout changes), not a
contract; the event store's schema (docs/events.md) is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

STATE_VERSION = 4

# The state keeps small integers where the aggregates sort and group: organisation ids,
# day ordinals (``datetime.date.toordinal``) and the codes below.  Sorting 1M derived rows
# by integers instead of text keys is ~2.5x faster, and the fold is mostly such sorts.
SIGNALS = ("other", "download", "docs", "website", "telemetry", "link_click")
S_DOWNLOAD, S_DOCS, S_WEBSITE, S_TELEMETRY, S_LINK = 1, 2, 3, 4, 5
VALUE_OF_CLASS = {"medium": 1, "high": 2}  # page value classes; anything else counts as low
V_LOW = 0
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
C_DOWNLOAD = 0
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

# How each aggregate absorbs new rows for keys it already holds: sums add up, first and last
# times widen.  Folding a batch and merging a partial fold both use these, which is why
# folding in any number of steps gives what one full pass gives.
UPSERT = {
    "org_day": "n = n + excluded.n",
    "org_source": "last_day = max(last_day, excluded.last_day)",
    "org_version": "first_ts = min(first_ts, excluded.first_ts), "
    "last_ts = max(last_ts, excluded.last_ts), downloads = downloads + excluded.downloads, "
    "human = human + excluded.human",
    "burst": "n = n + excluded.n",
}
# The rows each fold groups: one per event, as ``derived`` (aggregate.py) computes them,
# with its ``org_day`` code; kept in scratch tables named ``batch``.
BATCH_SELECT = (
    "SELECT org, day, ts, package, version, endpoint_id, origin_id, signal, channel, "
    f"automation, {DAY_CODE_SQL} AS code FROM ({{derived}} LIMIT -1)"
)  # LIMIT: the code reads the derived columns instead of repeating their expressions
# Each aggregate's grouping of ``temp.batch`` (the batches of all parts of a fold).
GROUPINGS = {
    "org_day": "SELECT org, day, code, count(*) FROM temp.batch GROUP BY 1, 2, 3",
    "org_source": """
        SELECT org, signal, endpoint_id, origin_id, automation, max(day)
        FROM temp.batch WHERE endpoint_id IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5""",
    "org_version": f"""
        SELECT org, package, version, channel, min(ts), max(ts), count(*), sum(automation = {HUMAN})
        FROM temp.batch WHERE signal = {S_DOWNLOAD} AND version IS NOT NULL AND package != ''
        GROUP BY 1, 2, 3, 4""",
    "burst": f"""
        SELECT org, endpoint_id,
            day * 1440 + CAST(substr(ts, 12, 2) AS INTEGER) * 60 + CAST(substr(ts, 15, 2) AS INTEGER),
            count(*)
        FROM temp.batch WHERE signal = {S_DOWNLOAD} AND endpoint_id IS NOT NULL
        GROUP BY 1, 2, 3""",
}


def upsert(table: str, select: str) -> str:
    """``INSERT ... SELECT`` into an aggregate, merging rows whose key it already has."""
    name = table.rpartition(".")[2]
    return f"INSERT INTO {table} {select} ON CONFLICT DO UPDATE SET {UPSERT[name]}"


# the classification of user agents and referers, per distinct value, in each deriving
# connection (filled from the rows the state's connection classifies)
CLASS_SCHEMA = (
    "CREATE TEMP TABLE IF NOT EXISTS ua_class (user_agent TEXT PRIMARY KEY, automation TEXT)",
    "CREATE TEMP TABLE IF NOT EXISTS referer_class "
    "(referer TEXT PRIMARY KEY, docs INT, maintenance INT)",
)
MAPPING_TABLES = ("org_network", "org_endpoint")  # the state's tables the derived rows join


def attach_readonly(db: sqlite3.Connection, path: Path, name: str) -> None:
    """Attach the database at ``path`` read-only as ``name`` (the event store as ``ev``)."""
    db.execute(f"ATTACH DATABASE ? AS {name}", (f"file:{path.resolve()}?mode=ro",))


def code_case(column: str, codes: dict[str, int]) -> str:
    """SQL mapping the text ``column`` to its code (0 for anything else)."""
    whens = " ".join(f"WHEN '{name}' THEN {code}" for name, code in codes.items())
    return f"CASE {column} {whens} ELSE 0 END"
