"""Configuration errors name file, line and problem; `check` and `explain` work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from servers import ROOT, clean_env

from gateway.config import load_config, parse_config
from gateway.errors import ConfigError


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=60,
    )


GOOD_HEAD = (
    '[server]\nport = 8080\n\n[[routes]]\nid = "ok"\npath = "/ok"\ntarget = "https://x.org/ok"\n'
)

BAD_CONFIGS = [
    # (text, expected line, expected words in the problem)
    (
        GOOD_HEAD + '\n[[routes]]\nid = "typo"\npath = "/a"\ntagret = "https://x.org/a"\n',
        12,
        "unknown key 'tagret' (did you mean 'target'?)",
    ),
    (
        GOOD_HEAD + '\n[[routes]]\npath = "/a/{ver"\ntarget = "https://x.org/a"\n',
        10,
        "bad path template",
    ),
    (GOOD_HEAD + '\n[[routes]]\npath = "/a"\ntarget = "x.org/a"\n', 11, "has no scheme"),
    (GOOD_HEAD + '\n[[routes]]\npath = "/ok"\ntarget = "https://y.org/ok"\n', 9, "duplicate route"),
    (GOOD_HEAD + '\n[[routes]]\nid = "ok"\npath = "/b"\n', 10, "duplicate id 'ok'"),
    (
        GOOD_HEAD + '\n[[routes]]\npath = "/a/{x}"\ntarget = "https://{x}.org/a"\n',
        11,
        "variable in its scheme or host",
    ),
    (
        GOOD_HEAD + '\n[[routes]]\npath = "/a/{+p}"\ntarget = "https://x.org{+p}.evil"\n',
        None,
        None,
    ),  # allowed, checked per request
    (
        GOOD_HEAD + '\n[[routes]]\npath = "/a/{x}"\ntarget = "https://x.org/{y}"\n',
        11,
        "target uses {y}, which the path does not capture",
    ),
    (GOOD_HEAD + '\n[[routes]]\npath = "/a"\ntarget = "ftp://x.org/a"\n', 11, "not http or https"),
    (
        GOOD_HEAD + '\n[[routes]]\npath = "/a"\nmode = "teleport"\ntarget = "https://x.org/a"\n',
        11,
        "'mode' must be one of",
    ),
    (
        GOOD_HEAD + '\n[[routes]]\npath = "/a"\nstatus = 200\ntarget = "https://x.org/a"\n',
        11,
        "status must be one of",
    ),
    (GOOD_HEAD + '\n[[routes]]\nkind = "ftp"\npath = "/a"\n', 10, "unknown kind 'ftp'"),
    (GOOD_HEAD + '\n[[routes]]\ntarget = "https://x.org/a"\n', 9, "missing required key 'path'"),
    (GOOD_HEAD + '\n[[routes]]\npath = "a/b"\n', 10, "must start with '/'"),
    (GOOD_HEAD + '\n[[routes]]\npath = "/{a}{b}"\n', 10, "need literal text between them"),
    (
        GOOD_HEAD + '\n[[routes]]\npath = "/a"\ntarget = "https://user:pw@x.org/a"\n',
        11,
        "credentials",
    ),
    (GOOD_HEAD + '\n[[routes]]\npath = "/a"\ntarget = "https://x.org/a\\r\\nX: y"\n', 11, "CR/LF"),
    (
        '[[routes]]\nkind = "oci"\nnamespaces = { "acme/*" = "ghcr.io" }\n',
        3,
        "must be registry/repository",
    ),
    (
        '[[routes]]\nkind = "oci"\nnamespaces = { "Acme/*" = "ghcr.io/acme/*" }\n',
        3,
        "not a valid image name",
    ),
    (
        '[[routes]]\nkind = "oci"\nnamespaces = { "a/*" = { upstream = "ghcr.io/a/*", blobs = "teleport" } }\n',
        3,
        "blobs must be",
    ),
    (
        '[[routes]]\nkind = "oci"\nnamespaces = { "a/{x,y}" = "ghcr.io/a/{p,q}" }\n',
        3,
        "same alternatives",
    ),
    (
        '[[routes]]\nkind = "pypi"\nupstream = "pypi.org/simple"\n',
        3,
        "upstream must be an http(s) URL",
    ),
    (
        '[[routes]]\nkind = "pypi"\nupstream = "https://pypi.org/simple/"\nfiles = "mirror"\n',
        4,
        "'files' must be one of",
    ),
    ('[[routes]]\nkind = "telemetry"\npath = "/p"\nmax_body = 0\n', 4, "max_body must be between"),
    (
        '[[routes]]\nkind = "telemetry"\npath = "/p"\ntokens = ["${GATEPOST_TEST_UNSET_TOKEN}"]\n',
        4,
        "GATEPOST_TEST_UNSET_TOKEN is not set",
    ),
    ('[[routes]]\nkind = "pixel"\npath = "/px/{name}.png"\n', 3, "must capture the pixel id"),
    (
        '[pixels.docs]\nname = "Docs"\nvalue = "urgent"\n',
        1,
        "value must be one of low, medium, high",
    ),
    ('[pixels.docs]\nvalue = "low"\ncolour = "red"\n', 1, "unknown key 'colour'"),
    ('[[routes]]\nkind = "link"\npath = "/go/{x}"\n', 1, "missing required key 'target'"),
    ('[server]\nport = "eighty"\n', 2, "port must be an integer"),
    ('[server]\ntrusted_proxies = ["10.0.0.0/33"]\n', 2, "trusted_proxies"),
    ("[sever]\nport = 1\n", 1, "unknown section 'sever' (did you mean 'server'?)"),
    ("[server]\nport = 8080\nport = 8081\n", 3, "TOML syntax error"),
    (
        '[[routes]]\npath = "/a"\ntarget = "https://x.org/a"\n\n[[routes]]\npath = "/b\n',
        6,
        "TOML syntax error",
    ),
]


@pytest.mark.parametrize(("text", "line", "problem"), BAD_CONFIGS)
def test_config_errors_name_line_and_problem(text, line, problem):
    if problem is None:
        parse_config(text, "routes.toml")
        return
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.toml")
    assert info.value.line == line, str(info.value)
    assert problem in str(info.value)
    assert str(info.value).startswith(f"routes.toml:{line}: ")


def test_check_cli_exits_nonzero_with_message(tmp_path):
    bad = tmp_path / "routes.toml"
    bad.write_text(BAD_CONFIGS[0][0])
    result = run_cli("check", "--config", str(bad))
    assert result.returncode == 2
    assert f"{bad}:12: route 'typo': unknown key 'tagret'" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_bad_config(tmp_path):
    bad = tmp_path / "routes.toml"
    bad.write_text('[[routes]]\npath = "/a"\ntarget = "nowhere"\n')
    result = run_cli("serve", "--config", str(bad), "--port", "1")
    assert result.returncode == 2 and ":3:" in result.stderr and "Traceback" not in result.stderr


def test_missing_config_file(tmp_path):
    result = run_cli("check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and "file not found" in result.stderr


def test_check_lists_routes_of_the_example_config():
    result = run_cli("check")
    assert result.returncode == 0, result.stderr
    assert "config/routes.toml: OK" in result.stdout
    assert "tool-release" in result.stdout and "prefix" in result.stdout
    assert len(load_config(ROOT / "config" / "routes.toml").routes) >= 4


def test_explain_shows_winner_and_reason(tmp_path):
    cfg = tmp_path / "routes.toml"
    cfg.write_text(
        '[[routes]]\nid = "var"\npath = "/p/{v}"\ntarget = "https://x.org/var/{v}"\n\n'
        '[[routes]]\nid = "lit"\npath = "/p/latest"\ntarget = "https://x.org/latest"\n\n'
        '[[routes]]\nid = "other"\nhost = "h.test"\npath = "/z"\n'
    )
    result = run_cli("explain", "--config", str(cfg), "https://any.test/p/latest?x=1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1. lit" in out and "MATCH" in out
    assert "decision: redirect 307 → https://x.org/latest?x=1" in out
    result = run_cli("explain", "--config", str(cfg), "https://any.test/p/1.0")
    assert "1. var" in result.stdout and "2." not in result.stdout  # "lit" is not even a candidate
    assert "https://x.org/var/1.0" in result.stdout
    result = run_cli("explain", "--config", str(cfg), "https://any.test/nothing")
    assert result.returncode == 1 and "404" in result.stdout
    result = run_cli("explain", "--config", str(cfg), "https://any.test/p/..%2Fetc")
    assert result.returncode == 1 and "refused" in result.stdout
