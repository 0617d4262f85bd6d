"""Route matching cost at 10, 1k, 10k and 100k routes (goal: flat within 1.5×).

Compiles N file routes (distinct first segments, as real configurations have) and times
``Router.match`` for paths spread over all of them, in-process, with the decision cache
out of the way.  Prints µs per match and the ratio to the smallest configuration.

    python bench/routes.py [--sizes 10,1000,10000,100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import emit  # noqa: E402

from gateway.config import parse_config  # noqa: E402
from gateway.router import Router  # noqa: E402


def config_text(n: int) -> str:
    return "\n".join(
        f'[[routes]]\npath = "/pkg{i}/{{version}}/tool-{{os}}.tar.gz"\n'
        f'target = "https://example.org/pkg{i}/v{{version}}/{{os}}"\n'
        for i in range(n)
    )


def time_matches(router: Router, n: int, lookups: int = 50_000) -> float:
    rng = random.Random(n)
    paths = [f"/pkg{rng.randrange(n)}/1.{k % 50}/tool-linux.tar.gz" for k in range(lookups)]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for path in paths:
            found = router.match("get.test", path, "")
            assert found is not None
        best = min(best, time.perf_counter() - started)
    return best / lookups * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000,100000")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for n in (int(x) for x in args.sizes.split(",")):
        started = time.perf_counter()
        config = parse_config(config_text(n))
        compile_s = time.perf_counter() - started
        results[n] = {"us_per_match": round(time_matches(Router(config.routes), n), 3),
                      "compile_seconds": round(compile_s, 2)}  # fmt: skip
    base = results[min(results)]["us_per_match"]
    emit(
        {
            "routes": results,
            "ratio_largest_vs_smallest": round(results[max(results)]["us_per_match"] / base, 3),
            "date": time.strftime("%Y-%m-%d"),
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
