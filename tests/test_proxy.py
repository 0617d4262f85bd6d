"""Proxy mode: streamed bytes, Range, conditional requests, failures → 502/504 with events."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import httpx
import pytest
from servers import free_port, raw_request
from upstream import file_bytes

CONFIG = """
[events]
flush_interval = 0.02

[upstream]
read_timeout = 1.5
connect_timeout = 2

[[routes]]
id = "dl"
path = "/dl/{{+name}}"
target = "{U}/files/{{+name}}"
mode = "proxy"
package = "tool"

[[routes]]
id = "big"
path = "/big/{{size}}"
target = "{U}/big?size={{size}}"
mode = "proxy"

[[routes]]
id = "echo"
path = "/echo/{{+rest}}"
target = "{U}/echo/{{+rest}}"
mode = "proxy"
upstream_headers = {{ authorization = "Bearer upstream-secret" }}

[[routes]]
id = "slow"
path = "/slow"
target = "{U}/slow?delay=5"
mode = "proxy"

[[routes]]
id = "trunc"
path = "/trunc"
target = "{U}/truncate?size=200000"
mode = "proxy"

[[routes]]
id = "garbage"
path = "/garbage"
target = "{U}/garbage"
mode = "proxy"

[[routes]]
id = "huge"
path = "/hugeheader"
target = "{U}/hugeheader?size=200000"
mode = "proxy"

[[routes]]
id = "down"
path = "/down"
target = "http://127.0.0.1:{DEAD}/x"
mode = "proxy"

[[routes]]
id = "follow"
path = "/follow"
target = "{U}/redirect?to=/files/followed"
mode = "proxy"

[[routes]]
id = "redirect-ok"
path = "/ok"
target = "{U}/files/ok"
"""


@pytest.fixture
def gw(start_gateway, upstream):
    return start_gateway(CONFIG.format(U=upstream.url, DEAD=free_port()))


def test_proxy_streams_bytes_and_records(gw):
    r = httpx.get(gw.url + "/dl/tool-1.0.tar.gz?size=300000", headers={"user-agent": "Wget/1.21"})
    assert r.status_code == 200
    assert r.content == file_bytes("/files/tool-1.0.tar.gz", 300000)
    assert r.headers["via"] == "1.1 gatepost"
    assert "set-cookie" not in r.headers  # upstream cookies never reach our domain
    (row,) = gw.wait_rows(1)
    assert row["status"] == 200 and row["bytes_sent"] == 300000 and row["outcome"] == "ok"
    assert row["client_kind"] == "wget" and row["type"] == "download"


def test_range_request(gw):
    r = httpx.get(gw.url + "/dl/f.bin?size=5000", headers={"range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.headers["content-range"] == "bytes 100-199/5000"
    assert r.content == file_bytes("/files/f.bin", 5000)[100:200]
    (row,) = gw.wait_rows(1)
    assert row["status"] == 206 and row["bytes_sent"] == 100


def test_conditional_request_304(gw):
    first = httpx.get(gw.url + "/dl/c.bin")
    etag = first.headers["etag"]
    second = httpx.get(gw.url + "/dl/c.bin", headers={"if-none-match": etag})
    assert second.status_code == 304 and second.content == b""
    rows = gw.wait_rows(2)
    assert [r["status"] for r in rows] == [200, 304]


def test_head_is_forwarded_as_head(gw):
    r = httpx.head(gw.url + "/echo/h")
    assert r.status_code == 200 and r.content == b""
    (row,) = gw.wait_rows(1)
    assert row["method"] == "HEAD" and row["bytes_sent"] == 0


def test_request_headers_forwarded_selectively(gw):
    r = httpx.get(
        gw.url + "/echo/hdr?x=1",
        headers={
            "cookie": "session=ours",
            "authorization": "Basic b3Vyczp0b2tlbg==",
            "x-forwarded-for": "198.51.100.1",
            "if-none-match": '"abc"',
            "user-agent": "curl/8",
            "accept-encoding": "gzip, deflate",
        },
    )
    seen = r.json()
    assert seen["query"] == "x=1"
    h = seen["headers"]
    assert "cookie" not in h and "x-forwarded-for" not in h
    assert h["authorization"] == "Bearer upstream-secret"  # configured upstream credential
    assert h["if-none-match"] == '"abc"' and h["user-agent"] == "curl/8"
    assert h["via"] == "1.1 gatepost" and h["accept-encoding"] == "gzip, deflate"
    # a client that asked for no encoding must not get a compressed body
    _status, _headers, body = raw_request(gw.port, "/echo/plain")
    assert json.loads(body)["headers"]["accept-encoding"] == "identity"


def test_follows_upstream_redirects(gw):
    r = httpx.get(gw.url + "/follow")
    assert r.status_code == 200 and r.content == file_bytes("/files/followed", 1000)


def test_upstream_down_is_502_with_event(gw):
    r = httpx.get(gw.url + "/down")
    assert r.status_code == 502
    (row,) = gw.wait_rows(1)
    assert row["status"] == 502 and row["outcome"] == "upstream_error"
    # and it keeps serving others
    assert httpx.get(gw.url + "/ok").status_code == 307


def test_upstream_timeout_is_504_with_event(gw):
    started = time.monotonic()
    r = httpx.get(gw.url + "/slow", timeout=10)
    assert r.status_code == 504
    assert time.monotonic() - started < 4
    (row,) = gw.wait_rows(1)
    assert row["status"] == 504 and row["outcome"] == "upstream_timeout"


def test_garbage_upstream_is_502(gw):
    r = httpx.get(gw.url + "/garbage")
    assert r.status_code == 502
    (row,) = gw.wait_rows(1)
    assert row["outcome"] == "upstream_error"


def test_oversized_upstream_header_is_502_and_serving_goes_on(gw):
    r = httpx.get(gw.url + "/hugeheader")
    assert r.status_code == 502 and "h" * 1000 not in r.text
    assert httpx.get(gw.url + "/dl/after-huge", timeout=10).status_code == 200
    rows = gw.wait_rows(2)
    assert rows[0]["route_id"] == "huge" and rows[0]["outcome"] == "upstream_error"


def test_truncated_upstream_aborts_client(gw):
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(gw.url + "/trunc")
    (row,) = gw.wait_rows(1)
    assert row["outcome"] == "upstream_aborted" and row["status"] == 200
    assert row["bytes_sent"] == 100000


def test_client_disconnect_mid_stream_is_recorded(gw):
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.sendall(b"GET /big/500000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < 2_000_000:
            got += len(s.recv(65536))
    (row,) = gw.wait_rows(1, timeout=10)
    assert row["outcome"] == "client_disconnected"
    assert 0 < row["bytes_sent"] < 500_000_000


def test_100mb_stream_with_bounded_memory(gw):
    size = 100 * 1024 * 1024
    before = gw.rss_kib()
    digest = hashlib.sha256()
    got = 0
    with httpx.stream("GET", gw.url + f"/big/{size}", timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-length"] == str(size)
        for chunk in r.iter_raw():
            digest.update(chunk)
            got += len(chunk)
    assert got == size
    assert digest.hexdigest() == hashlib.sha256(b"\xab" * size).hexdigest()
    growth_mib = (gw.peak_rss_kib() - before) / 1024
    assert growth_mib < 40, f"gateway grew by {growth_mib:.0f} MiB while streaming 100 MiB"
    (row,) = gw.wait_rows(1)
    assert row["bytes_sent"] == size
    assert json.loads(row["vars"]) == {"size": str(size)}
