"""Gatepost: a self-hosted package-distribution gateway.

Public API: :func:`load_config`, :class:`Gateway` (the framework-neutral core),
:class:`GatewayApp` and :class:`GatewayMiddleware` (ASGI adapters).
"""

from .asgi import GatewayApp, GatewayMiddleware, create_app
from .config import Config, load_config
from .core import Gateway, Outcome
from .decisions import Proxy, Redirect, Respond
from .errors import ConfigError
from .events import Event
from .request import Request

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "Event",
    "Gateway",
    "GatewayApp",
    "GatewayMiddleware",
    "Outcome",
    "Proxy",
    "Redirect",
    "Request",
    "Respond",
    "create_app",
    "load_config",
]
