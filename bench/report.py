"""Shared output of the benchmark scripts: the summary as JSON on stdout, optionally to a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(summary: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(summary, indent=2)
    print(text)
    if path:
        path.write_text(text + "\n")
