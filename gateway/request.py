"""The framework-neutral view of an incoming request that the core works on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Request:
    """An incoming request as every adapter can describe it.

    ``path`` is the *raw* (still percent-encoded) path without the query, ``query``
    the raw query string without ``?``; ``headers`` are lower-case name/value pairs
    in arrival order (repeated headers stay repeated).
    """

    method: str
    host: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    client_ip: str | None
    scheme: str = "http"
    body: bytes | None = None  # only read when a route asks for it (ReadBody)

    def header(self, name: str) -> str | None:
        """First value of a (lower-case) header name."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


def normalize_host(host: str | None) -> str:
    """``Get.Acme.Dev:8443`` → ``get.acme.dev``; ``[::1]:80`` → ``::1``."""
    if not host:
        return ""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")
