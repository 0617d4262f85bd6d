"""One behavioural suite, run against both adapters: the ASGI server and mitmdump + addon.

The mitmdump instances run in reverse mode towards a port nobody listens on: the addon
must never need the nominal upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import pytest

CONFIG = """
[events]
flush_interval = 0.02

[upstream]
read_timeout = 2

[[routes]]
id = "release"
host = "get.test"
path = "/tool/{{version}}/tool-{{os}}.tar.gz"
target = "{U}/files/tool-{{version}}-{{os}}.tar.gz"
package = "tool"

[[routes]]
id = "big"
path = "/big/{{size}}"
target = "{U}/big?size={{size}}"
mode = "proxy"

[[routes]]
id = "dl"
path = "/dl/{{+name}}"
target = "{U}/files/{{+name}}"
mode = "proxy"

[[routes]]
id = "counted"
path = "/installed/{{package}}/{{version}}"

[[routes]]
id = "ping"
kind = "telemetry"
path = "/ping/{{package}}/{{version}}"

[pixels.docs]
value = "medium"

[[routes]]
kind = "pixel"
path = "/px/{{id}}.png"
"""

ADAPTERS = ["asgi", "mitmproxy"]


@pytest.fixture(params=ADAPTERS)
def gw(request, start_gateway, upstream):
    return start_gateway(CONFIG.format(U=upstream.url), adapter=request.param)


def test_file_redirect(gw, upstream):
    r = httpx.get(
        gw.url + "/tool/1.2/tool-linux.tar.gz?utm_source=docs", headers={"host": "get.test"}
    )
    assert r.status_code == 307
    assert r.headers["location"] == f"{upstream.url}/files/tool-1.2-linux.tar.gz?utm_source=docs"
    assert (
        httpx.get(
            gw.url + "/tool/1.2/tool-linux.tar.gz", headers={"host": "other.test"}
        ).status_code
        == 404
    )
    (row,) = gw.wait_rows(1)
    assert row["adapter"] == gw.adapter and row["version"] == "1.2" and row["status"] == 307


def test_record_only_and_404(gw):
    r = httpx.get(gw.url + "/installed/tool/2.0")
    assert r.status_code == 200 and r.content == b""
    assert httpx.get(gw.url + "/nope").status_code == 404
    (row,) = gw.wait_rows(1)
    assert row["type"] == "hit" and row["package"] == "tool" and row["version"] == "2.0"


def test_proxy_range_and_bytes(gw):
    from upstream import file_bytes

    r = httpx.get(gw.url + "/dl/a.bin?size=4096", headers={"range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == file_bytes("/files/a.bin", 4096)[:100]
    assert r.headers["via"] == "1.1 gatepost" and "set-cookie" not in r.headers
    (row,) = gw.wait_rows(1)
    assert row["status"] == 206 and row["bytes_sent"] == 100


def test_proxy_100mb_with_bounded_memory(gw):
    size = 100 * 1024 * 1024
    before = gw.rss_kib()
    digest = hashlib.sha256()
    with httpx.stream("GET", f"{gw.url}/big/{size}", timeout=60) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(b"\xab" * size).hexdigest()
    growth = (gw.peak_rss_kib() - before) / 1024
    assert growth < 60, f"{gw.adapter} grew {growth:.0f} MiB streaming 100 MiB"
    (row,) = gw.wait_rows(1)
    assert row["bytes_sent"] == size and row["status"] == 200


def test_telemetry_post_and_pixel(gw):
    assert httpx.post(gw.url + "/ping/tool/1.0", json=[{"a": 1}, {"a": 2}]).status_code == 204
    assert httpx.post(gw.url + "/ping/tool/1.0", content=b"{bad").status_code == 400
    px = httpx.get(gw.url + "/px/docs.png", headers={"referer": "https://docs.test/x"})
    assert px.status_code == 200 and px.content.startswith(b"\x89PNG")
    rows = gw.wait_rows(3)
    assert [r["type"] for r in rows] == ["telemetry", "telemetry", "page_view"]
    assert [json.loads(r["data"]).get("a") for r in rows[:2]] == [1, 2]


def test_flush_on_sigterm(gw):
    async def burst() -> int:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=20)) as client:
            responses = await asyncio.gather(
                *(client.get(f"{gw.url}/installed/tool/{n}") for n in range(500))
            )
        return sum(r.status_code == 200 for r in responses)

    answered = asyncio.run(burst())
    gw.stop()
    assert answered == 500
    assert len(gw.rows()) == 500


def test_events_are_the_same_from_both_adapters(start_gateway, upstream):
    """Same requests, both adapters: rows differ only in adapter, id, time and duration."""
    tables = []
    for adapter in ADAPTERS:
        gw = start_gateway(CONFIG.format(U=upstream.url), name=f"same-{adapter}", adapter=adapter)
        headers = {"user-agent": "curl/8.5.0", "referer": "https://docs.test/install"}
        httpx.get(gw.url + "/tool/3.0/tool-mac.tar.gz", headers={**headers, "host": "get.test"})
        httpx.get(gw.url + "/installed/tool/3.0?x=1", headers=headers)
        httpx.get(gw.url + "/dl/f.bin?size=1000", headers=headers)
        httpx.get(gw.url + "/px/docs.png", headers={**headers, "dnt": "1"})
        gw.wait_rows(4)
        gw.stop()
        ignore = {"id", "ts", "adapter", "duration_ms"}
        tables.append([{k: v for k, v in row.items() if k not in ignore} for row in gw.rows()])
    assert tables[0] == tables[1]


def test_duplicate_host_is_rejected(gw):
    from servers import raw_request

    status, _, _ = raw_request(
        gw.port, "/installed/tool/1", host="get.test", extra="Host: evil.test\r\n"
    )
    assert status == 400
    assert gw.rows() == [] or all(r["host"] != "evil.test" for r in gw.rows())


def test_addon_as_forward_proxy(tmp_path, upstream):
    """mitmdump in regular (forward) proxy mode: the Host of the proxied request decides."""
    import subprocess

    from servers import clean_env, free_port, mitmdump_path, wait_http

    cfg = tmp_path / "routes.toml"
    cfg.write_text(CONFIG.format(U=upstream.url))
    db = tmp_path / "events.sqlite3"
    port = free_port()
    proc = subprocess.Popen(
        [mitmdump_path(), "--mode", "regular", "--listen-host", "127.0.0.1", "--listen-port", str(port),
         "-s", "addons/gatepost.py", "-q", "--set", f"gatepost_config={cfg}", "--set", f"gatepost_db={db}",
         "--set", "gatepost_unmatched=pass"],
        env=clean_env(GATEPOST_KEY="k"), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        with httpx.Client(proxy=f"http://127.0.0.1:{port}") as client:
            r = client.get("http://get.test/tool/2.0/tool-linux.tar.gz")
            assert r.status_code == 307
            assert r.headers["location"] == f"{upstream.url}/files/tool-2.0-linux.tar.gz"
            passed = client.get(f"{upstream.url}/echo/unrouted")  # no route: mitmproxy forwards it
            assert passed.status_code == 200 and passed.json()["path"] == "/echo/unrouted"
    finally:
        proc.terminate()
        proc.wait(30)
    import sqlite3

    rows = sqlite3.connect(db).execute("SELECT host, route_id, adapter FROM events").fetchall()
    assert rows == [("get.test", "release", "mitmproxy")]


def test_oversized_headers_are_431(gw):
    from servers import raw_request

    big = "X-Big: " + "b" * 70_000 + "\r\n"
    many = "".join(f"X-{n}: y\r\n" for n in range(300))
    for extra in (big, many):
        status, _, _ = raw_request(gw.port, "/installed/tool/1", host="get.test", extra=extra)
        assert status == 431
    assert httpx.get(gw.url + "/installed/tool/2", headers={"host": "get.test"}).status_code == 200
    assert [r["version"] for r in gw.wait_rows(1)] == ["2"]
