"""Gatepost as a mitmproxy addon: the same core, executed by mitmproxy.

    mitmdump --mode reverse:http://127.0.0.1:1 -s addons/gatepost.py \\
        --set gatepost_config=config/routes.toml

Works in reverse-proxy mode (the nominal upstream is never contacted: the addon sets
``connection_strategy=lazy`` and answers or re-targets every matched request itself) and
as a regular/forward proxy (the Host decides the route).  Redirects and fixed answers are
made in the ``request`` hook; proxy decisions re-target the flow so mitmproxy streams the
upstream response itself.  Events go through the same batched sink, on mitmproxy's event
loop, and are flushed in the ``done`` hook.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

try:  # running from a checkout without `pip install`
    import gateway  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from mitmproxy import ctx, http

from gateway.asgi import resolve_safely
from gateway.config import load_config
from gateway.core import (
    DUPLICATE_HOST,
    HEADERS_TOO_LARGE,
    NOT_FOUND,
    Gateway,
    body_too_large,
    headers_too_large,
)
from gateway.decisions import Deferred, Proxy, ReadBody, Redirect, Respond
from gateway.identity import load_or_create_key
from gateway.proxy import UPSTREAM_SITE_HEADERS, VIA, make_client, upstream_request_headers
from gateway.request import Request

log = logging.getLogger("gateway.mitm")
META = "gatepost"


class Gatepost:
    """mitmproxy hooks as plain methods, delegating every decision to the core."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self.client: httpx.AsyncClient | None = None

    # ------------------------------------------------------------------ options

    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("gatepost_config", str, "config/routes.toml", "Gatepost routes file.")
        loader.add_option(
            "gatepost_db", str, "", "SQLite event store (default: from the routes file)."
        )
        loader.add_option(
            "gatepost_key",
            str,
            "",
            "HMAC key for pseudonymous ids (default: $GATEPOST_KEY or key file).",
        )
        loader.add_option(
            "gatepost_unmatched",
            str,
            "404",
            "Unmatched requests: '404' or 'pass' (forward as mitmproxy would).",
        )

    def configure(self, updated: set[str]) -> None:
        if ctx.options.connection_strategy != "lazy":
            ctx.options.update(connection_strategy="lazy")  # never depend on the nominal upstream
        if not ctx.options.keep_host_header:
            ctx.options.update(keep_host_header=True)  # reverse mode: the client's Host decides
        if self.gateway is not None and not updated & {
            "gatepost_config",
            "gatepost_db",
            "gatepost_key",
        }:
            return
        if self.gateway is not None and self.gateway.started:
            log.warning("gatepost options changed while running; restart mitmdump to apply them")
            return
        config = load_config(
            ctx.options.gatepost_config
        )  # ConfigError stops mitmdump with file:line
        key = ctx.options.gatepost_key.encode() or load_or_create_key(config.server.key_path)
        self.gateway = Gateway(
            config, adapter="mitmproxy", db_path=ctx.options.gatepost_db or None, key=key
        )

    async def running(self) -> None:
        assert self.gateway is not None
        self.client = make_client(self.gateway.config.upstream)
        await self.gateway.startup()

    async def done(self) -> None:
        if self.gateway is not None:
            await self.gateway.shutdown()
        if self.client is not None:
            await self.client.aclose()

    # ------------------------------------------------------------------ requests

    async def request(self, flow: http.HTTPFlow) -> None:
        assert self.gateway is not None
        gateway = self.gateway
        if not gateway.started:
            await self.running()
        started = time.perf_counter()
        req = flow.request
        path, _, query = req.path.partition("?")
        builtin = gateway.builtin(path)
        if builtin is not None:
            flow.response = _response(builtin)
            return
        if headers_too_large(req.headers.fields):
            gateway.count("bad_request_total")
            flow.response = _response(HEADERS_TOO_LARGE)
            return
        if len(req.headers.get_all("host")) > 1:  # RFC 9112: several Host fields → invalid
            gateway.count("bad_request_total")
            flow.response = _response(DUPLICATE_HOST)
            return
        request = Request(
            method=req.method,
            host=req.host_header or req.pretty_host,
            path=path or "/",
            query=query,
            headers=[(k.lower(), v) for k, v in req.headers.items(multi=True)],
            client_ip=flow.client_conn.peername[0] if flow.client_conn.peername else None,
            scheme=req.scheme,
        )
        outcome = gateway.handle(request)
        if outcome is None:
            if ctx.options.gatepost_unmatched != "pass":
                flow.response = _response(NOT_FOUND)
            return
        if type(outcome.decision) is ReadBody:
            body = req.raw_content or b""
            if len(body) > outcome.decision.limit:
                gateway.count("body_too_large_total")
                flow.response = _response(body_too_large(outcome.decision.limit))
                return
            request.body = body
            outcome = gateway.handle(request)
            assert outcome is not None
        decision = outcome.decision
        if type(decision) is Deferred:
            assert self.client is not None
            decision = await resolve_safely(decision, self.client, outcome.event)
        if type(decision) is Proxy:
            _retarget(flow, request, decision)
            flow.metadata[META] = (outcome, started)
            return
        if type(decision) is Redirect:
            flow.response = http.Response.make(decision.status, b"", {"location": decision.url})
        else:
            assert isinstance(decision, Respond)
            flow.response = _response(decision)
        self.gateway.record(outcome, started)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        found = flow.metadata.get(META)
        if found is None or flow.response is None:
            return
        event = found[0].event
        counted = [0]

        def count(chunk: bytes) -> bytes:
            counted[0] += len(chunk)
            if event is not None:
                event.bytes_sent = counted[0]
            return chunk

        flow.response.stream = count  # stream: never buffer the body in memory
        for name in UPSTREAM_SITE_HEADERS:
            flow.response.headers.pop(name, None)
        flow.response.headers["via"] = VIA

    def response(self, flow: http.HTTPFlow) -> None:
        found = flow.metadata.pop(META, None)
        if found is None or flow.response is None:
            return
        outcome, started = found
        if outcome.event is not None:
            outcome.event.status = flow.response.status_code
            if outcome.event.bytes_sent is None:
                outcome.event.bytes_sent = 0
        self.gateway.record(outcome, started)

    def error(self, flow: http.HTTPFlow) -> None:
        found = flow.metadata.pop(META, None)
        if found is None:
            return
        outcome, started = found
        if outcome.event is not None:
            message = str(flow.error) if flow.error else ""
            timed_out = "timed out" in message.lower() or "timeout" in message.lower()
            if flow.response is not None:
                outcome.event.status = flow.response.status_code
                outcome.event.outcome = "upstream_aborted"
            else:
                outcome.event.status = 504 if timed_out else 502
                outcome.event.outcome = "upstream_timeout" if timed_out else "upstream_error"
        self.gateway.record(outcome, started)


def _response(answer: Respond) -> http.Response:
    return http.Response.make(
        answer.status, answer.body, [(k.encode(), v.encode()) for k, v in answer.headers]
    )


def _retarget(flow: http.HTTPFlow, request: Request, decision: Proxy) -> None:
    """Point the flow at the upstream URL with the same header policy as the ASGI adapter."""
    target = urlsplit(decision.url)
    req = flow.request
    req.scheme = target.scheme
    req.host = target.hostname or ""
    req.port = target.port or (443 if target.scheme == "https" else 80)
    req.path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    req.headers.clear()
    for k, v in upstream_request_headers(request, decision.headers):
        req.headers.add(k, v)
    req.headers["host"] = target.netloc


addons = [Gatepost()]
