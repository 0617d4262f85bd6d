"""The writer under database faults: requests keep flowing, nothing acknowledged is lost,
drops beyond the bound are exact and visible."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
from servers import metric, small_tmpfs

CONFIG = """
[events]
flush_interval = 0.02
queue_size = {queue}

[[routes]]
path = "/c/{{n}}"
"""


def slowest_of(gw, count: int, suffix: str = "") -> float:
    """Send ``count`` requests to /c/<n>; all must succeed; the longest one in seconds."""
    slowest = 0.0
    with httpx.Client() as client:
        for n in range(count):
            started = time.perf_counter()
            assert client.get(f"{gw.url}/c/{n}{suffix}").status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
    return slowest


def hold_write_lock(db) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def test_locked_database_delays_writes_but_not_requests(start_gateway):
    gw = start_gateway(CONFIG.format(queue=100_000))
    httpx.get(gw.url + "/c/warm")
    gw.wait_rows(1)
    lock = hold_write_lock(gw.db)
    slowest = slowest_of(gw, 300)
    time.sleep(6)  # longer than SQLite's busy timeout: the writer must retry, not give up
    assert slowest < 0.5, f"a request waited {slowest:.2f}s on the locked database"
    assert metric(gw, "events_write_errors_total") >= 1
    lock.rollback()
    lock.close()
    rows = gw.wait_rows(301, timeout=15)
    assert len(rows) == 301
    assert metric(gw, "events_dropped_total") == 0
    assert sorted(json.loads(r["vars"])["n"] for r in rows[1:]) == sorted(
        str(n) for n in range(300)
    )


def test_full_buffer_drops_exactly_and_says_so(start_gateway):
    gw = start_gateway(CONFIG.format(queue=50))
    httpx.get(gw.url + "/c/warm")
    gw.wait_rows(1)
    lock = hold_write_lock(gw.db)
    with httpx.Client() as client:
        for n in range(200):
            assert client.get(f"{gw.url}/c/{n}").status_code == 200
    dropped = metric(gw, "events_dropped_total")
    lock.rollback()
    lock.close()
    gw.wait_rows(1 + 200 - dropped, timeout=15)
    time.sleep(0.5)
    rows = gw.rows()
    # the writer holds one batch in hand besides the 50 buffered ones
    assert 0 < dropped <= 200 - 50
    assert len(rows) == 1 + 200 - dropped
    assert "dropped" in gw.log.read_text()


def test_deleted_database_is_recreated(start_gateway):
    gw = start_gateway(CONFIG.format(queue=1000))
    httpx.get(gw.url + "/c/before")
    gw.wait_rows(1)
    for suffix in ("", "-wal", "-shm"):
        gw.db.with_name(gw.db.name + suffix).unlink(missing_ok=True)
    httpx.get(gw.url + "/c/after")
    rows = gw.wait_rows(1, timeout=10)
    assert [json.loads(r["vars"])["n"] for r in rows] == ["after"]


def test_full_filesystem_then_recovery(start_gateway, tmp_path):
    """The database on a tiny tmpfs that fills up: requests go on, writes resume after."""
    with small_tmpfs(tmp_path / "small", "2m") as mount:
        gw = start_gateway(CONFIG.format(queue=100_000), db_on=mount)
        httpx.get(gw.url + "/c/warm")
        gw.wait_rows(1)
        filler = mount / "filler"
        with open(filler, "wb") as fh:  # fill every remaining block
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        slowest = slowest_of(gw, 400, "?pad=" + "x" * 200)
        time.sleep(1)
        assert slowest < 0.5
        assert metric(gw, "events_write_errors_total") >= 1
        filler.unlink()
        rows = gw.wait_rows(401, timeout=20)
        assert len(rows) == 401 and metric(gw, "events_dropped_total") == 0


def test_concurrent_readers_never_block_the_gateway(start_gateway):
    """sqlite3 CLI readers holding read transactions while the gateway writes."""
    import subprocess

    gw = start_gateway(CONFIG.format(queue=100_000))
    httpx.get(gw.url + "/c/warm")
    gw.wait_rows(1)
    readers = [
        subprocess.Popen(
            ["sqlite3", str(gw.db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    for reader in readers:  # open a read transaction and keep it open
        reader.stdin.write("BEGIN; SELECT count(*) FROM events;\n")
        reader.stdin.flush()
    slowest = slowest_of(gw, 1000)
    rows = gw.wait_rows(1001, timeout=10)
    assert len(rows) == 1001 and slowest < 0.5
    outputs = []
    for reader in readers:  # the snapshot they hold still shows the old count
        out, _ = reader.communicate(
            "SELECT count(*) FROM events; COMMIT; SELECT count(*) FROM events;\n", timeout=30
        )
        outputs.append(out.split())
    assert all(o[0] == o[1] == "1" and o[2] == "1001" for o in outputs), outputs
