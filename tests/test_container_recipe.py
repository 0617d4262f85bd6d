"""The Dockerfile's recipe, run without the base image (Docker Hub is out of reach here).

The test reads the Dockerfile itself: it stages exactly the files the ``COPY`` lines copy,
installs them the way the ``RUN pip install .`` line does (into a fresh virtualenv, not the
checkout), starts the ``ENTRYPOINT`` + ``CMD`` with the ``ENV`` settings (the address moved
to loopback), and runs the ``HEALTHCHECK`` command against it. A file missing from the
image, a setting the CLI does not read, or a health check that cannot pass fails here.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import httpx
from servers import ROOT, free_port, wait_http


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not pending:
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line:
            lines.append(line)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_recipe_installs_serves_and_passes_its_health_check(tmp_path):
    steps = instructions()
    env_settings: dict[str, str] = {}
    for name, args in steps:
        if name == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env_settings[key] = value
    workdir = Path(next(args for name, args in steps if name == "WORKDIR"))
    image = tmp_path / "image"  # stands for the image's root directory

    def in_image(path: str) -> Path:
        target = Path(path) if path.startswith("/") else workdir / path
        return image / target.relative_to("/")

    for name, args in steps:
        if name != "COPY":
            continue
        *sources, dest = args.split()
        for source in sources:
            src = ROOT / source
            target = in_image(dest)
            if dest.endswith("/"):
                target = target / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, target)
    assert [name for name, _ in steps].count("RUN") == 1
    run = next(args for name, args in steps if name == "RUN")
    assert run.startswith("pip install --no-cache-dir . ")

    # RUN pip install . — from the staged sources only, into a virtualenv; dependencies come
    # from the test environment (--system-site-packages), so this checks the project's files
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", str(in_image(str(workdir)))],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEPOST_", "PYTHON"))}
    env.update(env_settings)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["GATEPOST_CONFIG"] = str(in_image(env_settings["GATEPOST_CONFIG"]))
    env["GATEPOST_DATA_DIR"] = str(data)  # the /data volume
    env["GATEPOST_HOST"] = "127.0.0.1"  # tests listen on loopback only
    env["GATEPOST_PORT"] = str(port)
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import gateway, scorer; print(gateway.__file__, scorer.__file__)"],
        capture_output=True, text=True, env=env, cwd=data, check=True,
    ).stdout  # fmt: skip
    assert where.count(str(venv)) == 2, where  # the installed copy, not the checkout

    entrypoint = json.loads(next(args for name, args in steps if name == "ENTRYPOINT"))
    cmd = json.loads(next(args for name, args in steps if name == "CMD"))
    server = subprocess.Popen(
        [str(venv / "bin" / entrypoint[0]), *entrypoint[1:], *cmd], cwd=data, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=server)
        health = next(args for name, args in steps if name == "HEALTHCHECK")
        check = json.loads(health.split(" CMD ", 1)[1])
        assert check[0] == "python"
        probe = subprocess.run(
            [str(venv / "bin" / "python"), *check[1:]], env=env, cwd=data, timeout=30
        )
        assert probe.returncode == 0
        r = httpx.get(f"http://127.0.0.1:{port}/demo/1.0/demo.tar.gz")
        assert r.status_code == 307
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    # the database and the key live on the data volume; the key is private
    with sqlite3.connect(data / "events.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE status = 307").fetchone()[0] == 1
    assert stat.S_IMODE((data / "gatepost.key").stat().st_mode) == 0o600
    # the scorer ships inside the same install, with its data files
    scored = subprocess.run(
        [str(venv / "bin" / "gateway"), "score", "--db", str(data / "events.sqlite3"), "--json"],
        capture_output=True, text=True, env=env, cwd=data, timeout=60,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    assert isinstance(json.loads(scored.stdout), list)
