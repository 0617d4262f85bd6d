"""Import speed: 1M generated combined-format log lines through ``gateway import``.

Three runs: every line from a new client (worst case for the id caches); clients drawn
from a pool with a long tail, as real access logs have; and, a tenth of the size, every
line with a query string of its own (no request shape repeats).

python bench/import.py [--lines 1000000] [--clients 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit  # noqa: E402

sys.path.insert(0, str(ROOT))
from gateway.config import parse_config  # noqa: E402
from gateway.importer import Importer  # noqa: E402

CONFIG = """
[[routes]]
path = "/tool/{version}/tool-{os}.tar.gz"
target = "https://downloads.example.org/v{version}/tool-{os}.tar.gz"
package = "tool"

[pixels.docs]
value = "medium"

[[routes]]
kind = "pixel"
path = "/px/{id}.png"

[[routes]]
kind = "telemetry"
path = "/ping/{package}/{version}"
"""


def write_log(path: Path, lines: int, clients: int, distinct_urls: bool = False) -> None:
    """Time-ordered combined-format lines, two a second; ``clients=0`` gives every line a
    new random address (the worst case: no client is ever seen twice), otherwise addresses
    come from a pool of that size with a long tail, as in real logs.  ``distinct_urls``
    adds a query string of its own to every line (tracking parameters, cache busters): no
    two lines share a request shape, so the live core decides every one."""
    rng = random.Random(7)
    pool = [
        f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(clients)
    ]
    start = 1_772_366_400  # 2026-03-01T12:00:00Z
    with path.open("w") as fh:
        for n in range(lines):
            if pool:
                ip = pool[min(int(rng.paretovariate(1.2)) - 1, clients - 1)]
            else:
                ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(start + n // 2))
            path_ = rng.choice(
                [f"/tool/1.{rng.randrange(9)}/tool-{rng.choice(['linux', 'mac'])}.tar.gz", "/px/docs.png",
                 f"/ping/tool/1.{rng.randrange(9)}", "/unmatched"]
            )  # fmt: skip
            if distinct_urls:
                path_ += f"?utm_source=s{n}"
            fh.write(f'{ip} - - [{when}] "GET {path_} HTTP/1.1" '
                     f'307 0 "https://docs.acme.dev/" "curl/8.{n % 7}"\n')  # fmt: skip


def run(lines: int, clients: int, distinct_urls: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log = work / "access.log"
        write_log(log, lines, clients, distinct_urls)
        config = parse_config(CONFIG, str(work / "routes.toml"))
        config.server.data_dir = work
        importer = Importer(config, work / "events.sqlite3", default_host="get.acme.dev")
        started = time.perf_counter()
        report = importer.run([str(log)], "combined")
        seconds = time.perf_counter() - started
        stored = (
            sqlite3.connect(work / "events.sqlite3")
            .execute("SELECT count(*) FROM events")
            .fetchone()[0]
        )
    if report.imported + report.unmatched != lines or stored != report.imported:
        raise RuntimeError(
            f"{lines} lines: {report.imported} imported ({stored} stored), {report.unmatched} unmatched"
        )
    return {
        "clients": clients or "every line new",
        "urls": "a new query string on every line" if distinct_urls else "29 distinct paths",
        "lines": report.lines,
        "imported": report.imported,
        "unmatched": report.unmatched,
        "seconds": round(seconds, 2),
        "lines_per_second": round(report.lines / seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=20_000,
                        help="size of the client pool of the second run (the first has none)")  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # the third run is a tenth of the size: every line goes through the live core
    runs = [run(args.lines, 0), run(args.lines, args.clients),
            run(max(1, args.lines // 10), args.clients, distinct_urls=True)]  # fmt: skip
    summary = {
        "runs": runs,
        "lines_per_second": runs[0]["lines_per_second"],
        "date": time.strftime("%Y-%m-%d"),
    }
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
