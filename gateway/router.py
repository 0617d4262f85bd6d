"""Route matching: an index by host, then a trie of leading literal segments.

Precedence (documented in ``docs/routes.md``):

1. routes for the request's host before routes for any host;
2. literal segments before variables, segment by segment from the left
   (literal < literal+variable < ``{var}`` < ``{+rest}``);
3. more query conditions first, then more literal characters;
4. file order.

The trie makes rule 2 structural: a node's literal children are searched before
the node's own routes, so a lookup touches only routes that share the literal
prefix of the path, whatever the total number of routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .kinds.base import Route
from .templates import QueryCondition, UnsafeValue, match_after_prefix, normalize_raw_path

#: A route with what matching it needs inline: (route, tail pattern, start, rest variable
#: names, query conditions); the pattern is ``None`` for kinds matched by ``route.match``.
_Entry = tuple[Route, re.Pattern[str] | None, int, frozenset[str], tuple[QueryCondition, ...]]


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] | None = None  # literal segment -> node with children
    # literal segment -> a child without children of its own (most nodes at scale:
    # ``/pkg123/{version}/…``) as its entries, or as its one entry when it has one route:
    # a lookup reaches the route's matcher through the dictionary slot alone.
    leaves: dict[str, _Entry | tuple[_Entry, ...]] | None = None
    routes: list[Route] = field(default_factory=list)  # until finish()
    entries: tuple[_Entry, ...] = ()


class _Trie:
    """Routes by leading literal segments, built by :meth:`add`, then :meth:`finish`.

    After ``finish`` a node's routes are a tuple of flat entries (the route and its tail
    matcher, built after every route is compiled, so they sit together in memory): at
    100,000 routes a lookup touches a dictionary slot and one entry per candidate, not the
    route, its template and their attributes.
    """

    __slots__ = ("root",)

    def __init__(self) -> None:
        self.root = _Node()

    def add(self, route: Route) -> None:
        node = self.root
        for literal in route.leading_literals():
            if node.children is None:
                node.children = {}
            node = node.children.setdefault(literal, _Node())
        node.routes.append(route)

    def finish(self) -> None:
        stack = [self.root]
        while stack:
            node = stack.pop()
            node.entries = tuple(_entry(r) for r in sorted(node.routes, key=Route.sort_key))
            node.routes = []
            if node.children:
                stack.extend(node.children.values())
        stack = [self.root]
        while stack:
            node = stack.pop()
            if not node.children:
                continue
            inner = {seg: child for seg, child in node.children.items() if child.children}
            leaves = {
                seg: c.entries[0] if len(c.entries) == 1 else c.entries
                for seg, c in node.children.items()
                if not c.children
            }
            node.children = inner or None
            node.leaves = leaves or None
            stack.extend(inner.values())

    def entry_lists(self, segments: list[str]) -> list[tuple[_Entry, ...]]:
        """Entries of the nodes along the literal prefix of the path, deepest first."""
        found = [self.root.entries]
        node = self.root
        for seg in segments:
            children = node.children
            child = children.get(seg) if children is not None else None
            if child is None:
                leaves = node.leaves
                leaf = leaves.get(seg) if leaves is not None else None
                if leaf is not None:  # one entry starts with its route, several with an entry
                    found.append(leaf if type(leaf[0]) is tuple else (leaf,))  # type: ignore[arg-type]
                break
            found.append(child.entries)
            node = child
        found.reverse()
        return found

    def first_match(self, segments: list[str], norm: str, query: str) -> Match | None:
        for entries in self.entry_lists(segments):
            # The walk to these entries compared the routes' leading literals: a tail
            # matcher takes it from there.
            for route, tail, start, rest_vars, conditions in entries:
                if tail is None:
                    values = route.match(norm, query)
                else:
                    values = match_after_prefix(tail, start, rest_vars, conditions, norm, query)
                if values is not None:
                    return Match(route, values)
        return None

    def candidates(self, segments: list[str]) -> Iterator[Route]:
        """Routes that may match, in precedence order (deepest literal prefix first)."""
        for entries in self.entry_lists(segments):
            for entry in entries:
                yield entry[0]


def _entry(route: Route) -> _Entry:
    matcher = route.tail_matcher()
    if matcher is None:
        return (route, None, 0, frozenset(), ())
    return (route, *matcher)


@dataclass(slots=True)
class Match:
    route: Route
    values: dict[str, str]


class Router:
    """Finds the route for (host, raw path, raw query)."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = list(routes)
        self._any = _Trie()
        self._hosts: dict[str, _Trie] = {}
        for route in routes:
            if route.hosts:
                for host in route.hosts:
                    self._hosts.setdefault(host, _Trie()).add(route)
            else:
                self._any.add(route)
        for trie in (self._any, *self._hosts.values()):
            trie.finish()

    def candidates(self, host: str, norm_path: str) -> Iterator[Route]:
        segments = norm_path[1:].split("/") if norm_path.startswith("/") else [norm_path]
        trie = self._hosts.get(host)
        if trie is not None:
            yield from trie.candidates(segments)
        yield from self._any.candidates(segments)

    def match(self, host: str, raw_path: str, query: str) -> Match | None:
        """The winning route and its variables.

        Raises :class:`~gateway.templates.UnsafeValue` when the winning route matched
        but a captured value must not reach the target (the request is refused, not
        silently passed to a less specific route).
        """
        norm = normalize_raw_path(raw_path)
        segments = norm[1:].split("/")
        trie = self._hosts.get(host)
        if trie is not None:
            found = trie.first_match(segments, norm, query)
            if found is not None:
                return found
        return self._any.first_match(segments, norm, query)

    def explain(self, host: str, raw_path: str, query: str) -> list[tuple[Route, str]]:
        """Every candidate in the order tried and what happened to it."""
        norm = normalize_raw_path(raw_path)
        out: list[tuple[Route, str]] = []
        for route in self.candidates(host, norm):
            try:
                values = route.match(norm, query)
            except UnsafeValue as exc:
                out.append((route, f"matched, refused: {exc}"))
                break
            if values is None:
                out.append((route, "no match"))
            else:
                out.append((route, f"MATCH {values}"))
                break
        return out
