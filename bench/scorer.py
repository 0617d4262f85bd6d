"""Scorer throughput on 1M+ synthetic events, side by side with a bare SQLite scan.

Reports events/s of a full run, of an incremental run over 1 % new events, and the ratio
of the full run to a bare ``GROUP BY`` scan of the same events in the same run.

    python bench/scorer.py [--events 1000000] [--orgs 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
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
from gateway.store import INSERT_SQL, open_store  # noqa: E402
from scorer.enrich import Enricher  # noqa: E402
from scorer.rules import load_rules  # noqa: E402
from scorer.run import score  # noqa: E402

START = 1_767_225_600.0  # 2026-01-01
DAY = 86400.0


def generate(db: Path, count: int, orgs: int, seed: int, start_offset: float = 0.0) -> None:
    rng = random.Random(seed)
    rows = RowBuilder(Identifier(b"bench"))
    conn = open_store(db)
    batch = []
    kinds = [("download", "file"), ("pull", "oci"), ("download", "pypi"), ("page_view", "pixel"),
             ("page_view", "pixel"), ("telemetry", "telemetry"), ("link_click", "link")]  # fmt: skip
    for _ in range(count):
        org = rng.randrange(orgs)
        etype, kind = rng.choice(kinds)
        ts = START + start_offset + rng.random() * 180 * DAY
        version = f"1.{rng.randrange(6)}"
        e = Event(type=etype, host="get.acme.dev", method="GET", path="/x", route_id=kind, route_kind=kind,
                  package="tool" if etype != "page_view" else None, version=version if etype != "page_view" else None,
                  vars={}, status=200, ts=ts, client_ip=f"10.{org // 250}.{org % 250}.{rng.randrange(1, 6)}",
                  user_agent="curl/8" if rng.random() < 0.9 else "GitHub-Actions runner",
                  referer="https://docs.acme.dev/install" if etype == "page_view" else None,
                  data={"value_class": rng.choice(["low", "medium", "high"])} if etype == "page_view" else None)  # fmt: skip
        batch.append(rows.row(e))
        if len(batch) >= 50_000:
            conn.execute("BEGIN")
            conn.executemany(INSERT_SQL, batch)
            conn.execute("COMMIT")
            batch.clear()
    if batch:
        conn.execute("BEGIN")
        conn.executemany(INSERT_SQL, batch)
        conn.execute("COMMIT")
    conn.close()


def bare_scan(db: Path) -> float:
    conn = sqlite3.connect(db)
    started = time.perf_counter()
    conn.execute(
        "SELECT network, substr(ts, 1, 10), type, coalesce(package, ''), count(*) FROM events GROUP BY 1, 2, 3, 4"
    ).fetchall()
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--orgs", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rules = load_rules(None)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db, state = work / "events.sqlite3", work / "scores.sqlite3"
        started = time.perf_counter()
        generate(db, args.events, args.orgs, 1)
        generated = time.perf_counter() - started
        bare = min(bare_scan(db) for _ in range(2))
        full = score(db, state, rules, Enricher(), full=True)
        extra = max(1, args.events // 100)
        generate(db, extra, args.orgs, 2, start_offset=DAY)
        inc = score(db, state, rules, Enricher())
        assert not inc.full and inc.events_read == extra
    summary = {
        "events": args.events,
        "organisations": len(full.organisations),
        "generate_seconds": round(generated, 1),
        "bare_group_by_seconds": round(bare, 2),
        "full_run_seconds": round(full.seconds, 2),
        "full_run_events_per_s": round(args.events / full.seconds),
        "ratio_full_vs_bare_scan": round(full.seconds / bare, 2),
        "incremental_new_events": extra,
        "incremental_seconds": round(inc.seconds, 2),
        "incremental_new_events_per_s": round(extra / inc.seconds),
        "date": time.strftime("%Y-%m-%d"),
    }
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
