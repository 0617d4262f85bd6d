"""``gateway score`` and ``gateway export``: the scorer's command line.

Both read the event store only; scores are kept in their own SQLite file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.store import open_readonly
from gateway.tables import text_table

from .enrich import Enricher, EnrichmentError
from .rules import RulesError, load_rules
from .run import as_of_ts, parse_as_of, score

EVENT_COLUMNS = (
    "id", "ts", "type", "adapter", "host", "route_id", "route_kind", "package", "version", "vars",
    "method", "path", "query", "status", "bytes_sent", "duration_ms", "outcome", "upstream",
    "user_agent", "referer", "referer_domain", "client_kind", "client_version", "dnt", "network",
    "endpoint_id", "origin_id", "data", "source_hash",
)  # fmt: skip
ORG_COLUMNS = (
    "rank", "organisation", "domain", "network_type", "stage", "stage_since", "points", "points_30d",
    "confidence", "confidence_label", "unique_endpoints_30d", "unique_origins_30d", "upgrade", "churn",
    "high_intent", "downloads_level", "docs_level", "website_level", "telemetry_level", "packages",
    "vulnerable_versions", "first_seen", "last_seen", "automation_share", "burst",
)  # fmt: skip
PACKAGE_COLUMNS = (
    "package",
    "version",
    "channel",
    "downloads",
    "endpoints",
    "organisations",
    "first_seen",
    "last_seen",
)


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="event store (default: from the routes file)")
    parser.add_argument(
        "--state", help="scorer database (default: scores.sqlite3 next to the event store)"
    )
    parser.add_argument("--rules", help="scoring rules TOML (defaults: docs/scoring.md)")
    parser.add_argument(
        "--overrides", help="your own network/endpoint → organisation overrides (TOML)"
    )
    parser.add_argument(
        "--directory", help="organisation directory: CIDR → name, domain, type (CSV or TOML)"
    )
    parser.add_argument(
        "--mmdb", action="append", default=[], help="MaxMind-format database (repeatable)"
    )
    parser.add_argument(
        "--reverse-dns", action="store_true", help="also try reverse DNS (off by default)"
    )


def add_commands(sub: argparse._SubParsersAction, config_arg) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("score", help="organisations, journey stages and leads from the events")
    config_arg(s)
    add_scoring_options(s)
    s.add_argument("--full", action="store_true", help="recompute from scratch")
    s.add_argument("--as-of", help="evaluate at this UTC time, ignoring later events (ISO 8601)")
    s.add_argument(
        "--json", action="store_true", help="one JSON object per organisation (a JSON array)"
    )
    s.add_argument("--limit", type=int, default=50, help="rows in the table (default 50)")
    e = sub.add_parser("export", help="export events, organisations or packages")
    config_arg(e)
    add_scoring_options(e)
    e.add_argument("--what", choices=("events", "organisations", "packages"), required=True)
    e.add_argument("--format", choices=("csv", "json", "ndjson"), default="csv")
    e.add_argument("--since", help="first event time (inclusive, ISO 8601)")
    e.add_argument("--until", help="last event time (inclusive, ISO 8601); also the scoring time")
    e.add_argument("--output", help="file to write (default: standard output)")


def _paths(args: argparse.Namespace, default_db: Path) -> tuple[Path, Path]:
    db = Path(args.db) if args.db else default_db
    state = Path(args.state) if args.state else db.with_name("scores.sqlite3")
    return db, state


def _enricher(args: argparse.Namespace, rules) -> Enricher:  # type: ignore[no-untyped-def]
    return Enricher(
        overrides=Path(args.overrides) if args.overrides else None,
        directory=Path(args.directory) if args.directory else None,
        databases=[Path(p) for p in args.mmdb],
        reverse_dns=args.reverse_dns,
        networks=rules["networks"],
    )


def run_command(args: argparse.Namespace, default_db: Path) -> int:
    try:
        rules = load_rules(args.rules)
        enricher = _enricher(args, rules)
        db, state = _paths(args, default_db)
        if args.command == "score":
            return _score(args, db, state, rules, enricher)
        return _export(args, db, state, rules, enricher)
    except (RulesError, EnrichmentError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"error: cannot read the event store: {exc}", file=sys.stderr)
        return 2


def _score(args, db: Path, state: Path, rules, enricher) -> int:  # type: ignore[no-untyped-def]
    result = score(db, state, rules, enricher, full=args.full, as_of=args.as_of)
    if args.json:
        json.dump(result.organisations, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    mode = "full" if result.full else "incremental"
    print(
        f"{len(result.organisations)} organisations as of {result.as_of} "
        f"({mode} run, {result.events_read} events read in {result.seconds:.2f}s)"
    )
    rows = [_org_row(rank, doc) for rank, doc in enumerate(result.organisations[: args.limit], 1)]
    if rows:
        print(text_table(rows))
    return 0


def _org_row(rank: int, doc: dict[str, Any]) -> dict[str, Any]:
    flags = [f for f, on in (("churn", doc["churn"]), ("intent", doc["high_intent"]), ("upgrade", doc["upgrade"]),
                              ("burst", doc["automation"]["burst"])) if on]  # fmt: skip
    if doc["automation"]["share"] >= 0.5:
        flags.append("automated")
    return {
        "#": rank,
        "organisation": doc["organisation"][:32],
        "type": doc["network_type"],
        "stage": doc["stage"],
        "since": doc["stage_since"],
        "points": f"{doc['points']:.0f}",
        "conf": f"{doc['confidence']:.2f} {doc['confidence_label']}",
        "sources": f"{doc['unique_sources_30d']['endpoints']}/{doc['unique_sources_30d']['origins']}",
        "packages": ", ".join(f"{p} {','.join(v[-2:])}" for p, v in doc["packages"].items())[:40],
        "last seen": doc["last_seen"],
        "flags": " ".join(flags),
    }


def _export(args, db: Path, state: Path, rules, enricher) -> int:  # type: ignore[no-untyped-def]
    since = as_of_ts(parse_as_of(args.since)) if args.since else None
    until = as_of_ts(parse_as_of(args.until)) if args.until else None
    if args.what == "events":
        columns, records = EVENT_COLUMNS, _events(db, since, until)
    elif args.what == "packages":
        columns, records = PACKAGE_COLUMNS, _packages(db, since, until)
    else:
        result = score(db, state, rules, enricher, as_of=args.until)
        columns = ORG_COLUMNS
        records = iter([_flatten(rank, doc) for rank, doc in enumerate(result.organisations, 1)])
        if args.format != "csv":
            records = iter(
                [{"rank": rank, **doc} for rank, doc in enumerate(result.organisations, 1)]
            )
    out: TextIO = (
        open(args.output, "w", newline="", encoding="utf-8")  # noqa: SIM115
        if args.output
        else sys.stdout
    )
    try:
        _write(out, args.format, columns, records)
    finally:
        if args.output:
            out.close()
    return 0


def _readonly(db: Path) -> sqlite3.Connection:
    if not db.exists():
        raise FileNotFoundError(f"{db}: no event store here")
    conn = open_readonly(db)
    conn.row_factory = sqlite3.Row
    return conn


def _range(since: str | None, until: str | None) -> tuple[str, list[str]]:
    where, params = "1=1", []
    if since:
        where += " AND ts >= ?"
        params.append(since)
    if until:
        where += " AND ts <= ?"
        params.append(until)
    return where, params


def _events(db: Path, since: str | None, until: str | None):  # type: ignore[no-untyped-def]
    conn = _readonly(db)
    where, params = _range(since, until)
    try:
        for row in conn.execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE {where} ORDER BY id", params
        ):
            yield dict(row)
    finally:
        conn.close()


def _packages(db: Path, since: str | None, until: str | None):  # type: ignore[no-untyped-def]
    conn = _readonly(db)
    where, params = _range(since, until)
    sql = f"""
        SELECT package, coalesce(version, '') AS version,
               CASE route_kind WHEN 'oci' THEN 'container' WHEN 'pypi' THEN 'pypi' ELSE 'file' END AS channel,
               count(*) AS downloads, count(DISTINCT endpoint_id) AS endpoints,
               count(DISTINCT network) AS organisations, min(ts) AS first_seen, max(ts) AS last_seen
        FROM events WHERE {where} AND type IN ('download', 'pull') AND package IS NOT NULL
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    """
    try:
        for row in conn.execute(sql, params):
            yield dict(row)
    finally:
        conn.close()


def _flatten(rank: int, doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "rank": rank, "organisation": doc["organisation"], "domain": doc["domain"] or "",
        "network_type": doc["network_type"], "stage": doc["stage"], "stage_since": doc["stage_since"],
        "points": doc["points"], "points_30d": doc["points_30d"], "confidence": doc["confidence"],
        "confidence_label": doc["confidence_label"],
        "unique_endpoints_30d": doc["unique_sources_30d"]["endpoints"],
        "unique_origins_30d": doc["unique_sources_30d"]["origins"], "upgrade": doc["upgrade"],
        "churn": doc["churn"], "high_intent": doc["high_intent"],
        "downloads_level": doc["levels"]["downloads"], "docs_level": doc["levels"]["docs"],
        "website_level": doc["levels"]["website"], "telemetry_level": doc["levels"]["telemetry"],
        "packages": " ".join(f"{p}:{'|'.join(v)}" for p, v in doc["packages"].items()),
        "vulnerable_versions": " ".join(doc["vulnerable_versions"]), "first_seen": doc["first_seen"],
        "last_seen": doc["last_seen"], "automation_share": doc["automation"]["share"],
        "burst": doc["automation"]["burst"],
    }  # fmt: skip


def _write(out: TextIO, fmt: str, columns: tuple[str, ...], records) -> None:  # type: ignore[no-untyped-def]
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow(record)
    elif fmt == "ndjson":
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        buffer = io.StringIO()
        buffer.write("[")
        for n, record in enumerate(records):
            buffer.write(("," if n else "") + "\n" + json.dumps(record, ensure_ascii=False))
        buffer.write("\n]\n")
        out.write(buffer.getvalue())
