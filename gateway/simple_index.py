"""The Python "simple" repository API: parse (PEP 503 HTML / PEP 691 JSON), negotiate,
render — so a project page from any upstream index can be served with rewritten links.

Everything pip relies on survives the round trip: hashes (``#sha256=`` / ``hashes``),
``data-requires-python``, ``data-dist-info-metadata`` / ``data-core-metadata`` (PEP 658/714),
``data-yanked``, ``data-gpg-sig``, and for API 1.1 (PEP 700) ``size``, ``upload-time`` and
``versions``.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urldefrag, urljoin

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
SUPPORTED = (JSON_V1, HTML_V1, TEXT_HTML)
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
}
_NORMALIZE = re.compile(r"[-_.]+")


def normalize_name(name: str) -> str:
    """PEP 503: ``Acme_Tool`` → ``acme-tool``."""
    return _NORMALIZE.sub("-", name).lower()


# --------------------------------------------------------------------------- negotiation


def negotiate(accept: str | None, format_param: str | None = None) -> str | None:
    """The media type to serve (PEP 691), or ``None`` when nothing acceptable (406).

    Without an ``Accept`` header, or with ``*/*``, the server default is ``text/html``,
    which every installer understands. Ties in ``q`` prefer JSON, then v1 HTML.
    """
    if format_param:
        wanted = _ALIASES.get(format_param, format_param)
        return wanted if wanted in SUPPORTED else None
    if not accept or not accept.strip():
        return TEXT_HTML
    best: tuple[float, int, str] | None = None
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        media = _ALIASES.get(media, media)
        if media in ("*/*", "application/*"):
            candidates = [TEXT_HTML] if media == "*/*" else [JSON_V1]
        elif media == "text/*":
            candidates = [TEXT_HTML]
        elif media in SUPPORTED:
            candidates = [media]
        else:
            continue
        for candidate in candidates:
            preference = (JSON_V1, HTML_V1, TEXT_HTML).index(candidate)
            key = (q, -preference, candidate)
            if best is None or key[:2] > best[:2]:
                best = key
    return best[2] if best else None


# --------------------------------------------------------------------------- model


@dataclass(slots=True)
class DistFile:
    filename: str
    url: str  # absolute upstream URL, without fragment
    hashes: dict[str, str] = field(default_factory=dict)
    requires_python: str | None = None
    core_metadata: bool | dict[str, str] = False
    yanked: bool | str = False
    gpg_sig: bool | None = None
    size: int | None = None
    upload_time: str | None = None


@dataclass(slots=True)
class ProjectPage:
    name: str
    files: list[DistFile]
    versions: list[str] | None = None

    def file(self, filename: str) -> DistFile | None:
        for f in self.files:
            if f.filename == filename:
                return f
        return None


def _hash_attr(value: str | None) -> bool | dict[str, str]:
    """``sha256=abc`` → ``{"sha256": "abc"}``; ``true`` → ``True``; absent → ``False``."""
    if value is None:
        return False
    value = value.strip()
    if value.lower() == "true" or "=" not in value:
        return True
    name, _, digest = value.partition("=")
    return {name: digest}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self._current: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._current = dict(attrs)
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.anchors.append((self._current, "".join(self._text).strip()))
            self._current = None


def parse_html(text: str, page_url: str, name: str) -> ProjectPage:
    parser = _Links()
    parser.feed(text)
    files: list[DistFile] = []
    for attrs, label in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, fragment = urldefrag(urljoin(page_url, href))
        filename = label or url.rsplit("/", 1)[-1]
        hashes = {}
        if "=" in fragment:
            algo, _, digest = fragment.partition("=")
            hashes[algo] = digest
        metadata = _hash_attr(attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata")))
        yanked: bool | str = False
        if "data-yanked" in attrs:
            yanked = attrs["data-yanked"] or True
        files.append(
            DistFile(
                filename=filename,
                url=url,
                hashes=hashes,
                requires_python=attrs.get("data-requires-python") or None,
                core_metadata=metadata,
                yanked=yanked,
                gpg_sig=_bool_attr(attrs.get("data-gpg-sig")),
            )
        )
    return ProjectPage(name=name, files=files)


def _bool_attr(value: str | None) -> bool | None:
    return None if value is None else value.lower() == "true"


def parse_json(data: dict[str, Any], page_url: str, name: str) -> ProjectPage:
    files: list[DistFile] = []
    for item in data.get("files", []):
        metadata = item.get("core-metadata", item.get("dist-info-metadata", False))
        files.append(
            DistFile(
                filename=item["filename"],
                url=urldefrag(urljoin(page_url, item["url"]))[0],
                hashes=dict(item.get("hashes") or {}),
                requires_python=item.get("requires-python"),
                core_metadata=metadata if isinstance(metadata, (bool, dict)) else False,
                yanked=item.get("yanked", False),
                gpg_sig=item.get("gpg-sig"),
                size=item.get("size"),
                upload_time=item.get("upload-time"),
            )
        )
    return ProjectPage(name=data.get("name", name), files=files, versions=data.get("versions"))


def parse_page(body: bytes, content_type: str, page_url: str, name: str) -> ProjectPage:
    if "json" in content_type:
        return parse_json(json.loads(body), page_url, name)
    return parse_html(body.decode("utf-8", "replace"), page_url, name)


# --------------------------------------------------------------------------- rendering


def file_href(f: DistFile) -> str:
    """Relative link that keeps the real file name last (pip parses it)."""
    return quote(f.filename, safe="")


def render_json(page: ProjectPage) -> bytes:
    full = all(f.size is not None for f in page.files)
    files = []
    for f in page.files:
        item: dict[str, Any] = {"filename": f.filename, "url": file_href(f), "hashes": f.hashes}
        if f.requires_python is not None:
            item["requires-python"] = f.requires_python
        if f.core_metadata:
            item["core-metadata"] = f.core_metadata
            item["dist-info-metadata"] = f.core_metadata
        if f.gpg_sig is not None:
            item["gpg-sig"] = f.gpg_sig
        if f.yanked:
            item["yanked"] = f.yanked
        if full:
            item["size"] = f.size
            if f.upload_time:
                item["upload-time"] = f.upload_time
        files.append(item)
    doc: dict[str, Any] = {"meta": {"api-version": "1.1" if full else "1.0"}, "name": page.name}
    doc["files"] = files
    if full:
        doc["versions"] = page.versions or []
    return json.dumps(doc, separators=(",", ":")).encode()


def render_html(page: ProjectPage) -> bytes:
    esc = html.escape
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        '    <meta name="pypi:repository-version" content="1.0">',
        f"    <title>Links for {esc(page.name)}</title>",
        "  </head>",
        "  <body>",
        f"    <h1>Links for {esc(page.name)}</h1>",
    ]
    for f in page.files:
        href = file_href(f)
        if f.hashes:
            algo = "sha256" if "sha256" in f.hashes else sorted(f.hashes)[0]
            href += f"#{algo}={f.hashes[algo]}"
        attrs = [f'href="{esc(href)}"']
        if f.requires_python:
            attrs.append(f'data-requires-python="{esc(f.requires_python)}"')
        if f.core_metadata:
            value = (
                "true"
                if f.core_metadata is True
                else "{}={}".format(*next(iter(f.core_metadata.items())))  # type: ignore[union-attr]
            )
            attrs.append(f'data-dist-info-metadata="{esc(value)}"')
            attrs.append(f'data-core-metadata="{esc(value)}"')
        if f.gpg_sig is not None:
            attrs.append(f'data-gpg-sig="{"true" if f.gpg_sig else "false"}"')
        if f.yanked:
            reason = "" if f.yanked is True else str(f.yanked)
            attrs.append(f'data-yanked="{esc(reason)}"')
        lines.append(f"    <a {' '.join(attrs)}>{esc(f.filename)}</a><br/>")
    lines += ["  </body>", "</html>", ""]
    return "\n".join(lines).encode()


def render_root(names: list[str]) -> bytes:
    links = "\n".join(f'    <a href="{quote(n)}/">{html.escape(n)}</a><br/>' for n in sorted(names))
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
        f"{links}\n  </body>\n</html>\n"
    ).encode()


def render_root_json(names: list[str]) -> bytes:
    doc = {"meta": {"api-version": "1.0"}, "projects": [{"name": n} for n in sorted(names)]}
    return json.dumps(doc, separators=(",", ":")).encode()
