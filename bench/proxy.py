"""Proxy streaming: MB/s of a large download through a gateway proxy route vs the same
download straight from the upstream with httpx, side by side in one run, and the
gateway's memory while it streams (it must not buffer the body).

    python bench/proxy.py [--mib 256] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from servers import GatewayProcess, Upstream  # noqa: E402

CONFIG = """
[[routes]]
path = "/big"
target = "{U}/big"
mode = "proxy"
"""


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def download(url: str, size: int) -> float:
    """Seconds to stream ``size`` bytes with httpx (raw, no decoding)."""
    got = 0
    started = time.perf_counter()
    with httpx.stream("GET", url, timeout=120) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 20):
            got += len(chunk)
    seconds = time.perf_counter() - started
    if got != size:
        raise RuntimeError(f"{url}: {got} of {size} bytes")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    size = args.mib << 20
    upstream = Upstream()
    direct_s: list[float] = []
    gateway_s: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            gw = GatewayProcess(Path(tmp), CONFIG.format(U=upstream.url))
            try:
                download(f"{gw.url}/big?size={1 << 20}", 1 << 20)  # warm-up
                baseline = rss_mib(gw.proc.pid)
                for _ in range(args.rounds):
                    direct_s.append(download(f"{upstream.url}/big?size={size}", size))
                    gateway_s.append(download(f"{gw.url}/big?size={size}", size))
                peak = rss_mib(gw.proc.pid, "VmHWM")
                rows = gw.wait_rows(args.rounds + 1)
            finally:
                gw.stop()
    finally:
        upstream.stop()
    streamed = [r["bytes_sent"] for r in rows[1:]]
    if streamed != [size] * args.rounds:
        raise RuntimeError(f"events recorded {streamed} bytes, expected {size} each")
    direct, through = statistics.median(direct_s), statistics.median(gateway_s)
    summary = {
        "download_mib": args.mib,
        "direct_httpx_mb_per_s": round(size / direct / 1e6),
        "gateway_mb_per_s": round(size / through / 1e6),
        "ratio": round(direct / through, 3),
        "gateway_rss_mib": {"before": round(baseline, 1), "peak": round(peak, 1)},
        "rounds_seconds": {
            "direct": [round(x, 3) for x in direct_s],
            "gateway": [round(x, 3) for x in gateway_s],
        },  # fmt: skip
        "date": time.strftime("%Y-%m-%d"),
    }
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
