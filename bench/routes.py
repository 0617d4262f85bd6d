"""Route matching cost at 10, 1k, 10k and 100k routes (goal: flat within 1.5×).

Compiles N file routes (distinct first segments, as real configurations have) and times
``Router.match`` for paths spread over all of them, in-process, with the decision cache
out of the way and the compiled routes frozen out of the garbage collector's view, as the
running gateway has them.  Prints µs per match and the ratio to the smallest configuration.

    python bench/routes.py [--sizes 10,1000,10000,100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
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


def lookup_paths(n: int, lookups: int) -> list[str]:
    rng = random.Random(n)
    return [f"/pkg{rng.randrange(n)}/1.{k % 50}/tool-linux.tar.gz" for k in range(lookups)]


def time_pass(router: Router, paths: list[str]) -> float:
    """µs per match over one pass of ``paths``."""
    started = time.perf_counter()
    for path in paths:
        found = router.match("get.test", path, "")
        assert found is not None
    return (time.perf_counter() - started) / len(paths) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=50_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    routers: dict[int, Router] = {}
    compile_seconds: dict[int, float] = {}
    for n in sizes:
        started = time.perf_counter()
        config = parse_config(config_text(n))
        compile_seconds[n] = time.perf_counter() - started
        routers[n] = Router(config.routes)
    paths = {n: lookup_paths(n, args.lookups) for n in sizes}
    # As the gateway does once its routes are compiled (Gateway.startup): move them out of
    # the collector's view, or every full collection walks 100,000 routes' objects.
    gc.collect()
    gc.freeze()
    # Rounds alternate over the sizes, so a drift of the machine's speed hits all of them;
    # the best pass per size is reported.
    best = {n: float("inf") for n in sizes}
    for _ in range(args.rounds):
        for n in sizes:
            best[n] = min(best[n], time_pass(routers[n], paths[n]))
    results = {n: {"us_per_match": round(best[n], 3), "compile_seconds": round(compile_seconds[n], 2)}
               for n in sizes}  # fmt: skip
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
