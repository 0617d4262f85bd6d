"""Container registry fronting with real registries and skopeo, end to end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
from oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    Registry,
    build_image,
    build_multiarch,
    make_signing_material,
    pulled_manifest_digest,
    push,
    skopeo,
    start_token_service,
)
from servers import free_port

MANIFEST_ACCEPT = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    OCI_MANIFEST,
    OCI_INDEX,
]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("skopeo-home")


@pytest.fixture(scope="module")
def registries(tmp_path_factory, home):
    """Registry A and B, both holding acme-org/hello:1.0 (same image) and a multi-arch index."""
    base = tmp_path_factory.mktemp("registries")
    a, b = Registry(base / "a"), Registry(base / "b")
    layout = base / "layout"
    digest = build_image(layout, "1.0", {"hello": b"hello, gatepost\n"})
    multi = base / "multi"
    index_digest = build_multiarch(multi, "multi")
    for reg in (a, b):
        push(home, layout, "1.0", f"{reg.address}/acme-org/hello:1.0")
        push(home, multi, "multi", f"{reg.address}/acme-org/hello:multi")
    yield {"a": a, "b": b, "digest": digest, "index_digest": index_digest, "layout": layout}
    a.stop()
    b.stop()


def config(registry: str, blobs: str = "redirect") -> str:
    return f"""
[events]
flush_interval = 0.02

[[routes]]
id = "registry"
kind = "oci"
blobs = "{blobs}"
namespaces = {{ "acme/*" = "http://{registry}/acme-org/*", "tool" = {{ upstream = "http://{registry}/acme-org/hello", package = "acme-tool" }}, "alt/{{one,two}}" = "http://{registry}/acme-org/{{one,two}}" }}
"""


def pull(home: Path, gw, name: str, out: Path, *extra: str) -> str:
    skopeo(
        home,
        "copy",
        "--src-tls-verify=false",
        *extra,
        f"docker://127.0.0.1:{gw.port}/{name}",
        f"oci:{out}:x",
    )
    return pulled_manifest_digest(out)


def test_pull_through_gateway_matches_digest(start_gateway, registries, home, tmp_path):
    gw = start_gateway(config(registries["a"].address))
    assert pull(home, gw, "acme/hello:1.0", tmp_path / "out") == registries["digest"]
    blob_files = {p.name for p in (tmp_path / "out" / "blobs" / "sha256").iterdir()}
    assert registries["digest"].split(":")[1] in blob_files
    pulls = gw.wait_rows(1, where="type = 'pull'")
    row = pulls[-1]
    assert row["route_kind"] == "oci" and row["package"] == "acme/hello" and row["version"] == "1.0"
    assert row["client_kind"] == "skopeo"
    data = json.loads(row["data"])
    assert data["image"] == "acme/hello" and data["reference"] == "1.0"
    assert data["digest"] == registries["digest"] and data["media_type"] == OCI_MANIFEST
    assert data["upstream"] == f"http://{registries['a'].address}/acme-org/hello"
    blobs = gw.wait_rows(2, where="type = 'blob'")  # written after the pull, maybe a batch later
    assert len(blobs) == 2 and {r["status"] for r in blobs} == {307}  # config + layer, redirected


def test_exact_name_and_brace_alternatives(start_gateway, registries, home, tmp_path):
    gw = start_gateway(config(registries["a"].address))
    assert pull(home, gw, "tool:1.0", tmp_path / "tool") == registries["digest"]
    rows = gw.wait_rows(1, where="type = 'pull'")
    assert rows[-1]["package"] == "acme-tool"
    r = httpx.get(f"{gw.url}/v2/alt/one/manifests/1.0", headers={"accept": OCI_MANIFEST})
    assert r.status_code == 404 and r.json()["errors"][0]["code"] in (
        "NAME_UNKNOWN",
        "MANIFEST_UNKNOWN",
    )
    r = httpx.get(f"{gw.url}/v2/alt/three/manifests/1.0")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_multiarch_index(start_gateway, registries, home, tmp_path):
    gw = start_gateway(config(registries["a"].address))
    assert (
        pull(home, gw, "acme/hello:multi", tmp_path / "multi", "--all")
        == registries["index_digest"]
    )
    rows = gw.wait_rows(3, where="type = 'pull'")
    media = {json.loads(r["data"])["media_type"] for r in rows}
    assert OCI_INDEX in media and OCI_MANIFEST in media


def test_manifest_headers_head_by_digest_and_errors(start_gateway, registries):
    gw = start_gateway(config(registries["a"].address))
    digest = registries["digest"]
    direct = httpx.get(
        f"http://{registries['a'].address}/v2/acme-org/hello/manifests/1.0",
        headers={"accept": OCI_MANIFEST},
    )
    # several separate Accept lines, as docker sends them
    headers = [("accept", a) for a in MANIFEST_ACCEPT]
    got = httpx.get(f"{gw.url}/v2/acme/hello/manifests/1.0", headers=headers)
    assert got.status_code == 200 and got.content == direct.content
    for h in ("content-type", "docker-content-digest", "content-length", "etag"):
        assert got.headers[h] == direct.headers[h], h
    assert got.headers["docker-distribution-api-version"] == "registry/2.0"
    head = httpx.head(f"{gw.url}/v2/acme/hello/manifests/{digest}", headers=headers)
    assert head.status_code == 200 and head.headers["docker-content-digest"] == digest
    assert head.headers["content-length"] == direct.headers["content-length"]
    missing = httpx.get(f"{gw.url}/v2/acme/hello/manifests/9.9", headers=headers)
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    unmapped = httpx.get(f"{gw.url}/v2/other/thing/manifests/1.0")
    assert unmapped.status_code == 404 and unmapped.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert httpx.get(f"{gw.url}/v2/_catalog").status_code == 404
    assert httpx.get(f"{gw.url}/v2/other/thing/tags/list").status_code == 404
    tags = httpx.get(f"{gw.url}/v2/acme/hello/tags/list")
    assert tags.status_code == 200 and tags.json()["name"] == "acme/hello"
    assert sorted(tags.json()["tags"]) == ["1.0", "multi"]
    base = httpx.get(f"{gw.url}/v2/")
    assert (
        base.status_code == 200
        and base.headers["docker-distribution-api-version"] == "registry/2.0"
    )
    rows = gw.wait_rows(2, where="type in ('pull', 'pull_check')")
    assert [r["type"] for r in rows][:2] == ["pull", "pull_check"]
    assert json.loads(rows[1]["data"])["digest"] == digest


def test_push_is_refused(start_gateway, registries):
    gw = start_gateway(config(registries["a"].address))
    for method, path in [("POST", "/v2/acme/hello/blobs/uploads/"), ("PUT", "/v2/acme/hello/manifests/2.0"),
                         ("DELETE", "/v2/acme/hello/manifests/1.0"), ("PATCH", "/v2/acme/hello/blobs/uploads/x")]:  # fmt: skip
        r = httpx.request(method, gw.url + path, content=b"{}")
        assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED", (
            method,
            path,
        )


def test_upstream_down_is_502_json(start_gateway):
    gw = start_gateway(config(f"127.0.0.1:{free_port()}"))
    r = httpx.get(f"{gw.url}/v2/acme/hello/manifests/1.0")
    assert r.status_code == 502 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
    (row,) = gw.wait_rows(1)
    assert row["status"] == 502 and row["outcome"] == "upstream_error"


def test_registry_swap_keeps_the_same_pull_command(start_gateway, registries, home, tmp_path):
    first = start_gateway(config(registries["a"].address), name="before")
    assert pull(home, first, "acme/hello:1.0", tmp_path / "before") == registries["digest"]
    first.stop()
    registries["a"].stop()  # registry A is gone for good
    second = start_gateway(config(registries["b"].address), name="after")
    assert pull(home, second, "acme/hello:1.0", tmp_path / "after") == registries["digest"]
    row = second.wait_rows(1, where="type = 'pull'")[0]
    assert json.loads(row["data"])["upstream"] == f"http://{registries['b'].address}/acme-org/hello"


# --------------------------------------------------------------------------- blobs


def test_blob_proxy_mode_streams_200mb_with_bounded_memory(
    start_gateway, registries, home, tmp_path
):
    layout = tmp_path / "big"
    payload = os.urandom(1024 * 1024)
    build_image(layout, "big", {"big.bin": payload * 200}, compress=False)
    del payload
    push(home, layout, "big", f"{registries['b'].address}/acme-org/big:1.0")
    shutil.rmtree(layout)
    direct = httpx.head(
        f"http://{registries['b'].address}/v2/acme-org/big/manifests/1.0",
        headers={"accept": OCI_MANIFEST},
    )
    digest = direct.headers["docker-content-digest"]  # skopeo may have compressed the layer on push
    gw = start_gateway(config(registries["b"].address, blobs="proxy"))
    before = gw.rss_kib()
    assert pull(home, gw, "acme/big:1.0", tmp_path / "out") == digest
    growth = (gw.peak_rss_kib() - before) / 1024
    assert growth < 60, f"gateway grew {growth:.0f} MiB while streaming a 200 MiB layer"
    blobs = gw.wait_rows(2, where="type = 'blob'")
    assert max(r["bytes_sent"] for r in blobs) > 200 * 1024 * 1024
    assert {r["status"] for r in blobs} == {200}


def test_blob_range_in_proxy_mode(start_gateway, registries):
    gw = start_gateway(config(registries["b"].address, blobs="proxy"))
    manifest = httpx.get(
        f"{gw.url}/v2/acme/hello/manifests/1.0", headers={"accept": OCI_MANIFEST}
    ).json()
    layer = manifest["layers"][0]["digest"]
    full = httpx.get(f"{gw.url}/v2/acme/hello/blobs/{layer}")
    part = httpx.get(f"{gw.url}/v2/acme/hello/blobs/{layer}", headers={"range": "bytes=10-19"})
    assert (
        full.status_code == 200 and part.status_code == 206 and part.content == full.content[10:20]
    )


# --------------------------------------------------------------------------- auth

USERS = {"alice": "wonderland"}


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, home):
    """A registry with token auth (JWT from a test token service) whose blobs redirect to a
    plain static file server, like object storage behind a real registry."""
    base = tmp_path_factory.mktemp("token-registry")
    bundle, key_pem, kid = make_signing_material(base)
    token_proc, token_port = start_token_service(base, key_pem, kid, "test-registry", USERS)
    storage_port = free_port()
    storage_root = base / "reg" / "data"
    storage_root.mkdir(parents=True)
    import subprocess
    import sys

    from servers import wait_http

    static = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(storage_port), "--bind", "127.0.0.1", "--directory", str(storage_root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{storage_port}/", proc=static)
    auth = {"token": {"realm": f"http://127.0.0.1:{token_port}/token", "service": "test-registry",
                      "issuer": "gatepost-test-issuer", "rootcertbundle": str(bundle)}}  # fmt: skip
    extra = (
        "middleware:\n  storage:\n    - name: redirect\n"
        f"      options: {{baseurl: 'http://127.0.0.1:{storage_port}/'}}\n"
    )
    reg = Registry(base / "reg", auth=auth, extra=extra)
    layout = base / "layout"
    digest = build_image(layout, "1.0", {"hello": b"hello, token auth\n"})
    for repo in ("public/hello", "private/hello"):
        push(home, layout, "1.0", f"{reg.address}/{repo}:1.0", "--dest-creds", "alice:wonderland")
    yield {
        "registry": reg,
        "digest": digest,
        "token_log": base / "token.log",
        "storage_port": storage_port,
    }
    reg.stop()
    for proc in (token_proc, static):
        proc.kill()
        proc.wait()


def token_config(reg: Registry) -> str:
    return f"""
[[routes]]
kind = "oci"
namespaces = {{ "acme/*" = "http://{reg.address}/public/*", "secret/*" = "http://{reg.address}/private/*" }}
"""


def test_token_challenge_is_rewritten_to_the_gateway(start_gateway, token_registry):
    gw = start_gateway(token_config(token_registry["registry"]))
    base = httpx.get(f"{gw.url}/v2/")
    assert base.status_code == 401
    assert (
        base.headers["www-authenticate"]
        == f'Bearer realm="{gw.url}/v2/token",service="127.0.0.1:{gw.port}"'
    )
    r = httpx.get(f"{gw.url}/v2/acme/hello/manifests/1.0", headers={"accept": OCI_MANIFEST})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == (
        f'Bearer realm="{gw.url}/v2/token",service="127.0.0.1:{gw.port}",scope="repository:acme/hello:pull"'
    )
    token = httpx.get(
        f"{gw.url}/v2/token",
        params={"service": f"127.0.0.1:{gw.port}", "scope": "repository:acme/hello:pull"},
    )
    assert token.status_code == 200 and token.json()["token"]
    sent = json.loads(token_registry["token_log"].read_text().splitlines()[-1])
    assert ["service", "test-registry"] in sent["params"]
    assert ["scope", "repository:public/hello:pull"] in sent["params"]
    authed = httpx.get(f"{gw.url}/v2/acme/hello/manifests/1.0",
                       headers={"accept": OCI_MANIFEST, "authorization": f"Bearer {token.json()['token']}"})  # fmt: skip
    assert (
        authed.status_code == 200
        and authed.headers["docker-content-digest"] == token_registry["digest"]
    )


def test_anonymous_pull_with_token_auth(start_gateway, token_registry, home, tmp_path):
    gw = start_gateway(token_config(token_registry["registry"]))
    assert pull(home, gw, "acme/hello:1.0", tmp_path / "anon") == token_registry["digest"]
    blobs = gw.wait_rows(2, where="type = 'blob'")
    # the registry redirects blobs to its storage; the gateway hands that redirect on
    assert all(r["status"] == 307 for r in blobs)
    assert all(json.loads(r["data"]).get("storage_redirect") for r in blobs)
    denied = skopeo(home, "copy", "--src-tls-verify=false", f"docker://127.0.0.1:{gw.port}/secret/hello:1.0",
                    f"oci:{tmp_path / 'denied'}:x", check=False)  # fmt: skip
    assert denied.returncode != 0


def test_pull_with_credentials_through_token_broker(start_gateway, token_registry, home, tmp_path):
    gw = start_gateway(token_config(token_registry["registry"]))
    digest = pull(
        home, gw, "secret/hello:1.0", tmp_path / "creds", "--src-creds", "alice:wonderland"
    )
    assert digest == token_registry["digest"]
    users = [
        json.loads(line)["user"] for line in token_registry["token_log"].read_text().splitlines()
    ]
    assert users[-1] == "alice"
    wrong = skopeo(home, "copy", "--src-tls-verify=false", "--src-creds", "alice:nope",
                   f"docker://127.0.0.1:{gw.port}/secret/hello:1.0", f"oci:{tmp_path / 'wrong'}:x", check=False)  # fmt: skip
    assert wrong.returncode != 0


def test_token_endpoint_post_like_containerd(start_gateway, token_registry):
    gw = start_gateway(token_config(token_registry["registry"]))
    r = httpx.post(f"{gw.url}/v2/token", data={
        "grant_type": "password", "client_id": "containerd-client", "username": "alice",
        "password": "wonderland", "service": f"127.0.0.1:{gw.port}", "scope": "repository:secret/hello:pull"})  # fmt: skip
    assert r.status_code == 200 and r.json()["access_token"]
    sent = json.loads(token_registry["token_log"].read_text().splitlines()[-1])
    assert sent["method"] == "POST" and ["scope", "repository:private/hello:pull"] in sent["params"]
    bad = httpx.post(f"{gw.url}/v2/token", data={"grant_type": "password", "username": "alice", "password": "x",
                                                 "service": "s", "scope": "repository:secret/hello:pull"})  # fmt: skip
    assert bad.status_code == 401


def test_basic_auth_passes_through(start_gateway, registries, home, tmp_path):
    import bcrypt

    base = tmp_path / "basic"
    base.mkdir()
    htpasswd = base / "htpasswd"
    htpasswd.write_text(
        "bob:" + bcrypt.hashpw(b"builder", bcrypt.gensalt(rounds=4)).decode() + "\n"
    )
    reg = Registry(base / "reg", auth={"htpasswd": {"realm": "basic-realm", "path": str(htpasswd)}})
    try:
        push(
            home,
            registries["layout"],
            "1.0",
            f"{reg.address}/acme-org/hello:1.0",
            "--dest-creds",
            "bob:builder",
        )
        gw = start_gateway(config(reg.address), name="basic-gw")
        assert httpx.get(f"{gw.url}/v2/").status_code == 401
        assert (
            pull(home, gw, "acme/hello:1.0", tmp_path / "ok", "--src-creds", "bob:builder")
            == registries["digest"]
        )
        anon = skopeo(home, "copy", "--src-tls-verify=false", f"docker://127.0.0.1:{gw.port}/acme/hello:1.0",
                      f"oci:{tmp_path / 'anon'}:x", check=False)  # fmt: skip
        assert anon.returncode != 0
    finally:
        reg.stop()


def test_podman_pull(start_gateway, registries, tmp_path):
    podman = shutil.which("podman")
    assert podman, "tests/run.sh installs Debian's podman"
    gw = start_gateway(config(registries["b"].address))
    import subprocess
    import tempfile

    from servers import clean_env

    store = tmp_path / "podman"
    run = Path(tempfile.mkdtemp(prefix="gp-pod-"))  # podman wants a short runroot
    base = [podman, "--root", str(store / "root"), "--runroot", str(run), "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file"]  # fmt: skip
    (tmp_path / "auth.json").write_text('{"auths": {}}')
    env = clean_env(HOME=str(tmp_path), REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"))
    result = subprocess.run([*base, "pull", "--tls-verify=false", f"127.0.0.1:{gw.port}/acme/hello:1.0"],
                            capture_output=True, text=True, env=env, timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stderr
    digest = subprocess.run([*base, "image", "inspect", "--format", "{{.Digest}}", f"127.0.0.1:{gw.port}/acme/hello:1.0"],
                            capture_output=True, text=True, env=env, timeout=60).stdout.strip()  # fmt: skip
    assert digest == registries["digest"]
    shutil.rmtree(run, ignore_errors=True)
    rows = gw.wait_rows(1, where="type = 'pull'")
    assert rows[-1]["client_kind"] == "podman"


def test_pull_through_mitmproxy_addon(start_gateway, registries, home, tmp_path):
    gw = start_gateway(config(registries["b"].address), adapter="mitmproxy")
    assert pull(home, gw, "acme/hello:1.0", tmp_path / "mitm") == registries["digest"]
    assert (
        pull(home, gw, "acme/hello:multi", tmp_path / "mitm-multi", "--all")
        == registries["index_digest"]
    )
    rows = gw.wait_rows(1, where="type = 'pull'")
    assert {r["adapter"] for r in rows} == {"mitmproxy"}
    assert json.loads(rows[0]["data"])["digest"] == registries["digest"]
