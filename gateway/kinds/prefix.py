"""``kind = "prefix"``: everything under a path prefix goes to the same path elsewhere.

``/hello%20world`` under prefix ``/`` → ``https://downloads.example.org/hello%20world``:
the remainder is forwarded in its raw (still encoded) form, after the same traversal
checks as ``{+path}`` variables.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from ..config import RouteTable
from ..decisions import Decision
from ..events import Event
from ..request import Request
from ..templates import TargetTemplate, check_rest_value
from .base import COMMON_KEYS, PrefixPlacement, Route, RouteContext, read_prefix
from .file import TARGET_KEYS, TargetRoute, read_target


@dataclass(eq=False)
class PrefixRoute(PrefixPlacement, TargetRoute):
    kind = "prefix"
    prefix: str = "/"  # canonical, always ends with "/"

    def pattern(self) -> str:
        return self.prefix + "…"

    def match(self, norm_path: str, query: str) -> dict[str, str] | None:
        prefix = self.prefix
        if norm_path.startswith(prefix):
            rest = norm_path[len(prefix) - 1 :]
        elif norm_path == prefix[:-1]:
            rest = ""
        else:
            return None
        value = unquote(rest)
        if rest:
            check_rest_value(rest, value)
        return {"path": rest}

    def make_event(
        self, request: Request, values: dict[str, str], decision: Decision, ctx: RouteContext
    ) -> Event:
        event = super().make_event(request, values, decision, ctx)
        event.vars = {"path": unquote(values["path"])}
        return event


class PrefixKind:
    name = "prefix"
    keys = COMMON_KEYS | TARGET_KEYS | {"prefix"}
    default_event = "download"

    def build(self, table: RouteTable, common: dict) -> Route:
        prefix = read_prefix(table, "prefix", "/")
        if "target" not in table.data:
            raise table.error(None, "missing required key 'target'")
        source = table.str("target")
        assert source is not None
        if "{" in source:
            raise table.error("target", "a prefix target is a base URL without variables")
        # The remainder (raw, starts with "/") is appended as a reserved expansion.
        table.data["target"] = source.rstrip("/") + "{+path}"
        try:
            options = read_target(table, frozenset({"path"}))
        finally:
            table.data["target"] = source
        target: TargetTemplate = options["target"]
        target.source = source
        return PrefixRoute(prefix=prefix, **common, **options)
