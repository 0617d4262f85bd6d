"""Gatepost scorer: turns the gateway's anonymous events into organisations, journeys and leads.

It only *reads* the event store (``docs/events.md`` is the contract) and keeps its own
results in a separate SQLite file.  ``gateway score`` / ``gateway export`` drive it.
"""

from .rules import Rules, load_rules
from .run import ScoreRun, score

__all__ = ["Rules", "ScoreRun", "load_rules", "score"]
