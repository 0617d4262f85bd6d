"""Image pull time through the gateway vs directly from the registry, in one run.

A real registry (Debian's docker-registry) holds an image with a 64 MiB layer; skopeo
pulls it directly, through the gateway with blobs redirected, and through the gateway
with blobs streamed.  Rounds alternate; medians and ratios are printed.

    python bench/oci.py [--rounds 5] [--layer-mib 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from oci import Registry, build_image, push, skopeo  # noqa: E402
from servers import GatewayProcess  # noqa: E402


def gateway_config(registry: str, blobs: str) -> str:
    return (
        '[[routes]]\nkind = "oci"\n'
        f'blobs = "{blobs}"\n'
        f'namespaces = {{ "acme/*" = "http://{registry}/acme-org/*" }}\n'
    )


def timed_pull(home: Path, source: str, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    skopeo(home, "copy", "--src-tls-verify=false", f"docker://{source}", f"oci:{out}:x")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layer-mib", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        registry = Registry(work / "registry")
        gateways: dict[str, GatewayProcess] = {}
        try:
            layout = work / "layout"
            build_image(layout, "1.0", {"big.bin": os.urandom(args.layer_mib * 1024 * 1024)})
            push(home, layout, "1.0", f"{registry.address}/acme-org/big:1.0")
            for mode in ("redirect", "proxy"):
                d = work / f"gw-{mode}"
                d.mkdir()
                gateways[mode] = GatewayProcess(d, gateway_config(registry.address, mode))
            sources = {
                "direct": f"{registry.address}/acme-org/big:1.0",
                "gateway-redirect": f"127.0.0.1:{gateways['redirect'].port}/acme/big:1.0",
                "gateway-proxy": f"127.0.0.1:{gateways['proxy'].port}/acme/big:1.0",
            }
            times: dict[str, list[float]] = {k: [] for k in sources}
            for source in sources.values():  # warm-up (page cache, connections)
                timed_pull(home, source, work / "out")
            for _ in range(args.rounds):
                for name, source in sources.items():
                    times[name].append(timed_pull(home, source, work / "out"))
        finally:
            for gw in gateways.values():
                gw.stop()
            registry.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    summary = {
        "layer_mib": args.layer_mib,
        "median_seconds": {k: round(v, 3) for k, v in med.items()},
        "ratio_redirect_vs_direct": round(med["gateway-redirect"] / med["direct"], 3),
        "ratio_proxy_vs_direct": round(med["gateway-proxy"] / med["direct"], 3),
        "rounds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "date": time.strftime("%Y-%m-%d"),
    }
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
