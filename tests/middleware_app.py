"""A Starlette application wrapped by GatewayMiddleware (run by uvicorn in a test)."""

from __future__ import annotations

import contextlib
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway import GatewayMiddleware

STATE = {"started": False}


@contextlib.asynccontextmanager
async def lifespan(app):
    STATE["started"] = True
    yield


async def hello(request):
    return PlainTextResponse(f"hello from the app (started={STATE['started']})")


inner = Starlette(routes=[Route("/app/hello", hello)], lifespan=lifespan)
app = GatewayMiddleware(inner, os.environ["MW_CONFIG"], db_path=os.environ["MW_DB"])
