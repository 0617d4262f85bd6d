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
import sys
import time
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
from .import_writer import BatchWriter
from .request import Request
from .rows import RowBuilder, iso_utc
from .store import COLUMNS

# Quoted fields are matched with the unrolled-loop form ("[^"\\]*(?:\\.[^"\\]*)*"): a regex that
# alternates per character is four times slower on long browser user agents.
COMBINED = re.compile(
    r'(\S+) \S+ \S+ \[([^\]]+)\] "([A-Z]+) (\S+)(?: HTTP/[\d.]+)?" (\d{3}) (\d+|-)'
    r'(?: "([^"\\]*(?:\\.[^"\\]*)*)" "([^"\\]*(?:\\.[^"\\]*)*)")?'
)
BATCH = 20000  # rows per transaction: ~0.2 s of a live writer's wait at most


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


_COMBINED_TIME = re.compile(
    r"(\d{2}/[A-Za-z]{3}/\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})"
)


@lru_cache(maxsize=64)
def _midnight(day: str) -> float:
    """``01/Mar/2026`` → epoch seconds of that midnight UTC (strptime once per day)."""
    try:
        return dt.datetime.strptime(day, "%d/%b/%Y").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        raise LineError(f"bad date {day!r}") from None


@lru_cache(maxsize=4096)
def _combined_time(text: str) -> float:
    """``01/Mar/2026:12:00:00 +0000`` → epoch seconds; busy logs share their seconds."""
    m = _COMBINED_TIME.fullmatch(text)
    if m is None:
        raise LineError(f"bad time {text!r}")
    day, hours, minutes, seconds, sign, offset_hours, offset_minutes = m.groups()
    h, mi, sec = int(hours), int(minutes), int(seconds)
    if h > 23 or mi > 59 or sec > 61:
        raise LineError(f"bad time {text!r}")
    offset = (int(offset_hours) * 60 + int(offset_minutes)) * 60
    return _midnight(day) + h * 3600 + mi * 60 + sec - (offset if sign == "+" else -offset)


def _unquote(field: str | None) -> str | None:
    if field is None or field == "-":
        return None
    return field.replace('\\"', '"') if "\\" in field else field


def parse_combined(line: str, default_host: str) -> LogRecord:
    m = COMBINED.match(line)
    if m is None:
        raise LineError("not in combined log format")
    ip, when, method, target, status, size, referer, agent = m.groups()
    path, query, host = _split_target(target)
    return LogRecord(
        ts=_combined_time(when),
        ip=None if ip == "-" else ip,
        method=method,
        host=host or default_host,
        path=path,
        query=query,
        status=int(status),
        bytes=None if size == "-" else int(size),
        user_agent=_unquote(agent),
        referer=_unquote(referer),
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


# Positions of the per-line columns in a stored row (gateway.store.COLUMNS order).
_TS, _STATUS, _BYTES, _USER_AGENT, _DNT, _NETWORK, _SOURCE = (
    COLUMNS.index(name)
    for name in ("ts", "status", "bytes_sent", "user_agent", "dnt", "network", "source_hash")
)
TEMPLATE_CACHE_SIZE = 65536


@dataclass(slots=True, frozen=True)
class _Template:
    """What the live core made of one request shape: stored rows with the per-line columns
    (time, status, bytes, client ids, source hash) still to fill in.  A size of 0 marks the
    rows that record one (``shape_only`` in :meth:`Importer.events_for`)."""

    rows: tuple[tuple, ...] = ()
    unmatched: bool = False

    def fill(
        self, record: LogRecord, client_ip: str | None, line: str, occurrence: int, rows: RowBuilder
    ) -> Iterator[tuple]:
        """The rows of one line, the ``occurrence``-th copy of that line in its file."""
        when = iso_utc(record.ts)
        for k, row in enumerate(self.rows):
            filled = list(row)
            filled[_TS] = when
            filled[_STATUS] = record.status
            if row[_BYTES] is not None:
                filled[_BYTES] = record.bytes
            filled[_NETWORK : _NETWORK + 3] = rows.client_columns(
                client_ip, row[_USER_AGENT], bool(row[_DNT])
            )
            source = f"{occurrence}:{k}:{line}"  # unchanged since version 1: re-imports match
            filled[_SOURCE] = hashlib.sha256(source.encode()).hexdigest()[:32]
            yield tuple(filled)


_UNMATCHED = _Template(unmatched=True)


class Importer:
    """Turns log records into events with the live core, and writes them in batches.

    Lines that differ only in time, client address, status and size are the same request to
    the core: it decides each distinct request once (:class:`_Template`) and every line fills
    in its own columns, so importing costs what parsing, hashing and inserting cost.
    """

    def __init__(self, config: Config, db_path: Path, *, default_host: str = "") -> None:
        key = load_or_create_key(config.server.key_path)
        self.gateway = Gateway(config, adapter="import", db_path=db_path, key=key)
        self.rows = RowBuilder(Identifier(key))
        self.db_path = db_path
        self.default_host = default_host
        self._templates: dict[tuple, _Template] = {}

    def events_for(
        self, record: LogRecord, report: ImportReport, *, shape_only: bool = False
    ) -> list:
        """The events the live core makes of this record, completed from the log line.

        ``shape_only`` leaves out the client address and counts a size of 0 wherever a size
        is recorded: what every line of the same request shape shares (:class:`_Template`).
        """
        request = Request(
            record.method, record.host, record.path, record.query, _headers(record),
            None if shape_only else record.ip,
        )  # fmt: skip
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
                event.bytes_sent = 0 if shape_only else record.bytes
            event.duration_ms = None
        return events

    def _template(self, record: LogRecord) -> _Template:
        probe = ImportReport()
        events = self.events_for(record, probe, shape_only=True)
        if probe.unmatched:
            return _UNMATCHED
        return _Template(rows=tuple(self.rows.row(e) for e in events))

    def _template_for(self, record: LogRecord) -> _Template:
        shape = (record.method, record.host, record.path, record.query,
                 record.user_agent, record.referer, *record.headers.items())  # fmt: skip
        template = self._templates.get(shape)
        if template is None:
            if len(self._templates) >= TEMPLATE_CACHE_SIZE:
                self._templates.clear()
            template = self._templates[shape] = self._template(record)
        return template

    def _client_ip(self, record: LogRecord) -> str | None:
        if record.ip is None or not self.gateway.client_address.trusts_any:
            return record.ip
        return self.gateway.client_address.resolve(record.ip, _headers(record))

    def run(self, names: list[str], fmt: str, *, strict: bool = False) -> ImportReport:
        parse = parse_combined if fmt == "combined" else parse_jsonl
        report = ImportReport()
        started = time.perf_counter()
        batch: list[tuple] = []
        writer = BatchWriter(self.db_path)
        try:
            for name in names:
                seen: dict[bytes, int] = {}  # occurrences of each line, keyed by a digest
                for number, line in _numbered_lines(name):
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
                    template = self._template_for(record)
                    if template.unmatched:
                        report.unmatched += 1
                        continue
                    if not template.rows:
                        report.refused += 1
                        continue
                    # identical lines are distinct requests: the n-th copy has its own hash
                    line_key = hashlib.blake2b(line.encode(), digest_size=8).digest()
                    occurrence = seen.get(line_key, 0)
                    seen[line_key] = occurrence + 1
                    client_ip = self._client_ip(record)
                    batch.extend(template.fill(record, client_ip, line, occurrence, self.rows))
                    if len(batch) >= BATCH:
                        writer.put(batch)
                        batch = []
            writer.put(batch)
        finally:
            report.imported, report.duplicates = writer.close()
            report.seconds = time.perf_counter() - started
        return report


def _numbered_lines(name: str) -> Iterator[tuple[int, str]]:
    with open_lines(name) as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.rstrip("\n")
            if line.strip():
                yield number, line


def _headers(record: LogRecord) -> list[tuple[str, str]]:
    headers = [("host", record.host)]
    if record.user_agent:
        headers.append(("user-agent", record.user_agent))
    if record.referer:
        headers.append(("referer", record.referer))
    headers.extend(record.headers.items())
    return headers


def iter_report(report: ImportReport) -> Iterator[str]:
    yield (
        f"{report.lines} lines: {report.imported} events imported, {report.duplicates} already present, "
        f"{report.unmatched} matched no route, {report.refused} refused or not recorded, "
        f"{report.malformed} malformed ({report.lines_per_second:,.0f} lines/s)"
    )
    yield from report.errors
