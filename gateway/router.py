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

from collections.abc import Iterator
from dataclasses import dataclass, field

from .kinds.base import Route
from .templates import UnsafeValue, normalize_raw_path


@dataclass(slots=True)
class _Node:
    # Leaves have no children dictionary and every node's routes end up in a tuple (items
    # stored inline): at 100,000 routes a lookup touches fewer objects outside the caches.
    children: dict[str, _Node] | None = None
    routes: list[Route] | tuple[Route, ...] = field(default_factory=list)


class _Trie:
    __slots__ = ("root",)

    def __init__(self) -> None:
        self.root = _Node()

    def add(self, route: Route) -> None:
        node = self.root
        for literal in route.leading_literals():
            if node.children is None:
                node.children = {}
            node = node.children.setdefault(literal, _Node())
        assert isinstance(node.routes, list), "routes are added before finish()"
        node.routes.append(route)

    def finish(self) -> None:
        stack = [self.root]
        while stack:
            node = stack.pop()
            node.routes = tuple(sorted(node.routes, key=Route.sort_key))
            if node.children:
                stack.extend(node.children.values())

    def nodes(self, segments: list[str]) -> list[_Node]:
        """Nodes along the literal prefix of the path, deepest first."""
        path = [self.root]
        node = self.root
        for seg in segments:
            if node.children is None:
                break
            child = node.children.get(seg)
            if child is None:
                break
            path.append(child)
            node = child
        path.reverse()
        return path

    def first_match(self, segments: list[str], norm: str, query: str) -> Match | None:
        for node in self.nodes(segments):
            for route in node.routes:
                values = route.match(norm, query)
                if values is not None:
                    return Match(route, values)
        return None

    def candidates(self, segments: list[str]) -> Iterator[Route]:
        """Routes that may match, in precedence order (deepest literal prefix first)."""
        for node in self.nodes(segments):
            yield from node.routes


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
