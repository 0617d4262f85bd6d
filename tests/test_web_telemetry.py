"""Pixels, tracked links and call-home telemetry against the real server (and a real browser)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image
from servers import ROOT, clean_env

CONFIG = """
[server]
public_url = "https://get.acme.dev"

[events]
flush_interval = 0.02

[pixels.docs-install]
name = "Docs: installation"
value = "medium"
package = "tool"

[pixels.pricing]
name = "Pricing page"
value = "high"

[[routes]]
id = "px"
kind = "pixel"
path = "/px/{id}.png"

[[routes]]
id = "px-query"
kind = "pixel"
path = "/a.png?x-pxid={id}"

[[routes]]
id = "px-gif"
kind = "pixel"
path = "/g/{id}.gif"
format = "gif"

[[routes]]
id = "youtube"
kind = "link"
path = "/youtube/{video}"
target = "https://www.youtube.com/watch?v={video}"

[[routes]]
id = "go"
kind = "link"
path = "/go/{name}"
target = "https://acme.dev/{name}"
status = 307
forward_query = false

[[routes]]
id = "ping"
kind = "telemetry"
path = "/ping/{package}/{version}"

[[routes]]
id = "ping-secure"
kind = "telemetry"
path = "/secure/{package}/{version}"
tokens = ["s3cret-token", "other-token"]
response = "blank"
max_body = 2048
max_items = 5
"""


@pytest.fixture
def gw(start_gateway):
    return start_gateway(CONFIG)


def data(row) -> dict:
    return json.loads(row["data"])


# ------------------------------------------------------------------ pixels


def test_pixel_is_a_transparent_1x1_png_without_cookies(gw):
    r = httpx.get(
        gw.url + "/px/docs-install.png", headers={"referer": "https://docs.acme.dev/install"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "no-store" in r.headers["cache-control"] and "set-cookie" not in r.headers
    image = Image.open(io.BytesIO(r.content))
    image.load()
    assert image.format == "PNG" and image.size == (1, 1)
    assert image.convert("RGBA").getpixel((0, 0))[3] == 0  # fully transparent
    (row,) = gw.wait_rows(1)
    assert row["type"] == "page_view" and row["route_kind"] == "pixel" and row["package"] == "tool"
    assert (
        row["referer"] == "https://docs.acme.dev/install"
        and row["referer_domain"] == "docs.acme.dev"
    )
    assert data(row) == {
        "pixel_id": "docs-install",
        "pixel_name": "Docs: installation",
        "value_class": "medium",
        "page_url": "https://docs.acme.dev/install",
    }


def test_pixel_query_form_and_gif(gw):
    r = httpx.get(gw.url + "/a.png?x-pxid=pricing", headers={"referer": "https://acme.dev/pricing"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (1, 1)
    g = httpx.get(gw.url + "/g/pricing.gif")
    assert g.headers["content-type"] == "image/gif"
    assert Image.open(io.BytesIO(g.content)).format == "GIF"
    rows = gw.wait_rows(2)
    assert [data(r)["value_class"] for r in rows] == ["high", "high"]
    assert rows[0]["route_id"] == "px-query" and rows[1]["route_id"] == "px-gif"


def test_several_pixels_per_page_and_unknown_ids(gw):
    page = "https://docs.acme.dev/guide"
    for path in ("/px/docs-install.png", "/a.png?x-pxid=pricing", "/px/no-such-pixel.png"):
        r = httpx.get(gw.url + path, headers={"referer": page})
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    rows = gw.wait_rows(2)
    assert sorted(data(r)["pixel_id"] for r in rows) == ["docs-install", "pricing"]
    assert {r["referer"] for r in rows} == {page}
    assert "gatepost_pixel_unknown_total 1" in httpx.get(gw.url + "/metrics").text


def test_pixel_dnt(gw):
    httpx.get(gw.url + "/px/pricing.png", headers={"sec-gpc": "1"})
    (row,) = gw.wait_rows(1)
    assert row["dnt"] == 1 and row["network"] is None and row["endpoint_id"] is None


def test_pixel_snippet_cli(tmp_path):
    cfg = tmp_path / "routes.toml"
    cfg.write_text(CONFIG)
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "pixel-snippet", "docs-install", "--config", str(cfg)],
        capture_output=True, text=True, env=clean_env(), check=True,
    ).stdout  # fmt: skip
    assert out.strip() == (
        '<img src="https://get.acme.dev/px/docs-install.png" alt="" width="1" height="1" '
        'referrerpolicy="no-referrer-when-downgrade" '
        'style="position:absolute;width:1px;height:1px;border:0">'
    )
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "pixel-snippet", "nope", "--config", str(cfg)],
        capture_output=True, text=True, env=clean_env(),
    )  # fmt: skip
    assert bad.returncode == 2 and "known: docs-install, pricing" in bad.stderr


# ------------------------------------------------------------------ links


def test_link_redirect_with_campaign_variables(gw):
    r = httpx.get(gw.url + "/youtube/dQw4w9WgXcQ?utm_source=kubecon&utm_medium=slides&x=1")
    assert r.status_code == 302
    assert r.headers["location"] == (
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ&utm_source=kubecon&utm_medium=slides&x=1"
    )
    r = httpx.get(gw.url + "/go/pricing?utm_campaign=launch")
    assert r.status_code == 307 and r.headers["location"] == "https://acme.dev/pricing"
    first, second = gw.wait_rows(2)
    assert first["type"] == "link_click" and first["route_kind"] == "link"
    assert json.loads(first["vars"]) == {
        "video": "dQw4w9WgXcQ",
        "utm_source": "kubecon",
        "utm_medium": "slides",
    }
    assert json.loads(second["vars"]) == {"name": "pricing", "utm_campaign": "launch"}


# ------------------------------------------------------------------ telemetry


def test_telemetry_get_and_post(gw):
    r = httpx.get(gw.url + "/ping/tool/1.4.2?os=linux&ci=true")
    assert r.status_code == 204 and r.content == b""
    r = httpx.post(gw.url + "/ping/tool/1.4.2", json={"os": "darwin", "nodes": 3, "ci": False})
    assert r.status_code == 204
    r = httpx.post(gw.url + "/ping/tool/1.4.3", json=[{"feature": "a"}, {"feature": "b"}])
    assert r.status_code == 204
    ndjson = b'{"feature": "x", "ms": 1.5}\n{"feature": "y"}\n'
    r = httpx.post(
        gw.url + "/ping/tool/1.5.0",
        content=ndjson,
        headers={"content-type": "application/x-ndjson"},
    )
    assert r.status_code == 204
    rows = gw.wait_rows(6)
    assert [r["type"] for r in rows] == ["telemetry"] * 6
    assert [(r["package"], r["version"]) for r in rows] == [("tool", "1.4.2")] * 2 + [
        ("tool", "1.4.3")
    ] * 2 + [("tool", "1.5.0")] * 2
    assert [data(r) for r in rows] == [
        {"os": "linux", "ci": "true"},
        {"os": "darwin", "nodes": 3, "ci": False},
        {"feature": "a"},
        {"feature": "b"},
        {"feature": "x", "ms": 1.5},
        {"feature": "y"},
    ]
    assert rows[1]["status"] == 204 and rows[1]["method"] == "POST"


def test_telemetry_tokens(gw):
    url = gw.url + "/secure/tool/2.0"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert (
        httpx.post(
            url, json={"a": 1}, headers={"authorization": "Bearer s3cret-tokenX"}
        ).status_code
        == 401
    )
    r = httpx.get(url, headers={"authorization": "Bearer other-token"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    r = httpx.get(url + "?token=s3cret-token&os=linux")
    assert r.status_code == 200
    rows = gw.wait_rows(2)
    assert len(rows) == 2
    assert rows[1]["query"] == "os=linux"  # the token is never stored
    assert data(rows[1]) == {"os": "linux"}
    gw.stop()
    blob = b"".join(p.read_bytes() for p in gw.workdir.glob("events.sqlite3*"))
    assert b"s3cret-token" not in blob and b"other-token" not in blob


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "invalid JSON"),
        (b'{"a": {"nested": 1}}', 400, "must be a string"),
        (b'{"a": null}', 400, "must be a string"),
        (b'{"bad key!": 1}', 400, "invalid field name"),
        (b'[{"a": 1}, 3]', 400, "expected a JSON object"),
        (b'{"a": 1}\n{"b": 2}\n{oops', 400, "line 3"),
        (b"[" + b",".join([b'{"a": 1}'] * 6) + b"]", 413, "at most 5"),
        (b'{"a": "' + b"x" * 3000 + b'"}', 413, "larger than 2048"),
        (b"\xff\xfe", 400, "UTF-8"),
    ],
)
def test_telemetry_bad_bodies_record_nothing(gw, body, status, message):
    url = gw.url + "/secure/tool/2.0"
    r = httpx.post(url, content=body, headers={"authorization": "Bearer s3cret-token"})
    assert r.status_code == status and message in r.text
    httpx.get(gw.url + "/ping/marker/1")
    rows = gw.wait_rows(1)
    assert [row["package"] for row in rows] == ["marker"]


def test_telemetry_chunked_body_over_limit(gw):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    r = httpx.post(
        gw.url + "/secure/tool/2.0",
        content=chunks(),
        headers={"authorization": "Bearer s3cret-token"},
    )
    assert r.status_code == 413


def test_telemetry_do_not_track(gw):
    httpx.get(gw.url + "/ping/tool/1.0?do_not_track=1")
    httpx.post(gw.url + "/ping/tool/1.0", json={"a": 1}, headers={"dnt": "1"})
    httpx.get(gw.url + "/ping/tool/1.0")
    rows = gw.wait_rows(3)
    assert [(r["dnt"], r["network"] is None, r["origin_id"] is None) for r in rows] == [
        (1, True, True),
        (1, True, True),
        (0, False, False),
    ]
    assert data(rows[0]) == {}  # do_not_track itself is not a field


def test_telemetry_methods(gw):
    assert httpx.put(gw.url + "/ping/tool/1.0").status_code == 405
    assert httpx.request("DELETE", gw.url + "/ping/tool/1.0").headers["allow"] == "GET, POST"


# ------------------------------------------------------------------ a real browser


def test_headless_chromium_records_two_page_views(gw, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "tests/run.sh installs Debian's chromium"
    site = tmp_path / "site"
    site.mkdir()
    page = (ROOT / "examples" / "pixels.html").read_text().replace("GATEPOST_URL", gw.url)
    (site / "guide.html").write_text(page)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    page_url = f"http://127.0.0.1:{server.server_address[1]}/guide.html"
    try:
        result = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=5000", "--dump-dom", page_url],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert "Installing acme tool" in result.stdout, result.stderr[-2000:]
    rows = gw.wait_rows(2, timeout=10)
    assert len(rows) == 2
    assert sorted(data(r)["pixel_id"] for r in rows) == ["docs-install", "pricing"]
    assert {r["referer"] for r in rows} == {page_url}
    assert {data(r)["page_url"] for r in rows} == {page_url}
    assert {r["type"] for r in rows} == {"page_view"}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass
