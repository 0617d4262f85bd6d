"""Container image names: public → upstream mappings, OCI name grammar, auth challenges.

Kept apart from the route kind so the mapping rules can be read (and tested) on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# OCI distribution spec: repository name components and references.
NAME = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_BRACES = re.compile(r"\{([^{}]*)\}")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')

DOCKER_HUB = "https://registry-1.docker.io"


class MappingError(ValueError):
    """A namespace mapping in the configuration cannot be used."""


@dataclass(frozen=True, slots=True)
class Upstream:
    registry: str  # "https://ghcr.io" (scheme + host[:port], no trailing slash)
    repository: str  # may contain one "*" for wildcard mappings

    def blob_url(self, repo: str, digest: str) -> str:
        return f"{self.registry}/v2/{repo}/blobs/{digest}"

    def manifest_url(self, repo: str, reference: str) -> str:
        return f"{self.registry}/v2/{repo}/manifests/{reference}"


@dataclass(frozen=True, slots=True)
class Mapping:
    public: str  # "acme/tool" or "acme/*"
    upstream: Upstream
    blobs: str  # "redirect" | "proxy"
    package: str | None

    @property
    def wildcard(self) -> bool:
        return self.public.endswith("*")

    def upstream_repo(self, public: str) -> str:
        if not self.wildcard:
            return self.upstream.repository
        rest = public[len(self.public) - 1 :]
        return self.upstream.repository.replace("*", rest)


def parse_upstream(text: str) -> Upstream:
    """``ghcr.io/acme-org/*``, ``docker.io/acme/tool``, ``http://127.0.0.1:5000/acme/x``."""
    scheme = "https"
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme not in ("http", "https"):
            raise MappingError(f"upstream scheme {scheme!r} is not http or https")
    host, _, repo = text.partition("/")
    if not host or not repo:
        raise MappingError(f"upstream {text!r} must be registry/repository")
    if "@" in host:
        raise MappingError("upstream must not carry credentials")
    registry = f"{scheme}://{host}"
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
        if "/" not in repo:
            repo = f"library/{repo}"
    check = repo.replace("*", "x")
    if repo.count("*") > 1 or ("*" in repo and not repo.endswith("*")) or not NAME.fullmatch(check):
        raise MappingError(
            f"upstream repository {repo!r} is not a valid name (one trailing * allowed)"
        )
    return Upstream(registry, repo)


def expand_braces(public: str, upstream: str) -> list[tuple[str, str]]:
    """``acme/{cli,server}`` = ``ghcr.io/acme-org/{cli,server}`` → one pair per alternative."""
    m = _BRACES.search(public)
    if m is None:
        return [(public, upstream)]
    alternatives = [a.strip() for a in m.group(1).split(",")]
    if not all(alternatives):
        raise MappingError(f"empty alternative in {public!r}")
    um = _BRACES.search(upstream)
    if um is not None and um.group(0) != m.group(0):
        raise MappingError(f"{upstream!r} must use the same alternatives as {public!r}")
    pairs: list[tuple[str, str]] = []
    for alt in alternatives:
        pub = public[: m.start()] + alt + public[m.end() :]
        up = upstream if um is None else upstream[: um.start()] + alt + upstream[um.end() :]
        pairs.extend(expand_braces(pub, up))
    return pairs


def check_public(public: str) -> None:
    if public != "*" and "*" in public and (public.count("*") > 1 or not public.endswith("/*")):
        raise MappingError(f"{public!r}: '*' may only end a name, as in 'acme/*'")
    if not NAME.fullmatch(public.removesuffix("/*").removesuffix("*") or "x"):
        raise MappingError(f"{public!r} is not a valid image name (lower-case, digits, . _ - /)")


class Namespaces:
    """Resolves public names: exact names first, then the longest wildcard prefix."""

    def __init__(self, mappings: list[Mapping]) -> None:
        self.exact = {m.public: m for m in mappings if not m.wildcard}
        self.wildcards = sorted(
            (m for m in mappings if m.wildcard), key=lambda m: len(m.public), reverse=True
        )
        self.registries = sorted({m.upstream.registry for m in mappings})

    def resolve(self, public: str) -> tuple[Mapping, str] | None:
        mapping = self.exact.get(public)
        if mapping is not None:
            return mapping, mapping.upstream_repo(public)
        for mapping in self.wildcards:
            if public.startswith(mapping.public[:-1]) and len(public) >= len(mapping.public):
                return mapping, mapping.upstream_repo(public)
        return None


# --------------------------------------------------------------------------- challenges


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "bearer" | "basic" | "none"
    realm: str = ""
    service: str = ""

    @property
    def needs_auth(self) -> bool:
        return self.scheme != "none"


NO_AUTH = Challenge("none")


def parse_challenge(header: str | None) -> Challenge:
    if not header:
        return NO_AUTH
    scheme, _, params = header.strip().partition(" ")
    values = dict(_CHALLENGE_PARAM.findall(params))
    return Challenge(scheme.lower(), values.get("realm", ""), values.get("service", ""))


def bearer_challenge(realm: str, service: str, scope: str | None = None) -> str:
    text = f'Bearer realm="{realm}",service="{service}"'
    if scope:
        text += f',scope="{scope}"'
    return text
