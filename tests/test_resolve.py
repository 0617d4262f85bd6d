"""A failing route handler is a logged 502 with its event recorded, never a 500."""

from __future__ import annotations

import asyncio

from gateway.asgi import resolve_safely
from gateway.decisions import Deferred, Redirect
from gateway.events import Event


def test_handler_bug_becomes_502_and_is_recorded(caplog):
    async def broken(client):
        raise KeyError("unexpected upstream answer")

    event = Event(type="download", host="h", method="GET", path="/x")
    answer = asyncio.run(resolve_safely(Deferred(broken), None, event))
    assert answer.status == 502 and (event.status, event.outcome) == (502, "error")
    assert "route handler failed" in caplog.text and "KeyError" in caplog.text


def test_working_handler_passes_its_decision_through():
    async def fine(client):
        return Redirect("https://example.org/x", 307)

    assert asyncio.run(resolve_safely(Deferred(fine), None, None)) == Redirect(
        "https://example.org/x", 307
    )
