"""mitmproxy addon overhead, side by side in one run.

1. plain ``mitmdump`` reverse-proxying a file vs mitmdump + Gatepost addon serving the
   same file through a proxy route: large-file MB/s and small-file requests/s;
2. redirect throughput of the addon vs the ASGI adapter (same routes, same load).

    python bench/mitm.py [--rounds 3] [--seconds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from redirect import load  # noqa: E402
from servers import GatewayProcess, Upstream, clean_env, free_port, mitmdump_path, wait_http  # noqa: E402

BIG = 64 * 1024 * 1024
CONFIG = """
[events]
flush_interval = 0.05

[[routes]]
path = "/files/{{+name}}"
target = "{U}/files/{{+name}}"
mode = "proxy"

[[routes]]
path = "/pkg500/{{version}}/tool-{{os}}.tar.gz"
target = "https://github.com/acme/tool/releases/download/v{{version}}/tool-{{os}}.tar.gz"
"""


def plain_mitmdump(upstream: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [mitmdump_path(), "--mode", f"reverse:{upstream}", "--listen-host", "127.0.0.1",
         "--listen-port", str(port), "-q", "--set", "stream_large_bodies=1m"],
        env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/echo", proc=proc)
    return proc, port


def download_seconds(url: str) -> float:
    started = time.perf_counter()
    got = 0
    with httpx.stream("GET", url, timeout=120) as r:
        for chunk in r.iter_raw():
            got += len(chunk)
    assert got == BIG, got
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    upstream = Upstream()
    results: dict[str, list[float]] = {k: [] for k in ("plain_mbps", "addon_mbps", "plain_rps", "addon_rps", "addon_redirect_rps", "asgi_redirect_rps")}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = CONFIG.format(U=upstream.url)
        try:
            for n in range(args.rounds):
                plain, plain_port = plain_mitmdump(upstream.url)
                addon_dir = work / f"addon{n}"
                addon_dir.mkdir()
                addon = GatewayProcess(addon_dir, config, adapter="mitmproxy")
                asgi_dir = work / f"asgi{n}"
                asgi_dir.mkdir()
                asgi = GatewayProcess(asgi_dir, config)
                try:
                    for key, port in (("plain", plain_port), ("addon", addon.port)):
                        seconds = download_seconds(
                            f"http://127.0.0.1:{port}/files/big.bin?size={BIG}"
                        )
                        results[f"{key}_mbps"].append(BIG / seconds / 1e6)
                    small = "/files/small.bin?size=1024"
                    for key, port in (("plain", plain_port), ("addon", addon.port)):
                        results[f"{key}_rps"].append(_rps(port, small, args.seconds))
                    for key, port in (("addon_redirect", addon.port), ("asgi_redirect", asgi.port)):
                        results[f"{key}_rps"].append(load(port, args.seconds, 16)[0])
                finally:
                    plain.send_signal(signal.SIGTERM)
                    plain.wait(30)
                    addon.stop()
                    asgi.stop()
        finally:
            upstream.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    summary = {
        "large_file_mb_per_s": {
            "plain_mitmdump": round(med["plain_mbps"]),
            "addon": round(med["addon_mbps"]),
        },
        "large_file_ratio": round(med["addon_mbps"] / med["plain_mbps"], 3),
        "small_file_rps": {
            "plain_mitmdump": round(med["plain_rps"]),
            "addon": round(med["addon_rps"]),
        },
        "small_file_ratio": round(med["addon_rps"] / med["plain_rps"], 3),
        "redirect_rps": {
            "addon": round(med["addon_redirect_rps"]),
            "asgi": round(med["asgi_redirect_rps"]),
        },
        "redirect_ratio_addon_vs_asgi": round(
            med["addon_redirect_rps"] / med["asgi_redirect_rps"], 3
        ),
        "rounds": {k: [round(x) for x in v] for k, v in results.items()},
        "date": time.strftime("%Y-%m-%d"),
    }
    emit(summary, args.json)
    return 0


def _rps(port: int, path: str, seconds: int) -> float:
    if not shutil.which("wrk"):
        raise SystemExit("bench/mitm.py needs wrk (apt-get install wrk)")
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(out)


if __name__ == "__main__":
    raise SystemExit(main())
