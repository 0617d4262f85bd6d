"""Route templates: incoming path/query patterns and outgoing RFC 6570 targets.

Incoming templates are compiled once into regular expressions that run against a
*normalised raw* request path (percent-encoding kept, so an encoded slash can never
pose as a segment separator).  Outgoing templates are parsed by ``uritemplate`` and
expanded with its own operators; simple ``{var}`` / ``{+var}`` expressions take a
precompiled fast path that calls the very same ``uritemplate`` quoting function.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import parse_qsl, quote, unquote, unquote_plus

from uritemplate.variable import Operator, URIVariable

__all__ = [
    "TemplateError",
    "UnsafeValue",
    "PathTemplate",
    "TargetTemplate",
    "normalize_raw_path",
    "check_rest_value",
    "check_segment_value",
]


class TemplateError(ValueError):
    """A template in the configuration cannot be used (reported with file and line)."""


class UnsafeValue(ValueError):
    """A value captured from a request may not reach an outgoing URL."""


_VAR_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ANGLE = re.compile(r"<(\+?" + _VAR_NAME + r")>")
_TOKEN = re.compile(r"\{(\+?)(" + _VAR_NAME + r")\}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters allowed unencoded in a path (RFC 3986 pchar plus "/"), besides unreserved.
_PATH_SAFE = "/!$&'()*+,;=:@"
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9\-._~/!$&'()*+,;=:@%]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")
_ENCODED_SLASH = re.compile(r"%(?:2[Ff]|5[Cc])")


def _pct_normalize(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def normalize_raw_path(raw: str) -> str:
    """Canonical raw path: decode needless escapes of unreserved characters,
    upper-case the others, and escape characters that are not allowed raw.

    Two spellings of the same resource (``/%7Euser`` and ``/~user``) then compare
    equal while ``%2F`` stays distinct from ``/``.
    """
    if "%" in raw:
        raw = _PCT.sub(_pct_normalize, raw)
    if _NEEDS_QUOTING.search(raw):
        raw = quote(raw, safe=_PATH_SAFE + "%")
    return raw


def _encode_literal(text: str) -> str:
    """Literal template text in the canonical form of :func:`normalize_raw_path`."""
    return normalize_raw_path(quote(unquote(text), safe=_PATH_SAFE))


def check_segment_value(value: str) -> None:
    """Refuse a decoded single-segment value that could change the outgoing path."""
    if "/" in value or "\\" in value:
        raise UnsafeValue("a path separator (possibly encoded) in a single-segment variable")
    if ".." in value or value == ".":
        raise UnsafeValue("'..' or '.' in a captured value")
    if _CONTROL.search(value):
        raise UnsafeValue("control characters in a captured value")


def check_query_value(value: str) -> None:
    """Query values may hold '/', but nothing that could climb or break a path."""
    if ".." in value or value == "." or "\\" in value:
        raise UnsafeValue("'..', '.' or a backslash in a query value")
    if _CONTROL.search(value):
        raise UnsafeValue("control characters in a query value")


def check_rest_value(raw: str, value: str) -> None:
    """Refuse a decoded multi-segment value with traversal, encoded slashes or CR/LF."""
    if _ENCODED_SLASH.search(raw) or "\\" in value:
        raise UnsafeValue("an encoded slash or backslash in a captured path")
    if ".." in value or "." in value.split("/"):
        raise UnsafeValue("a '..' or '.' segment in a captured path")
    if _CONTROL.search(value):
        raise UnsafeValue("control characters in a captured path")
    if "//" in value:
        raise UnsafeValue("an empty segment ('//') in a captured path")
    if "?" in value or "#" in value:
        raise UnsafeValue("an encoded '?' or '#' in a captured path")


def _canonical_braces(template: str) -> str:
    """Accept ``<name>`` / ``<+name>`` as spellings of ``{name}`` / ``{+name}``."""
    return _ANGLE.sub(r"{\1}", template)


@dataclass(frozen=True, slots=True)
class Segment:
    """One ``/``-separated piece of an incoming path template."""

    text: str  # the template text as written (canonical braces)
    literal: str | None  # canonical encoded literal when the segment has no variable
    rank: int  # 0 literal, 1 literal+variable, 2 single variable, 3 rest variable
    literal_chars: int


@dataclass(slots=True)
class QueryCondition:
    """``key=value-template`` from the query part of an incoming template."""

    key: str
    pattern: re.Pattern[str]
    variables: tuple[str, ...]
    literal_chars: int


@dataclass(slots=True)
class PathTemplate:
    """A compiled incoming template such as ``/tool/{version}/tool-{os}.tar.gz?x={a}``.

    The leading literal segments are compared as a string prefix and only the rest runs as
    a regular expression. Routes that differ only in those literals (``/pkg1/{v}/…``,
    ``/pkg2/{v}/…``) then share one compiled pattern: 100,000 such routes load in a
    fraction of the time and matching stays in the CPU caches.
    """

    source: str
    segments: tuple[Segment, ...]
    prefix: str  # the leading literal segments, with their slashes
    tail: re.Pattern[str]  # the rest, matched from len(prefix)
    regex_text: str  # the whole path as one pattern (identity of the route)
    rest_vars: frozenset[str]
    query: tuple[QueryCondition, ...] = ()
    variables: tuple[str, ...] = field(default=())

    @classmethod
    def compile(cls, template: str) -> PathTemplate:
        template = _canonical_braces(template)
        if "\r" in template or "\n" in template:
            raise TemplateError("template contains CR/LF")
        path, _, query = template.partition("?")
        if not path.startswith("/"):
            raise TemplateError(f"path template {template!r} must start with '/'")
        names: list[str] = []
        single: set[str] = set()
        rest: set[str] = set()
        segments: list[Segment] = []
        regex_parts: list[str] = []
        for text in path[1:].split("/"):
            pieces, seg_rank, lit_chars = _compile_piece(text, names, single, rest, in_query=False)
            literal = _encode_literal(text) if seg_rank == 0 else None
            segments.append(Segment(text, literal, seg_rank, lit_chars))
            regex_parts.append(pieces)
        lead = next((n for n, seg in enumerate(segments) if seg.literal is None), len(segments))
        literals = [seg.literal or "" for seg in segments[:lead]]
        if lead == len(segments):  # all literal: the prefix is the whole path
            prefix, tail = "/" + "/".join(literals), ""
        else:
            prefix = "/" + "".join(lit + "/" for lit in literals)
            tail = "/".join(regex_parts[lead:])
        conditions = _compile_query(query, names, single) if query else ()
        return cls(
            source=template,
            segments=tuple(segments),
            prefix=prefix,
            tail=_shared_pattern(tail),
            regex_text="/" + "/".join(regex_parts),
            rest_vars=_shared_names(frozenset(rest)),
            query=conditions,
            variables=tuple(names),
        )

    @property
    def literal_chars(self) -> int:
        return sum(s.literal_chars for s in self.segments) + sum(
            q.literal_chars for q in self.query
        )

    def leading_literals(self) -> tuple[str, ...]:
        """Canonical literal segments before the first variable (the router's trie key)."""
        out: list[str] = []
        for seg in self.segments:
            if seg.literal is None:
                break
            out.append(seg.literal)
        return tuple(out)

    def ranks(self) -> tuple[int, ...]:
        return tuple(s.rank for s in self.segments)

    def match(self, norm_path: str, query_string: str) -> dict[str, str] | None:
        """Captured, decoded and validated variables, or ``None`` when it does not match.

        Raises :class:`UnsafeValue` when it matches but a value must be refused.
        """
        if not norm_path.startswith(self.prefix):
            return None
        return match_after_prefix(
            self.tail, len(self.prefix), self.rest_vars, self.query, norm_path, query_string
        )

    def tail_matcher(self) -> TailMatcher:
        """What matching needs once the leading literals are known to match, in one tuple.

        The router keeps these tuples in its trie nodes (it has compared the literals
        segment by segment), so a lookup among 100,000 routes touches one small object per
        candidate instead of the route, its template and their attributes.
        """
        return (self.tail, len(self.prefix), self.rest_vars, self.query)


#: (tail pattern, where it starts, names of ``{+rest}`` variables, query conditions)
TailMatcher = tuple[re.Pattern[str], int, frozenset[str], tuple[QueryCondition, ...]]


def match_after_prefix(
    tail: re.Pattern[str],
    start: int,
    rest_vars: frozenset[str],
    query: tuple[QueryCondition, ...],
    norm_path: str,
    query_string: str,
) -> dict[str, str] | None:
    """:meth:`PathTemplate.match` for a path already known to start with the template's
    leading literal segments (or to end right after them, which the length check refuses).
    The arguments are a :data:`TailMatcher`'s parts."""
    if len(norm_path) < start:  # "/pkg1" for "/pkg1/{v}": the literals without their "/"
        return None  # (no tail matches the empty string either: kept as the stated rule)
    m = tail.fullmatch(norm_path, start)
    if m is None:
        return None
    values: dict[str, str] = {}
    for name, raw in m.groupdict().items():
        value = unquote(raw)
        if name in rest_vars:
            check_rest_value(raw, value)
        else:
            check_segment_value(value)
        values[name] = value
    if query:
        params = dict(parse_qsl(query_string, keep_blank_values=True)) if query_string else {}
        for cond in query:
            got = params.get(cond.key)
            if got is None:
                return None
            qm = cond.pattern.fullmatch(got)
            if qm is None:
                return None
            for name, value in qm.groupdict().items():
                check_query_value(value)
                values[name] = value
    return values


@cache
def _shared_names(names: frozenset[str]) -> frozenset[str]:
    """One set object per distinct set of names: routes of one shape share it (and its
    cache lines)."""
    return names


@cache
def _shared_pattern(regex: str) -> re.Pattern[str]:
    """One compiled pattern per distinct regex, however many routes use it."""
    return re.compile(regex)


def _compile_piece(
    text: str, names: list[str], single: set[str], rest: set[str], *, in_query: bool
) -> tuple[str, int, int]:
    """Regex for one path segment (or query value) plus its rank and literal length."""
    parts: list[str] = []
    pos = 0
    n_vars = 0
    has_rest = False
    lit_chars = 0
    last_was_var = False
    for m in _TOKEN.finditer(text):
        literal = text[pos : m.start()]
        if "{" in literal or "}" in literal:
            raise TemplateError(f"malformed variable in {text!r} (names are letters, digits, '_')")
        if literal:
            parts.append(re.escape(unquote_plus(literal) if in_query else _encode_literal(literal)))
            lit_chars += len(literal)
            last_was_var = False
        elif last_was_var:
            raise TemplateError(f"two variables in {text!r} need literal text between them")
        plus, name = m.group(1), m.group(2)
        if name in names:
            raise TemplateError(f"variable {{{name}}} appears twice")
        names.append(name)
        if plus:
            if in_query:
                raise TemplateError(f"{{+{name}}} is not allowed in the query part")
            rest.add(name)
            has_rest = True
            parts.append(f"(?P<{name}>.+?)" if m.end() < len(text) else f"(?P<{name}>.+)")
        else:
            single.add(name)
            parts.append(f"(?P<{name}>.*?)" if in_query else f"(?P<{name}>[^/]+?)")
        n_vars += 1
        last_was_var = True
        pos = m.end()
    literal = text[pos:]
    if "{" in literal or "}" in literal or "<" in literal or ">" in literal:
        raise TemplateError(f"malformed variable in {text!r} (names are letters, digits, '_')")
    if literal:
        parts.append(re.escape(unquote_plus(literal) if in_query else _encode_literal(literal)))
        lit_chars += len(literal)
    if n_vars == 0:
        rank = 0
    elif has_rest:
        rank = 3
    elif lit_chars:
        rank = 1
    else:
        rank = 2
    return "".join(parts), rank, lit_chars


def _compile_query(query: str, names: list[str], single: set[str]) -> tuple[QueryCondition, ...]:
    conditions: list[QueryCondition] = []
    seen: set[str] = set()
    for pair in query.split("&"):
        if not pair:
            continue
        key, eq, value = pair.partition("=")
        if "{" in key or "}" in key:
            raise TemplateError(f"variables are not allowed in query keys ({pair!r})")
        key = unquote_plus(key)
        if key in seen:
            raise TemplateError(f"query key {key!r} appears twice")
        seen.add(key)
        before = len(names)
        regex, _rank, lit_chars = _compile_piece(value, names, single, set(), in_query=True)
        conditions.append(
            QueryCondition(
                key=key,
                pattern=re.compile(regex),
                variables=tuple(names[before:]),
                literal_chars=len(key) + lit_chars,
            )
        )
    return tuple(conditions)


# --------------------------------------------------------------------------- targets

_ORIGIN = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#{}]*)(?P<rest>.*)$"
)
_EXPR = re.compile(r"\{([^}]+)\}")
Piece = str | Callable[[Mapping[str, object]], str]


_UNRESERVED_ONLY = re.compile(r"[A-Za-z0-9._~\-]*").fullmatch
_RESERVED_SAFE = ":/?#[]@!$&'()*+,;="


def _fast_piece(var: URIVariable) -> Piece | None:
    """``{name}`` / ``{+name}`` compiled to a direct ``urllib.parse.quote`` call.

    Same rules as ``uritemplate`` (property-tested against it): simple expansion
    encodes everything but unreserved characters; reserved expansion also keeps
    reserved characters and passes values that already hold %-escapes unchanged.
    """
    if var.operator not in (Operator.default, Operator.reserved) or len(var.variables) != 1:
        return None
    name, opts = var.variables[0]
    if opts.get("explode") or opts.get("prefix") or var.defaults:
        return None
    library_quote = var.operator.quote  # for non-string values: exactly uritemplate

    if var.operator is Operator.default:

        def encode(value: str) -> str:
            return quote(value, safe="")

    else:

        def encode(value: str) -> str:
            return value if unquote(value) != value else quote(value, safe=_RESERVED_SAFE)

    def expand(values: Mapping[str, object]) -> str:
        value = values.get(name)
        if value is None:
            return ""
        if type(value) is not str:
            return library_quote(value)
        if _UNRESERVED_ONLY(value):
            return value
        return encode(value)

    return expand


def _slow_piece(var: URIVariable) -> Piece:
    original = var.original

    def expand(values: Mapping[str, object]) -> str:
        return var.expand(dict(values))[original]

    return expand


@dataclass(slots=True)
class TargetTemplate:
    """An outgoing URL template whose scheme and host can never be changed by a value."""

    source: str
    origin: str  # "scheme://authority" exactly as in the template, lower-cased
    pieces: tuple[Piece, ...]
    variables: frozenset[str]
    query_keys: frozenset[str]  # literal query keys of the template (for the merge rule)

    @classmethod
    def compile(cls, template: str) -> TargetTemplate:
        template = _canonical_braces(template)
        if _CONTROL.search(template) or " " in template:
            raise TemplateError("target contains spaces or control characters (CR/LF)")
        m = _ORIGIN.match(template)
        if m is None:
            if "://" not in template:
                raise TemplateError(f"target {template!r} has no scheme (write https://...)")
            raise TemplateError(
                f"target {template!r} must not have a variable in its scheme or host"
            )
        scheme = m.group("scheme").lower()
        authority = m.group("authority")
        if scheme not in ("http", "https"):
            raise TemplateError(f"target scheme {scheme!r} is not http or https")
        if not authority and m.group("rest").startswith("{"):
            raise TemplateError(
                f"target {template!r} must not have a variable in its scheme or host"
            )
        if not authority:
            raise TemplateError(f"target {template!r} has no host")
        if "@" in authority:
            raise TemplateError(
                "target must not carry credentials (user@host); use upstream_headers"
            )
        rest = m.group("rest")
        if rest and rest[0] not in "/?#{":
            raise TemplateError(f"target {template!r} must not have a variable in its host")
        pieces: list[Piece] = []
        names: set[str] = set()
        pos = 0
        prefix = f"{scheme}://{authority.lower()}"
        body = template[len(m.group("scheme")) + 3 + len(authority) :]
        for em in _EXPR.finditer(body):
            if em.start() > pos:
                pieces.append(body[pos : em.start()])
            try:
                var = URIVariable(em.group(1))
            except Exception as exc:  # uritemplate raises plain errors on bad syntax
                raise TemplateError(f"bad expression {em.group(0)!r}: {exc}") from None
            for name, _opts in var.variables:
                if not re.fullmatch(_VAR_NAME, name):
                    raise TemplateError(f"bad variable name {name!r} in {em.group(0)!r}")
                names.add(name)
            pieces.append(_fast_piece(var) or _slow_piece(var))
            pos = em.end()
        if "{" in body[pos:] or "}" in body[pos:]:
            raise TemplateError(f"unbalanced braces in target {template!r}")
        if pos < len(body):
            pieces.append(body[pos:])
        query_keys: set[str] = set()
        literal_query = template.partition("?")[2].partition("#")[0]
        for pair in literal_query.split("&"):
            key = pair.partition("=")[0]
            if key and "{" not in key:
                query_keys.add(unquote_plus(key))
        return cls(
            source=template,
            origin=prefix,
            pieces=(prefix, *pieces),
            variables=frozenset(names),
            query_keys=frozenset(query_keys),
        )

    def render(self, values: Mapping[str, object]) -> str:
        """Plain RFC 6570 expansion (what ``uritemplate`` would produce), unchecked."""
        return "".join([p if type(p) is str else p(values) for p in self.pieces])

    def expand(self, values: Mapping[str, object], request_query: str = "") -> str:
        """Expand, merge the request's query string, and verify the origin.

        Raises :class:`UnsafeValue` when the result would leave the template's
        scheme and host or would carry characters that are not allowed in a URL.
        """
        url = self.render(values)
        if request_query:
            url = merge_query(url, request_query, self.query_keys)
        origin = self.origin
        if not url.startswith(origin) or (len(url) > len(origin) and url[len(origin)] not in "/?#"):
            raise UnsafeValue("expanded URL leaves the target's scheme and host")
        if _URL_FORBIDDEN.search(url) or not url.isascii():
            raise UnsafeValue("expanded URL contains spaces, backslashes or control characters")
        if ("/." in url or "%2" in url) and _has_dot_segment(url, len(origin)):
            raise UnsafeValue("expanded URL contains a '.' or '..' path segment")
        return url


_QUERY_SAFE = "!$&'()*+,;=:@/?%-._~"
_QUERY_UNSAFE = re.compile(r"[^A-Za-z0-9!$&'()*+,;=:@/?%\-._~]")


def _clean_query(query: str) -> str:
    """Percent-encode what may not appear raw in a URL (spaces, CR/LF, non-ASCII)."""
    if not _QUERY_UNSAFE.search(query):
        return query
    try:
        raw = query.encode("latin-1")  # adapters decode raw bytes as latin-1
    except UnicodeEncodeError:
        raw = query.encode("utf-8")
    return quote(raw, safe=_QUERY_SAFE)


def _has_dot_segment(url: str, start: int) -> bool:
    end = len(url)
    for stop in ("?", "#"):
        pos = url.find(stop, start)
        if pos != -1:
            end = min(end, pos)
    segments = url[start:end].split("/")
    return (
        "." in segments
        or ".." in segments
        or any(unquote(seg) in (".", "..") for seg in segments if "%" in seg)
    )


def merge_query(url: str, request_query: str, template_keys: frozenset[str]) -> str:
    """Append the request's parameters; a key the target already has keeps the target's value."""
    request_query = _clean_query(request_query)
    base, hash_, fragment = url.partition("#")
    path, qmark, own = base.partition("?")
    keys = set(template_keys)
    if own:
        keys.update(unquote_plus(p.partition("=")[0]) for p in own.split("&") if p)
    extra = [
        p for p in request_query.split("&") if p and unquote_plus(p.partition("=")[0]) not in keys
    ]
    if not extra:
        return url
    query = f"{own}&{'&'.join(extra)}" if own else "&".join(extra)
    return f"{path}?{query}{hash_}{fragment}"
