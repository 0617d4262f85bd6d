"""The framework-neutral core: request → route match → handler → decision + event.

Adapters (ASGI app, ASGI middleware, mitmproxy addon, log import) build a
:class:`~gateway.request.Request`, call :meth:`Gateway.handle`, execute the returned
decision, complete the event (status, bytes, duration) and hand it to
:meth:`Gateway.record`.  Nothing here knows about Starlette or mitmproxy.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .config import Config
from .decisions import Decision, Respond
from .events import Event
from .identity import ClientAddress, Identifier, load_or_create_key
from .kinds.base import Route, method_not_allowed, text_response
from .metrics import Metrics
from .request import Request, normalize_host
from .router import Router
from .rows import RowBuilder, referer_domain
from .sink import EventSink
from .templates import UnsafeValue

log = logging.getLogger("gateway")

_TEXT = (("content-type", "text/plain; charset=utf-8"),)
NOT_FOUND = Respond(404, b"not found\n", _TEXT)
HEALTHY = Respond(200, b"ok\n", _TEXT + (("cache-control", "no-store"),))
MAX_HEADER_FIELD = 1024
DECISION_CACHE_SIZE = 8192  # user agents and referers are truncated to this on events

_host = lru_cache(maxsize=1024)(normalize_host)

# Answers both adapters give before any route is involved.
DUPLICATE_HOST = text_response(400, "bad request: more than one Host header")
# uvicorn's httptools parser sets no limit on header size: the gateway sets its own.
HEADERS_TOO_LARGE = text_response(431, "request header fields too large")
MAX_HEADER_BYTES = 64 * 1024  # all names and values together
MAX_HEADER_COUNT = 200


def headers_too_large(fields: Sequence[tuple[bytes, bytes]] | Sequence[tuple[str, str]]) -> bool:
    """Over the limits the gateway accepts (RFC 6585 431), whatever the server allowed."""
    return len(fields) > MAX_HEADER_COUNT or sum(len(k) + len(v) for k, v in fields) > (
        MAX_HEADER_BYTES
    )


def body_too_large(limit: int) -> Respond:
    return text_response(413, f"request body larger than {limit} bytes")


@dataclass(slots=True)
class Outcome:
    """The decision for a request and the event to complete and record (if any)."""

    decision: Decision
    event: Event | None = None
    route: Route | None = None
    more: tuple[Event, ...] = ()  # further events of the same request (telemetry batches)

    def events(self) -> tuple[Event, ...]:
        return self.more if self.event is None else (self.event, *self.more)


class Gateway:
    """Compiled routes, identity, metrics and the event sink, for one adapter."""

    def __init__(
        self,
        config: Config,
        *,
        adapter: str = "asgi",
        db_path: str | Path | None = None,
        key: bytes | None = None,
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.router = Router(config.routes)
        self.client_address = ClientAddress(config.server.trusted_proxies)
        self.metrics = Metrics()
        self.db_path = Path(db_path) if db_path else config.server.database_path
        self._key = key
        self._sink: EventSink | None = None
        self.started = False
        # (host, raw path, raw query) → (route, values, decision) for cacheable routes:
        # repeated download URLs skip matching and expansion.  Bounded; cleared when full.
        self._decisions: dict[tuple[str, str, str], tuple[Route, dict, Decision]] = {}
        self._health_path = config.server.health_path
        self._metrics_path = config.server.metrics_path

    # ------------------------------------------------------------------ lifecycle

    @property
    def sink(self) -> EventSink:
        """Created on first use so events recorded before start-up are kept, not lost."""
        if self._sink is None:
            key = self._key or load_or_create_key(self.config.server.key_path)
            ev = self.config.events
            self._sink = EventSink(
                self.db_path,
                RowBuilder(Identifier(key)),
                queue_size=ev.queue_size,
                batch_size=ev.batch_size,
                flush_interval=ev.flush_interval,
            )
            stats = self._sink.stats
            g = self.metrics.gauges
            g["events_enqueued_total"] = lambda: stats.enqueued
            g["events_written_total"] = lambda: stats.written
            g["events_dropped_total"] = lambda: stats.dropped
            g["events_write_errors_total"] = lambda: stats.write_errors
            g["events_pending"] = lambda: self._sink.pending if self._sink else 0
        return self._sink

    async def startup(self) -> None:
        await self.sink.start()
        self.started = True
        # Compiled routes live for the whole process: keep them out of GC passes.
        gc.collect()
        gc.freeze()

    async def shutdown(self) -> None:
        if self._sink is not None:
            await self._sink.close(self.config.events.shutdown_timeout)

    # ------------------------------------------------------------------ requests

    def referer_domain(self, request: Request) -> str:
        return referer_domain(request.header("referer")) or ""

    def builtin(self, path: str) -> Respond | None:
        """Health and metrics endpoints, answered before routing."""
        if path == self._health_path:
            return HEALTHY
        if path == self._metrics_path:
            body = self.metrics.render().encode()
            return Respond(200, body, (("content-type", "text/plain; version=0.0.4"),))
        return None

    def handle(self, request: Request) -> Outcome | None:
        """Match and decide; ``None`` when no route matches (404 or pass to the next app)."""
        request.host = host = _host(request.host)
        key = (host, request.path, request.query)
        try:
            cached = self._decisions.get(key)
            if cached is not None:
                route, values, decision = cached
            else:
                found = self.router.match(host, request.path, request.query)
                if found is None:
                    self.metrics.inc("unmatched_total")
                    return None
                route, values, decision = found.route, found.values, None
            if request.method not in route.methods:
                self.metrics.inc("method_not_allowed_total")
                return Outcome(method_not_allowed(route), None, route)
            if decision is None and route.cacheable:
                decision = route.decide(request, values, self)
                if len(self._decisions) >= DECISION_CACHE_SIZE:
                    self._decisions.clear()
                self._decisions[key] = (route, values, decision)
            if decision is not None:
                event = route.make_event(request, values, decision, self)
            else:
                decision, event = route.handle(request, values, self)
        except UnsafeValue as exc:
            self.metrics.inc("refused_total")
            log.warning("refused %s %s: %s", request.method, request.path[:200], exc)
            return Outcome(text_response(400, f"bad request: {exc}"))
        if type(event) is list:  # several events (telemetry batches)
            self.annotate(event, request)
            return Outcome(decision, event[0] if event else None, route, tuple(event[1:]))
        if event is not None:
            self.annotate((event,), request)
        return Outcome(decision, event, route)

    def count(self, name: str) -> None:
        self.metrics.inc(name)

    def annotate(self, events: Sequence[Event], request: Request) -> None:
        """Copy what events need from the request (agent, referer, DNT, client address),
        read once however many events the request produced."""
        ua = referer = None
        dnt = False
        for name, value in request.headers:
            if name == "user-agent":
                ua = value[:MAX_HEADER_FIELD]
            elif name == "referer":
                referer = value[:MAX_HEADER_FIELD]
            elif name in ("dnt", "sec-gpc"):
                dnt = dnt or value.strip() == "1"
        if not dnt and "do_not_track=1" in request.query:
            dnt = True
        client_ip = self.client_address.resolve(request.client_ip, request.headers)
        for event in events:
            event.user_agent = ua
            event.referer = referer
            event.dnt = dnt
            event.adapter = self.adapter
            event.client_ip = client_ip

    def record(self, outcome: Outcome, started: float) -> None:
        """Queue the request's events; never blocks, never raises.

        ``started`` is the ``time.perf_counter()`` at arrival: events whose executor did not
        time them (everything but streamed answers) get the time until now.
        """
        duration = (time.perf_counter() - started) * 1000
        for event in outcome.events():
            if event.duration_ms is None:
                event.duration_ms = duration
            self.sink.put(event)
