"""The pypi kind with real pip against a real static PEP 503 index on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest
from pyindex import build_index
from servers import free_port, wait_http

DISTS = [
    ("acme-tool", "0.9", "wheel"),
    ("acme-tool", "1.0", "wheel"),
    ("acme-tool", "1.1", "wheel"),
    ("acme-tool", "1.1", "sdist"),
    ("other-lib", "0.1", "wheel"),
]
YANKED = {"acme_tool-0.9-py3-none-any.whl": "broken build"}

CONFIG = """
[events]
flush_interval = 0.02

[[routes]]
id = "py"
kind = "pypi"
path = "/simple/"
upstream = "{U}/simple/"
projects = ["acme-tool", "Some_Other.Thing"]

[[routes]]
id = "all"
kind = "pypi"
path = "/all/"
upstream = "{U}/simple"
files = "proxy"
cache_seconds = 0

[[routes]]
id = "down"
kind = "pypi"
path = "/down/"
upstream = "http://127.0.0.1:{DEAD}/simple/"
"""


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    files = build_index(root, DISTS, YANKED)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/simple/", proc=proc)
    yield f"http://127.0.0.1:{port}", files, root
    proc.kill()
    proc.wait()


@pytest.fixture
def gw(start_gateway, index):
    return start_gateway(CONFIG.format(U=index[0], DEAD=free_port()))


@pytest.fixture(scope="module")
def pyenv(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(target)
    return target


# pip reports `"ci": true` in its User-Agent when any of these is set (pip's looks_like_ci).
PIP_CI_VARIABLES = ("BUILD_BUILDID", "BUILD_ID", "CI", "PIP_IS_CI")


def pip_env(**extra: str) -> dict[str, str]:
    """The environment pip runs in: no site config, no CI markers unless a test adds them."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIP_") and k not in PIP_CI_VARIABLES
    }
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update(extra)
    return env


def pip(env_dir: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "--isolated", "--disable-pip-version-check",
         "--no-cache-dir", *args],
        capture_output=True, text=True, env=pip_env(**extra_env), timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def installed_version(env_dir: Path) -> str:
    return subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import acme_tool; print(acme_tool.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_pip_install_then_upgrade_with_hash_checking(gw, index, pyenv, tmp_path):
    _, files, _ = index
    wheel = files["acme_tool-1.0-py3-none-any.whl"]
    req = tmp_path / "requirements.txt"
    req.write_text(f"acme-tool==1.0 --hash=sha256:{wheel.sha256}\n")
    pip(pyenv, "install", "--index-url", f"{gw.url}/simple/", "--require-hashes", "-r", str(req))
    assert installed_version(pyenv) == "1.0"
    # The upgrade runs as a CI job would: pip says so in its User-Agent, the event keeps it.
    pip(pyenv, "install", "--index-url", f"{gw.url}/simple/", "--upgrade", "acme-tool", CI="true")
    assert installed_version(pyenv) == "1.1"

    downloads = gw.wait_rows(2, where="type = 'download'")
    assert [(r["package"], r["version"]) for r in downloads] == [
        ("acme-tool", "1.0"),
        ("acme-tool", "1.1"),
    ]
    for row, in_ci in zip(downloads, (False, True), strict=True):
        data = json.loads(row["data"])
        assert (
            data["filetype"] == "wheel"
            and data["python_tag"] == "py3"
            and data["platform_tag"] == "any"
        )
        assert (
            data["installer"] == "pip" and data["ci"] is in_ci and data["python"].startswith("3.")
        )
        assert row["client_kind"] == "pip" and row["status"] == 307 and row["route_id"] == "py"
        assert row["upstream"].startswith(index[0] + "/files/")
    views = gw.rows("type = 'index_view'")
    assert views and {r["package"] for r in views} == {"acme-tool"}
    assert json.loads(views[0]["data"])["format"] in ("json", "html")


def test_pip_download_sdist(gw, tmp_path, pyenv):
    out = tmp_path / "dl"
    pip(pyenv, "download", "--index-url", f"{gw.url}/simple/", "--no-deps", "--no-binary", ":all:",
        "acme-tool==1.1", "-d", str(out))  # fmt: skip
    assert [p.name for p in out.iterdir()] == ["acme_tool-1.1.tar.gz"]
    (row,) = gw.wait_rows(1, where="type = 'download'")
    assert row["version"] == "1.1" and json.loads(row["data"])["filetype"] == "sdist"


def test_proxy_mode_streams_identical_bytes(gw, index, pyenv, tmp_path):
    _, files, root = index
    out = tmp_path / "dl"
    pip(
        pyenv, "download", "--index-url", f"{gw.url}/all/", "--no-deps", "other-lib", "-d", str(out)
    )
    got = (out / "other_lib-0.1-py3-none-any.whl").read_bytes()
    assert hashlib.sha256(got).hexdigest() == files["other_lib-0.1-py3-none-any.whl"].sha256
    (row,) = gw.wait_rows(1, where="type = 'download'")
    assert row["route_id"] == "all" and row["status"] == 200 and row["bytes_sent"] == len(got)


def test_json_page_follows_pep_691(gw, index):
    _, files, _ = index
    r = httpx.get(
        gw.url + "/simple/acme-tool/", headers={"accept": "application/vnd.pypi.simple.v1+json"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.pypi.simple.v1+json"
    assert r.headers["vary"] == "Accept"
    doc = r.json()
    assert doc["meta"]["api-version"].startswith("1.") and doc["name"] == "acme-tool"
    by_name = {f["filename"]: f for f in doc["files"]}
    assert set(by_name) == {n for n, f in files.items() if f.project == "acme-tool"}
    wheel = by_name["acme_tool-1.0-py3-none-any.whl"]
    assert wheel["url"] == "acme_tool-1.0-py3-none-any.whl"  # relative: through the gateway
    assert wheel["hashes"] == {"sha256": files["acme_tool-1.0-py3-none-any.whl"].sha256}
    assert wheel["requires-python"] == ">=3.8"
    meta = {"sha256": files["acme_tool-1.0-py3-none-any.whl"].metadata_sha256}
    assert wheel["core-metadata"] == meta and wheel["dist-info-metadata"] == meta
    assert by_name["acme_tool-0.9-py3-none-any.whl"]["yanked"] == "broken build"
    assert "yanked" not in wheel and "core-metadata" not in by_name["acme_tool-1.1.tar.gz"]
    for f in doc["files"]:
        assert set(f) <= {"filename", "url", "hashes", "requires-python", "core-metadata",
                          "dist-info-metadata", "yanked", "gpg-sig", "size", "upload-time"}  # fmt: skip


def test_html_page_keeps_what_pip_needs(gw, index):
    _, files, _ = index
    r = httpx.get(gw.url + "/simple/acme-tool/", headers={"accept": "text/html"})
    assert r.headers["content-type"] == "text/html"
    page = r.text
    sha = files["acme_tool-1.0-py3-none-any.whl"].sha256
    meta = files["acme_tool-1.0-py3-none-any.whl"].metadata_sha256
    assert f'href="acme_tool-1.0-py3-none-any.whl#sha256={sha}"' in page
    assert 'data-requires-python="&gt;=3.8"' in page
    assert (
        f'data-dist-info-metadata="sha256={meta}"' in page
        and f'data-core-metadata="sha256={meta}"' in page
    )
    assert 'data-yanked="broken build"' in page
    r = httpx.get(
        gw.url + "/simple/acme-tool/", headers={"accept": "application/vnd.pypi.simple.v1+html"}
    )
    assert r.headers["content-type"] == "application/vnd.pypi.simple.v1+html"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/html"),
        ("*/*", "text/html"),
        (
            "text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.9",
            "application/vnd.pypi.simple.v1+json",
        ),
        ("application/vnd.pypi.simple.v1+json;q=0.2, text/html", "text/html"),
        ("application/vnd.pypi.simple.latest+json", "application/vnd.pypi.simple.v1+json"),
        (
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
            "application/vnd.pypi.simple.v1+json",
        ),
        ("application/xml", 406),
        ("application/vnd.pypi.simple.v1+json;q=0", 406),
    ],
)
def test_content_negotiation(gw, accept, expected):
    headers = {"accept": accept} if accept is not None else {}
    with httpx.Client() as client:
        if accept is None:
            client.headers.pop("accept")
        r = client.get(gw.url + "/simple/acme-tool/", headers=headers)
    if expected == 406:
        assert r.status_code == 406
    else:
        assert r.status_code == 200 and r.headers["content-type"] == expected


def test_name_normalisation_redirects(gw):
    r = httpx.get(gw.url + "/simple/Acme_Tool/")
    assert r.status_code == 301 and r.headers["location"] == "/simple/acme-tool/"
    r = httpx.get(gw.url + "/simple/acme.tool")
    assert r.status_code == 301 and r.headers["location"] == "/simple/acme-tool/"
    r = httpx.get(gw.url + "/simple/Acme_Tool/", follow_redirects=True)
    assert r.status_code == 200 and "acme_tool-1.0" in r.text


def test_unknown_and_unlisted_projects(gw):
    assert (
        httpx.get(gw.url + "/simple/other-lib/").status_code == 404
    )  # upstream has it, not listed
    assert httpx.get(gw.url + "/simple/other-lib/other_lib-0.1-py3-none-any.whl").status_code == 404
    assert httpx.get(gw.url + "/all/no-such-project/").status_code == 404
    assert httpx.get(gw.url + "/simple/acme-tool/not-a-file.whl").status_code == 404
    root = httpx.get(gw.url + "/simple/")
    assert (
        root.status_code == 200
        and 'href="acme-tool/"' in root.text
        and "other-lib" not in root.text
    )


def test_upstream_down_is_502(gw):
    r = httpx.get(gw.url + "/down/acme-tool/")
    assert r.status_code == 502
    (row,) = gw.wait_rows(1)
    assert row["status"] == 502 and row["outcome"] == "upstream_error"


def test_etag_304(gw):
    first = httpx.get(gw.url + "/simple/acme-tool/")
    etag = first.headers["etag"]
    second = httpx.get(gw.url + "/simple/acme-tool/", headers={"if-none-match": etag})
    assert second.status_code == 304 and second.content == b""
    other = httpx.get(
        gw.url + "/simple/acme-tool/",
        headers={"if-none-match": etag, "accept": "application/vnd.pypi.simple.v1+json"},
    )
    assert other.status_code == 200  # a different representation has a different tag


def test_metadata_file(gw, index):
    _, files, _ = index
    r = httpx.get(
        gw.url + "/simple/acme-tool/acme_tool-1.0-py3-none-any.whl.metadata", follow_redirects=True
    )
    assert r.status_code == 200 and b"Version: 1.0" in r.content
    assert (
        hashlib.sha256(r.content).hexdigest()
        == files["acme_tool-1.0-py3-none-any.whl"].metadata_sha256
    )
    assert httpx.get(gw.url + "/simple/acme-tool/acme_tool-1.1.tar.gz.metadata").status_code == 404
    rows = gw.wait_rows(1, where="type = 'metadata'")
    assert rows[0]["version"] == "1.0"
