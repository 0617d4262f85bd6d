"""Every benchmark still runs and its correctness checks hold (tiny sizes, no timings).

``bench/run_all.py --smoke`` runs each script the way the full suite does — real servers,
wrk, nginx, skopeo, mitmdump — and fails when one exits non-zero (e.g. events recorded
≠ requests answered, a streamed download short of its size, an import that lost lines)
or when its summary lacks what the results table is built from.
"""

from __future__ import annotations

import json
import subprocess
import sys

from servers import ROOT, clean_env


def test_every_benchmark_runs_in_smoke_mode():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_all.py"), "--smoke"],
        capture_output=True, text=True, timeout=600, env=clean_env(), cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["smoke"] is True and len(summary["benchmarks"]) == 9
