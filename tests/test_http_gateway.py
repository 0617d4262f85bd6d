"""The real gateway under uvicorn against a real upstream: redirects, records, rows."""

from __future__ import annotations

import json

import httpx
import pytest
from servers import free_port, raw_request

CONFIG = """
[server]
trusted_proxies = ["10.0.0.0/8"]

[events]
flush_interval = 0.02

[upstream]
read_timeout = 1.5

[[routes]]
id = "tool"
host = "get.test"
path = "/tool/{{version}}/tool-{{os}}-{{arch}}.tar.gz"
target = "{U}/files/tool/v{{version}}/tool-{{os}}-{{arch}}.tar.gz"
package = "tool"

[[routes]]
id = "campaign"
path = "/go/<campaign>/tool/<version>"
target = "{U}/files/tool-{{version}}"
package = "tool"
status = 302

[[routes]]
id = "query"
path = "/data?drilldowns={{a}}&measures={{b}}"
target = "{U}/echo/data?d={{a}}&m={{b}}"

[[routes]]
id = "escape"
path = "/search/{{term}}"
target = "{U}/echo/q/{{term}}"

[[routes]]
id = "rest"
path = "/raw/{{+rest}}"
target = "{U}/echo/r/{{+rest}}"

[[routes]]
id = "merge"
path = "/merge"
target = "{U}/echo/m?a=target&b=2"

[[routes]]
id = "no-forward"
path = "/noq"
target = "{U}/echo/noq"
forward_query = false

[[routes]]
id = "counted"
path = "/counted/{{thing}}"
package = "tool"

[[routes]]
id = "downloads"
kind = "prefix"
host = "downloads.test"
prefix = "/"
target = "{U}/files/"

[[routes]]
id = "sub-prefix"
kind = "prefix"
prefix = "/mirror/"
target = "{U}/echo/mirrored/"

[[routes]]
id = "ref"
path = "/ref"
target = "{U}/echo/ref?from={{referer_domain}}"

[[routes]]
id = "p-rest"
path = "/p/{{+rest}}"
target = "{U}/echo/p-rest/{{+rest}}"

[[routes]]
id = "p-var"
path = "/p/{{v}}"
target = "{U}/echo/p-var/{{v}}"

[[routes]]
id = "p-mixed"
path = "/p/v{{v}}"
target = "{U}/echo/p-mixed/{{v}}"

[[routes]]
id = "p-literal"
path = "/p/latest"
target = "{U}/echo/p-literal"

[[routes]]
id = "p-first"
path = "/q/{{a}}-x"
target = "{U}/echo/q-first/{{a}}"

[[routes]]
id = "p-longer"
path = "/q/{{a}}-xx"
target = "{U}/echo/q-longer/{{a}}"

[[routes]]
id = "any-host"
path = "/h/x"
target = "{U}/echo/any"

[[routes]]
id = "h-specific"
host = ["h.test", "alias.test"]
path = "/h/{{v}}"
target = "{U}/echo/specific/{{v}}"

[[routes]]
id = "q-plain"
path = "/qq"
target = "{U}/echo/qq-plain"

[[routes]]
id = "q-cond"
path = "/qq?format=json"
target = "{U}/echo/qq-json"
"""


@pytest.fixture
def gw(start_gateway, upstream):
    return start_gateway(CONFIG.format(U=upstream.url))


def get(gw, path: str, host: str | None = None, **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    if host:
        headers["host"] = host
    return httpx.get(gw.url + path, headers=headers, follow_redirects=False, timeout=10, **kw)


def test_file_redirect_and_event_row(gw, upstream):
    r = get(
        gw, "/tool/1.4.2/tool-linux-amd64.tar.gz", "get.test", headers={"user-agent": "curl/8.5.0"}
    )
    assert r.status_code == 307
    assert r.headers["location"] == f"{upstream.url}/files/tool/v1.4.2/tool-linux-amd64.tar.gz"
    # curl -L follows it to the real file
    followed = httpx.get(
        gw.url + "/tool/1.4.2/tool-linux-amd64.tar.gz",
        headers={"host": "get.test"},
        follow_redirects=True,
    )
    assert followed.status_code == 200 and len(followed.content) == 1000
    rows = gw.wait_rows(2)
    row = rows[0]
    assert row["type"] == "download" and row["route_id"] == "tool" and row["route_kind"] == "file"
    assert row["host"] == "get.test" and row["package"] == "tool" and row["version"] == "1.4.2"
    assert json.loads(row["vars"]) == {"version": "1.4.2", "os": "linux", "arch": "amd64"}
    assert row["status"] == 307 and row["method"] == "GET"
    assert row["path"] == "/tool/1.4.2/tool-linux-amd64.tar.gz"
    assert row["client_kind"] == "curl" and row["client_version"] == "8.5.0"
    assert row["network"] == "127.0.0.0/24"
    assert len(row["endpoint_id"]) == 32 and len(row["origin_id"]) == 32
    assert row["upstream"] == r.headers["location"]
    assert row["ts"].endswith("Z") and row["adapter"] == "asgi" and row["dnt"] == 0


def test_host_routing_other_host_is_404(gw):
    assert get(gw, "/tool/1.4.2/tool-linux-amd64.tar.gz", "other.test").status_code == 404
    assert get(gw, "/tool/1.4.2/tool-linux-amd64.tar.gz", "GET.Test:8443").status_code == 307


def test_segment_variable_does_not_cross_slash(gw):
    assert get(gw, "/tool/1.0/extra/tool-linux-amd64.tar.gz", "get.test").status_code == 404


def test_attribution_variables_recorded_but_not_used(gw, upstream):
    r = get(gw, "/go/kubecon-2026/tool/2.0")
    assert r.status_code == 302
    assert r.headers["location"] == f"{upstream.url}/files/tool-2.0"
    (row,) = gw.wait_rows(1)
    assert json.loads(row["vars"]) == {"campaign": "kubecon-2026", "version": "2.0"}


def test_query_template_matches_in_any_order(gw, upstream):
    for query in ("drilldowns=State&measures=Population", "measures=Population&drilldowns=State"):
        r = get(gw, "/data?" + query)
        assert r.status_code == 307, query
        assert r.headers["location"].startswith(f"{upstream.url}/echo/data?d=State&m=Population")
    assert get(gw, "/data?drilldowns=State").status_code == 404


def test_escaping_simple_vs_reserved(gw, upstream):
    r = get(gw, "/search/really+nice")
    assert r.headers["location"] == f"{upstream.url}/echo/q/really%2Bnice"
    r = get(gw, "/search/hello%20world")
    assert r.headers["location"] == f"{upstream.url}/echo/q/hello%20world"
    r = get(gw, "/raw/a/b/c%20d.txt")
    assert r.headers["location"] == f"{upstream.url}/echo/r/a/b/c%20d.txt"


def test_query_forwarding_and_merge(gw, upstream):
    r = get(gw, "/merge?a=client&c=3")
    assert r.headers["location"] == f"{upstream.url}/echo/m?a=target&b=2&c=3"
    r = get(gw, "/raw/x?utm_source=talk")
    assert r.headers["location"] == f"{upstream.url}/echo/r/x?utm_source=talk"
    r = get(gw, "/noq?x=1")
    assert r.headers["location"] == f"{upstream.url}/echo/noq"


def test_record_only_route(gw):
    r = get(gw, "/counted/install-start")
    assert r.status_code == 200 and r.content == b""
    (row,) = gw.wait_rows(1)
    assert row["type"] == "hit" and row["status"] == 200 and row["upstream"] is None
    assert json.loads(row["vars"]) == {"thing": "install-start"}


def test_prefix_route(gw, upstream):
    r = get(gw, "/hello%20world", "downloads.test")
    assert r.headers["location"] == f"{upstream.url}/files/hello%20world"
    r = get(gw, "/a/b/c.tar.gz?x=1", "downloads.test")
    assert r.headers["location"] == f"{upstream.url}/files/a/b/c.tar.gz?x=1"
    r = get(gw, "/mirror/deep/file.zip")
    assert r.headers["location"] == f"{upstream.url}/echo/mirrored/deep/file.zip"
    assert get(gw, "/mirrorx/file.zip").status_code == 404
    rows = gw.wait_rows(3)
    assert rows[0]["route_kind"] == "prefix" and json.loads(rows[0]["vars"]) == {
        "path": "/hello world"
    }


def test_referer_domain_builtin(gw, upstream):
    r = get(gw, "/ref", headers={"referer": "https://docs.acme.dev/install?x=1"})
    assert r.headers["location"] == f"{upstream.url}/echo/ref?from=docs.acme.dev"
    (row,) = gw.wait_rows(1)
    assert row["referer_domain"] == "docs.acme.dev"


@pytest.mark.parametrize(
    ("path", "winner"),
    [
        ("/p/latest", "p-literal"),
        ("/p/v1.2", "p-mixed"),
        ("/p/1.2", "p-var"),
        ("/p/1.2/file", "p-rest"),
        ("/q/a-xx", "p-longer"),
        ("/q/a-x", "p-first"),
    ],
)
def test_precedence(gw, path, winner):
    r = get(gw, path)
    assert r.status_code == 307
    rows = gw.wait_rows(1)
    assert rows[-1]["route_id"] == winner


def test_host_specific_before_any_host(gw):
    get(gw, "/h/x", "h.test")
    get(gw, "/h/x", "alias.test")
    get(gw, "/h/x", "elsewhere.test")
    rows = gw.wait_rows(3)
    assert [r["route_id"] for r in rows] == ["h-specific", "h-specific", "any-host"]


def test_query_conditions_win_over_plain(gw):
    get(gw, "/qq?format=json")
    get(gw, "/qq?format=xml")
    rows = gw.wait_rows(2)
    assert [r["route_id"] for r in rows] == ["q-cond", "q-plain"]


def test_head_and_405(gw, upstream):
    r = httpx.head(gw.url + "/search/x")
    assert r.status_code == 307 and r.headers["location"] == f"{upstream.url}/echo/q/x"
    r = httpx.post(gw.url + "/search/x")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = httpx.request("DELETE", gw.url + "/counted/x")
    assert r.status_code == 405
    rows = gw.wait_rows(1)
    assert [row["method"] for row in rows] == ["HEAD"]


def test_404_is_counted_not_recorded(gw):
    r = get(gw, "/nothing/here")
    assert r.status_code == 404 and r.text == "not found\n"
    metrics = get(gw, "/metrics").text
    assert "gatepost_unmatched_total 1" in metrics
    get(gw, "/counted/x")
    rows = gw.wait_rows(1)
    assert [row["route_id"] for row in rows] == ["counted"]


@pytest.mark.parametrize(
    "path",
    [
        "/search/..",
        "/search/%2e%2e",
        "/search/a%2Fb",
        "/search/a%5cb",
        "/search/a%0d%0aSet-Cookie:x",
        "/raw/a/../../etc/passwd",
        "/raw/a/%2e%2e/b",
        "/raw/a%2F..%2Fb",
        "/raw/x%0d%0aLocation:%20http://evil",
    ],
)
def test_security_refusals(gw, path):
    status, headers, _ = raw_request(gw.port, path)
    assert status == 400, headers
    assert "location" not in headers


def test_security_refusals_leave_no_event(gw):
    assert raw_request(gw.port, "/search/..")[0] == 400
    get(gw, "/counted/ok")
    rows = gw.wait_rows(1)
    assert [row["route_id"] for row in rows] == ["counted"]
    assert "gatepost_refused_total 1" in get(gw, "/metrics").text


def test_dnt_and_gpc_unattributed(gw):
    get(gw, "/counted/a", headers={"dnt": "1"})
    get(gw, "/counted/b", headers={"sec-gpc": "1"})
    get(gw, "/counted/c")
    rows = gw.wait_rows(3)
    assert [
        (r["dnt"], r["network"] is None, r["endpoint_id"] is None, r["origin_id"] is None)
        for r in rows
    ] == [
        (1, True, True, True),
        (1, True, True, True),
        (0, False, False, False),
    ]


def test_untrusted_forwarded_headers_are_ignored(gw):
    get(gw, "/counted/a", headers={"x-forwarded-for": "198.51.100.7"})
    get(gw, "/counted/b", headers={"forwarded": "for=198.51.100.7"})
    rows = gw.wait_rows(2)
    assert {r["network"] for r in rows} == {"127.0.0.0/24"}


def test_trusted_proxy_forwarded_for(start_gateway, upstream):
    gw = start_gateway(
        '[server]\ntrusted_proxies = ["127.0.0.0/8", "10.0.0.0/8"]\n[[routes]]\npath = "/c"\n',
        name="trusting",
    )
    get(gw, "/c", headers={"x-forwarded-for": "203.0.113.9, 10.1.2.3"})
    get(gw, "/c", headers={"forwarded": 'for="[2001:db8:cafe::17]:4711"'})
    get(gw, "/c", headers={"x-forwarded-for": "not-an-ip"})
    rows = gw.wait_rows(3)
    assert [r["network"] for r in rows] == ["203.0.113.0/24", "2001:db8:cafe::/48", "127.0.0.0/24"]


def test_no_raw_ip_in_database_file(start_gateway):
    gw = start_gateway(
        '[server]\ntrusted_proxies = ["127.0.0.0/8"]\n[[routes]]\npath = "/c/{x}"\n', name="rawip"
    )
    for n in range(20):
        get(gw, f"/c/{n}", "rawip.test", headers={"x-forwarded-for": "203.0.113.77"})
    get(gw, "/c/v6", "rawip.test", headers={"x-forwarded-for": "2001:db8:1234:5678::abcd"})
    gw.wait_rows(21)
    gw.stop()
    blob = b"".join(p.read_bytes() for p in gw.workdir.glob("events.sqlite3*"))
    assert b"203.0.113.77" not in blob and b"2001:db8:1234:5678" not in blob
    assert b"203.0.113.0/24" in blob
    assert b"127.0.0.1" not in blob  # the socket peer (the trusted proxy) is not stored either


def test_keyed_ids_stable_and_distinct(start_gateway):
    gw = start_gateway(
        '[server]\ntrusted_proxies = ["127.0.0.0/8"]\n[[routes]]\npath = "/c"\n', name="ids"
    )
    for ip, ua in [("203.0.113.1", "a"), ("203.0.113.1", "b"), ("203.0.113.2", "a")]:
        get(gw, "/c", headers={"x-forwarded-for": ip, "user-agent": ua})
    r1, r2, r3 = gw.wait_rows(3)
    assert r1["endpoint_id"] == r2["endpoint_id"] != r3["endpoint_id"]
    assert len({r1["origin_id"], r2["origin_id"], r3["origin_id"]}) == 3
    assert r1["network"] == r3["network"] == "203.0.113.0/24"


def test_health_endpoint(gw):
    r = get(gw, "/healthz")
    assert r.status_code == 200 and r.text == "ok\n"


def test_unused_port_sanity():
    assert free_port() > 0


def test_json_logs(start_gateway):
    gw = start_gateway('[[routes]]\npath = "/c"\n', name="jsonlog", extra_args=("--log-json",))
    get(gw, "/nothing")
    raw_request(gw.port, "/c/..")
    gw.stop()
    lines = [json.loads(line) for line in gw.log.read_text().splitlines() if line.strip()]
    assert any(
        entry["logger"] == "gateway.cli" and "serving 1 routes" in entry["message"]
        for entry in lines
    )
    assert all({"ts", "level", "logger", "message"} <= entry.keys() for entry in lines)


def test_duplicate_host_header_is_400(gw):
    status, _, body = raw_request(gw.port, "/tool/1.0/tool-linux-amd64.tar.gz", host="get.test",
                                  extra="Host: evil.test\r\n")  # fmt: skip
    assert status == 400 and b"Host" in body


def test_oversized_requests_get_4xx(gw):
    big = "X-Big: " + "b" * 100_000 + "\r\n"
    assert raw_request(gw.port, "/counted/a", extra=big)[0] == 431
    many = "".join(f"X-{n}: y\r\n" for n in range(500))
    assert raw_request(gw.port, "/counted/a", extra=many)[0] == 431
    assert raw_request(gw.port, "/counted/" + "a" * 200_000)[0] in (400, 414)
    assert get(gw, "/counted/ok").status_code == 200  # still serving


def test_absolute_form_target_cannot_steer_the_answer(gw, upstream):
    """uvicorn hands the app only the path of an absolute-form target: the Host header
    routes, and the foreign authority appears nowhere — not in the answer, not in the event."""
    status, headers, _ = raw_request(gw.port, "http://evil.test/tool/1.0/tool-linux-amd64.tar.gz",
                                     host="get.test")  # fmt: skip
    assert status == 307 and headers["location"].startswith(upstream.url + "/")
    for target in (
        "http://get.test@evil.test/tool/1.0/x",
        "//evil.test/tool/1.0/tool-linux-amd64.tar.gz",
    ):
        status, headers, _ = raw_request(gw.port, target, host="get.test")
        assert status in (400, 404) and "evil" not in headers.get("location", "")
    rows = gw.wait_rows(1)
    assert all("evil" not in (r["host"] + r["path"] + (r["upstream"] or "")) for r in rows)
