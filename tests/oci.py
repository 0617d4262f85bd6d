"""Real OCI registries (Debian's docker-registry), OCI images built with the standard
library, skopeo, and a small token service — for end-to-end registry tests."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import subprocess
from pathlib import Path

from archives import tar_bytes
from servers import clean_env, free_port, wait_http

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


class Registry:
    """``docker-registry serve`` on a free loopback port with filesystem storage."""

    def __init__(self, workdir: Path, auth: dict | None = None, extra: str = "") -> None:
        self.port = free_port()
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "config.yml"
        lines = [
            "version: 0.1",
            "log: {level: error}",
            "storage:",
            f"  filesystem: {{rootdirectory: {workdir / 'data'}}}",
            "  delete: {enabled: true}",
            f"http: {{addr: '127.0.0.1:{self.port}'}}",
        ]
        if auth:
            lines.append("auth: " + json.dumps(auth))
        config.write_text("\n".join(lines) + "\n" + extra)
        self.log = open(workdir / "registry.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=self.log, stderr=subprocess.STDOUT,
            env=clean_env(),
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{self.port}/v2/", proc=self.proc)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}", len(data)


def _image_manifest(
    layout: Path, files: dict[str, bytes], arch: str, compress: bool = True
) -> dict:
    tar = tar_bytes(files)
    layer = gzip.compress(tar, mtime=0) if compress else tar
    layer_digest, layer_size = _blob(layout, layer)
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
    }
    config_digest, config_size = _blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [
            {
                "mediaType": LAYER_GZIP if compress else LAYER_TAR,
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    digest, size = _blob(layout, json.dumps(manifest).encode())
    return {
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": size,
        "platform": {"architecture": arch, "os": "linux"},
    }


def _write_layout(layout: Path, descriptor: dict, tag: str) -> str:
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    top = dict(descriptor, annotations={"org.opencontainers.image.ref.name": tag})
    top.pop("platform", None)
    (layout / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]})
    )
    return descriptor["digest"]


def build_image(
    layout: Path, tag: str, files: dict[str, bytes], arch: str = "amd64", compress: bool = True
) -> str:
    """A single-platform OCI image layout; returns the manifest digest."""
    return _write_layout(layout, _image_manifest(layout, files, arch, compress), tag)


def build_multiarch(layout: Path, tag: str, archs: tuple[str, ...] = ("amd64", "arm64")) -> str:
    """An OCI image index over one image per architecture; returns the index digest."""
    manifests = [_image_manifest(layout, {"hello": f"hello from {a}\n".encode()}, a) for a in archs]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    digest, size = _blob(layout, json.dumps(index).encode())
    return _write_layout(layout, {"mediaType": OCI_INDEX, "digest": digest, "size": size}, tag)


def skopeo(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = clean_env(
        HOME=str(home),
        DOCKER_CONFIG=str(home / "docker"),
        REGISTRY_AUTH_FILE=str(home / "auth.json"),
    )
    result = subprocess.run(
        ["skopeo", "--insecure-policy", "--command-timeout", "120s", *args],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr
    return result


def push(home: Path, layout: Path, tag: str, dest: str, *extra: str) -> None:
    skopeo(
        home,
        "copy",
        "--all",
        "--dest-tls-verify=false",
        *extra,
        f"oci:{layout}:{tag}",
        f"docker://{dest}",
    )


def pulled_manifest_digest(out: Path) -> str:
    index = json.loads((out / "index.json").read_text())
    return index["manifests"][0]["digest"]


# --------------------------------------------------------------------------- token auth


def libtrust_key_id(public_der: bytes) -> str:
    """The ``kid`` docker-registry expects: base32 of 240 bits of SHA-256(SPKI), in 4-char groups."""
    b32 = base64.b32encode(hashlib.sha256(public_der).digest()[:30]).decode()
    return ":".join(b32[i : i + 4] for i in range(0, 48, 4))


def make_signing_material(directory: Path) -> tuple[Path, bytes, str]:
    """A self-signed certificate (the registry's rootcertbundle), the private key PEM, the kid."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatepost-test-token")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256())
    )  # fmt: skip
    bundle = directory / "token-ca.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return bundle, pem, libtrust_key_id(der)


def start_token_service(
    directory: Path, key_pem: bytes, kid: str, service: str, users: dict[str, str]
) -> tuple[subprocess.Popen, int]:
    """``tests/token_service.py`` in its own process; returns (process, port)."""
    port = free_port()
    key_file = directory / "token-key.pem"
    key_file.write_bytes(key_pem)
    log = directory / "token.log"
    proc = subprocess.Popen(
        [os.sys.executable, str(Path(__file__).with_name("token_service.py")), str(port), str(key_file), kid,
         service, json.dumps(users), str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=clean_env(),
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
    return proc, port
