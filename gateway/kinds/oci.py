"""``kind = "oci"``: a container registry front (OCI distribution API, pull side).

Public names map to upstream registries and repositories (``"acme/*" =
"ghcr.io/acme-org/*"``).  Manifests are proxied — every ``Accept`` value forwarded, body
and ``Docker-Content-Digest`` returned unchanged — and counted as pulls.  Blobs are
redirected to the upstream (or to its storage redirect) or streamed.  Token auth is
brokered: clients see a challenge whose realm is the gateway's own token endpoint and
whose scope uses public names; the gateway maps scopes back and asks the upstream realm.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin

import httpx

from ..config import RouteTable
from ..decisions import Decision, Deferred, Proxy, ReadBody, Redirect, Respond
from ..events import Event
from ..oci_names import (
    DIGEST,
    NAME,
    NO_AUTH,
    TAG,
    Challenge,
    Mapping,
    MappingError,
    Namespaces,
    bearer_challenge,
    check_public,
    expand_braces,
    parse_challenge,
    parse_upstream,
)
from ..request import Request
from .base import COMMON_KEYS, Events, Route, RouteContext

API_VERSION = ("docker-distribution-api-version", "registry/2.0")
MAX_MANIFEST = 4 * 1024 * 1024
MANIFEST_HEADERS = (
    "content-type",
    "docker-content-digest",
    "content-length",
    "etag",
    "last-modified",
)
_PATH = re.compile(r"(?P<name>.+?)/(?P<kind>manifests|blobs|tags|referrers)/(?P<rest>.+)")
_SCOPE = re.compile(r"repository:(?P<name>[^:]+):(?P<actions>[a-z*,]+)")
_AUTH_TTL = 600.0
ALL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})


def oci_error(
    status: int, code: str, message: str, detail: Any = None, *headers: tuple[str, str]
) -> Respond:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail or {}}]})
    return Respond(
        status, body.encode(), (("content-type", "application/json"), API_VERSION, *headers)
    )


class UpstreamDown(Exception):
    pass


@dataclass(eq=False)
class OciRoute(Route):
    kind = "oci"
    methods = ALL_METHODS
    namespaces: Namespaces = field(default_factory=lambda: Namespaces([]))
    public_url: str | None = None
    _auth: dict[str, tuple[float, Challenge]] = field(default_factory=dict)

    # ---- placement -----------------------------------------------------------------
    def leading_literals(self) -> tuple[str, ...]:
        return ("v2",)

    def ranks(self) -> tuple[int, ...]:
        return (0, 3)

    def literal_chars(self) -> int:
        return 3

    def identity(self) -> tuple:
        return ("oci",)

    def pattern(self) -> str:
        return "/v2/…"

    def target_text(self) -> str:
        return ", ".join(
            f"{m.public}={m.upstream.registry}/{m.upstream.repository}"
            for m in [*self.namespaces.exact.values(), *self.namespaces.wildcards]
        )

    def match(self, norm_path: str, query: str) -> dict[str, str] | None:
        if norm_path in ("/v2", "/v2/"):
            return {"endpoint": "base"}
        if not norm_path.startswith("/v2/"):
            return None
        rest = norm_path[4:]
        if rest == "token":
            return {"endpoint": "token"}
        if rest == "_catalog":
            return {"endpoint": "catalog"}
        m = _PATH.fullmatch(rest)
        if m is None:
            return {"endpoint": "unknown"}
        return {"endpoint": m.group("kind"), "image": m.group("name"), "reference": m.group("rest")}

    # ---- helpers -------------------------------------------------------------------
    def realm(self, request: Request) -> tuple[str, str]:
        """Our token endpoint URL and service name, as clients must see them."""
        base = self.public_url or f"{request.scheme}://{request.header('host') or request.host}"
        service = base.split("://", 1)[-1]
        return f"{base}/v2/token", service

    async def challenge(self, client: httpx.AsyncClient, registry: str) -> Challenge:
        """How the upstream registry authenticates (probed at ``/v2/``, cached)."""
        now = time.monotonic()
        cached = self._auth.get(registry)
        if cached and cached[0] > now:
            return cached[1]
        try:
            r = await client.get(f"{registry}/v2/", follow_redirects=True)
        except httpx.HTTPError as exc:
            raise UpstreamDown(str(exc)) from None
        found = (
            parse_challenge(r.headers.get("www-authenticate")) if r.status_code == 401 else NO_AUTH
        )
        self._auth[registry] = (now + _AUTH_TTL, found)
        return found

    def forward_headers(self, request: Request, *names: str) -> list[tuple[str, str]]:
        keep = {"authorization", "user-agent", *names}
        return [(k, v) for k, v in request.headers if k in keep]

    # ---- handling ------------------------------------------------------------------
    def handle(
        self, request: Request, values: dict[str, str], ctx: RouteContext
    ) -> tuple[Decision, Events]:
        endpoint = values["endpoint"]
        method = request.method
        if endpoint == "token":
            if method == "POST" and request.body is None:
                return ReadBody(64 * 1024), None
            if method not in ("GET", "POST"):
                return _unsupported(), None
            return Deferred(lambda client: self._token(client, request)), None
        if method not in ("GET", "HEAD"):
            ctx.count("oci_push_refused_total")
            return _unsupported(), None
        if endpoint == "base":
            return Deferred(lambda client: self._base(client, request)), None
        if endpoint in ("catalog", "unknown"):
            return oci_error(404, "UNSUPPORTED", "this endpoint is not available here"), None
        public = values["image"]
        if not NAME.fullmatch(public):
            return oci_error(400, "NAME_INVALID", "invalid repository name", {"name": public}), None
        resolved = self.namespaces.resolve(public)
        if resolved is None:
            ctx.count("oci_unknown_name_total")
            return oci_error(
                404, "NAME_UNKNOWN", "repository name not known to registry", {"name": public}
            ), None
        mapping, upstream_repo = resolved
        reference = values["reference"]
        if endpoint == "manifests":
            if not (TAG.fullmatch(reference) or DIGEST.fullmatch(reference)):
                return oci_error(
                    400, "MANIFEST_INVALID", "invalid reference", {"reference": reference}
                ), None
            event = self._event(
                request,
                mapping,
                public,
                upstream_repo,
                reference,
                "pull" if method == "GET" else "pull_check",
            )
            url = mapping.upstream.manifest_url(upstream_repo, reference)
            event.upstream = url
            if method == "GET":
                event.bytes_sent = 0  # the manifest's size, once known
            return Deferred(lambda c: self._manifest(c, request, url, public, event)), event
        if endpoint == "blobs":
            if not DIGEST.fullmatch(reference):
                return oci_error(
                    404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": reference}
                ), None
            event = self._event(request, mapping, public, upstream_repo, reference, "blob")
            return self._blob(request, mapping, upstream_repo, reference, event), event
        if endpoint == "tags" and reference == "list":
            return Deferred(lambda c: self._tags(c, request, mapping, public, upstream_repo)), None
        return oci_error(404, "UNSUPPORTED", "this endpoint is not available here"), None

    def _event(
        self,
        request: Request,
        mapping: Mapping,
        public: str,
        upstream_repo: str,
        reference: str,
        kind: str,
    ) -> Event:
        is_digest = DIGEST.fullmatch(reference) is not None
        event = self.event(request, 0, {"image": public, "reference": reference})
        event.type = kind
        event.package = mapping.package or public
        event.version = None if is_digest else reference
        event.data = {
            "image": public,
            "upstream": f"{mapping.upstream.registry}/{upstream_repo}",
            "reference": reference,
        }
        if is_digest:
            event.data["digest"] = reference
        return event

    async def _base(self, client: httpx.AsyncClient, request: Request) -> Respond:
        try:
            challenges = await asyncio.gather(
                *(self.challenge(client, r) for r in self.namespaces.registries)
            )
        except UpstreamDown:
            return oci_error(502, "UNAVAILABLE", "upstream registry unavailable")
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        auth = request.header("authorization")
        ok = Respond(200, b"{}", (("content-type", "application/json"), API_VERSION))
        if bearer is not None and not (auth or "").lower().startswith("bearer "):
            realm, service = self.realm(request)
            return oci_error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                None,
                ("www-authenticate", bearer_challenge(realm, service)),
            )
        if basic is not None and not auth:
            return oci_error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                None,
                ("www-authenticate", f'Basic realm="{basic.realm or "gatepost"}"'),
            )
        return ok

    async def _manifest(
        self, client: httpx.AsyncClient, request: Request, url: str, public: str, event: Event
    ) -> Respond:
        headers = [
            *self.forward_headers(request, "accept", "if-none-match"),
            ("accept-encoding", "identity"),
        ]
        try:
            r = await client.request(request.method, url, headers=headers, follow_redirects=True)
        except httpx.TimeoutException:
            event.status, event.outcome = 504, "upstream_timeout"
            return oci_error(504, "UNAVAILABLE", "upstream registry timed out")
        except httpx.HTTPError:
            event.status, event.outcome = 502, "upstream_error"
            return oci_error(502, "UNAVAILABLE", "upstream registry unavailable")
        event.status = r.status_code
        if r.status_code == 401:
            return self._unauthorized(request, r, public)
        body = r.content if request.method == "GET" else b""
        if len(body) > MAX_MANIFEST:
            event.status, event.outcome = 502, "upstream_error"
            return oci_error(502, "MANIFEST_INVALID", "upstream manifest too large")
        keep = (
            MANIFEST_HEADERS
            if request.method == "HEAD"
            else MANIFEST_HEADERS[:2] + MANIFEST_HEADERS[3:]
        )
        out = [(k, r.headers[k]) for k in keep if k in r.headers]
        if r.status_code < 300:
            digest = r.headers.get("docker-content-digest") or (
                "sha256:" + hashlib.sha256(body).hexdigest() if body else None
            )
            assert event.data is not None
            if digest:
                event.data["digest"] = digest
            event.data["media_type"] = r.headers.get("content-type", "").split(";")[0]
            event.bytes_sent = len(body) if request.method == "GET" else None
        else:
            event.outcome = "upstream_status"
        return Respond(r.status_code, body, (*out, API_VERSION))

    def _unauthorized(self, request: Request, r: httpx.Response, public: str) -> Respond:
        """Upstream 401: the same error body, with a challenge pointing at us."""
        upstream = parse_challenge(r.headers.get("www-authenticate"))
        headers: list[tuple[str, str]] = [
            ("content-type", r.headers.get("content-type", "application/json")),
            API_VERSION,
        ]
        if upstream.scheme == "bearer":
            realm, service = self.realm(request)
            headers.append(
                ("www-authenticate", bearer_challenge(realm, service, f"repository:{public}:pull"))
            )
        elif upstream.scheme == "basic":
            headers.append(("www-authenticate", r.headers["www-authenticate"]))
        return Respond(401, r.content, tuple(headers))

    def _blob(
        self, request: Request, mapping: Mapping, upstream_repo: str, digest: str, event: Event
    ) -> Decision:
        url = mapping.upstream.blob_url(upstream_repo, digest)
        event.upstream = url
        auth = request.header("authorization")
        extra = {"authorization": auth} if auth else {}
        if mapping.blobs == "proxy":
            return Proxy(url, extra, True)

        async def resolve(client: httpx.AsyncClient) -> Decision:
            challenge = await self.challenge(client, mapping.upstream.registry)
            if not challenge.needs_auth and not auth:
                event.status = 307
                return Redirect(url, 307)
            # The client could not follow a redirect to the upstream with its credentials:
            # pass on the upstream's own storage redirect if it gives one, else stream.
            try:
                r = await client.request("HEAD", url, headers=extra, follow_redirects=False)
            except httpx.HTTPError:
                event.status, event.outcome = 502, "upstream_error"
                return oci_error(502, "UNAVAILABLE", "upstream registry unavailable")
            location = r.headers.get("location")
            if r.status_code in (301, 302, 303, 307, 308) and location:
                target = urljoin(url, location)
                if not target.startswith(mapping.upstream.registry + "/"):
                    event.status = 307
                    event.data = {**(event.data or {}), "storage_redirect": True}
                    return Redirect(target, 307)
            if r.status_code == 401:
                event.status = 401
                return self._unauthorized(request, r, event.vars["image"])
            return Proxy(url, extra, True)

        return Deferred(resolve)

    async def _tags(
        self,
        client: httpx.AsyncClient,
        request: Request,
        mapping: Mapping,
        public: str,
        upstream_repo: str,
    ) -> Respond:
        url = f"{mapping.upstream.registry}/v2/{upstream_repo}/tags/list"
        if request.query:
            url += "?" + urlencode(
                [(k, v) for k, v in parse_qsl(request.query) if k in ("n", "last")]
            )
        try:
            r = await client.get(url, headers=self.forward_headers(request), follow_redirects=True)
        except httpx.HTTPError:
            return oci_error(502, "UNAVAILABLE", "upstream registry unavailable")
        if r.status_code == 401:
            return self._unauthorized(request, r, public)
        body = r.content
        if r.status_code == 200:
            try:
                doc = r.json()
                doc["name"] = public
                body = json.dumps(doc).encode()
            except (ValueError, TypeError):
                pass
        return Respond(
            r.status_code,
            body,
            (("content-type", r.headers.get("content-type", "application/json")), API_VERSION),
        )

    async def _token(self, client: httpx.AsyncClient, request: Request) -> Respond:
        """Broker a token: public scopes → upstream scopes, upstream realm and service."""
        if request.method == "POST":
            params = parse_qsl(
                (request.body or b"").decode("utf-8", "replace"), keep_blank_values=True
            )
        else:
            params = parse_qsl(request.query, keep_blank_values=True)
        scopes = [v for k, v in params for v in v.split(" ") if k == "scope" and v]
        registry: str | None = None
        upstream_scopes: list[str] = []
        for scope in scopes:
            m = _SCOPE.fullmatch(scope)
            if m is None:
                continue
            resolved = self.namespaces.resolve(m.group("name"))
            if resolved is None:
                continue
            mapping, upstream_repo = resolved
            if registry is None:
                registry = mapping.upstream.registry
            elif registry != mapping.upstream.registry:
                continue  # one token serves one upstream registry
            upstream_scopes.append(f"repository:{upstream_repo}:pull")
        if registry is None:
            registry = self.namespaces.registries[0] if self.namespaces.registries else None
        if registry is None:
            return oci_error(404, "UNSUPPORTED", "no upstream registry configured")
        try:
            challenge = await self.challenge(client, registry)
        except UpstreamDown:
            return oci_error(502, "UNAVAILABLE", "upstream registry unavailable")
        if challenge.scheme != "bearer" or not challenge.realm:
            body = json.dumps(
                {"token": "anonymous", "access_token": "anonymous", "expires_in": 3600}
            )
            return Respond(200, body.encode(), (("content-type", "application/json"),))
        forwarded = [(k, v) for k, v in params if k not in ("scope", "service")]
        forwarded.append(("service", challenge.service))
        forwarded.extend(("scope", s) for s in upstream_scopes)
        headers = [(k, v) for k, v in request.headers if k in ("authorization", "user-agent")]
        try:
            if request.method == "POST":
                r = await client.post(challenge.realm, content=urlencode(forwarded).encode(),
                                      headers=[*headers, ("content-type", "application/x-www-form-urlencoded")])  # fmt: skip
            else:
                r = await client.get(challenge.realm, params=forwarded, headers=headers)
        except httpx.HTTPError:
            return oci_error(502, "UNAVAILABLE", "upstream token service unavailable")
        out = [
            ("content-type", r.headers.get("content-type", "application/json")),
            ("cache-control", "no-store"),
        ]
        if r.status_code == 401 and "www-authenticate" in r.headers:
            out.append(("www-authenticate", r.headers["www-authenticate"]))
        return Respond(r.status_code, r.content, tuple(out))


def _unsupported() -> Respond:
    return oci_error(
        405, "UNSUPPORTED", "this gateway serves pulls only", None, ("allow", "GET, HEAD")
    )


class OciKind:
    name = "oci"
    keys = COMMON_KEYS | {"namespaces", "blobs", "public_url"}
    default_event = "pull"

    def build(self, table: RouteTable, common: dict) -> Route:
        raw = table.data.get("namespaces")
        if not isinstance(raw, dict) or not raw:
            raise table.error("namespaces", "'namespaces' must be a table: public name = upstream")
        default_blobs = table.choice("blobs", ("redirect", "proxy"), "redirect")
        public_url = table.str("public_url")
        mappings: list[Mapping] = []
        for public, spec in raw.items():
            if isinstance(spec, str):
                spec = {"upstream": spec}
            if not isinstance(spec, dict) or not isinstance(spec.get("upstream"), str):
                raise table.error(
                    "namespaces", f"{public!r}: give an upstream string or a table with 'upstream'"
                )
            unknown = set(spec) - {"upstream", "blobs", "package"}
            if unknown:
                raise table.error("namespaces", f"{public!r}: unknown key {sorted(unknown)[0]!r}")
            blobs = spec.get("blobs", default_blobs)
            if blobs not in ("redirect", "proxy"):
                raise table.error("namespaces", f"{public!r}: blobs must be 'redirect' or 'proxy'")
            try:
                for pub, up in expand_braces(public, spec["upstream"]):
                    check_public(pub)
                    mappings.append(
                        Mapping(
                            pub,
                            parse_upstream(up),
                            blobs,
                            spec.get("package") or common.get("package"),
                        )
                    )
            except MappingError as exc:
                raise table.error("namespaces", str(exc)) from None
        seen: set[str] = set()
        for m in mappings:
            if m.public in seen:
                raise table.error("namespaces", f"{m.public!r} is mapped twice")
            seen.add(m.public)
        return OciRoute(
            namespaces=Namespaces(mappings),
            public_url=public_url.rstrip("/") if public_url else None,
            **common,
        )
