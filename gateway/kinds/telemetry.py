"""``kind = "telemetry"``: the "call home" endpoint of running installations.

``GET`` or ``POST`` on a template such as ``/ping/{package}/{version}`` answers 204 (or
a blank 200 page) and records one ``telemetry`` event per reported object.  Optional
bearer tokens are compared in constant time; bodies are bounded in size and count and
must be flat JSON objects — a single object, a list, or newline-delimited.  A request
that fails any check records nothing.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ..config import RouteTable, expand_env
from ..decisions import Decision, ReadBody, Respond
from ..request import Request
from ..templates import PathTemplate
from .base import (
    COMMON_KEYS,
    Events,
    Route,
    RouteContext,
    TemplatePlacement,
    compile_path,
    text_response,
)

TOKEN_PARAM = "token"
FIELD_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
MAX_STRING = 1024
_IGNORED_PARAMS = frozenset({TOKEN_PARAM, "do_not_track"})
_NO_STORE = (("cache-control", "no-store"),)
EMPTY = Respond(204, b"", _NO_STORE)
BLANK = Respond(
    200,
    b"<!doctype html><title></title>\n",
    (("content-type", "text/html; charset=utf-8"), *_NO_STORE),
)
UNAUTHORIZED = text_response(
    401, "missing or invalid token", ("www-authenticate", 'Bearer realm="gatepost"')
)


class PayloadError(ValueError):
    """A telemetry payload that must be refused as a whole (400 or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_payload(body: bytes, max_items: int) -> list[dict[str, Any]]:
    """Flat JSON objects from a body: an object, a list of objects, or one object per line."""
    if not body.strip():
        return []
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("body is not UTF-8") from None
    try:
        parsed = json.loads(text)
        items = parsed if isinstance(parsed, list) else [parsed]
    except json.JSONDecodeError as whole_error:
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if n == 1:
                    raise PayloadError(f"invalid JSON: {whole_error}") from None
                raise PayloadError(f"invalid JSON on line {n}: {exc.msg}") from None
    if len(items) > max_items:
        raise PayloadError(f"{len(items)} objects, at most {max_items} allowed", 413)
    for n, item in enumerate(items, 1):
        check_fields(item, n)
    return items


def check_fields(item: Any, n: int) -> None:
    if not isinstance(item, dict):
        raise PayloadError(f"item {n}: expected a JSON object, got {type(item).__name__}")
    for key, value in item.items():
        if not FIELD_KEY.fullmatch(key):
            raise PayloadError(
                f"item {n}: invalid field name {key[:80]!r} (letters, digits, _ . -)"
            )
        if isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**63):
            continue
        if isinstance(value, float) and math.isfinite(value):
            continue
        if isinstance(value, str) and len(value) <= MAX_STRING:
            continue
        raise PayloadError(
            f"item {n}: field {key!r} must be a string (≤ {MAX_STRING} chars), number or boolean"
        )


@dataclass(eq=False)
class TelemetryRoute(TemplatePlacement, Route):
    kind = "telemetry"
    methods = frozenset({"GET", "POST"})
    template: PathTemplate | None = None
    response: Respond = EMPTY
    tokens: tuple[bytes, ...] = ()
    max_body: int = 16 * 1024
    max_items: int = 100

    def target_text(self) -> str:
        auth = ", token" if self.tokens else ""
        return f"(telemetry {self.response.status}{auth})"

    def authorized(self, request: Request) -> bool:
        if not self.tokens:
            return True
        presented = ""
        auth = request.header("authorization") or ""
        if auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        elif TOKEN_PARAM + "=" in request.query:
            presented = dict(parse_qsl(request.query)).get(TOKEN_PARAM, "")
        given = presented.encode()
        ok = False
        for token in self.tokens:  # compare with every token: timing says nothing
            ok |= hmac.compare_digest(given, token)
        return ok and bool(given)

    def handle(
        self, request: Request, values: dict[str, str], ctx: RouteContext
    ) -> tuple[Decision, Events]:
        if not self.authorized(request):
            ctx.count("telemetry_unauthorized_total")
            return UNAUTHORIZED, None
        items: list[dict[str, Any]] = []
        if request.method == "POST":
            if request.body is None:
                return ReadBody(self.max_body), None
            try:
                items = parse_payload(request.body, self.max_items)
            except PayloadError as exc:
                ctx.count("telemetry_rejected_total")
                return text_response(exc.status, f"telemetry rejected: {exc}"), None
        query_fields = {
            k: v[:MAX_STRING]
            for k, v in parse_qsl(request.query, keep_blank_values=True)
            if k not in _IGNORED_PARAMS and FIELD_KEY.fullmatch(k)
        }
        recorded_query = _without_token(request.query)
        events = []
        for item in items or [{}]:
            event = self.event(request, self.response.status, values)
            event.query = recorded_query
            data = {**query_fields, **item}
            event.data = data or None
            if event.version is None and isinstance(data.get("version"), str):
                event.version = data["version"]
            if event.package is None and isinstance(data.get("package"), str):
                event.package = data["package"]
            events.append(event)
        return self.response, events


def _without_token(query: str) -> str:
    """Never store access tokens on events."""
    if TOKEN_PARAM + "=" not in query:
        return query
    return urlencode(
        [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != TOKEN_PARAM]
    )


class TelemetryKind:
    name = "telemetry"
    keys = COMMON_KEYS | {"path", "response", "tokens", "max_body", "max_items"}
    default_event = "telemetry"

    def build(self, table: RouteTable, common: dict) -> Route:
        template = compile_path(table)
        response = {"empty": EMPTY, "blank": BLANK}[
            table.choice("response", ("empty", "blank"), "empty")
        ]
        tokens = tuple(expand_env(t, table, "tokens").encode() for t in table.str_list("tokens"))
        if any(not t for t in tokens):
            raise table.error("tokens", "tokens must not be empty")
        max_body = table.int("max_body", 16 * 1024)
        max_items = table.int("max_items", 100)
        assert max_body is not None and max_items is not None
        if not 0 < max_body <= 10 * 1024 * 1024:
            raise table.error("max_body", "max_body must be between 1 and 10485760 bytes")
        if not 0 < max_items <= 100_000:
            raise table.error("max_items", "max_items must be between 1 and 100000")
        return TelemetryRoute(
            template=template,
            response=response,
            tokens=tokens,
            max_body=max_body,
            max_items=max_items,
            **common,
        )
