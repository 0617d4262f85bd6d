"""Backfill: access-log lines become exactly the events live requests produce."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from oci import OCI_MANIFEST, Registry, build_image, push
from servers import ROOT, clean_env, small_tmpfs

CONFIG = """
[pixels.docs]
name = "Docs"
value = "medium"
package = "tool"

[[routes]]
id = "release"
host = "get.test"
path = "/tool/{{version}}/tool-{{os}}.tar.gz"
target = "https://downloads.example.org/v{{version}}/tool-{{os}}.tar.gz"
package = "tool"

[[routes]]
kind = "pixel"
path = "/px/{{id}}.png"

[[routes]]
kind = "telemetry"
path = "/ping/{{package}}/{{version}}"

[[routes]]
id = "cr"
kind = "oci"
namespaces = {{ "acme/*" = "http://{REG}/acme-org/*" }}
"""
UA = "curl/8.5.0"
REF = "https://docs.acme.dev/install"
IGNORED = {"id", "ts", "adapter", "duration_ms", "source_hash"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    base = tmp_path_factory.mktemp("import-registry")
    reg = Registry(base / "reg")
    layout = base / "layout"
    build_image(layout, "1.0", {"hello": b"import\n"})
    home = base / "home"
    home.mkdir()
    push(home, layout, "1.0", f"{reg.address}/acme-org/hello:1.0")
    yield reg
    reg.stop()


def importer(
    cfg: Path, db: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "import", "--config", str(cfg), "--db", str(db), *args],
        capture_output=True, env=clean_env(GATEPOST_KEY="test-key"), cwd=ROOT, input=stdin, timeout=120,
    )  # fmt: skip


def rows(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY id")]
    finally:
        conn.close()


def comparable(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k not in IGNORED}
    if row["route_kind"] == "oci":  # the digest is only known by asking the registry
        data = json.loads(row["data"])
        data.pop("digest", None)
        data.pop("media_type", None)
        out["data"] = data
    return out


def test_import_equals_live(start_gateway, registry, tmp_path):
    text = CONFIG.format(REG=registry.address)
    gw = start_gateway(text)
    live = [
        (
            "get.test",
            "/tool/1.2/tool-linux.tar.gz?utm_source=docs",
            {"user-agent": UA, "referer": REF},
        ),
        ("px.test", "/px/docs.png", {"user-agent": UA, "referer": REF}),
        ("px.test", "/px/docs.png", {"user-agent": UA, "referer": REF, "dnt": "1"}),
        ("t.test", "/ping/tool/1.2?os=linux", {"user-agent": "tool/1.2"}),
        (
            "cr.test",
            "/v2/acme/hello/manifests/1.0",
            {"user-agent": "skopeo/1.9.3", "accept": OCI_MANIFEST},
        ),
    ]
    lines_jsonl, lines_combined, statuses = [], [], []
    base = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    for n, (host, path, headers) in enumerate(live):
        r = httpx.get(gw.url + path, headers={**headers, "host": host})
        statuses.append(r.status_code)
        when = base + dt.timedelta(minutes=n)
        size = len(r.content)
        doc = {"ts": when.isoformat().replace("+00:00", "Z"), "ip": "127.0.0.1", "method": "GET", "host": host,
               "path": path, "status": r.status_code, "bytes": size, "user_agent": headers.get("user-agent"),
               "referer": headers.get("referer")}  # fmt: skip
        if "dnt" in headers:
            doc["dnt"] = "1"
        lines_jsonl.append(json.dumps(doc))
        stamp = when.strftime("%d/%b/%Y:%H:%M:%S +0000")
        if host == "get.test":  # combined logs have no host: one line, imported with --host
            lines_combined.append(
                f'127.0.0.1 - - [{stamp}] "GET {path} HTTP/1.1" {r.status_code} {size} "{REF}" "{UA}"'
            )
    assert statuses == [307, 200, 200, 204, 200]
    live_rows = gw.wait_rows(5)
    gw.stop()
    cfg = gw.config
    jl = tmp_path / "access.jsonl"
    jl.write_text("\n".join(lines_jsonl) + "\n")
    db = tmp_path / "imported.sqlite3"
    result = importer(cfg, db, "--format", "jsonl", str(jl))
    assert result.returncode == 0, result.stderr
    assert b"5 lines: 5 events imported" in result.stdout
    imported = rows(db)
    assert [comparable(r) for r in imported] == [comparable(r) for r in live_rows]
    assert [r["ts"] for r in imported] == [f"2026-03-01T12:0{n}:00.000Z" for n in range(5)]
    assert {r["adapter"] for r in imported} == {"import"}
    # idempotent
    again = importer(cfg, db, "--format", "jsonl", str(jl))
    assert b"0 events imported, 5 already present" in again.stdout and len(rows(db)) == 5
    # combined format, gzip
    gz = tmp_path / "access.log.gz"
    gz.write_bytes(gzip.compress(("\n".join(lines_combined) + "\n").encode()))
    cdb = tmp_path / "combined.sqlite3"
    assert importer(cfg, cdb, "--format", "combined", "--host", "get.test", str(gz)).returncode == 0
    (combined_row,) = rows(cdb)
    assert comparable(combined_row) == comparable(live_rows[0])


def test_malformed_unmatched_strict_stdin_and_privacy(start_gateway, registry, tmp_path):
    cfg = tmp_path / "routes.toml"
    cfg.write_text(CONFIG.format(REG=registry.address))
    log = "\n".join([
        '203.0.113.77 - - [01/Mar/2026:12:00:00 +0000] "GET /tool/1.0/tool-mac.tar.gz HTTP/1.1" 307 0 "-" "curl/8"',
        "this is not a log line",
        '203.0.113.78 - - [01/Mar/2026:12:00:01 +0000] "GET /nowhere HTTP/1.1" 404 9 "-" "curl/8"',
        '203.0.113.77 - - [01/Mar/2026:12:00:00 +0000] "GET /tool/1.0/tool-mac.tar.gz HTTP/1.1" 307 0 "-" "curl/8"',
        '203.0.113.79 - - [31/Feb/2026:99:00:00 +0000] "GET /tool/1.0/x HTTP/1.1" 200 1 "-" "-"',
    ]) + "\n"  # fmt: skip
    db = tmp_path / "e.sqlite3"
    result = importer(
        cfg, db, "--format", "combined", "--host", "get.test", "-", stdin=log.encode()
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert (
        "5 lines: 2 events imported" in out and "1 matched no route" in out and "2 malformed" in out
    )
    assert "-:2: not in combined log format" in result.stderr.decode()
    assert "-:5: bad time" in result.stderr.decode()
    assert len(rows(db)) == 2  # the same line twice = two requests
    strict = importer(
        cfg, tmp_path / "s.sqlite3", "--format", "combined", "--strict", "-", stdin=log.encode()
    )
    assert strict.returncode == 2 and b"-:2:" in strict.stderr
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("e.sqlite3*"))
    assert b"203.0.113.77" not in blob and b"203.0.113.0/24" in blob
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"ts": "yesterday", "path": "/x"}\n[1]\n{"ts": 1767225600, "path": "relative"}\n'
    )
    res = importer(cfg, tmp_path / "j.sqlite3", "--format", "jsonl", str(bad))
    err = res.stderr.decode()
    assert (
        ":1: bad ts" in err and ":2: expected a JSON object" in err and ":3: request target" in err
    )


def test_each_line_fills_its_own_columns(tmp_path):
    """Lines of one request shape share the core's decision, never their time, client ids,
    status, size or DNT: every stored row equals the row the core makes of that line alone."""
    from gateway.config import parse_config
    from gateway.importer import Importer, ImportReport, parse_jsonl
    from gateway.store import COLUMNS

    streamed = """
[[routes]]
id = "mirror"
host = "m.test"
path = "/m/{+file}"
target = "https://downloads.example.org/{+file}"
mode = "proxy"
"""
    text = CONFIG.format(REG="127.0.0.1:9") + streamed
    config = parse_config(text, str(tmp_path / "routes.toml"))
    config.server.data_dir = tmp_path
    shapes = [
        ("get.test", "/tool/1.2/tool-linux.tar.gz", {"user_agent": UA, "referer": REF}),
        ("px.test", "/px/docs.png", {"user_agent": UA, "referer": REF}),
        ("t.test", "/ping/tool/1.2?os=linux", {"user_agent": "tool/1.2"}),
        ("cr.test", "/v2/acme/hello/blobs/sha256:" + "a" * 64, {"user_agent": "skopeo/1.9"}),
        ("m.test", "/m/tool-1.2.tar.gz", {"user_agent": UA}),
    ]
    lines = []
    for n in range(40):
        host, path, extra = shapes[n % len(shapes)]
        doc = {"ts": 1772366400 + n * 37, "ip": f"198.51.{n % 3}.{n}", "host": host, "path": path,
               "status": 200 + n % 2, "bytes": n * 10, **extra}  # fmt: skip
        if n % 5 == 0:
            doc["dnt"] = "1"
        if n % 7 == 0:
            doc["ip"] = f"2001:db8:{n}::1"
        if n == 4:  # the first line of the streamed shape has no size: the others still do
            del doc["bytes"]
        lines.append(json.dumps(doc))
    log = tmp_path / "access.jsonl"
    log.write_text("\n".join(lines) + "\n")
    importer = Importer(config, tmp_path / "e.sqlite3", default_host="get.test")
    report = importer.run([str(log)], "jsonl")
    assert report.imported == 40 and report.unmatched == 0
    full = list(sqlite3.connect(tmp_path / "e.sqlite3").execute(
        f"SELECT id, {', '.join(COLUMNS)} FROM events ORDER BY id"))  # fmt: skip
    stored = [r[1:-1] for r in full]
    # the source hash is part of the store's contract: files imported by older versions
    # must not come in twice
    assert [r[-1] for r in full] == [
        hashlib.sha256(f"0:0:{line}".encode()).hexdigest()[:32] for line in lines
    ]
    direct = [
        importer.rows.row(event)[:-1]
        for line in lines
        for event in importer.events_for(parse_jsonl(line, "get.test"), ImportReport())
    ]
    assert stored == direct
    assert (
        len({r[COLUMNS.index("endpoint_id")] for r in stored if r[COLUMNS.index("dnt")] == 0}) == 32
    )
    assert all(r[COLUMNS.index("network")] is None for r in stored if r[COLUMNS.index("dnt")] == 1)
    sizes = [r[COLUMNS.index("bytes_sent")] for r in stored if r[COLUMNS.index("host")] == "m.test"]
    assert sizes == [None] + [n * 10 for n in range(9, 40, 5)]


def test_version_1_store_is_migrated_and_stays_idempotent(tmp_path):
    from gateway.store import MIGRATIONS, open_store

    db = tmp_path / "old.sqlite3"
    old = sqlite3.connect(db)
    old.executescript(MIGRATIONS[1] + "PRAGMA user_version=1;")
    old.execute(
        "INSERT INTO events (ts, type, adapter, host, method, path, status, source_hash) "
        "VALUES ('2026-03-01T12:00:00.000Z', 'download', 'import', 'h', 'GET', '/', 200, 'abc')"
    )
    old.commit()
    old.close()
    conn = open_store(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "events_source" in names and "events_source_hash" not in names
    again = conn.execute(
        "INSERT OR IGNORE INTO events (ts, type, adapter, host, method, path, status, source_hash) "
        "VALUES ('2026-03-01T12:00:00.000Z', 'download', 'import', 'h', 'GET', '/', 200, 'abc')"
    )
    assert again.rowcount == 0 and conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1


def test_full_disk_is_a_clear_error(tmp_path):
    """The store on a 1 MiB tmpfs: the import stops with a one-line error, no traceback,
    and what was committed before the disk filled stays readable."""
    with small_tmpfs(tmp_path / "small", "1m") as mount:
        cfg = tmp_path / "routes.toml"
        cfg.write_text(CONFIG.format(REG="127.0.0.1:9"))
        log = tmp_path / "access.log"
        with log.open("w") as fh:
            for n in range(30_000):
                fh.write(f'198.51.100.{n % 250} - - [01/Mar/2026:12:{n // 3600 % 60:02d}:{n // 60 % 60:02d} +0000] '
                         f'"GET /tool/1.{n}/tool-linux.tar.gz HTTP/1.1" 307 0 "{REF}" "{UA}"\n')  # fmt: skip
        result = importer(
            cfg, mount / "e.sqlite3", "--format", "combined", "--host", "get.test", str(log)
        )
        err = result.stderr.decode()
        assert result.returncode == 2
        assert "error: writing events failed" in err and "full" in err and "Traceback" not in err
        conn = sqlite3.connect(mount / "e.sqlite3")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
