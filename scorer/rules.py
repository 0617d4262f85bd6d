"""Scoring rules: points, caps, windows, thresholds — a TOML file with documented defaults.

Every default lives in :data:`DEFAULTS` (and ``docs/scoring.md``); a rules file only needs
the values it changes.  The hash of the effective rules is stored with the results so a
change of rules triggers a full rescore.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

DEFAULTS: dict[str, Any] = {
    "points": {
        "download": 10,
        "telemetry": 15,
        "link_click": 2,
        "index_view": 0,
        "page_view": {"low": 1, "medium": 3, "high": 8},
    },
    "caps": {"daily": 40, "monthly": 400},
    "automation": {
        "factor": 0.2,  # automated events count this much
        "burst_per_minute": 20,  # downloads from one endpoint in one minute
        "ci_user_agents": [
            "GitHub-Actions",
            "GitLab",
            "Jenkins",
            "CircleCI",
            "Travis",
            "Buildkite",
            "Drone",
        ],
        "mirror_user_agents": [
            "Artifactory",
            "Nexus",
            "JFrog",
            "Sonatype",
            "devpi",
            "bandersnatch",
            "registry-mirror",
            "Harbor",
            "Pulp",
        ],
    },
    "signals": {
        "docs_patterns": ["docs.", "/docs", "readthedocs", "/guide", "/install"],
        "maintenance_patterns": ["upgrade", "migrat", "changelog", "release-notes", "/releases"],
    },
    "stages": {
        "experimentation_downloads": 2,
        "inactive_days": 60,
        "ongoing_span_days": 90,
    },
    "churn": {"ratio": 0.3, "min_previous_points": 20},
    "vulnerable": {},  # package = ["<1.2", "==1.3.0"]
    "networks": {},  # extends scorer/data/networks.toml: [networks.hosting] names/asns, ...
}


class RulesError(ValueError):
    pass


def _merge(base: dict, extra: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        where = f"{path}{key}"
        if (
            key not in base
            and path not in ("vulnerable.", "networks.")
            and not path.startswith("networks.")
        ):
            raise RulesError(f"unknown rules key {where!r}")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, where + ".")
        else:
            out[key] = value
    return out


@dataclass
class Rules:
    data: dict[str, Any]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True).encode()).hexdigest()[:16]

    def points(self, kind: str, value_class: str | None = None) -> float:
        p = self.data["points"].get(kind, 0)
        if isinstance(p, dict):
            return float(p.get(value_class or "low", 0))
        return float(p)

    def vulnerable(self) -> dict[str, SpecifierSet]:
        return {pkg: SpecifierSet(",".join(specs) if isinstance(specs, list) else specs)
                for pkg, specs in self.data["vulnerable"].items()}  # fmt: skip

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


def load_rules(path: str | Path | None = None) -> Rules:
    if path is None:
        return Rules(copy.deepcopy(DEFAULTS))
    try:
        extra = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RulesError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: {exc}") from None
    try:
        rules = Rules(_merge(DEFAULTS, extra))
        rules.vulnerable()
    except InvalidSpecifier as exc:
        raise RulesError(f"{path}: bad version range: {exc}") from None
    except RulesError as exc:
        raise RulesError(f"{path}: {exc}") from None
    return rules
