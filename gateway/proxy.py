"""Executing a :class:`~gateway.decisions.Proxy` decision over ASGI with httpx streaming.

Bodies are never buffered: upstream chunks are relayed as they arrive (``aiter_raw``,
so compressed bodies stay compressed).  Failures before the response starts become
502 (connect/protocol errors) or 504 (timeouts); a failure after it started aborts
the client connection so the client sees a truncated body, never a "complete" one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from .config import UpstreamSettings
from .decisions import Proxy
from .events import Event
from .request import Request

log = logging.getLogger("gateway.proxy")

# Request headers worth forwarding to a file host; others (cookies, credentials for
# *our* domain, forwarding headers revealing client addresses) are not forwarded.
FORWARD_REQUEST_HEADERS = frozenset(
    {
        "accept", "accept-encoding", "accept-language", "cache-control", "if-match",
        "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "range",
        "user-agent",
    }
)  # fmt: skip
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade", "proxy-connection",
    }
)  # fmt: skip
# What describes the upstream's site rather than the gateway's answer: never passed on.
UPSTREAM_SITE_HEADERS = frozenset({"set-cookie", "server", "alt-svc"})
# The ASGI server frames the answer and dates it itself (mitmproxy keeps framing and date).
DROP_RESPONSE_HEADERS = HOP_BY_HOP | UPSTREAM_SITE_HEADERS | {"date"}
VIA = "1.1 gatepost"


def make_client(settings: UpstreamSettings) -> httpx.AsyncClient:
    """The shared upstream client: pooled connections, explicit timeouts, no env proxies."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=settings.pool_timeout,
        ),
        limits=httpx.Limits(max_connections=settings.max_connections, max_keepalive_connections=50),
        verify=settings.verify_tls,
        trust_env=False,
        max_redirects=5,
    )


def upstream_request_headers(request: Request, extra: dict[str, str]) -> list[tuple[str, str]]:
    headers = [
        (k, v) for k, v in request.headers if k in FORWARD_REQUEST_HEADERS and k not in extra
    ]
    if "accept-encoding" not in extra and not any(k == "accept-encoding" for k, _ in headers):
        headers.append(("accept-encoding", "identity"))  # never a body the client did not ask for
    headers.extend(extra.items())
    headers.append(("via", VIA))
    return headers


def response_headers(upstream: httpx.Response) -> list[tuple[bytes, bytes]]:
    connection_named = {
        token.strip().lower()
        for value in upstream.headers.get_list("connection")
        for token in value.split(",")
    }
    out = [
        (k, v)
        for k, v in upstream.headers.raw
        if k.lower().decode("latin-1") not in DROP_RESPONSE_HEADERS
        and k.lower().decode("latin-1") not in connection_named
    ]
    out.append((b"via", VIA.encode()))
    return out


async def _send_error(send: Any, status: int, message: str) -> None:
    body = f"{message}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def execute_proxy(
    client: httpx.AsyncClient,
    request: Request,
    decision: Proxy,
    event: Event | None,
    receive: Any,
    send: Any,
) -> None:
    """Stream the upstream answer to the ASGI client and complete the event."""
    started = time.perf_counter()
    sent = 0
    status = 0
    outcome = "ok"
    disconnected = asyncio.Event()

    async def watch_disconnect() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
                return

    watcher = asyncio.create_task(watch_disconnect())
    upstream = None
    try:
        try:
            upstream = await client.send(
                client.build_request(
                    request.method,
                    decision.url,
                    headers=upstream_request_headers(request, decision.headers),
                ),
                stream=True,
                follow_redirects=decision.follow_redirects,
            )
        except httpx.TimeoutException as exc:
            status, outcome = 504, "upstream_timeout"
            log.warning("upstream timeout for %s: %r", decision.url, exc)
            await _send_error(send, 504, "upstream timed out")
            return
        except (httpx.HTTPError, ValueError) as exc:
            status, outcome = 502, "upstream_error"
            log.warning("upstream error for %s: %r", decision.url, exc)
            await _send_error(send, 502, "upstream unavailable")
            return
        status = upstream.status_code
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": response_headers(upstream),
            }
        )
        if request.method == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            async for chunk in upstream.aiter_raw():
                if disconnected.is_set():
                    outcome = "client_disconnected"
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
        except httpx.HTTPError as exc:
            # Response already started: abort (return without completing) so the
            # server closes the connection and the client sees a truncated body.
            outcome = (
                "upstream_timeout"
                if isinstance(exc, httpx.TimeoutException)
                else "upstream_aborted"
            )
            log.warning(
                "upstream failed mid-body for %s after %d bytes: %r", decision.url, sent, exc
            )
            return
        await send({"type": "http.response.body", "body": b""})
    finally:
        watcher.cancel()
        if upstream is not None:
            await upstream.aclose()
        if event is not None:
            event.status = status
            event.bytes_sent = sent
            event.outcome = outcome
            event.duration_ms = (time.perf_counter() - started) * 1000
