"""Start and stop real processes on loopback for tests: the gateway and upstreams."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}: {out}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEPOST_", "REGISTRY_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Upstream:
    """``tests/upstream.py`` in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "upstream.py"), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_http(f"http://127.0.0.1:{self.port}/echo", proc=self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def mitmdump_path() -> str:
    """mitmdump from the venv tests/run.sh prepares (mitmproxy ≥ 11.1 needs Python ≥ 3.12)."""
    for candidate in (
        os.environ.get("GATEPOST_MITMDUMP"),
        str(ROOT / ".venv-mitm" / "bin" / "mitmdump"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("mitmdump")
    if found is None:
        raise RuntimeError("mitmdump not found: run tests/run.sh, which creates .venv-mitm")
    return found


class GatewayProcess:
    """The gateway on a free port with its own config and database: ``python -m gateway
    serve`` (adapter "asgi") or mitmdump with the addon (adapter "mitmproxy")."""

    def __init__(
        self,
        workdir: Path,
        config_text: str,
        *,
        extra_args: tuple[str, ...] = (),
        adapter: str = "asgi",
        db_on: Path | None = None,
        **env: str,
    ) -> None:
        self.workdir = workdir
        self.config = workdir / "routes.toml"
        self.config.write_text(config_text)
        self.db = (db_on or workdir) / "events.sqlite3"
        self.port = free_port()
        self.log = workdir / "gateway.log"
        self._log_fh = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        if adapter == "mitmproxy":
            command = [
                mitmdump_path(), "--mode", f"reverse:http://127.0.0.1:{free_port()}",
                "--listen-host", "127.0.0.1", "--listen-port", str(self.port),
                "-s", str(ROOT / "addons" / "gatepost.py"), "-q",
                "--set", f"gatepost_config={self.config}", "--set", f"gatepost_db={self.db}",
                *extra_args,
            ]  # fmt: skip
        else:
            command = [
                sys.executable, "-m", "gateway", "serve", "--config", str(self.config),
                "--db", str(self.db), "--host", "127.0.0.1", "--port", str(self.port),
                *extra_args,
            ]  # fmt: skip
        self.adapter = adapter
        self.proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=clean_env(GATEPOST_KEY="test-key", **env),
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"{self.url}/healthz", proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(self.log.read_text()) from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_fh.close()
        return self.proc.returncode

    def rows(self, where: str = "1=1") -> list[dict]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return [
                dict(r) for r in conn.execute(f"SELECT * FROM events WHERE {where} ORDER BY id")
            ]
        finally:
            conn.close()

    def wait_rows(self, count: int, timeout: float = 5.0, where: str = "1=1") -> list[dict]:
        deadline = time.monotonic() + timeout
        rows: list[dict] = []
        while time.monotonic() < deadline:
            try:
                rows = self.rows(where)
            except sqlite3.OperationalError:
                rows = []
            if len(rows) >= count:
                return rows
            time.sleep(0.05)
        return rows

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def metric(gw: GatewayProcess, name: str) -> int:
    """One counter or gauge from the gateway's ``/metrics`` (Prometheus text)."""
    for line in httpx.get(gw.url + "/metrics").text.splitlines():
        if line.startswith(f"gatepost_{name} "):
            return int(line.split()[1])
    raise KeyError(name)


def raw_request(
    port: int, target: str, *, method: str = "GET", host: str = "t.test", extra: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """Send a request line exactly as given (clients normalise '..'; attackers do not)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode(
                "latin-1"
            )
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


@contextmanager
def small_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``"1m"``) mounted on ``directory``, for filling a disk."""
    directory.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             capture_output=True, text=True)  # fmt: skip
    assert mounted.returncode == 0, f"mounting a tmpfs (the tests run as root): {mounted.stderr}"
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
