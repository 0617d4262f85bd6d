"""``gateway`` command line: serve, check, explain.

Configuration errors are printed as ``file:line: problem`` and exit with status 2;
no command prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from pathlib import Path
from urllib.parse import urlsplit

from .config import DEFAULT_CONFIG, Config, load_config
from .errors import ConfigError
from .logs import setup_logging
from .tables import text_table

log = logging.getLogger("gateway.cli")

RANK_NAMES = {0: "literal", 1: "literal+var", 2: "{var}", 3: "{+rest}"}


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=os.environ.get("GATEPOST_CONFIG", str(DEFAULT_CONFIG)),
        help="routes file (default: $GATEPOST_CONFIG or config/routes.toml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Gatepost package gateway")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    parser.add_argument("--log-level", default=os.environ.get("GATEPOST_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (ASGI, uvicorn)")
    _config_arg(serve)
    serve.add_argument("--db", default=os.environ.get("GATEPOST_DB"), help="SQLite event store")
    serve.add_argument("--host", default=os.environ.get("GATEPOST_HOST"))
    serve.add_argument("--port", type=int, default=_env_int("GATEPOST_PORT"))
    serve.add_argument("--access-log", action="store_true", help="log every request (slower)")
    serve.add_argument("--log-json", action="store_true", default=argparse.SUPPRESS)

    check = sub.add_parser("check", help="validate the configuration and list its routes")
    _config_arg(check)

    explain = sub.add_parser("explain", help="show which route a URL matches, and why")
    _config_arg(explain)
    explain.add_argument("url", help="e.g. https://get.acme.dev/tool/1.0/tool.tar.gz")
    explain.add_argument("--method", default="GET")

    from scorer.cli import add_commands

    add_commands(sub, _config_arg)

    imp = sub.add_parser("import", help="replay access logs (combined or JSON lines) as events")
    _config_arg(imp)
    imp.add_argument("--db", default=os.environ.get("GATEPOST_DB"), help="SQLite event store")
    imp.add_argument("--format", choices=("combined", "jsonl"), required=True)
    imp.add_argument(
        "--host", default="", help="host for lines that do not name one (combined logs)"
    )
    imp.add_argument("--strict", action="store_true", help="stop at the first malformed line")
    imp.add_argument(
        "files", nargs="+", metavar="FILE", help="log files; - for stdin; .gz is read transparently"
    )

    snippet = sub.add_parser("pixel-snippet", help="print the HTML <img> for a tracking pixel")
    _config_arg(snippet)
    snippet.add_argument("pixel_id", metavar="ID")
    snippet.add_argument(
        "--base-url", help="how browsers reach the gateway (default: [server] public_url)"
    )
    return parser


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else None


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `gateway score --json | head`
        sys.stderr.close()
        return 0


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(json_lines=args.log_json, level=args.log_level.upper())
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data_dir = os.environ.get("GATEPOST_DATA_DIR")
    if data_dir:  # containers: the database and key live on the /data volume
        config.server.data_dir = Path(data_dir)
    if args.command == "serve":
        return serve(config, args)
    if args.command == "check":
        return check(config)
    if args.command in ("score", "export"):
        from scorer.cli import run_command

        return run_command(args, config.server.database_path)
    if args.command == "import":
        return import_logs(config, args)
    if args.command == "pixel-snippet":
        return pixel_snippet(config, args.pixel_id, args.base_url)
    return explain(config, args.url, args.method.upper())


def serve(config: Config, args: argparse.Namespace) -> int:
    import uvicorn

    from .asgi import GatewayApp

    app = GatewayApp(config, db_path=args.db)
    host = args.host or config.server.host
    port = args.port or config.server.port
    log.info(
        "serving %d routes from %s on http://%s:%d, events → %s",
        len(config.routes),
        config.path,
        host,
        port,
        app.gateway.db_path,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=args.access_log or config.server.access_log,
        proxy_headers=False,  # the gateway decides itself which proxies it trusts
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=None,
    )
    return 0


def check(config: Config) -> int:
    rows = [{**r.describe(), "line": str(r.line or "")} for r in config.routes]
    print(f"{config.path}: OK, {len(rows)} routes")
    if rows:
        print(text_table(rows, ["line", "id", "kind", "host", "path", "target", "package"]))
    return 0


def explain(config: Config, url: str, method: str) -> int:
    from .core import Gateway
    from .request import Request, normalize_host

    if "://" not in url and not url.startswith("/"):
        url = "http://" + url
    try:
        parts = urlsplit(url)
        host = normalize_host(parts.netloc) if parts.netloc else ""
    except ValueError as exc:
        print(f"error: cannot parse URL {url!r}: {exc}", file=sys.stderr)
        return 2
    path = parts.path or "/"
    gateway = Gateway(config, adapter="explain", key=b"explain")
    print(f"{method} host={host or '(none)'} path={path} query={parts.query or '(none)'}")
    tried = gateway.router.explain(host, path, parts.query)
    if not tried:
        print("no candidate routes for this host and path → 404")
        return 1
    print("candidates, in precedence order:")
    for n, (route, result) in enumerate(tried, 1):
        scope = "host " + ",".join(route.hosts) if route.hosts else "any host"
        ranks = ",".join(RANK_NAMES[r] for r in route.ranks())
        print(
            f"  {n}. {route.id} ({route.kind}, line {route.line}, {scope}; segments {ranks}; "
            f"{route.literal_chars()} literal chars) {route.pattern()}\n     → {result}"
        )
    route, result = tried[-1]
    if not result.startswith("MATCH"):
        print("no route matches → 404" if result == "no match" else "refused → 400")
        return 1
    outcome = gateway.handle(
        Request(method, host, path, parts.query, [("host", host)], None, parts.scheme or "http")
    )
    assert outcome is not None
    print(f"winner: {route.id}: {_why(tried)}")
    print(f"decision: {_describe_decision(outcome.decision)}")
    return 0


def import_logs(config: Config, args: argparse.Namespace) -> int:
    from .importer import Importer, LineError, iter_report

    db = Path(args.db) if args.db else config.server.database_path
    importer = Importer(config, db, default_host=args.host)
    try:
        report = importer.run(args.files, args.format, strict=args.strict)
    except LineError as exc:
        print(f"error: {exc} (--strict)", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = list(iter_report(report))
    print(lines[0])
    for message in lines[1:]:
        print(f"skipped {message}", file=sys.stderr)
    return 0


def pixel_snippet(config: Config, pixel_id: str, base_url: str | None) -> int:
    import html

    from .kinds.pixel import PixelRoute

    pixel = config.pixels.get(pixel_id)
    if pixel is None:
        known = ", ".join(sorted(config.pixels)) or "none"
        print(f"error: no pixel {pixel_id!r} in {config.path} (known: {known})", file=sys.stderr)
        return 2
    routes = [r for r in config.routes if isinstance(r, PixelRoute)]
    if not routes:
        print(f'error: {config.path} has no route with kind = "pixel"', file=sys.stderr)
        return 2
    route = sorted(routes, key=lambda r: bool(r.template and r.template.query))[0]
    base = (
        base_url
        or config.server.public_url
        or (f"https://{route.hosts[0]}" if route.hosts else None)
    )
    if not base:
        print("error: pass --base-url or set [server] public_url", file=sys.stderr)
        return 2
    url = base.rstrip("/") + route.url_for(pixel.id)
    print(
        f'<img src="{html.escape(url)}" alt="" width="1" height="1" '
        'referrerpolicy="no-referrer-when-downgrade" '
        'style="position:absolute;width:1px;height:1px;border:0">'
    )
    return 0


def _why(tried: list) -> str:
    if len(tried) == 1:
        return "the only candidate that matched"
    return "first matching route in precedence order (earlier candidates did not match)"


def _describe_decision(decision) -> str:  # type: ignore[no-untyped-def]
    from .decisions import Proxy, Redirect

    if isinstance(decision, Redirect):
        return f"redirect {decision.status} → {decision.url}"
    if isinstance(decision, Proxy):
        return f"proxy (stream) ← {decision.url}"
    return f"respond {decision.status}"


if __name__ == "__main__":
    raise SystemExit(main())
