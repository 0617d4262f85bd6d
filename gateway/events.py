"""Events: what happened, as the core saw it, before privacy reduction.

An :class:`Event` still holds the client address; the sink reduces it to a network
prefix and keyed ids (see :mod:`gateway.identity`) before anything touches disk.
The stored columns are documented in ``docs/events.md`` (the scorer's contract).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Event:
    type: str
    host: str
    method: str
    path: str
    query: str = ""
    route_id: str | None = None
    route_kind: str | None = None
    package: str | None = None
    version: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    status: int = 0
    bytes_sent: int | None = None
    duration_ms: float | None = None
    outcome: str = "ok"
    upstream: str | None = None
    user_agent: str | None = None
    referer: str | None = None
    client_ip: str | None = None
    dnt: bool = False
    data: dict[str, Any] | None = None
    adapter: str = "asgi"
    ts: float = field(default_factory=time.time)
    source_hash: str | None = None
