"""The CI dependency audit fails on a reported vulnerability and says when nothing was audited.

pip-audit itself needs PyPI's vulnerability service, which this machine cannot reach: a
stand-in executable prints what pip-audit prints in both cases (the one fault we cannot
produce for real)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("audit_dependencies.py")


def fake_pip_audit(tmp_path: Path, dependencies: list[dict]) -> Path:
    exe = tmp_path / "pip-audit"
    payload = json.dumps({"dependencies": dependencies, "fixes": []})
    code = 1 if any(d.get("vulns") for d in dependencies) else 0
    exe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{payload}\nEOF\nexit {code}\n")
    exe.chmod(0o755)
    return exe


def run(exe: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(exe), sys.executable],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_known_vulnerability_fails_the_audit(tmp_path):
    exe = fake_pip_audit(tmp_path, [
        {"name": "httpx", "version": "0.1", "vulns": [{"id": "PYSEC-0000-1", "fix_versions": []}]},
        {"name": "starlette", "version": "1.0", "vulns": []},
    ])  # fmt: skip
    result = run(exe)
    assert result.returncode == 1
    assert "VULNERABLE httpx 0.1: PYSEC-0000-1" in result.stdout
    assert "2 audited, 1 with known vulnerabilities" in result.stdout


def test_an_unreachable_service_is_reported_not_hidden(tmp_path):
    exe = fake_pip_audit(
        tmp_path, [{"name": "httpx", "skip_reason": "Dependency not found on PyPI"}]
    )
    result = run(exe)
    assert result.returncode == 0
    assert (
        "0 audited" in result.stdout
        and "NOTICE: PyPI's vulnerability data is unreachable" in result.stdout
    )
