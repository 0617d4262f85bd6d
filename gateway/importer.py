"""Backfill: replay historical requests from access logs through the live route matcher.

Each line becomes exactly the event a live request would have produced — same matcher,
same handlers, same privacy reduction — with the line's own timestamp, status and bytes.
Nothing is executed: no upstream calls, no redirects.  Every event carries a hash of its
source line (and of how many identical lines came before it), so importing the same file
twice adds nothing.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import re
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from .config import Config
from .core import Gateway
from .decisions import Proxy, ReadBody
from .identity import Identifier, load_or_create_key
from .request import Request
from .rows import RowBuilder
from .store import INSERT_SQL, open_store

COMBINED = re.compile(
    r'^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<target>\S+)(?: HTTP/[\d.]+)?" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-)(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?'
)
BATCH = 5000


class LineError(ValueError):
    """A line that cannot be read (reported with its number)."""


@dataclass(slots=True)
class LogRecord:
    ts: float
    ip: str | None
    method: str
    host: str
    path: str
    query: str
    status: int
    bytes: int | None
    user_agent: str | None
    referer: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ImportReport:
    lines: int = 0
    imported: int = 0
    duplicates: int = 0
    unmatched: int = 0
    refused: int = 0
    malformed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


def _split_target(target: str) -> tuple[str, str, str | None]:
    """``/a?b`` or an absolute-form ``http://h/a?b`` → (path, query, host)."""
    host = None
    if "://" in target:
        parts = urlsplit(target)
        host, target = (
            parts.netloc,
            (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        )
    path, _, query = target.partition("?")
    if not path.startswith("/"):
        raise LineError(f"request target {target[:80]!r} is not a path")
    return path, query, host


@lru_cache(maxsize=4096)
def _combined_time(text: str) -> float:
    """``01/Mar/2026:12:00:00 +0000`` → epoch seconds (log lines share their seconds)."""
    try:
        return dt.datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").timestamp()
    except ValueError:
        raise LineError(f"bad time {text!r}") from None


def parse_combined(line: str, default_host: str) -> LogRecord:
    m = COMBINED.match(line)
    if m is None:
        raise LineError("not in combined log format")
    when = _combined_time(m.group("time"))
    path, query, host = _split_target(m.group("target"))
    size = m.group("bytes")
    referer, agent = m.group("referer"), m.group("agent")
    return LogRecord(
        ts=when,
        ip=None if m.group("ip") == "-" else m.group("ip"),
        method=m.group("method"),
        host=host or default_host,
        path=path,
        query=query,
        status=int(m.group("status")),
        bytes=None if size == "-" else int(size),
        user_agent=None if agent in (None, "-") else agent.replace('\\"', '"'),
        referer=None if referer in (None, "-") else referer.replace('\\"', '"'),
    )


def _timestamp(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise LineError(f"bad ts {value[:40]!r} (ISO 8601 or epoch seconds)") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    raise LineError("missing ts")


def parse_jsonl(line: str, default_host: str) -> LogRecord:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LineError(f"invalid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise LineError("expected a JSON object")
    target = doc.get("path")
    if not isinstance(target, str):
        raise LineError("missing path")
    path, query, host = _split_target(target)
    headers = (
        {k.lower(): str(v) for k, v in (doc.get("headers") or {}).items()}
        if isinstance(doc.get("headers"), dict)
        else {}
    )
    for key in ("dnt", "sec-gpc", "sec_gpc"):
        if key in doc:
            headers[key.replace("_", "-")] = str(doc[key]).lower().replace("true", "1")
    status = doc.get("status", 200)
    if not isinstance(status, int):
        raise LineError("status must be a number")
    size = doc.get("bytes")
    return LogRecord(
        ts=_timestamp(doc.get("ts")),
        ip=doc.get("ip"),
        method=str(doc.get("method", "GET")).upper(),
        host=doc.get("host") or host or default_host,
        path=path,
        query=query,
        status=status,
        bytes=size if isinstance(size, int) else None,
        user_agent=doc.get("user_agent"),
        referer=doc.get("referer"),
        headers=headers,
    )


def open_lines(name: str) -> TextIO:
    if name == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    if name.endswith(".gz"):
        return gzip.open(name, "rt", encoding="utf-8", errors="replace")
    return open(name, encoding="utf-8", errors="replace")  # noqa: SIM115


class Importer:
    """Turns log records into events with the live core, and writes them in batches."""

    def __init__(self, config: Config, db_path: Path, *, default_host: str = "") -> None:
        key = load_or_create_key(config.server.key_path)
        self.gateway = Gateway(config, adapter="import", db_path=db_path, key=key)
        self.rows = RowBuilder(Identifier(key))
        self.db_path = db_path
        self.default_host = default_host

    def events_for(self, record: LogRecord, report: ImportReport) -> list:
        headers = [("host", record.host)]
        if record.user_agent:
            headers.append(("user-agent", record.user_agent))
        if record.referer:
            headers.append(("referer", record.referer))
        headers.extend(record.headers.items())
        request = Request(record.method, record.host, record.path, record.query, headers, record.ip)
        outcome = self.gateway.handle(request)
        if outcome is None:
            report.unmatched += 1
            return []
        if type(outcome.decision) is ReadBody:
            request.body = b""  # logs carry no bodies: one event, without reported fields
            outcome = self.gateway.handle(request)
            assert outcome is not None
        events = list(outcome.events())
        if not events:
            report.refused += 1
            return []
        counts_bytes = type(outcome.decision) is Proxy
        for event in events:
            event.ts = record.ts
            event.status = record.status
            # bytes are recorded where live traffic records them: streamed answers and
            # answers whose handler counts them (a handler marks those with 0 up front)
            if counts_bytes or event.bytes_sent is not None:
                event.bytes_sent = record.bytes
            event.duration_ms = None
        return events

    def run(
        self, names: list[str], fmt: str, *, strict: bool = False, out: TextIO = sys.stderr
    ) -> ImportReport:
        parse = parse_combined if fmt == "combined" else parse_jsonl
        report = ImportReport()
        started = time.perf_counter()
        conn = open_store(self.db_path)
        batch: list[tuple] = []
        try:
            for name in names:
                seen: Counter[str] = Counter()
                with open_lines(name) as fh:
                    for number, raw in enumerate(fh, 1):
                        line = raw.rstrip("\n")
                        if not line.strip():
                            continue
                        report.lines += 1
                        try:
                            record = parse(line, self.default_host)
                        except LineError as exc:
                            report.malformed += 1
                            message = f"{name}:{number}: {exc}"
                            if strict:
                                raise LineError(message) from None
                            if len(report.errors) < 100:
                                report.errors.append(message)
                            continue
                        occurrence = seen[line]
                        seen[line] += 1
                        events = self.events_for(record, report)
                        for k, event in enumerate(events):
                            digest = hashlib.sha256(
                                f"{occurrence}:{k}:{line}".encode()
                            ).hexdigest()[:32]
                            event.source_hash = digest
                            batch.append(self.rows.row(event))
                        if len(batch) >= BATCH:
                            self._flush(conn, batch, report)
            self._flush(conn, batch, report)
        finally:
            conn.close()
            report.seconds = time.perf_counter() - started
        return report

    def _flush(self, conn: sqlite3.Connection, batch: list[tuple], report: ImportReport) -> None:
        if not batch:
            return
        before = conn.total_changes
        conn.execute("BEGIN")
        conn.executemany(INSERT_SQL, batch)
        conn.execute("COMMIT")
        added = conn.total_changes - before
        report.imported += added
        report.duplicates += len(batch) - added
        batch.clear()


def iter_report(report: ImportReport) -> Iterator[str]:
    yield (
        f"{report.lines} lines: {report.imported} events imported, {report.duplicates} already present, "
        f"{report.unmatched} matched no route, {report.refused} refused or not recorded, "
        f"{report.malformed} malformed ({report.lines_per_second:,.0f} lines/s)"
    )
    yield from report.errors
