"""Process-local counters, exposed in Prometheus text format at the metrics path."""

from __future__ import annotations

from collections import Counter


class Metrics:
    """Named counters (``name{label="v"}``) plus gauges read on demand."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.gauges: dict[str, object] = {}

    def inc(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def render(self) -> str:
        lines: list[str] = []
        for name, value in sorted(self.counters.items()):
            lines.append(f"gatepost_{name} {value}")
        for name, read in sorted(self.gauges.items()):
            lines.append(f"gatepost_{name} {read() if callable(read) else read}")
        return "\n".join(lines) + "\n"
