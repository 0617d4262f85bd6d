"""Event sink throughput: events/s the live sink writes, side by side with a bare
``executemany`` of the same rows into the same schema.

The sink does everything it does in production — privacy reduction (network prefix, two
keyed ids), row building, chunked transactions on the event loop with yields between
chunks — so the ratio is the price of never blocking requests for long.

    python bench/sink.py [--events 200000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit  # noqa: E402

sys.path.insert(0, str(ROOT))
from gateway.events import Event  # noqa: E402
from gateway.identity import Identifier  # noqa: E402
from gateway.rows import RowBuilder  # noqa: E402
from gateway.sink import EventSink  # noqa: E402
from gateway.store import INSERT_SQL, open_store  # noqa: E402


def events(count: int) -> list[Event]:
    return [
        Event(type="download", host="get.acme.dev", method="GET", path=f"/tool/1.{n % 50}/tool.tar.gz",
              route_id="tool", route_kind="file", package="tool", version=f"1.{n % 50}",
              vars={"version": f"1.{n % 50}"}, status=307, duration_ms=0.2,
              upstream=f"https://downloads.example.org/v1.{n % 50}/tool.tar.gz",
              user_agent=f"curl/8.{n % 9}", client_ip=f"10.{n % 200}.{n // 200 % 250}.{n % 7 + 1}",
              ts=1_772_366_400 + n / 100)
        for n in range(count)
    ]  # fmt: skip


async def through_sink(db: Path, batch: list[Event]) -> float:
    sink = EventSink(db, RowBuilder(Identifier(b"bench")), queue_size=len(batch) + 1)
    await sink.start()
    started = time.perf_counter()
    for event in batch:
        sink.put(event)
    await sink.close()
    seconds = time.perf_counter() - started
    assert sink.stats.written == len(batch) and sink.stats.dropped == 0, sink.stats
    return seconds


def bare_insert(db: Path, batch: list[Event]) -> float:
    """The same rows, built beforehand, inserted in 1,000-row transactions."""
    rows = RowBuilder(Identifier(b"bench"))
    prepared = [rows.row(e) for e in batch]
    conn = open_store(db)
    started = time.perf_counter()
    for start in range(0, len(prepared), 1000):
        conn.execute("BEGIN")
        conn.executemany(INSERT_SQL, prepared[start : start + 1000])
        conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sink_s: list[float] = []
    bare_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            batch = events(args.events)
            sink_db, bare_db = Path(tmp) / f"sink{n}.sqlite3", Path(tmp) / f"bare{n}.sqlite3"
            sink_s.append(asyncio.run(through_sink(sink_db, batch)))
            bare_s.append(bare_insert(bare_db, batch))
            counts = [sqlite3.connect(p).execute("SELECT count(*) FROM events").fetchone()[0]
                      for p in (sink_db, bare_db)]  # fmt: skip
            assert counts == [args.events, args.events], counts
    sink, bare = statistics.median(sink_s), statistics.median(bare_s)
    summary = {
        "events": args.events,
        "sink_events_per_s": round(args.events / sink),
        "bare_insert_rows_per_s": round(args.events / bare),
        "ratio": round(bare / sink, 3),
        "rounds_seconds": {"sink": [round(x, 3) for x in sink_s], "bare": [round(x, 3) for x in bare_s]},
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
