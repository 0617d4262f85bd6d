"""GatewayMiddleware: matched routes served by the gateway, the rest by the wrapped app."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys

import httpx
from servers import ROOT, clean_env, free_port, wait_http


def test_middleware_serves_routes_and_passes_the_rest(tmp_path):
    cfg = tmp_path / "routes.toml"
    cfg.write_text(
        '[[routes]]\npath = "/dl/{version}"\ntarget = "https://x.example/v{version}"\npackage = "p"\n'
    )
    db = tmp_path / "mw.sqlite3"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "middleware_app:app", "--app-dir", str(ROOT / "tests"),
         "--port", str(port), "--no-proxy-headers", "--log-level", "warning"],
        env=clean_env(MW_CONFIG=str(cfg), MW_DB=str(db), GATEPOST_KEY="k"),
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        r = httpx.get(f"http://127.0.0.1:{port}/dl/1.0")
        assert r.status_code == 307 and r.headers["location"] == "https://x.example/v1.0"
        r = httpx.get(f"http://127.0.0.1:{port}/app/hello")
        assert r.status_code == 200 and r.text == "hello from the app (started=True)"
        assert httpx.get(f"http://127.0.0.1:{port}/missing").status_code == 404  # the app's 404
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    rows = sqlite3.connect(db).execute("SELECT route_kind, package, version FROM events").fetchall()
    assert rows == [("file", "p", "1.0")]
