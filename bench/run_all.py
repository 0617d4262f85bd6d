"""Run every benchmark and write the results table into ``bench/README.md``.

    python bench/run_all.py            # full run (~15 minutes): figures for bench/README.md
    python bench/run_all.py --smoke    # seconds per benchmark: CI checks they still run and
                                       # that their correctness checks hold, never timings

Each benchmark is its own script (run alone for details); this one runs them in turn with
``--json``, collects their summaries in ``bench/results.json`` and replaces the part of
``bench/README.md`` between the ``run_all`` markers with a table of headline figures and
ratios, under a description of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
README = BENCH / "README.md"
RESULTS = BENCH / "results.json"
START, END = "<!-- run_all:start -->", "<!-- run_all:end -->"


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    full: tuple[str, ...]
    smoke: tuple[str, ...]
    headline: Callable[[dict[str, Any]], tuple[str, str, str]]  # (measure, figures, ratio)


def _times(x: float) -> str:
    return f"{x:.2f}×"


def _clients(clients: int | str) -> str:
    return f"{clients:,} clients" if isinstance(clients, int) else "a new client every line"


BENCHMARKS = (
    Benchmark("redirect (same URL)", "redirect.py", (), ("--rounds", "1", "--seconds", "1"),
              lambda r: ("gateway vs bare Starlette 307, 1,000 routes, every event recorded",
                         f"{r['gateway_rps']:,} vs {r['bare_starlette_rps']:,} req/s; nginx {r['nginx_rps'] or 0:,} req/s; "
                         f"p50/p99 {r['latency_ms']['gateway']['p50']}/{r['latency_ms']['gateway']['p99']} ms "
                         f"(bare {r['latency_ms']['bare']['p50']}/{r['latency_ms']['bare']['p99']} ms)",
                         f"{_times(r['ratio'])} bare; {_times(r['ratio_to_nginx'] or 0)} nginx")),
    Benchmark("redirect (distinct URLs)", "redirect.py", ("--scenario", "distinct"),
              ("--scenario", "distinct", "--rounds", "1", "--seconds", "1", "--no-nginx"),
              lambda r: ("as above, a new URL on every request (no decision-cache hits)",
                         f"{r['gateway_rps']:,} vs {r['bare_starlette_rps']:,} req/s",
                         f"{_times(r['ratio'])} bare")),
    Benchmark("proxy streaming", "proxy.py", (), ("--mib", "8", "--rounds", "1"),
              lambda r: (f"{r['download_mib']} MiB through a proxy route vs httpx straight from the upstream",
                         f"{r['gateway_mb_per_s']} vs {r['direct_httpx_mb_per_s']} MB/s; gateway RSS "
                         f"{r['gateway_rss_mib']['before']} → peak {r['gateway_rss_mib']['peak']} MiB",
                         _times(r["ratio"]))),
    Benchmark("event sink", "sink.py", (), ("--events", "5000", "--rounds", "1"),
              lambda r: ("events written by the live sink vs bare executemany of prepared rows",
                         f"{r['sink_events_per_s']:,} vs {r['bare_insert_rows_per_s']:,} /s",
                         _times(r["ratio"]))),
    Benchmark("route matching", "routes.py", (), ("--sizes", "10,100"),
              lambda r: ("µs per match at " + ", ".join(f"{int(k):,}" for k in r["routes"]) + " routes",
                         " / ".join(str(v["us_per_match"]) for v in r["routes"].values()),
                         f"{_times(r['ratio_largest_vs_smallest'])} largest vs smallest")),
    Benchmark("OCI pull", "oci.py", (), ("--rounds", "1", "--layer-mib", "2"),
              lambda r: (f"skopeo pull of a {r['layer_mib']} MiB layer, gateway vs direct",
                         ", ".join(f"{k} {v} s" for k, v in r["median_seconds"].items()),
                         f"{_times(r['ratio_redirect_vs_direct'])} redirected, {_times(r['ratio_proxy_vs_direct'])} proxied")),
    Benchmark("mitmproxy addon", "mitm.py", (), ("--rounds", "1", "--seconds", "1"),
              lambda r: ("mitmdump + addon vs plain mitmdump (64 MiB file, 1 KiB files)",
                         f"{r['large_file_mb_per_s']['addon']} vs {r['large_file_mb_per_s']['plain_mitmdump']} MB/s; "
                         f"{r['small_file_rps']['addon']:,} vs {r['small_file_rps']['plain_mitmdump']:,} req/s",
                         f"{_times(r['large_file_ratio'])} large, {_times(r['small_file_ratio'])} small")),
    Benchmark("scorer", "scorer.py", (), ("--events", "5000", "--orgs", "50"),
              lambda r: (f"full run over {r['events']:,} events vs a bare GROUP BY scan",
                         f"{r['full_run_events_per_s']:,} events/s full; incremental {r['incremental_new_events_per_s']:,} new events/s",
                         f"{_times(r['ratio_full_vs_bare_scan'])} bare scan")),
    Benchmark("log import", "import.py", (), ("--lines", "5000", "--clients", "100"),
              lambda r: (f"{r['runs'][0]['lines']:,} combined-format lines through the live core",
                         " / ".join(f"{x['lines_per_second']:,} lines/s ({_clients(x['clients'])}{', a new URL every line' if 'query' in x['urls'] else ''})" for x in r["runs"]),
                         "—")),
)  # fmt: skip


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")  # fmt: skip
    return (
        f"{os.cpu_count()} × {cpu}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def run(bench: Benchmark, smoke: bool, out: Path) -> dict[str, Any]:
    args = bench.smoke if smoke else bench.full
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(BENCH / bench.script), *args, "--json", str(out)],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(
            f"{bench.name}: {bench.script} exited {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
    summary = json.loads(out.read_text())
    print(f"{bench.name}: done in {time.perf_counter() - started:.1f} s", flush=True)
    return summary


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        START,
        f"Last full run: {time.strftime('%Y-%m-%d')} on {machine()} "
        "(`python bench/run_all.py`; raw summaries in `bench/results.json`).",
        "",
        "| benchmark | what is compared | figures | ratio |",
        "|---|---|---|---|",
    ]
    for bench in BENCHMARKS:
        measure, figures, ratio = bench.headline(results[bench.name])
        lines.append(f"| {bench.name} | {measure} | {figures} | {ratio} |")
    lines.append(END)
    return "\n".join(lines)


def write_readme(block: str) -> None:
    text = README.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        title, _, body = text.partition("\n")
        text = f"{title}\n\n{block}\n{body}"
    README.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no README update")
    parser.add_argument(
        "--only", action="append", help="run only benchmarks whose name contains this"
    )
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or any(o in b.name for o in args.only)]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, bench in enumerate(chosen):
            results[bench.name] = run(bench, args.smoke, Path(tmp) / f"{n}.json")
    for bench in chosen:  # every headline renders from its summary (also checked in smoke runs)
        bench.headline(results[bench.name])
    if args.smoke or args.only:
        print(json.dumps({"smoke": args.smoke, "benchmarks": list(results)}, indent=2))
        return 0
    RESULTS.write_text(
        json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine(), **results}, indent=2)
        + "\n"
    )
    write_readme(table(results))
    print(f"wrote {README} and {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
