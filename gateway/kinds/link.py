"""``kind = "link"``: tracked short links and templated redirects.

``/go/{name}`` or ``/youtube/{video}`` → ``https://www.youtube.com/watch?v={video}``,
302 by default, recorded as ``link_click`` with campaign parameters (``utm_*`` in the
query string) extracted into the event's variables.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from ..config import RouteTable
from ..decisions import Decision
from ..events import Event
from ..request import Request
from .base import RouteContext
from .file import FileKind, FileRoute

CAMPAIGN_PREFIX = "utm_"


def campaign_variables(query: str) -> dict[str, str]:
    """``utm_source=talk&x=1&utm_medium=slides`` → ``{"utm_source": "talk", "utm_medium": "slides"}``."""
    if CAMPAIGN_PREFIX not in query:
        return {}
    return {
        k: v[:256]
        for k, v in parse_qsl(query, keep_blank_values=True)
        if k.startswith(CAMPAIGN_PREFIX) and len(k) <= 64
    }


@dataclass(eq=False)
class LinkRoute(FileRoute):
    kind = "link"

    def make_event(
        self, request: Request, values: dict[str, str], decision: Decision, ctx: RouteContext
    ) -> Event:
        event = super().make_event(request, values, decision, ctx)
        campaign = campaign_variables(request.query)
        if campaign:
            event.vars = {**values, **campaign}
        return event


class LinkKind(FileKind):
    name = "link"
    default_event = "link_click"
    route_class = LinkRoute

    def check(self, table: RouteTable) -> None:
        if "target" not in table.data:
            raise table.error(None, "missing required key 'target'")
        if "status" not in table.data:
            table.data["status"] = 302
        if table.data.get("mode", "redirect") != "redirect":
            raise table.error("mode", "links always redirect")
