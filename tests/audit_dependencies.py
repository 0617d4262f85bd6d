"""Dependency check for CI: every pinned dependency of the test environments through
``pip-audit``; exits 1 when any has a known vulnerability.

pip-audit asks PyPI's vulnerability data per release.  Where that service cannot be
reached (machines that see only a package mirror), it skips the dependency; this script
then says how many were not audited instead of passing in silence.

    python tests/audit_dependencies.py PIP_AUDIT PYTHON...
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def pinned(python: str) -> list[str]:
    out = subprocess.run(
        [python, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if "==" in line and not line.startswith("#")]


def audit(pip_audit: str, requirements: list[str]) -> list[dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as fh:
        fh.write("\n".join(requirements) + "\n")
        fh.flush()
        result = subprocess.run(
            [pip_audit, "-r", fh.name, "--no-deps", "--disable-pip", "--progress-spinner", "off",
             "--format", "json"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise SystemExit(f"pip-audit failed (exit {result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout)["dependencies"]


def main(argv: list[str]) -> int:
    pip_audit, pythons = argv[0], argv[1:]
    # one audit per environment: the same package may be pinned differently in each
    requirements = [pinned(python) for python in pythons]
    deps = [dep for reqs in requirements for dep in audit(pip_audit, reqs)]
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if "skip_reason" in d]
    audited = len(deps) - len(skipped)
    for dep in vulnerable:
        ids = ", ".join(v["id"] for v in dep["vulns"])
        print(f"VULNERABLE {dep['name']} {dep['version']}: {ids}")
    print(
        f"dependency audit: {len(deps)} pinned in {len(pythons)} environments, {audited} audited, "
        f"{len(vulnerable)} with known vulnerabilities, {len(skipped)} not audited"
    )
    if skipped and not audited:
        print(
            f"NOTICE: PyPI's vulnerability data is unreachable from this machine "
            f"({Path(pip_audit).name}: {skipped[0]['skip_reason']}); nothing was audited"
        )
    return 1 if vulnerable else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
