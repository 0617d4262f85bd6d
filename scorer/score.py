"""From aggregates to insight: points, journey stage and timeline, levels, churn, flags.

Everything is evaluated relative to one instant (``as_of``), so the same aggregates and
the same ``as_of`` give the same result.  Stage criteria use human activity only:
automated traffic (CI, mirrors, bots, bursts) stays visible in counts and flags but can
never promote an organisation.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from typing import Any

from packaging.version import InvalidVersion, Version

from .enrich import confidence_label
from .rules import Rules
from .state import (
    AUTOMATION,
    C_DOWNLOAD,
    CATEGORIES,
    CATEGORY_SIGNAL,
    CHANNELS,
    DAY_CODES,
    HUMAN,
    SIGNALS,
    UNATTRIBUTED,
    unpack_day_code,
)

STAGES = ("Interest", "Investigation", "Experimentation", "Ongoing Usage")
INACTIVE = "Inactive"
STAGE_RANK = {
    "Interest": 1,
    "Investigation": 2,
    "Experimentation": 3,
    "Ongoing Usage": 4,
    INACTIVE: 0,
}
LEVELS = ("none", "good", "better", "best")


@lru_cache(maxsize=8192)
def day_index(day: str) -> int:
    return dt.date.fromisoformat(day).toordinal()


@lru_cache(maxsize=8192)
def day_text(index: int) -> str:
    return dt.date.fromordinal(index).isoformat()


@dataclass(slots=True)
class Day:
    """Human activity on one day (automated events only add their weighted points)."""

    downloads: int = 0
    docs: int = 0
    web_low: int = 0
    web_medium: int = 0
    web_high: int = 0
    telemetry: int = 0
    links: int = 0
    maintenance: int = 0
    points: float = 0.0

    @property
    def website(self) -> int:
        return self.web_low + self.web_medium + self.web_high

    @property
    def page_views(self) -> int:
        return self.docs + self.web_low + self.web_medium + self.web_high

    @property
    def any(self) -> bool:
        return bool(self.downloads or self.page_views or self.telemetry or self.links)


@dataclass
class OrgData:
    id: int
    key: str
    name: str
    type: str
    domain: str | None
    confidence: float
    source: str
    days: dict[int, Day] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    automated: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    channels: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    weekly: dict[int, list[int]] = field(default_factory=dict)  # week start -> per WEEK_SIGNALS


# the signals of the weekly totals, in output order
WEEK_SIGNALS = tuple(dict.fromkeys(CATEGORY_SIGNAL))


def _org_filter(only: set[int] | None, unattributed: int) -> tuple[str, list[int]]:
    if only is None:
        return "org != ?", [unattributed]
    ids = sorted(only)
    return f"org IN ({','.join('?' for _ in ids) or 'NULL'})", ids


def _day_code_table(rules: Rules) -> list[tuple[int, float, float, str, str, str]]:
    """What one ``org_day`` code adds, by code: (field of :class:`Day` for human counts or -1,
    human points, automated points, signal, automation kind, download channel)."""
    p = rules["points"]
    weight = {"download": p["download"], "telemetry": p["telemetry"], "link": p["link_click"]}
    for prefix in ("docs", "web"):
        for value in ("low", "medium", "high"):
            weight[f"{prefix}_{value}"] = p["page_view"][value]
    fields = {"download": 0, "docs_low": 1, "docs_medium": 1, "docs_high": 1, "web_low": 2,
              "web_medium": 3, "web_high": 4, "telemetry": 5, "link": 6}  # fmt: skip
    table = []
    for code in range(DAY_CODES):
        category, automation, channel, _maintenance = unpack_day_code(code)
        name = CATEGORIES[category]
        w = float(weight.get(name, 0))
        table.append((
            fields.get(name, -1) if automation == HUMAN else -1,
            w if automation == HUMAN else 0.0,
            0.0 if automation == HUMAN else w,
            CATEGORY_SIGNAL[category],
            AUTOMATION[automation],
            CHANNELS[channel] if category == C_DOWNLOAD else "",
        ))  # fmt: skip
    return table


def _add_totals(
    org: OrgData | None, counts: list[int], table: list[tuple[int, float, float, str, str, str]]
) -> None:
    """An organisation's totals per signal, automation kind and channel, from its counts."""
    if org is None:
        return
    for code, n in enumerate(counts):
        if n:
            _field, _h, _a, signal, automation, channel = table[code]
            org.totals[signal] += n
            if automation:
                org.automated[automation] += n
            if channel:
                org.channels[channel] += n


def load_orgs(
    db: sqlite3.Connection, rules: Rules, as_of_day: int, only: set[int] | None = None
) -> dict[int, OrgData]:
    """Per organisation and day from ``org_day`` (read in key order: organisation, day,
    code), its codes unpacked into human counts, points and per-organisation totals."""
    orgs: dict[int, OrgData] = {}
    unattributed = -1
    for org_id, key, name, kind, domain, confidence, source in db.execute("SELECT * FROM orgs"):
        if key == UNATTRIBUTED:
            unattributed = org_id
        elif only is None or org_id in only:
            orgs[org_id] = OrgData(org_id, key, name, kind, domain, confidence or 0.0, source)
    where, ids = _org_filter(only, unattributed)
    table = _day_code_table(rules)
    field_of = [t[0] for t in table]
    human_weight, auto_weight = [t[1] for t in table], [t[2] for t in table]
    factor = float(rules["automation"]["factor"])
    rows = db.execute(
        f"SELECT org, day, code, n FROM org_day WHERE day <= ? AND {where}", [as_of_day, *ids]
    )
    week_signal = [WEEK_SIGNALS.index(t[3]) for t in table]
    # one pass in key order; a day's Day is stored when the next day (or organisation)
    # starts, a week's totals when the next week does
    org: OrgData | None = None
    counts: list[int] = []  # per code, of the current organisation
    current = day = week_end = -1
    acc = [0] * 8  # Day's counters of the current day
    week = [0] * len(WEEK_SIGNALS)  # the current week's events per signal
    human = auto = 0.0
    for org_id, day_of_row, code, n in rows:
        if day_of_row != day or org_id != current:
            if org is not None:
                org.days[day] = Day(*acc, human + factor * auto)
            if day_of_row >= week_end or org_id != current:
                if org is not None:
                    org.weekly[week_end - 7] = week
                week, week_end = [0] * len(WEEK_SIGNALS), _week_start(day_of_row) + 7
            if org_id != current:
                _add_totals(org, counts, table)
                current, org, counts = org_id, orgs.get(org_id), [0] * DAY_CODES
            day, acc, human, auto = day_of_row, [0] * 8, 0.0, 0.0
        counts[code] += n
        week[week_signal[code]] += n
        field = field_of[code]
        if field >= 0:  # a human event of a signal Day counts
            acc[field] += n
            human += n * human_weight[code]
            if field == 1 and code & 1:  # docs about maintenance
                acc[7] += n
        else:
            auto += n * auto_weight[code]
    if org is not None:
        org.days[day] = Day(*acc, human + factor * auto)
        org.weekly[week_end - 7] = week
    _add_totals(org, counts, table)
    return orgs


class Windows:
    """Sums over days relative to an instant, for one organisation (prefix sums + bisect)."""

    def __init__(self, days: dict[int, Day]) -> None:
        self.days = days
        self.active = active = sorted(i for i, d in days.items() if d.any)
        ds = [days[i] for i in active]
        page_views = [d.page_views for d in ds]
        columns = {
            "downloads": [d.downloads for d in ds],
            "page_views": page_views,
            "telemetry": [d.telemetry for d in ds],
            "docs": [d.docs for d in ds],
            "maintenance": [d.maintenance for d in ds],
            "links": [d.links for d in ds],
        }
        self._cum = {attr: [0, *accumulate(values)] for attr, values in columns.items()}
        pv_days = [i for i, n in zip(active, page_views, strict=True) if n]
        weeks = sorted({_week_start(i) for i in pv_days})
        self.consecutive_weeks_from: int | None = None
        for a, b in zip(weeks, weeks[1:], strict=False):
            if b - a == 7:
                self.consecutive_weeks_from = next(i for i in pv_days if _week_start(i) == b)
                break

    def cumulative(self, attr: str) -> list[int]:
        """Running totals of ``attr`` over the active days: element k sums the first k."""
        return self._cum[attr]

    def _upto(self, t: int) -> int:
        return bisect_right(self.active, t)

    def total(self, t: int, attr: str) -> int:
        return self._cum[attr][self._upto(t)]

    def count(self, t: int, length: int, attr: str) -> int:
        return self._cum[attr][self._upto(t)] - self._cum[attr][self._upto(t - length)]

    def span(self, t: int, length: int) -> list[Day]:
        return [self.days[i] for i in self.active[self._upto(t - length) : self._upto(t)]]

    def first(self, t: int) -> int | None:
        return self.active[0] if self.active and self.active[0] <= t else None

    def last(self, t: int) -> int | None:
        n = self._upto(t)
        return self.active[n - 1] if n else None


def _week_start(i: int) -> int:
    """The Monday of day ``i``'s week (ordinal 1, 0001-01-01, was a Monday)."""
    return i - (i - 1) % 7


@dataclass(slots=True)
class Activity:
    """What the stage rules look at, as of one day ``t``."""

    t: int
    first: int
    last: int
    downloads: int  # all time up to t
    page_views: int
    telemetry: int
    downloads_30: int  # in (t-30, t]
    page_views_30: int
    downloads_60: int
    page_views_60: int
    consecutive_weeks: bool  # page views in two consecutive weeks, the second by t


def stage_for(a: Activity, rules: Rules) -> str:
    """The journey stage the documented rules give (docs/scoring.md), inactivity aside."""
    st = rules["stages"]
    if (
        a.last - a.first >= st["ongoing_span_days"]
        and a.t - a.last < 90
        and a.downloads + a.telemetry >= 1
    ):
        return "Ongoing Usage"
    if (a.downloads_30 >= st["experimentation_downloads"] and a.page_views_30 >= 1) or (
        a.downloads_60 >= 1 and a.page_views_60 >= 2
    ):
        return "Experimentation"
    if a.t - a.last < 30 and ((a.downloads >= 1 and a.page_views >= 1) or a.consecutive_weeks):
        return "Investigation"
    return "Interest"


def _activity_sweep(w: Windows, checkpoints: list[int]) -> Iterator[Activity]:
    """The :class:`Activity` at each of the sorted ``checkpoints`` that follow some activity:
    three pointers walk the active days once instead of a binary search per window."""
    active, n = w.active, len(w.active)
    dl, pv, tm = w.cumulative("downloads"), w.cumulative("page_views"), w.cumulative("telemetry")
    cw = w.consecutive_weeks_from
    upto = upto_30 = upto_60 = 0  # active days <= t, <= t-30, <= t-60
    for t in checkpoints:
        while upto < n and active[upto] <= t:
            upto += 1
        while upto_30 < n and active[upto_30] <= t - 30:
            upto_30 += 1
        while upto_60 < n and active[upto_60] <= t - 60:
            upto_60 += 1
        if upto == 0:
            continue
        yield Activity(t, active[0], active[upto - 1], dl[upto], pv[upto], tm[upto],
                       dl[upto] - dl[upto_30], pv[upto] - pv[upto_30],
                       dl[upto] - dl[upto_60], pv[upto] - pv[upto_60],
                       cw is not None and cw <= t)  # fmt: skip


def stage_timeline(w: Windows, as_of: int, rules: Rules) -> list[tuple[str, int]]:
    """(stage, day entered) transitions up to ``as_of``, evaluated where anything can change."""
    inactive_days = int(rules["stages"]["inactive_days"])
    checkpoints: set[int] = set()
    for offset in {0, 30, 60, 90, inactive_days}:
        checkpoints.update(map(offset.__add__, w.active))
    ordered = sorted(checkpoints)
    del ordered[bisect_right(ordered, as_of) :]
    timeline: list[tuple[str, int]] = []
    best_before_inactive: str | None = None
    current: str | None = None
    reached = 0
    for activity in _activity_sweep(w, ordered):
        t, stage = activity.t, stage_for(activity, rules)
        if reached >= STAGE_RANK["Investigation"] and t - activity.last >= inactive_days:
            if current != INACTIVE:
                best_before_inactive = current
            stage = INACTIVE
        elif (
            current == INACTIVE
            and best_before_inactive
            and STAGE_RANK[stage] < STAGE_RANK[best_before_inactive]
        ):
            stage = best_before_inactive  # back to where it was when activity resumes
        if stage != INACTIVE:
            reached = max(reached, STAGE_RANK[stage])
        if stage != current:
            timeline.append((stage, t))
            current = stage
    return timeline


class CappedPoints:
    """An organisation's points over a window: each day's points capped daily, summed per
    calendar month and each month capped.  Built once (days ascending), read per window."""

    def __init__(self, days: dict[int, Day], rules: Rules) -> None:
        daily = float(rules["caps"]["daily"])
        self.monthly = float(rules["caps"]["monthly"])
        self.days = sorted(days)
        self.months = [day_text(i)[:7] for i in self.days]
        self.points = [min(daily, days[i].points) for i in self.days]

    def window(self, t: int, start: int | None = None) -> float:
        """Days in (start, t]; all days up to ``t`` without ``start``."""
        lo = 0 if start is None else bisect_right(self.days, start)
        hi = bisect_right(self.days, t)
        total: float = 0  # an empty window is 0, as sum() gives
        month, acc = None, 0.0
        for k in range(lo, hi):
            if self.months[k] != month:
                if month is not None:
                    total += min(self.monthly, acc)
                month, acc = self.months[k], 0.0
            acc += self.points[k]
        if month is not None:
            total += min(self.monthly, acc)
        return round(total, 2)


def level(*conditions: bool) -> str:
    result = "none"
    for name, ok in zip(LEVELS[1:], conditions, strict=True):
        if not ok:
            break
        result = name
    return result


@dataclass
class Extras:
    """What an organisation's sources, versions and bursts say, as of one day."""

    endpoints_30: int = 0  # distinct endpoints active in the last 30 days
    origins_30: int = 0
    human_sources_90: dict[str, int] = field(default_factory=dict)  # endpoints per signal
    versions: list[tuple] = field(default_factory=list)  # org_version rows, by first_ts
    burst_max: int = 0  # most downloads from one endpoint within a minute


def load_extras(
    db: sqlite3.Connection, as_of: int, only: set[int] | None = None
) -> dict[int, Extras]:
    """:class:`Extras` of every organisation (or of ``only``), one query per aggregate."""
    extras: dict[int, Extras] = defaultdict(Extras)
    where, ids = ("1", []) if only is None else _org_filter(only, -1)
    for org, endpoints, origins in db.execute(
        "SELECT org, count(DISTINCT endpoint_id), count(DISTINCT origin_id) FROM org_source "
        f"WHERE last_day BETWEEN ? AND ? AND {where} GROUP BY org",
        [as_of - 29, as_of, *ids],
    ):
        extras[org].endpoints_30, extras[org].origins_30 = endpoints, origins
    for org, code, n in db.execute(
        "SELECT org, signal, count(DISTINCT endpoint_id) FROM org_source "
        f"WHERE last_day BETWEEN ? AND ? AND automation = {HUMAN} AND {where} GROUP BY org, signal",
        [as_of - 89, as_of, *ids],
    ):
        extras[org].human_sources_90[SIGNALS[code]] = n
    for org, *row in db.execute(
        "SELECT org, package, version, channel, first_ts, last_ts, downloads, human "
        f"FROM org_version WHERE substr(first_ts, 1, 10) <= ? AND {where} "
        "ORDER BY org, first_ts, package, version, channel",
        [day_text(as_of), *ids],
    ):
        extras[org].versions.append(tuple(row))
    for org, n in db.execute(
        f"SELECT org, max(n) FROM burst WHERE minute < ? AND {where} GROUP BY org",
        [(as_of + 1) * 1440, *ids],
    ):
        extras[org].burst_max = n
    return extras


@dataclass
class Profile:
    """What an organisation's per-day activity alone decides: computed while sources,
    versions and bursts are still being folded."""

    windows: Windows
    timeline: list[tuple[str, int]]
    points: float  # capped, all time
    last30: float  # capped, the last 30 days
    previous: float  # capped, the 60 days before those


def profile_org(org: OrgData, rules: Rules, as_of: int) -> Profile:
    w = Windows(org.days)
    capped = CappedPoints(org.days, rules)
    return Profile(
        w,
        stage_timeline(w, as_of, rules),
        capped.window(as_of),
        capped.window(as_of, start=as_of - 30),
        capped.window(as_of - 30, start=as_of - 90),
    )


def score_org(
    org: OrgData, profile: Profile, extras: Extras, rules: Rules, as_of: int
) -> dict[str, Any]:
    w, timeline = profile.windows, profile.timeline
    raw_days = [i for i in org.days if i <= as_of]
    stage, since = timeline[-1] if timeline else ("Interest", min(raw_days) if raw_days else as_of)
    cutoff90 = day_text(as_of - 89)
    sources_by_signal = extras.human_sources_90
    versions = extras.versions
    by_package: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for package, version, _channel, first_ts, last_ts, _n, human in versions:
        if human:
            by_package[package].append((first_ts, version, last_ts))
    upgraded = {}
    for package, seen in by_package.items():
        parsed = [(f, _version(v)) for f, v, _ in sorted(seen)]
        parsed = [(f, v) for f, v in parsed if v is not None]
        upgraded[package] = any(
            later > earlier for i, (_, earlier) in enumerate(parsed) for _, later in parsed[i + 1 :]
        )
    vulnerable_rules = rules.vulnerable()
    exposure = sorted(
        {f"{p}=={v}" for p, v, _c, _f, last_ts, _n, _h in versions
         if p in vulnerable_rules and last_ts[:10] >= cutoff90 and _version(v) is not None
         and vulnerable_rules[p].contains(str(_version(v)), prereleases=True)}
    )  # fmt: skip
    burst_max = extras.burst_max
    # levels per signal
    dl7, dl30 = w.count(as_of, 7, "downloads"), w.count(as_of, 30, "downloads")
    dl90 = w.count(as_of, 90, "downloads")
    versions90 = {v for p, v, _c, f, last, _n, h in versions if h and last[:10] >= cutoff90}
    docs_days = [i for i in w.active if i <= as_of and w.days[i].docs]
    docs_span = (docs_days[-1] - docs_days[0]) if docs_days else 0
    docs_sources = sources_by_signal.get("docs", 0)
    maint = w.count(as_of, 90, "maintenance")
    web7 = sum(d.website for d in w.span(as_of, 7))
    web30 = w.span(as_of, 30)
    web30_total = sum(d.website for d in web30)
    web30_medium = sum(d.web_medium + d.web_high for d in web30)
    web30_high = sum(d.web_high for d in web30)
    tm_days = [i for i in w.active if i <= as_of and w.days[i].telemetry]
    tm30 = w.count(as_of, 30, "telemetry")
    tm_sources = sources_by_signal.get("telemetry", 0)
    levels = {
        "downloads": level(dl7 >= 1, dl30 > 1, dl90 > 1 and len(versions90) > 1),
        "docs": level(
            w.total(as_of, "docs") >= 2,
            docs_span > 30 and docs_sources > 1,
            docs_span > 90 and docs_sources > 1 and maint > 0,
        ),  # fmt: skip
        "website": level(
            web7 > 1, web30_total > 1 and web30_medium > 0, web30_high > 0 and web30_total > 1
        ),
        "telemetry": level(
            tm30 >= 1,
            tm30 >= 1 and tm_sources > 1,
            bool(tm_days) and tm_days[-1] - tm_days[0] >= 90 and tm_sources > 1,
        ),  # fmt: skip
    }
    points, last30, prev = profile.points, profile.last30, profile.previous
    prev_avg = prev / 2
    churn_rules = rules["churn"]
    churn = stage == INACTIVE or (
        prev_avg >= churn_rules["min_previous_points"] and last30 < churn_rules["ratio"] * prev_avg
    )
    high_intent = dl30 >= 1 and web30_high >= 1
    automated_total = sum(org.automated.values())
    all_total = sum(v for k, v in org.totals.items() if k != "other")
    first, last = w.first(as_of), w.last(as_of)
    all_versions: dict[str, set[str]] = defaultdict(set)
    for package, version, *_rest in versions:
        all_versions[package].add(version)
    return {
        "organisation": org.name,
        "domain": org.domain,
        "network_type": org.type,
        "stage": stage,
        "stage_since": day_text(since),
        "timeline": [{"stage": s, "since": day_text(t)} for s, t in timeline],
        "points": points,
        "points_30d": last30,
        "confidence": org.confidence,
        "confidence_label": confidence_label(org.confidence),
        "attribution_source": org.source,
        "unique_sources_30d": {"endpoints": extras.endpoints_30, "origins": extras.origins_30},
        "upgrade": any(upgraded.values()),
        "upgrades": sorted(p for p, u in upgraded.items() if u),
        "churn": churn,
        "high_intent": high_intent,
        "levels": levels,
        "packages": {p: sorted(vs, key=_sort_key) for p, vs in sorted(all_versions.items())},
        "downloads_by_channel": dict(sorted(org.channels.items())),
        "downloads_by_version": [
            {
                "package": p,
                "version": v,
                "channel": CHANNELS[c],
                "downloads": n,
                "human_downloads": h,
                "first_seen": f[:10],
                "last_seen": last[:10],
            }
            for p, v, c, f, last, n, h in sorted(
                versions, key=lambda r: (r[0], _sort_key(r[1]), r[2])
            )
        ],  # fmt: skip
        "vulnerable_versions": exposure,
        "totals": dict(sorted((k, v) for k, v in org.totals.items())),
        "weekly": {
            day_text(start): {name: n for name, n in zip(WEEK_SIGNALS, counts, strict=True) if n}
            for start, counts in sorted(org.weekly.items())
        },
        "first_seen": day_text(first)
        if first is not None
        else (day_text(min(raw_days)) if raw_days else None),
        "last_seen": day_text(last)
        if last is not None
        else (day_text(max(raw_days)) if raw_days else None),
        "automation": {
            "ci": org.automated.get("ci", 0),
            "mirror": org.automated.get("mirror", 0),
            "bot": org.automated.get("bot", 0),
            "burst": burst_max >= int(rules["automation"]["burst_per_minute"]),
            "share": round(automated_total / all_total, 3) if all_total else 0.0,
        },
    }


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _sort_key(text: str) -> tuple:
    v = _version(text)
    return (0, v, text) if v is not None else (1, Version("0"), text)


def rank_key(doc: dict[str, Any]) -> tuple:
    return (
        -STAGE_RANK.get(doc["stage"], 0),
        -doc["points"],
        _neg_day(doc["last_seen"]),
        doc["organisation"],
    )


def _neg_day(day: str | None) -> int:
    return -day_index(day) if day else 0
