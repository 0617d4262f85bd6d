"""Template rules, and property tests: the compiled expander equals uritemplate, and no
request can steer an outgoing URL to another scheme or host."""

from __future__ import annotations

import string

import pytest
import uritemplate
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.core import Gateway
from gateway.decisions import Proxy, Redirect
from gateway.request import Request
from gateway.templates import PathTemplate, TargetTemplate, UnsafeValue, normalize_raw_path


@pytest.mark.parametrize(
    ("template", "path", "query", "expected"),
    [
        (
            "/tool/{version}/tool-{os}-{arch}.tar.gz",
            "/tool/1.2/tool-linux-amd64.tar.gz",
            "",
            {"version": "1.2", "os": "linux", "arch": "amd64"},
        ),
        ("/tool/<version>/<+file>", "/tool/1.2/a/b/c", "", {"version": "1.2", "file": "a/b/c"}),
        ("/x/{a}", "/x/a/b", "", None),
        ("/x/{+a}", "/x/", "", None),
        (
            "/data?drilldowns={a}&measures={b}",
            "/data",
            "measures=M&x=1&drilldowns=D",
            {"a": "D", "b": "M"},
        ),
        ("/data?format=json", "/data", "format=xml", None),
        ("/s/{term}", "/s/hello%20world", "", {"term": "hello world"}),
        ("/caf\u00e9/{x}", "/caf%c3%a9/1", "", {"x": "1"}),
        ("/~u/{x}", "/%7Eu/1", "", {"x": "1"}),
    ],
)
def test_path_template_matching(template, path, query, expected):
    assert PathTemplate.compile(template).match(normalize_raw_path(path), query) == expected


def test_encoded_slash_never_splits_a_segment():
    t = PathTemplate.compile("/x/{a}")
    with pytest.raises(UnsafeValue):
        t.match(normalize_raw_path("/x/a%2Fb"), "")  # one segment holding an encoded slash
    assert PathTemplate.compile("/x/{a}/{b}").match(normalize_raw_path("/x/a%2Fb"), "") is None


def test_reserved_and_simple_expansion():
    assert (
        TargetTemplate.compile("https://h.org/{v}").expand({"v": "really+nice"})
        == "https://h.org/really%2Bnice"
    )
    assert (
        TargetTemplate.compile("https://h.org/{+v}").expand({"v": "a/b c"})
        == "https://h.org/a/b%20c"
    )
    assert (
        TargetTemplate.compile("https://h.org/x{?a,b}").expand({"a": "1", "b": "x y"})
        == "https://h.org/x?a=1&b=x%20y"
    )


@pytest.mark.parametrize(
    ("target", "values"),
    [
        ("https://h.org{+p}", {"p": ".evil.test/x"}),
        ("https://h.org{+p}", {"p": "@evil.test/x"}),
        ("https://h.org{+p}", {"p": ":1@evil.test"}),
        ("https://h.org/{+p}", {"p": "a%0d%0aX: y"}),
        ("https://h.org/{+p}", {"p": "\u00e9%20"}),
    ],
)
def test_expansion_leaving_origin_is_refused(target, values):
    with pytest.raises(UnsafeValue):
        TargetTemplate.compile(target).expand(values)


# ---------------------------------------------------------------- property tests

values_st = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
    st.lists(
        st.sampled_from(["%", "%2F", "%20", "%zz", "a", "/", "\u00e9", " ", "+", ":", "1.0", "~"]),
        max_size=6,
    ).map("".join),
)
names = st.sampled_from(["a", "b", "version", "path"])
expr_st = st.builds(
    lambda op, names: "{" + op + ",".join(names) + "}",
    st.sampled_from(["", "+", "#", ".", "/", ";", "?", "&"]),
    st.lists(names, min_size=1, max_size=2, unique=True),
)
literal_st = st.text(alphabet=string.ascii_letters + string.digits + "-._/", max_size=5)


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(st.tuples(literal_st, expr_st), min_size=1, max_size=4),
    values=st.dictionaries(names, values_st),
)
def test_compiled_expansion_equals_uritemplate(parts, values):
    template = "https://h.example/" + "".join(lit + expr for lit, expr in parts)
    assert TargetTemplate.compile(template).render(values) == uritemplate.URITemplate(
        template
    ).expand(values)


ROUTES = """
[[routes]]
id = "seg"
path = "/a/{x}/f-{y}.tgz"
target = "https://dl.example.org/a/{x}/{y}"

[[routes]]
id = "rest"
path = "/r/{+p}"
target = "https://dl.example.org{+p}"

[[routes]]
id = "rest2"
path = "/s/{+p}"
target = "https://dl.example.org/s/{+p}?k=v"
mode = "proxy"

[[routes]]
id = "prefix"
kind = "prefix"
prefix = "/pre/"
target = "https://files.example.org/base/"

[[routes]]
id = "query"
path = "/q?v={v}"
target = "https://dl.example.org/q/{v}"
"""
GATEWAY = Gateway(parse_config(ROUTES), key=b"k")
ORIGINS = {r.id: r.target.origin for r in GATEWAY.config.routes}
path_chars = st.sampled_from(
    list("ab./%2Ff@:?#\\\r\n ") + ["%2e", "%2F", "%0d%0a", "..", "//", "%40", "%5C", "\u00e9"]
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from(["/a/", "/r/", "/s/", "/pre/", "/q", "/"]),
    body=st.lists(path_chars, max_size=12).map("".join),
    query=st.lists(path_chars, max_size=6).map(lambda x: "v=" + "".join(x)),
)
@example(prefix="/q", body="", query="v=..")
@example(prefix="/s/", body="%2e", query="")
@example(prefix="/r/", body=".evil.test/x", query="")
@example(prefix="/r/", body="@evil.test", query="")
def test_no_request_leaves_the_target_origin(prefix, body, query):
    request = Request("GET", "h.test", prefix + body, query, [], "203.0.113.1")
    outcome = GATEWAY.handle(request)
    if outcome is None:
        return
    decision = outcome.decision
    if isinstance(decision, (Redirect, Proxy)):
        origin = ORIGINS[outcome.route.id]
        url = decision.url
        assert url.startswith(origin) and (len(url) == len(origin) or url[len(origin)] in "/?#")
        assert not any(c in url for c in "\r\n \\") and url.isascii()
        segments = url[len(origin) :].partition("?")[0].split("/")
        assert ".." not in segments and "." not in segments
    else:
        assert decision.status in (200, 400, 405)


@pytest.mark.parametrize("value", ["a/./b", "a/../b", "a/%2e%2e/b", "a/%2E/b", "..", "."])
def test_dot_segments_never_leave_the_expander(value):
    with pytest.raises(UnsafeValue):
        TargetTemplate.compile("https://h.org/{+p}").expand({"p": value})


PIECES = list("ab./%2Ff@:?#\\\r\n ") + ["%2e", "%2F", "%0d%0a", "..", "//", "%40", "%5C", "\u00e9"]
PREFIXES = ["/a/", "/r/", "/s/", "/pre/", "/q", "/"]


@settings(max_examples=500, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**64))
def test_100k_generated_requests_stay_on_their_origin(seed):
    """500 Hypothesis seeds × 200 requests each = 100,000 generated cases through the core."""
    import random

    rng = random.Random(seed)
    for _ in range(200):
        body = "".join(rng.choice(PIECES) for _ in range(rng.randrange(13)))
        query = "v=" + "".join(rng.choice(PIECES) for _ in range(rng.randrange(7)))
        test_no_request_leaves_the_target_origin.hypothesis.inner_test(
            rng.choice(PREFIXES), body, query
        )


@pytest.mark.parametrize(
    ("template", "matches", "misses"),
    [
        ("/a/b", ["/a/b"], ["/a/bc", "/a/b/", "/a", "/ab"]),
        ("/docs/", ["/docs/"], ["/docs", "/docs/x"]),
        ("/a/{x}", ["/a/1"], ["/ab/1", "/a/", "/a/1/2"]),
        ("/{x}/y", ["/1/y"], ["/1/yy", "//y"]),
        ("/a{x}/y", ["/a1/y"], ["/b1/y"]),
        ("/a/{x}/c/{+rest}", ["/a/1/c/d/e"], ["/a/1/cc/d", "/b/1/c/d"]),
    ],
)
def test_literal_prefix_and_pattern_split(template, matches, misses):
    t = PathTemplate.compile(template)
    for path in matches:
        assert t.match(path, "") is not None, path
    for path in misses:
        assert t.match(path, "") is None, path


def test_routes_of_one_shape_share_their_compiled_pattern():
    one = PathTemplate.compile("/pkg1/{version}/tool-{os}.tar.gz")
    two = PathTemplate.compile("/pkg2/{version}/tool-{os}.tar.gz")
    assert one.tail is two.tail and one.prefix == "/pkg1/" and two.prefix == "/pkg2/"
    assert two.match("/pkg2/1.0/tool-linux.tar.gz", "") == {"version": "1.0", "os": "linux"}
    assert one.match("/pkg2/1.0/tool-linux.tar.gz", "") is None


def _segment(draw, index: int, last: bool) -> str:
    choices = ["a", "b", "pkg1", f"{{v{index}}}", f"p{{v{index}}}"]
    if last:
        choices.append(f"{{+r{index}}}")
    return draw(st.sampled_from(choices))


@st.composite
def route_sets(draw) -> str:
    routes = []
    for n in range(draw(st.integers(min_value=1, max_value=8))):
        length = draw(st.integers(min_value=1, max_value=3))
        path = "/" + "/".join(_segment(draw, i, i == length - 1) for i in range(length))
        host = draw(st.sampled_from(["", 'host = "h.test"\n']))
        if draw(st.integers(0, 5)) == 0:  # a kind matched by its own match(), not a template
            prefix = draw(st.sampled_from(["/", "/a/", "/a/b/", "/pkg1/"]))
            routes.append(f'[[routes]]\nid = "r{n}"\nkind = "prefix"\n{host}prefix = "{prefix}"\n'
                          'target = "https://x.test/"\n')  # fmt: skip
            continue
        query = draw(st.sampled_from(["", "?q={q}", "?q=1"]))
        routes.append(f'[[routes]]\nid = "r{n}"\n{host}path = "{path}{query}"\n')
    return "\n".join(routes)


ROUTER_PATHS = st.lists(st.sampled_from(["a", "b", "pkg1", "pa", "1", "", "%2F", "x.y"]),
                        min_size=1, max_size=4).map(lambda s: "/" + "/".join(s))  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(text=route_sets(), paths=st.lists(ROUTER_PATHS, min_size=1, max_size=10),
       host=st.sampled_from(["h.test", "other.test"]), query=st.sampled_from(["", "q=1", "q=2"]))  # fmt: skip
def test_router_equals_a_plain_scan_in_documented_precedence(text, paths, host, query):
    """The trie with its leaf dictionaries and inline tail matchers picks exactly the route a
    plain scan of every route picks: host routes first, then the deepest literal prefix,
    then the route's sort key; each candidate checked with its own ``match``."""
    from gateway.errors import ConfigError
    from gateway.router import Router

    try:
        routes = parse_config(text).routes
    except ConfigError:
        return  # duplicate routes are refused at load time
    router = Router(routes)
    for path in paths:
        norm = normalize_raw_path(path)
        expected = None
        for group in ([r for r in routes if host in r.hosts], [r for r in routes if not r.hosts]):
            ranked = sorted(group, key=lambda r: (-len(r.leading_literals()), r.sort_key()))
            try:
                expected = next(
                    ((r, v) for r in ranked if (v := r.match(norm, query)) is not None), None
                )
            except UnsafeValue:
                expected = "refused"
                break
            if expected is not None:
                break
        try:
            found = router.match(host, path, query)
        except UnsafeValue:
            assert expected == "refused", path
            continue
        if expected is None:
            assert found is None, path
        else:
            assert found is not None and (found.route, found.values) == expected, path
