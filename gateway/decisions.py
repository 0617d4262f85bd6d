"""What a route decides for a request; adapters (ASGI, mitmproxy, import) execute it.

Decisions are plain data so that the same core serves every adapter unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, frozen=True)
class Redirect:
    """Answer with a redirect to ``url``."""

    url: str
    status: int = 307


@dataclass(slots=True)
class Proxy:
    """Stream ``method url`` from the upstream back to the client.

    ``headers`` are added to (or replace) the forwarded request headers.
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    follow_redirects: bool = True


@dataclass(slots=True, frozen=True)
class Respond:
    """Answer directly with a fixed status, headers and body."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class ReadBody:
    """The route needs the request body (at most ``limit`` bytes): the adapter reads it
    into ``Request.body`` and calls :meth:`Gateway.handle` again.  Larger bodies get 413."""

    limit: int


@dataclass(slots=True)
class Deferred:
    """Work that needs the upstream before the answer is known (e.g. rewriting an index
    page).  The adapter awaits ``resolve(client)`` with its shared ``httpx.AsyncClient``
    and executes the final decision it returns (never another ``Deferred``)."""

    resolve: Callable[[Any], Awaitable[Redirect | Proxy | Respond]]


Decision = Redirect | Proxy | Respond | ReadBody | Deferred
