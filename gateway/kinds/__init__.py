"""Route kinds are plug-ins: a name, the keys they accept, and ``build(table, common)``.

Add a kind by registering an object with those three members in :data:`KINDS`.
"""

from __future__ import annotations

from typing import Protocol

from ..config import RouteTable
from ..errors import ConfigError
from .base import Route, read_hosts
from .file import FileKind
from .link import LinkKind
from .oci import OciKind
from .pixel import PixelKind
from .prefix import PrefixKind
from .pypi import PypiKind
from .telemetry import TelemetryKind

__all__ = ["KINDS", "RouteKind", "Route", "build_routes", "register_kind"]


class RouteKind(Protocol):
    name: str
    keys: frozenset[str]
    default_event: str

    def build(self, table: RouteTable, common: dict) -> Route: ...


KINDS: dict[str, RouteKind] = {}


def register_kind(kind: RouteKind) -> None:
    KINDS[kind.name] = kind


for _kind in (
    FileKind(),
    PrefixKind(),
    PixelKind(),
    LinkKind(),
    TelemetryKind(),
    PypiKind(),
    OciKind(),
):
    register_kind(_kind)


def build_routes(tables: list[RouteTable], path: str) -> list[Route]:
    """Compile every table with its kind; reject duplicate ids and shadowed routes."""
    routes: list[Route] = []
    ids: dict[str, RouteTable] = {}
    seen: dict[tuple, RouteTable] = {}
    for table in tables:
        if not isinstance(table.data, dict):
            raise ConfigError(path, table.line, f"route #{table.index + 1} must be a table")
        kind_name = table.str("kind", "file")
        assert kind_name is not None
        kind = KINDS.get(kind_name)
        if kind is None:
            known = ", ".join(sorted(KINDS))
            raise table.error("kind", f"unknown kind {kind_name!r} (known: {known})")
        table.check_keys(kind.keys)
        route_id = table.str("id") or f"{kind_name}-{table.index + 1}"
        if route_id in ids:
            raise table.error(
                "id", f"duplicate id {route_id!r} (first at line {ids[route_id].line})"
            )
        ids[route_id] = table
        common = {
            "id": route_id,
            "hosts": read_hosts(table),
            "order": table.index,
            "line": table.line,
            "package": table.str("package"),
            "event_type": table.str("event", kind.default_event),
        }
        route = kind.build(table, common)
        for host in route.hosts or ("*",):
            key = (host, route.kind, route.identity())
            if key in seen:
                raise table.error(
                    None,
                    f"duplicate route: same host and path as {seen[key].label} "
                    f"(line {seen[key].line}); it could never match",
                )
            seen[key] = table
        routes.append(route)
    return routes
