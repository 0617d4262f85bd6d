"""Import speed: 1M generated combined-format log lines through ``gateway import``.

python bench/import.py [--lines 1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import random
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log = work / "access.log"
        with log.open("w") as fh:
            for n in range(args.lines):
                ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                second = n % 60
                path = rng.choice(
                    [f"/tool/1.{rng.randrange(9)}/tool-{rng.choice(['linux', 'mac'])}.tar.gz", "/px/docs.png",
                     f"/ping/tool/1.{rng.randrange(9)}", "/unmatched"]
                )  # fmt: skip
                fh.write(f'{ip} - - [01/Mar/2026:12:{n // 60 % 60:02d}:{second:02d} +0000] "GET {path} HTTP/1.1" '
                         f'307 0 "https://docs.acme.dev/" "curl/8.{n % 7}"\n')  # fmt: skip
        config = parse_config(CONFIG, str(work / "routes.toml"))
        config.server.data_dir = work
        importer = Importer(config, work / "events.sqlite3", default_host="get.acme.dev")
        started = time.perf_counter()
        report = importer.run([str(log)], "combined")
        seconds = time.perf_counter() - started
    summary = {
        "lines": report.lines,
        "imported": report.imported,
        "unmatched": report.unmatched,
        "seconds": round(seconds, 2),
        "lines_per_second": round(report.lines / seconds),
        "date": time.strftime("%Y-%m-%d"),
    }
    emit(summary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
