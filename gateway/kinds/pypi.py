"""``kind = "pypi"``: a Python simple index (PEP 503/691) in front of any upstream index.

``/simple/<project>/`` pages are fetched from the upstream (HTML or JSON), their file
links rewritten to point back at the gateway (relative links ending in the real file
name), and served in the format the client negotiated.  File and ``.metadata``
downloads then redirect (default) or stream from the upstream URL *listed by the
upstream index* — a client can never name the URL itself.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import httpx
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from ..config import RouteTable
from ..decisions import Decision, Deferred, Proxy, Redirect, Respond
from ..events import Event
from ..request import Request
from ..simple_index import (
    JSON_V1,
    ProjectPage,
    negotiate,
    normalize_name,
    parse_page,
    render_html,
    render_json,
    render_root,
    render_root_json,
)
from ..templates import check_segment_value
from ..useragent import installer_details
from .base import (
    COMMON_KEYS,
    Events,
    PrefixPlacement,
    Route,
    RouteContext,
    read_prefix,
    text_response,
)

UPSTREAM_ACCEPT = f"{JSON_V1}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")


class UpstreamFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def file_details(filename: str) -> dict[str, Any]:
    """Project, version and tags from a distribution file name (via ``packaging``)."""
    try:
        if filename.endswith(".whl"):
            name, version, _build, tags = parse_wheel_filename(filename)
            return {
                "project": str(name),
                "version": str(version),
                "filetype": "wheel",
                "python_tag": ".".join(sorted({t.interpreter for t in tags})),
                "abi_tag": ".".join(sorted({t.abi for t in tags})),
                "platform_tag": ".".join(sorted({t.platform for t in tags})),
            }
        if filename.endswith(SDIST_SUFFIXES):
            name, version = parse_sdist_filename(filename)
            return {"project": str(name), "version": str(version), "filetype": "sdist"}
    except (InvalidWheelFilename, InvalidSdistFilename, ValueError):
        pass
    return {"filetype": "other"}


@dataclass(eq=False)
class PypiRoute(PrefixPlacement, Route):
    kind = "pypi"
    prefix: str = "/simple/"
    upstream: str = "https://pypi.org/simple/"
    projects: frozenset[str] = frozenset()  # empty: every project passes through
    files: str = "redirect"
    cache_seconds: float = 60.0
    _pages: dict[str, tuple[float, str | None, ProjectPage]] = field(default_factory=dict)

    # ---- placement (PrefixPlacement) --------------------------------------------
    def pattern(self) -> str:
        return self.prefix + "<project>/[<file>]"

    def target_text(self) -> str:
        only = f", {len(self.projects)} projects" if self.projects else ""
        return f"{self.upstream} [files: {self.files}{only}]"

    def match(self, norm_path: str, query: str) -> dict[str, str] | None:
        if norm_path == self.prefix[:-1]:
            return {"endpoint": "root-noslash"}
        if not norm_path.startswith(self.prefix):
            return None
        parts = norm_path[len(self.prefix) :].split("/")
        if parts == [""]:
            return {"endpoint": "root"}
        decoded = [unquote(p) for p in parts]
        for value in decoded[:2]:
            if value:
                check_segment_value(value)
        if len(parts) == 1:
            return {"endpoint": "project-noslash", "project": decoded[0]}
        if len(parts) == 2 and parts[0]:
            if not parts[1]:
                return {"endpoint": "project", "project": decoded[0]}
            endpoint = "metadata" if decoded[1].endswith(".metadata") else "file"
            return {"endpoint": endpoint, "project": decoded[0], "file": decoded[1]}
        return None

    # ---- handling ----------------------------------------------------------------
    def allowed(self, project: str) -> bool:
        return not self.projects or project in self.projects

    def handle(
        self, request: Request, values: dict[str, str], ctx: RouteContext
    ) -> tuple[Decision, Events]:
        endpoint = values["endpoint"]
        query = f"?{request.query}" if request.query else ""
        if endpoint == "root-noslash":
            return _moved(self.prefix + query), None
        if endpoint == "root":
            return self._root(request), None
        project = values["project"]
        normalized = normalize_name(project)
        if endpoint == "project-noslash" or (endpoint == "project" and project != normalized):
            return _moved(f"{self.prefix}{quote(normalized)}/{query}"), None
        if not self.allowed(normalized):
            ctx.count("pypi_unlisted_total")
            return text_response(404, f"project {normalized!r} is not served here"), None
        event = self.event(request, 200, {"project": normalized, **_file_var(values)})
        event.package = normalized
        if endpoint == "project":
            event.type = "index_view"
            return Deferred(
                lambda client: self._project_page(client, request, normalized, event)
            ), event
        filename = values["file"]
        details = file_details(filename.removesuffix(".metadata"))
        event.version = details.get("version")
        event.type = "metadata" if endpoint == "metadata" else self.event_type
        event.data = {**details, **installer_details(request.header("user-agent"))}
        return (
            Deferred(lambda client: self._file(client, normalized, filename, endpoint, event)),
            event,
        )

    def _root(self, request: Request) -> Decision:
        if not self.projects:
            return Proxy(self.upstream, {}, True)
        media = negotiate(request.header("accept"), _format_param(request.query))
        if media is None:
            return _not_acceptable()
        names = sorted(self.projects)
        body = render_root_json(names) if media == JSON_V1 else render_root(names)
        return Respond(200, body, (("content-type", media), ("vary", "Accept")))

    async def fetch(self, client: httpx.AsyncClient, project: str) -> ProjectPage | None:
        """The upstream page (cached ``cache_seconds``, revalidated with ETag)."""
        now = time.monotonic()
        cached = self._pages.get(project)
        if cached and cached[0] > now:
            return cached[2]
        url = f"{self.upstream}{quote(project)}/"
        headers = {"accept": UPSTREAM_ACCEPT}
        if cached and cached[1]:
            headers["if-none-match"] = cached[1]
        try:
            response = await client.get(url, headers=headers, follow_redirects=True)
        except httpx.TimeoutException:
            raise UpstreamFailure(504, "upstream index timed out") from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure(
                502, f"upstream index unavailable ({type(exc).__name__})"
            ) from None
        if response.status_code == 304 and cached:
            self._pages[project] = (now + self.cache_seconds, cached[1], cached[2])
            return cached[2]
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise UpstreamFailure(502, f"upstream index answered {response.status_code}")
        try:
            page = parse_page(
                response.content,
                response.headers.get("content-type", ""),
                str(response.url),
                project,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamFailure(502, f"upstream index page unreadable: {exc}") from None
        if len(self._pages) > 10_000:
            self._pages.clear()
        self._pages[project] = (now + self.cache_seconds, response.headers.get("etag"), page)
        return page

    async def _project_page(
        self, client: httpx.AsyncClient, request: Request, project: str, event: Event
    ) -> Respond:
        media = negotiate(request.header("accept"), _format_param(request.query))
        if media is None:
            event.status = 406
            return _not_acceptable()
        try:
            page = await self.fetch(client, project)
        except UpstreamFailure as exc:
            event.status, event.outcome = exc.status, "upstream_error"
            return text_response(exc.status, str(exc))
        if page is None:
            event.status, event.outcome = 404, "not_found"
            return text_response(404, f"no project {project!r}")
        body = render_json(page) if media == JSON_V1 else render_html(page)
        etag = 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = (
            ("content-type", media),
            ("vary", "Accept"),
            ("etag", etag),
            ("cache-control", "max-age=0, must-revalidate"),
        )
        event.data = {"format": "json" if media == JSON_V1 else "html", "files": len(page.files)}
        if etag in (request.header("if-none-match") or "").replace(" ", "").split(","):
            event.status = 304
            return Respond(304, b"", headers)
        event.status = 200
        return Respond(200, body, headers)

    async def _file(
        self, client: httpx.AsyncClient, project: str, filename: str, endpoint: str, event: Event
    ) -> Decision:
        try:
            page = await self.fetch(client, project)
        except UpstreamFailure as exc:
            event.status, event.outcome = exc.status, "upstream_error"
            return text_response(exc.status, str(exc))
        wanted = filename.removesuffix(".metadata") if endpoint == "metadata" else filename
        dist = page.file(wanted) if page else None
        if dist is None or (endpoint == "metadata" and not dist.core_metadata):
            event.status, event.outcome = 404, "not_found"
            return text_response(404, f"no file {filename!r} in project {project!r}")
        url = dist.url + (".metadata" if endpoint == "metadata" else "")
        event.upstream = url
        if self.files == "proxy":
            event.status = 0
            return Proxy(url, {}, True)
        event.status = 307
        return Redirect(url, 307)


def _file_var(values: dict[str, str]) -> dict[str, str]:
    return {"file": values["file"]} if "file" in values else {}


def _format_param(query: str) -> str | None:
    if "format=" not in query:
        return None
    return parse_qs(query).get("format", [None])[0]


def _moved(location: str) -> Respond:
    return Respond(301, b"", (("location", location),))


def _not_acceptable() -> Respond:
    return text_response(
        406,
        "not acceptable: this index serves application/vnd.pypi.simple.v1+json, "
        "application/vnd.pypi.simple.v1+html and text/html",
    )


class PypiKind:
    name = "pypi"
    keys = COMMON_KEYS | {"path", "upstream", "projects", "files", "cache_seconds"}
    default_event = "download"

    def build(self, table: RouteTable, common: dict) -> Route:
        prefix = read_prefix(table, "path", "/simple/")
        upstream = table.str("upstream", required=True)
        assert upstream is not None
        if not upstream.startswith(("http://", "https://")):
            raise table.error("upstream", "upstream must be an http(s) URL of a simple index")
        if "@" in upstream.split("/")[2]:
            raise table.error("upstream", "upstream must not carry credentials")
        projects = table.str_list("projects")
        cache = table.int("cache_seconds", 60)
        if cache is None or cache < 0:
            raise table.error("cache_seconds", "cache_seconds must be 0 or more")
        if "package" in table.data:
            raise table.error("package", "pypi routes record the project name as the package")
        return PypiRoute(
            prefix=prefix,
            upstream=upstream.rstrip("/") + "/",
            projects=frozenset(normalize_name(p) for p in projects),
            files=table.choice("files", ("redirect", "proxy"), "redirect"),
            cache_seconds=float(cache),
            **common,
        )
