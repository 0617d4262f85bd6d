"""``kind = "file"``: a path template mapped to a target URL template.

Redirects (307 by default), stream-proxies, or, without a target, just records the
request and answers 200 with an empty body (a counted endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import RouteTable, expand_env
from ..decisions import Decision, Proxy, Redirect, Respond
from ..events import Event
from ..request import Request
from ..templates import PathTemplate, TargetTemplate, TemplateError
from .base import COMMON_KEYS, Route, RouteContext, TemplatePlacement, compile_path

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
BUILTIN_VARIABLES = frozenset({"referer_domain"})
_EMPTY_200 = Respond(200, b"", (("content-type", "text/plain; charset=utf-8"),))


@dataclass(eq=False)
class TargetRoute(Route):
    """Shared by kinds that expand a target: redirect, proxy or record-only."""

    target: TargetTemplate | None = None
    mode: str = "redirect"
    status: int = 307
    forward_query: bool = True
    upstream_headers: dict[str, str] = field(default_factory=dict)
    follow_redirects: bool = True
    uses_referer: bool = False

    def target_text(self) -> str:
        if self.target is None:
            return "(record only)"
        return f"{self.target.source} [{self.mode if self.mode == 'proxy' else self.status}]"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cacheable = not self.uses_referer

    def decide(self, request: Request, values: dict, ctx: RouteContext) -> Decision:
        """Expand the target into a decision; raises UnsafeValue when it must be refused."""
        if self.target is None:
            return _EMPTY_200
        if self.uses_referer:
            values = {**values, "referer_domain": ctx.referer_domain(request)}
        url = self.target.expand(values, request.query if self.forward_query else "")
        if self.mode == "proxy":
            return Proxy(url, self.upstream_headers, self.follow_redirects)
        return Redirect(url, self.status)

    def make_event(
        self, request: Request, values: dict, decision: Decision, ctx: RouteContext
    ) -> Event:
        if type(decision) is Redirect:
            event = self.event(request, decision.status, values)
            event.upstream = decision.url
        elif type(decision) is Proxy:
            event = self.event(request, 0, values)  # the adapter fills in the upstream status
            event.upstream = decision.url
        else:
            event = self.event(request, 200, values)
        return event


@dataclass(eq=False)
class FileRoute(TemplatePlacement, TargetRoute):
    kind = "file"
    template: PathTemplate | None = None


TARGET_KEYS = frozenset(
    {"target", "mode", "status", "forward_query", "upstream_headers", "follow_redirects"}
)


def read_target(table: RouteTable, available: frozenset[str]) -> dict:
    """Options shared by target-bearing kinds, validated against captured variables."""
    out: dict = {}
    source = table.str("target")
    mode = table.choice("mode", ("redirect", "proxy"), "redirect")
    status = table.int("status", 307)
    if status not in REDIRECT_STATUSES:
        raise table.error("status", f"status must be one of {REDIRECT_STATUSES}")
    if source is None:
        for key in ("mode", "status", "forward_query", "upstream_headers", "follow_redirects"):
            if key in table.data:
                raise table.error(key, f"{key!r} needs a 'target'")
        return {"target": None}
    try:
        target = TargetTemplate.compile(source)
    except TemplateError as exc:
        raise table.error("target", f"bad target: {exc}") from None
    missing = target.variables - available - BUILTIN_VARIABLES
    if missing:
        names = ", ".join("{" + n + "}" for n in sorted(missing))
        raise table.error("target", f"target uses {names}, which the path does not capture")
    headers = {
        name.lower(): expand_env(value, table, "upstream_headers")
        for name, value in table.str_table("upstream_headers").items()
    }
    if headers and mode != "proxy":
        raise table.error("upstream_headers", "'upstream_headers' only applies to mode = \"proxy\"")
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise table.error("upstream_headers", "header names and values must not contain CR/LF")
    out.update(
        target=target,
        mode=mode,
        status=status,
        forward_query=table.bool("forward_query", True),
        upstream_headers=headers,
        follow_redirects=table.bool("follow_redirects", True),
        uses_referer="referer_domain" in target.variables,
    )
    return out


class FileKind:
    name = "file"
    keys = COMMON_KEYS | TARGET_KEYS | {"path"}
    default_event = "download"

    route_class: type[FileRoute] = FileRoute

    def check(self, table: RouteTable) -> None:
        """Kind-specific rules on the table, before the target is read (none for files)."""

    def build(self, table: RouteTable, common: dict) -> Route:
        template = compile_path(table)
        self.check(table)
        reserved = BUILTIN_VARIABLES & set(template.variables)
        if reserved:
            raise table.error("path", f"{{{reserved.pop()}}} is a built-in variable name")
        options = read_target(table, frozenset(template.variables))
        if options["target"] is None and "event" not in table.data:
            common["event_type"] = "hit"
        return self.route_class(template=template, **common, **options)
