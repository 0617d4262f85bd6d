"""docker itself (Debian's dockerd 20.10 as a private daemon) pulling through the gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from oci import (
    Registry,
    build_image,
    build_multiarch,
    make_signing_material,
    push,
    start_token_service,
)
from servers import clean_env


@pytest.fixture(scope="module")
def docker(tmp_path_factory):
    """containerd + dockerd on unix sockets in a short temp dir (vfs, no networking)."""
    assert shutil.which("dockerd") and shutil.which("containerd"), "tests/run.sh installs docker.io"
    run = Path(tempfile.mkdtemp(prefix="gpd-"))
    (run / "daemon.json").write_text(json.dumps({
        "storage-driver": "vfs", "iptables": False, "ip6tables": False, "bridge": "none",
        "ip-forward": False, "ip-masq": False}))  # fmt: skip
    logs = [open(run / "containerd.log", "w"), open(run / "dockerd.log", "w")]  # noqa: SIM115
    containerd = subprocess.Popen(
        ["containerd", "--root", str(run / "c-root"), "--state", str(run / "c-state"), "--address", str(run / "c.sock")],
        stdout=logs[0], stderr=subprocess.STDOUT,
    )  # fmt: skip
    for _ in range(100):
        if (run / "c.sock").exists():
            break
        time.sleep(0.1)
    dockerd = subprocess.Popen(
        ["dockerd", "--config-file", str(run / "daemon.json"), "--data-root", str(run / "d-root"),
         "--exec-root", str(run / "exec"), "--pidfile", str(run / "d.pid"), "-H", f"unix://{run}/d.sock",
         "--containerd", str(run / "c.sock")],
        stdout=logs[1], stderr=subprocess.STDOUT,
    )  # fmt: skip
    env = clean_env(DOCKER_HOST=f"unix://{run}/d.sock", DOCKER_CONFIG=str(run / "config"))
    for _ in range(150):
        if subprocess.run(["docker", "info"], env=env, capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError((run / "dockerd.log").read_text()[-2000:])
    yield env
    for proc in (dockerd, containerd):
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    for fh in logs:
        fh.close()
    shutil.rmtree(run, ignore_errors=True)


def docker_cmd(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def repo_digest(env: dict, ref: str) -> str:
    out = docker_cmd(env, "image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout
    return json.loads(out)[0].split("@")[1]


def test_docker_pull_single_and_multiarch(docker, start_gateway, tmp_path):
    reg = Registry(tmp_path / "reg")
    try:
        home = tmp_path / "home"
        home.mkdir()
        digest = build_image(tmp_path / "l1", "1.0", {"hello": b"hello docker\n"})
        push(home, tmp_path / "l1", "1.0", f"{reg.address}/acme-org/hello:1.0")
        index = build_multiarch(tmp_path / "l2", "multi")
        push(home, tmp_path / "l2", "multi", f"{reg.address}/acme-org/hello:multi")
        gw = start_gateway(
            f'[[routes]]\nkind = "oci"\nnamespaces = {{ "acme/*" = "http://{reg.address}/acme-org/*" }}\n'
        )
        for tag, expected in (("1.0", digest), ("multi", index)):
            ref = f"127.0.0.1:{gw.port}/acme/hello:{tag}"
            docker_cmd(docker, "pull", ref)
            assert repo_digest(docker, ref) == expected
        rows = gw.wait_rows(4)
        assert {r["client_kind"] for r in rows} == {"docker"}
        kinds = [(r["type"], r["method"]) for r in rows]
        assert (
            ("pull_check", "HEAD") in kinds
            and ("pull", "GET") in kinds
            and ("blob", "GET") in kinds
        )
    finally:
        reg.stop()


def test_docker_login_and_pull_with_token_auth(docker, start_gateway, tmp_path):
    bundle, key_pem, kid = make_signing_material(tmp_path)
    token, token_port = start_token_service(
        tmp_path, key_pem, kid, "test-registry", {"alice": "wonderland"}
    )
    auth = {"token": {"realm": f"http://127.0.0.1:{token_port}/token", "service": "test-registry",
                      "issuer": "gatepost-test-issuer", "rootcertbundle": str(bundle)}}  # fmt: skip
    reg = Registry(tmp_path / "reg", auth=auth)
    try:
        home = tmp_path / "home"
        home.mkdir()
        digest = build_image(tmp_path / "l", "1.0", {"hello": b"secret\n"})
        push(
            home,
            tmp_path / "l",
            "1.0",
            f"{reg.address}/private/hello:1.0",
            "--dest-creds",
            "alice:wonderland",
        )
        push(
            home,
            tmp_path / "l",
            "1.0",
            f"{reg.address}/public/hello:1.0",
            "--dest-creds",
            "alice:wonderland",
        )
        gw = start_gateway(
            f'[[routes]]\nkind = "oci"\nnamespaces = {{ "acme/*" = "http://{reg.address}/public/*", '
            f'"secret/*" = "http://{reg.address}/private/*" }}\n'
        )
        host = f"127.0.0.1:{gw.port}"
        docker_cmd(docker, "pull", f"{host}/acme/hello:1.0")  # anonymous, through the token broker
        assert repo_digest(docker, f"{host}/acme/hello:1.0") == digest
        assert docker_cmd(docker, "pull", f"{host}/secret/hello:1.0", check=False).returncode != 0
        bad = subprocess.run(["docker", "login", host, "-u", "alice", "--password-stdin"], input="nope",
                             env=docker, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert bad.returncode != 0  # a wrong password does not "log in"
        good = subprocess.run(["docker", "login", host, "-u", "alice", "--password-stdin"], input="wonderland",
                              env=docker, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert good.returncode == 0, good.stderr
        docker_cmd(docker, "pull", f"{host}/secret/hello:1.0")
        assert repo_digest(docker, f"{host}/secret/hello:1.0") == digest
    finally:
        reg.stop()
        token.kill()
        token.wait()
