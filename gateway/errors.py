"""Errors a user can act on: they carry a location and never need a traceback."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` names file, line and problem."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {problem}")
