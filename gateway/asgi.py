"""The ASGI adapter: a lean hot path for matched routes, plus a middleware form.

Matched routes are answered with raw ASGI messages (no per-request framework
objects), which is what lets the gateway record every event and still outrun a
bare Starlette redirect.  Unmatched requests get a 404, or, in
:class:`GatewayMiddleware`, go to the wrapped application.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from .config import Config, load_config
from .core import (
    DUPLICATE_HOST,
    HEADERS_TOO_LARGE,
    NOT_FOUND,
    Gateway,
    body_too_large,
    headers_too_large,
)
from .decisions import Deferred, Proxy, ReadBody, Redirect, Respond
from .events import Event
from .kinds.base import text_response
from .proxy import execute_proxy, make_client
from .request import Request

log = logging.getLogger("gateway.asgi")

Scope = dict[str, Any]
ASGIApp = Any

__all__ = ["GatewayApp", "GatewayMiddleware", "create_app"]


class GatewayApp:
    """An ASGI application serving the routes of one configuration."""

    def __init__(
        self,
        config: Config | str | Path,
        *,
        fallback: ASGIApp | None = None,
        db_path: str | Path | None = None,
        adapter: str = "asgi",
    ) -> None:
        if not isinstance(config, Config):
            config = load_config(config)
        self.gateway = Gateway(config, adapter=adapter, db_path=db_path)
        self.fallback = fallback
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = make_client(self.gateway.config.upstream)
        return self._client

    async def startup(self) -> None:
        await self.gateway.startup()

    async def shutdown(self) -> None:
        await self.gateway.shutdown()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            if self.fallback is None:
                await self._lifespan(receive, send)
            else:
                await self._wrapped_lifespan(scope, receive, send)
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    # ------------------------------------------------------------------ lifespan

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # report start-up failure to the server
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _wrapped_lifespan(self, scope: Scope, receive: Any, send: Any) -> None:
        """Start and stop alongside the wrapped app's own lifespan."""

        async def receive_hooked() -> dict:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
            return message

        await self.fallback(scope, receive_hooked, send)

    # ------------------------------------------------------------------ requests

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        gateway = self.gateway
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(scope.get("path") or "/")
        builtin = gateway.builtin(path)
        if builtin is not None:
            await _respond(send, builtin, scope["method"])
            return
        if not gateway.started:
            await gateway.startup()  # servers without lifespan support
        raw_headers = scope["headers"]
        if headers_too_large(raw_headers):
            gateway.count("bad_request_total")
            await _respond(send, HEADERS_TOO_LARGE, scope["method"])
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers]
        host = ""
        hosts = 0
        for name, value in headers:
            if name == "host":
                host = value
                hosts += 1
        if hosts > 1:  # RFC 9112: a request with several Host fields is invalid
            gateway.count("bad_request_total")
            await _respond(send, DUPLICATE_HOST, scope["method"])
            return
        client = scope.get("client")
        request = Request(
            method=scope["method"],
            host=host,
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            client_ip=client[0] if client else None,
            scheme=scope.get("scheme", "http"),
        )
        outcome = gateway.handle(request)
        if outcome is None:
            if self.fallback is not None:
                await self.fallback(scope, receive, send)
            else:
                await _respond(send, NOT_FOUND, request.method)
            return
        if type(outcome.decision) is ReadBody:
            refusal = await _read_body(request, receive, outcome.decision.limit)
            if refusal is not None:
                gateway.count(
                    "body_too_large_total" if refusal.status == 413 else "bad_request_total"
                )
                await _respond(send, refusal, request.method)
                return
            outcome = gateway.handle(request)
            assert outcome is not None and type(outcome.decision) is not ReadBody
        decision, event = outcome.decision, outcome.event
        try:
            if type(decision) is Deferred:
                decision = await resolve_safely(decision, self.client, event)
            if type(decision) is Redirect:
                await send(
                    {
                        "type": "http.response.start",
                        "status": decision.status,
                        "headers": [
                            (b"location", decision.url.encode("latin-1")),
                            (b"content-length", b"0"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
            elif type(decision) is Proxy:
                await execute_proxy(self.client, request, decision, event, receive, send)
            else:
                assert isinstance(decision, Respond)
                await _respond(send, decision, request.method)
        finally:
            gateway.record(outcome, started)


async def resolve_safely(decision: Deferred, client: httpx.AsyncClient, event: Event | None):
    """Run a kind's upstream work; a bug or an unexpected upstream answer becomes a 502,
    logged with its traceback and recorded, never a 500 or a lost event."""
    try:
        return await decision.resolve(client)
    except Exception:
        log.exception("route handler failed")
        if event is not None:
            event.status, event.outcome = 502, "error"
        return text_response(502, "bad gateway")


async def _read_body(request: Request, receive: Any, limit: int) -> Respond | None:
    """Read the request body into ``request.body``; a 413 answer when it exceeds ``limit``."""
    too_large = body_too_large(limit)
    declared = request.header("content-length")
    if declared is not None:
        if not declared.isdigit():
            return text_response(400, "bad Content-Length")
        if int(declared) > limit:
            return too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    request.body = b"".join(chunks)
    return None


async def _respond(send: Any, response: Respond, method: str) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    if not any(k == b"content-length" for k, _ in headers):
        headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else response.body})


class GatewayMiddleware(GatewayApp):
    """``GatewayMiddleware(app, config)``: serve matched routes, pass the rest to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        config: Config | str | Path,
        *,
        db_path: str | Path | None = None,
    ) -> None:
        super().__init__(config, fallback=app, db_path=db_path, adapter="asgi")


def create_app(config: Config | str | Path = "config/routes.toml", **kwargs: Any) -> GatewayApp:
    """Factory for ``uvicorn --factory gateway.asgi:create_app``."""
    return GatewayApp(config, **kwargs)
