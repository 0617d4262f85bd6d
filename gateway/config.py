"""Loading ``routes.toml``: settings plus route tables handed to their route kind.

Every problem becomes a :class:`~gateway.errors.ConfigError` naming the file, the line
and what is wrong, so ``gateway check`` and ``gateway serve`` can exit cleanly.
``tomllib`` reports syntax errors with a line; for semantic errors we locate the
``[[routes]]`` header (or the offending key inside it) in the source text.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .identity import IPNetwork, parse_networks

DEFAULT_CONFIG = Path("config/routes.toml")
DEFAULT_DATA_DIR = Path("data")

_SECTION_KEYS: dict[str, set[str]] = {
    "server": {
        "host", "port", "data_dir", "database", "key_file", "trusted_proxies", "access_log",
        "health_path", "metrics_path", "public_url",
    },
    "events": {"queue_size", "batch_size", "flush_interval", "shutdown_timeout"},
    "upstream": {"connect_timeout", "read_timeout", "write_timeout", "pool_timeout",
                 "max_connections", "verify_tls"},
}  # fmt: skip
_TOP_KEYS = {"server", "events", "upstream", "routes", "pixels"}
PIXEL_VALUES = ("low", "medium", "high")
_PIXEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class SourceLocator:
    """Maps route indexes and keys back to line numbers in the TOML text."""

    _HEADER = re.compile(r"^\s*\[\[\s*routes\s*\]\]\s*(#.*)?$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.route_lines = [i + 1 for i, line in enumerate(self.lines) if self._HEADER.match(line)]

    def route_line(self, index: int) -> int | None:
        return self.route_lines[index] if index < len(self.route_lines) else None

    def key_line(self, index: int, key: str) -> int | None:
        start = self.route_line(index)
        if start is None:
            return None
        end = self.route_lines[index + 1] if index + 1 < len(self.route_lines) else None
        pattern = re.compile(r"^\s*(" + re.escape(key) + r'|"' + re.escape(key) + r'")\s*=')
        stop = (end - 1) if end else len(self.lines)
        for n in range(start, stop):
            if pattern.match(self.lines[n]):
                return n + 1
        return start

    def header_line(self, header: str) -> int | None:
        """Line of a ``[a.b]`` table header, comparing names without quotes."""
        want = header.replace('"', "")
        for n, line in enumerate(self.lines):
            stripped = line.strip()
            if stripped.startswith("[") and not stripped.startswith("[["):
                name = stripped.split("]")[0].strip("[ ").replace('"', "")
                if name == want:
                    return n + 1
        return None

    def section_key_line(self, section: str, key: str) -> int | None:
        in_section = False
        for n, line in enumerate(self.lines):
            stripped = line.strip()
            if stripped.startswith("["):
                in_section = stripped.strip("[] ") == section
            elif in_section and re.match(r"^\s*" + re.escape(key) + r"\s*=", line):
                return n + 1
        return None


class RouteTable:
    """One ``[[routes]]`` table with typed accessors that fail with a located error."""

    def __init__(
        self,
        data: dict[str, Any],
        index: int,
        path: str,
        locator: SourceLocator,
        shared: dict[str, Any] | None = None,
    ):
        self.data = data
        self.index = index
        self.path = path
        self.locator = locator
        self.line = locator.route_line(index)
        self.shared = shared or {}  # top-level sections kinds may use (e.g. pixels)

    @property
    def label(self) -> str:
        rid = self.data.get("id")
        return f"route {rid!r}" if isinstance(rid, str) else f"route #{self.index + 1}"

    def error(self, key: str | None, problem: str) -> ConfigError:
        line = self.locator.key_line(self.index, key) if key else self.line
        return ConfigError(self.path, line, f"{self.label}: {problem}")

    def check_keys(self, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        for key in self.data:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.error(key, f"unknown key {key!r}{extra}")

    def _typed(self, key: str, types: type | tuple[type, ...], what: str, default: Any) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise self.error(key, f"{key!r} must be {what}, not {type(value).__name__}")
        return value

    def str(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._typed(key, str, "a string", default)
        if required and value is None:
            raise self.error(None, f"missing required key {key!r}")
        return value

    def int(self, key: str, default: int | None = None) -> int | None:
        return self._typed(key, int, "an integer", default)

    def bool(self, key: str, default: bool) -> bool:
        return self._typed(key, bool, "true or false", default)

    def str_list(self, key: str) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise self.error(key, f"{key!r} must be a string or a list of strings")

    def str_table(self, key: str) -> dict[str, str]:
        value = self.data.get(key)
        if value is None:
            return {}
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return dict(value)
        raise self.error(key, f"{key!r} must be a table of strings")

    def choice(self, key: str, choices: Iterable[str], default: str) -> str:
        value = self.str(key, default)
        choices = tuple(choices)
        if value not in choices:
            raise self.error(key, f"{key!r} must be one of {', '.join(map(repr, choices))}")
        return value  # type: ignore[return-value]


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, table: RouteTable, key: str) -> str:
    """``${NAME}`` in secrets-bearing settings comes from the environment at load time."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise table.error(key, f"environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, value)


@dataclass(slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = DEFAULT_DATA_DIR
    database: Path | None = None
    key_file: Path | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    access_log: bool = False
    health_path: str = "/healthz"
    metrics_path: str = "/metrics"
    public_url: str | None = None  # how users reach this gateway (snippets, docs)

    @property
    def database_path(self) -> Path:
        return self.database or self.data_dir / "events.sqlite3"

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "gatepost.key"


@dataclass(slots=True)
class EventSettings:
    queue_size: int = 100_000
    batch_size: int = 1_000
    flush_interval: float = 0.05
    shutdown_timeout: float = 30.0


@dataclass(slots=True)
class UpstreamSettings:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    pool_timeout: float = 5.0
    max_connections: int = 200
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class Pixel:
    id: str
    name: str
    value: str  # low | medium | high
    package: str | None
    line: int | None


@dataclass
class Config:
    path: str
    server: ServerSettings = field(default_factory=ServerSettings)
    events: EventSettings = field(default_factory=EventSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    routes: list[Any] = field(default_factory=list)  # compiled routes (gateway.kinds.base.Route)
    pixels: dict[str, Pixel] = field(default_factory=dict)


def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read, validate and compile a configuration file."""
    path_str = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path_str, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path_str, None, f"cannot read: {exc}") from None
    return parse_config(text, path_str)


_TOML_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse TOML text (``path`` is only used in messages and for relative paths)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_LINE.search(msg)
        line = int(m.group(1)) if m else None
        problem = _TOML_LINE.sub("", msg).strip()
        if m:
            problem += f" (column {m.group(2)})"
        raise ConfigError(path, line, f"TOML syntax error: {problem}") from None
    locator = SourceLocator(text)
    for key in data:
        if key not in _TOP_KEYS:
            hint = difflib.get_close_matches(key, _TOP_KEYS, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(path, _top_line(text, key), f"unknown section {key!r}{extra}")
    config = Config(path=path)
    config.server = _server(data.get("server", {}), path, locator)
    config.events = _settings(EventSettings(), "events", data.get("events", {}), path, locator)
    config.upstream = _settings(
        UpstreamSettings(), "upstream", data.get("upstream", {}), path, locator
    )
    routes = data.get("routes", [])
    if not isinstance(routes, list):
        raise ConfigError(path, _top_line(text, "routes"), "'routes' must be [[routes]] tables")
    from .kinds import build_routes  # late import: kinds depend on config helpers

    config.pixels = _pixels(data.get("pixels", {}), path, locator)
    shared = {"pixels": config.pixels}
    config.routes = build_routes(
        [RouteTable(r, i, path, locator, shared) for i, r in enumerate(routes)], path
    )
    return config


def _pixels(values: Any, path: str, locator: SourceLocator) -> dict[str, Pixel]:
    """``[pixels.<id>]`` tables: name, value class and package of each tracking pixel."""
    if not isinstance(values, dict):
        raise ConfigError(path, locator.header_line("pixels"), "[pixels] must be a table")
    pixels: dict[str, Pixel] = {}
    for pixel_id, spec in values.items():
        line = locator.header_line(f"pixels.{pixel_id}") or locator.header_line("pixels")

        def fail(problem: str, pid: str = pixel_id, at: int | None = line) -> ConfigError:
            return ConfigError(path, at, f"pixel {pid!r}: {problem}")

        if not _PIXEL_ID.fullmatch(pixel_id):
            raise fail("ids are letters, digits, '.', '_' and '-' (at most 64)")
        if not isinstance(spec, dict):
            raise fail("must be a table with name, value and package")
        for key in spec:
            if key not in ("name", "value", "package"):
                hint = difflib.get_close_matches(key, ("name", "value", "package"), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise fail(f"unknown key {key!r}{extra}")
        value = spec.get("value")
        if value not in PIXEL_VALUES:
            raise fail(f"value must be one of {', '.join(PIXEL_VALUES)}")
        name = spec.get("name", pixel_id)
        package = spec.get("package")
        if not isinstance(name, str) or not (package is None or isinstance(package, str)):
            raise fail("name and package must be strings")
        pixels[pixel_id] = Pixel(pixel_id, name, value, package, line)
    return pixels


def _top_line(text: str, key: str) -> int | None:
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*\[*\s*" + re.escape(key) + r"\b", line):
            return n
    return None


def _check_section(section: str, values: Any, path: str, locator: SourceLocator) -> dict:
    if not isinstance(values, dict):
        raise ConfigError(path, None, f"[{section}] must be a table")
    for key in values:
        if key not in _SECTION_KEYS[section]:
            hint = difflib.get_close_matches(key, _SECTION_KEYS[section], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                path,
                locator.section_key_line(section, key),
                f"[{section}]: unknown key {key!r}{extra}",
            )
    return values


def _settings(target: Any, section: str, values: Any, path: str, locator: SourceLocator) -> Any:
    values = _check_section(section, values, path, locator)
    for key, value in values.items():
        current = getattr(target, key)
        ok = isinstance(value, type(current)) and not (
            isinstance(value, bool) and not isinstance(current, bool)
        )
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0
        ):
            raise ConfigError(
                path,
                locator.section_key_line(section, key),
                f"[{section}] {key} must be a positive {type(current).__name__}",
            )
        setattr(target, key, value)
    return target


def _server(values: Any, path: str, locator: SourceLocator) -> ServerSettings:
    values = _check_section("server", values, path, locator)
    s = ServerSettings()

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(path, locator.section_key_line("server", key), f"[server] {problem}")

    for key, value in values.items():
        if key == "public_url":
            if not isinstance(value, str) or not re.match(r"^https?://[^/]+", value):
                raise fail(key, "public_url must be an http(s) URL such as https://get.acme.dev")
            s.public_url = value.rstrip("/")
        elif key in ("host", "health_path", "metrics_path"):
            if not isinstance(value, str):
                raise fail(key, f"{key} must be a string")
            if key.endswith("_path") and value and not value.startswith("/"):
                raise fail(key, f"{key} must start with '/' (or be empty to disable)")
            setattr(s, key, value)
        elif key == "port":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
                raise fail(key, "port must be an integer between 1 and 65535")
            s.port = value
        elif key in ("data_dir", "database", "key_file"):
            if not isinstance(value, str) or not value:
                raise fail(key, f"{key} must be a path string")
            setattr(s, key, Path(value))
        elif key == "access_log":
            if not isinstance(value, bool):
                raise fail(key, "access_log must be true or false")
            s.access_log = value
        elif key == "trusted_proxies":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail(key, "trusted_proxies must be a list of CIDR strings")
            try:
                s.trusted_proxies = parse_networks(value)
            except ValueError as exc:
                raise fail(key, f"trusted_proxies: {exc}") from None
    return s
