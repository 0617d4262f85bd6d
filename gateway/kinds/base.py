"""The one small interface every route kind implements.

A kind turns a ``[[routes]]`` table into a :class:`Route`.  A route knows how to
``match`` a normalised path and query (returning captured variables) and how to
``handle`` a match (returning a decision and the event to record).  The router only
needs ``hosts``, ``leading_literals()`` and ``sort_key()`` to place it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..config import RouteTable
from ..decisions import Decision, Respond
from ..events import Event
from ..request import Request, normalize_host
from ..templates import PathTemplate, TailMatcher, TemplateError, normalize_raw_path

COMMON_KEYS = frozenset({"id", "kind", "host", "package", "event"})


class RouteContext(Protocol):
    """What a handler may ask of the core while handling a request."""

    def referer_domain(self, request: Request) -> str: ...

    def count(self, name: str) -> None:
        """Increment a counter exposed at the metrics endpoint."""
        ...


Events = Event | list[Event] | None


@dataclass(eq=False)
class Route:
    """Fields shared by every kind; subclasses add their own and implement two methods."""

    kind: ClassVar[str] = "base"
    methods: ClassVar[frozenset[str]] = frozenset({"GET", "HEAD"})

    id: str
    hosts: tuple[str, ...]
    order: int
    line: int | None
    package: str | None
    event_type: str
    allow_header: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.allow_header = ", ".join(sorted(self.methods))

    # ---- placement ------------------------------------------------------------
    def leading_literals(self) -> tuple[str, ...]:
        raise NotImplementedError

    def ranks(self) -> tuple[int, ...]:
        raise NotImplementedError

    def query_conditions(self) -> int:
        return 0

    def literal_chars(self) -> int:
        raise NotImplementedError

    def sort_key(self) -> tuple:
        """Precedence: literal segments first, more query conditions, more literal text,
        then file order (host-specific before any-host is the router's job)."""
        return (self.ranks(), -self.query_conditions(), -self.literal_chars(), self.order)

    def identity(self) -> tuple:
        """Two routes with the same identity would shadow each other: a duplicate."""
        raise NotImplementedError

    # ---- request time ----------------------------------------------------------
    def match(self, norm_path: str, query: str) -> dict[str, str] | None:
        raise NotImplementedError

    def tail_matcher(self) -> TailMatcher | None:
        """Matching data the router may use instead of :meth:`match` once it has compared
        the route's leading literal segments itself; ``None``: call :meth:`match`."""
        return None

    #: True when ``decide`` depends only on (host, path, query): the core may then
    #: reuse the decision for repeated URLs without matching and expanding again.
    cacheable: bool = field(init=False, default=False)

    def decide(self, request: Request, values: dict[str, str], ctx: RouteContext) -> Decision:
        raise NotImplementedError

    def make_event(
        self, request: Request, values: dict[str, str], decision: Decision, ctx: RouteContext
    ) -> Event | None:
        raise NotImplementedError

    def handle(
        self, request: Request, values: dict[str, str], ctx: RouteContext
    ) -> tuple[Decision, Events]:
        """Decision plus event(s); kinds with request-dependent answers override this."""
        decision = self.decide(request, values, ctx)
        return decision, self.make_event(request, values, decision, ctx)

    # ---- presentation ----------------------------------------------------------
    def pattern(self) -> str:
        raise NotImplementedError

    def target_text(self) -> str:
        return ""

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "host": ",".join(self.hosts) or "*",
            "path": self.pattern(),
            "target": self.target_text(),
            "package": self.package or "",
        }

    def event(self, request: Request, status: int, values: dict[str, str]) -> Event:
        """An event pre-filled with what every kind records."""
        return Event(
            type=self.event_type,
            host=request.host,
            method=request.method,
            path=request.path,
            query=request.query,
            route_id=self.id,
            route_kind=self.kind,
            package=self.package or values.get("package"),
            version=values.get("version"),
            vars=values,
            status=status,
        )


class TemplatePlacement:
    """Placement and matching for routes whose incoming side is one ``PathTemplate``."""

    template: PathTemplate | None

    def _t(self) -> PathTemplate:
        assert self.template is not None
        return self.template

    def leading_literals(self) -> tuple[str, ...]:
        return self._t().leading_literals()

    def ranks(self) -> tuple[int, ...]:
        return self._t().ranks()

    def query_conditions(self) -> int:
        return len(self._t().query)

    def literal_chars(self) -> int:
        return self._t().literal_chars

    def identity(self) -> tuple:
        t = self._t()
        return (t.regex_text, tuple(sorted((q.key, q.pattern.pattern) for q in t.query)))

    def pattern(self) -> str:
        return self._t().source

    def match(self, norm_path: str, query: str) -> dict[str, str] | None:
        return self._t().match(norm_path, query)

    def tail_matcher(self) -> TailMatcher:
        return self._t().tail_matcher()


class PrefixPlacement:
    """Placement for routes that own everything below a literal path prefix."""

    prefix: str  # canonical, ends with "/"

    def leading_literals(self) -> tuple[str, ...]:
        return tuple(s for s in self.prefix.strip("/").split("/") if s)

    def ranks(self) -> tuple[int, ...]:
        return (0,) * len(self.leading_literals()) + (3,)

    def literal_chars(self) -> int:
        return len(self.prefix)

    def identity(self) -> tuple:
        return (type(self).__name__, self.prefix)


def read_prefix(table: RouteTable, key: str, default: str) -> str:
    """A literal path prefix, canonical and ending in "/" (prefix and pypi routes)."""
    prefix = table.str(key, default)
    assert prefix is not None
    if not prefix.startswith("/") or "{" in prefix or "<" in prefix or "?" in prefix:
        raise table.error(
            key, f"{key} must be a literal path prefix starting with '/', like {default}"
        )
    return normalize_raw_path(prefix.rstrip("/") + "/")


def compile_path(table: RouteTable, default: str | None = None) -> PathTemplate:
    """The route's ``path`` template, or a located configuration error."""
    source = table.str("path", default, required=default is None)
    assert source is not None
    try:
        return PathTemplate.compile(source)
    except TemplateError as exc:
        raise table.error("path", f"bad path template: {exc}") from None


def text_response(status: int, message: str, *headers: tuple[str, str]) -> Respond:
    return Respond(
        status, f"{message}\n".encode(), (("content-type", "text/plain; charset=utf-8"), *headers)
    )


def method_not_allowed(route: Route) -> Respond:
    return Respond(
        405,
        b"method not allowed\n",
        (("allow", route.allow_header), ("content-type", "text/plain; charset=utf-8")),
    )


def read_hosts(table: RouteTable) -> tuple[str, ...]:
    hosts = []
    for host in table.str_list("host"):
        norm = normalize_host(host)
        if not norm or "/" in host or "*" in host or " " in host:
            raise table.error(
                "host", f"invalid host {host!r} (write a bare name like get.acme.dev)"
            )
        hosts.append(norm)
    return tuple(dict.fromkeys(hosts))
