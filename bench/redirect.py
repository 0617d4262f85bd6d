"""Redirect throughput: the gateway (1,000 routes, recording every event) vs a bare
Starlette app answering the same 307, measured side by side in one run.

Both run under uvicorn with identical settings (uvloop, httptools, no access log,
one process pinned to CPU 0); the load generator (wrk, or a Python fallback) runs
in a separate process pinned to CPU 1.  Rounds alternate A/B/A/B and the median of
each is reported with the ratio.  Absolute numbers depend on the machine; the
ratio is the result.

    python bench/redirect.py [--routes 1000] [--seconds 5] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit  # noqa: E402
from servers import clean_env, free_port, wait_http  # noqa: E402

TARGET = "https://github.com/acme/tool{n}/releases/download/v{version}/tool-{os}.tar.gz"
REQUEST_PATH = "/pkg500/1.4.2/tool-linux-amd64.tar.gz"
LOCATION = "https://github.com/acme/tool500/releases/download/v1.4.2/tool-linux-amd64.tar.gz"

BARE_APP = f"""
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Route

async def redirect(request):
    return RedirectResponse({LOCATION!r}, status_code=307)

app = Starlette(routes=[Route("/{{path:path}}", redirect)])
"""


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 307 {location}; }}
    }}
}}
"""


class Load(NamedTuple):
    rps: float
    total: int
    p50_ms: float | None
    p99_ms: float | None


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def write_config(directory: Path, n_routes: int) -> Path:
    lines = ["[events]\nflush_interval = 0.05\nbatch_size = 2000\n"]
    for n in range(n_routes):
        lines.append(
            f'[[routes]]\nid = "pkg{n}"\npath = "/pkg{n}/{{version}}/tool-{{os}}.tar.gz"\n'
            f'target = "{TARGET.replace("{n}", str(n))}"\npackage = "tool{n}"\n'
        )
    path = directory / "routes.toml"
    path.write_text("\n".join(lines))
    return path


def start(cmd: list[str], port: int, cwd: Path) -> subprocess.Popen:
    pin = (
        ["taskset", "-c", "0"]
        if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1
        else []
    )
    proc = subprocess.Popen(
        pin + cmd, cwd=cwd, env=clean_env(GATEPOST_KEY="bench"), stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    return proc


# Every request a different URL (1,000 routes × changing versions): no decision-cache hits.
DISTINCT_LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/pkg" .. (counter % 1000) .. "/1." .. counter .. "/tool-linux-amd64.tar.gz")
end
"""


def load(port: int, seconds: float, connections: int, script: Path | None = None) -> Load:
    """Requests/s, total requests and latency percentiles from wrk (or the Python fallback,
    which measures no latency)."""
    url = f"http://127.0.0.1:{port}{REQUEST_PATH}"
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    if shutil.which("wrk"):
        extra = ["-s", str(script)] if script else []
        out = subprocess.run(
            pin + ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", *extra, url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        total = int(re.search(r"(\d+) requests in", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non2xx:
            raise RuntimeError(f"{non2xx.group(1)} unexpected responses:\n{out}")
        p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
        p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
        return Load(rps, total, p50 and _ms(p50.group(1)), p99 and _ms(p99.group(1)))
    out = subprocess.run(
        pin + [sys.executable, str(Path(__file__).with_name("loadgen.py")), url, str(seconds), str(connections)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result = json.loads(out)
    return Load(result["rps"], result["total"], None, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--scenario", choices=("same", "distinct"), default="same",
        help="same URL every time (decision cache hits) or a new URL per request",
    )  # fmt: skip
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx anchor")
    args = parser.parse_args()

    uvicorn_opts = ["--loop", "uvloop", "--http", "httptools", "--no-access-log",
                    "--log-level", "warning", "--no-proxy-headers", "--host", "127.0.0.1"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = write_config(work, args.routes)
        (work / "bare_app.py").write_text(BARE_APP)
        script = None
        if args.scenario == "distinct":
            if not shutil.which("wrk"):
                parser.error("--scenario distinct needs wrk")
            script = work / "distinct.lua"
            script.write_text(DISTINCT_LUA)
        contestants = ["bare", "gateway"]
        nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if nginx and not args.no_nginx:
            contestants.insert(0, "nginx")
        loads: dict[str, list[Load]] = {name: [] for name in contestants}
        answered = 0
        for _ in range(args.rounds):
            for name in contestants:
                port = free_port()
                if name == "nginx":
                    conf = work / "nginx.conf"
                    conf.write_text(NGINX_CONF.format(work=work, port=port, location=LOCATION))
                    cmd = [nginx, "-c", str(conf), "-p", str(work)]
                elif name == "bare":
                    cmd = [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port),
                           *uvicorn_opts]  # fmt: skip
                else:
                    cmd = [sys.executable, "-m", "gateway", "--log-level", "WARNING", "serve",
                           "--config", str(config), "--db", str(work / "events.sqlite3"),
                           "--port", str(port), "--host", "127.0.0.1"]  # fmt: skip
                proc = start(cmd, port, work)
                try:
                    warm = load(port, 1, args.connections, script)  # warm-up
                    measured = load(port, args.seconds, args.connections, script)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
                loads[name].append(measured)
                if name == "gateway":
                    answered += measured.total + warm.total
        with sqlite3.connect(work / "events.sqlite3") as conn:
            recorded = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    med = {name: statistics.median(x.rps for x in runs) for name, runs in loads.items()}
    summary = {
        "routes": args.routes,
        "scenario": args.scenario,
        "bare_starlette_rps": round(med["bare"]),
        "gateway_rps": round(med["gateway"]),
        "ratio": round(med["gateway"] / med["bare"], 3),
        "nginx_rps": round(med["nginx"]) if "nginx" in med else None,
        "ratio_to_nginx": round(med["gateway"] / med["nginx"], 3) if "nginx" in med else None,
        "latency_ms": {
            name: {"p50": _median_of(runs, "p50_ms"), "p99": _median_of(runs, "p99_ms")}
            for name, runs in loads.items()
        },
        "rounds": {name: [round(x.rps) for x in runs] for name, runs in loads.items()},
        "gateway_requests_answered": answered,
        "gateway_events_recorded": recorded,
        "load_generator": "wrk" if shutil.which("wrk") else "bench/loadgen.py",
        "date": time.strftime("%Y-%m-%d"),
    }
    emit(summary, args.json)
    # wrk does not count answers still in flight when it stops: at most one per connection
    if not answered <= recorded <= answered + 2 * args.rounds * args.connections:
        print(f"ERROR: {recorded} events for {answered} answered requests", file=sys.stderr)
        return 1
    return 0


def _median_of(runs: list[Load], field: str) -> float | None:
    values = [getattr(x, field) for x in runs if getattr(x, field) is not None]
    return round(statistics.median(values), 3) if values else None


if __name__ == "__main__":
    raise SystemExit(main())
