"""Backfill: access-log lines become exactly the events live requests produce."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from oci import OCI_MANIFEST, Registry, build_image, push
from servers import ROOT, clean_env

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
