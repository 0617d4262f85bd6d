"""Client kind and version from a User-Agent, cached because agents repeat a lot."""

from __future__ import annotations

import json
import re
from functools import lru_cache

# First matching rule wins; order matters (specific tools before generic libraries,
# bots before browsers because crawlers pretend to be browsers).
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("pip", r"^pip/(\S+)"),
        ("uv", r"^uv/(\S+)"),
        ("poetry", r"^poetry/(\S+)"),
        ("pdm", r"^pdm/(\S+)"),
        ("twine", r"^twine/(\S+)"),
        ("buildkit", r"buildkit/v?(\S+)"),
        ("skopeo", r"skopeo/(\S+)"),
        ("podman", r"(?:^|\s)(?:libpod|podman)/(\S+)"),
        # podman (and buildah, CRI-O) pull with containers/image's own agent string
        ("podman", r"^containers/(\S+) \(github\.com/containers/image\)"),
        ("containerd", r"containerd/v?(\S+)"),
        ("cri-o", r"cri-o/(\S+)"),
        ("docker", r"^docker/(\S+)"),
        ("oras", r"^oras/(\S+)"),
        ("helm", r"^Helm/(\S+)"),
        ("curl", r"^curl/(\S+)"),
        ("wget", r"^Wget/(\S+)"),
        ("powershell", r"WindowsPowerShell/(\S+)"),
        (
            "bot",
            r"(bot|crawler|spider|slurp|bingpreview|facebookexternalhit|headless)[/ ]?v?([\d.]*)",
        ),
        ("python-requests", r"python-requests/(\S+)"),
        ("httpx", r"python-httpx/(\S+)"),
        ("aiohttp", r"aiohttp/(\S+)"),
        ("python-urllib", r"Python-urllib/(\S+)"),
        ("go", r"Go-http-client/(\S+)"),
        ("java", r"^Java/(\S+)"),
        ("node", r"^node(?:-fetch)?/?(\S*)"),
        ("browser", r"Mozilla/5\.0.*(?:Firefox|Chrome|Safari|Edg)/(\S+)"),
    )
)


@lru_cache(maxsize=4096)
def classify(user_agent: str | None) -> tuple[str, str | None]:
    """``("pip", "24.0")`` for ``pip/24.0 {...}``; ``("unknown", None)`` when unsure."""
    if not user_agent:
        return ("none", None)
    for kind, pattern in _RULES:
        m = pattern.search(user_agent)
        if m:
            version = m.group(m.lastindex) if m.lastindex else None
            return (kind, version or None)
    return ("unknown", None)


def installer_details(user_agent: str | None) -> dict[str, object]:
    """What pip (and uv, which mimics it) reports in its user agent's JSON part.

    ``pip/24.0 {"ci":null,"cpu":"x86_64","implementation":{"name":"CPython",...},...}``
    → installer, Python, OS, CPU and the CI flag (``true`` when pip saw a CI environment).
    """
    if not user_agent or "{" not in user_agent:
        return {}
    _, _, raw = user_agent.partition(" ")
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, object] = {}
    installer = data.get("installer") or {}
    if isinstance(installer, dict):
        out["installer"] = installer.get("name")
        out["installer_version"] = installer.get("version")
    implementation = data.get("implementation") or {}
    if isinstance(implementation, dict):
        out["implementation"] = implementation.get("name")
    out["python"] = data.get("python")
    system = data.get("system") or {}
    if isinstance(system, dict):
        out["os"] = system.get("name")
    distro = data.get("distro") or {}
    if isinstance(distro, dict) and distro.get("name"):
        out["distro"] = f"{distro.get('name')} {distro.get('version') or ''}".strip()
    out["cpu"] = data.get("cpu")
    out["ci"] = data.get("ci") is True
    return {k: v for k, v in out.items() if v is not None and not isinstance(v, (dict, list))}
