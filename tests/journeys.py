"""Synthetic journeys: realistic events for organisations following known archetypes,
written through the real event sink, plus MaxMind-format fixture databases."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

from gateway.events import Event
from gateway.identity import Identifier
from gateway.rows import RowBuilder
from gateway.sink import EventSink

DAY = 86400.0
PIP_UA = 'pip/24.0 {{"ci":{ci},"cpu":"x86_64","implementation":{{"name":"CPython","version":"3.12.1"}},"installer":{{"name":"pip","version":"24.0"}},"python":"3.12.1","system":{{"name":"Linux","release":"6.1"}}}}'
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"

# network → (organisation as the MaxMind fixtures know it)
NETWORKS = {
    "driveby": "198.51.100",
    "docs": "198.51.101",
    "evaluator": "198.51.102",
    "experimenter": "198.51.103",
    "production": "198.51.104",
    "churner": "198.51.105",
    "intent": "198.51.106",
    "ci": "203.0.113",
    "mirror": "203.0.114",
    "isp": "192.0.2",
    "override": "100.64.1",
}
COMPANY_DB = {
    "driveby": "Driveby Co",
    "docs": "Docs Inc",
    "evaluator": "Evalcorp",
    "experimenter": "Experimental GmbH",
    "production": "Prod Corp",
    "churner": "Churn Ltd",
    "intent": "Intent LLC",
}


def build_mmdb(directory: Path) -> list[Path]:
    """An ASN database (everything) and a company database (the companies only)."""
    asn = MMDBWriter(
        ip_version=4, database_type="GeoLite2-ASN", languages=["en"], description="test"
    )
    asn_names = {
        "driveby": (64500, "Driveby Networks"), "docs": (64501, "Docs Inc"), "evaluator": (64502, "EVALCORP-AS"),
        "experimenter": (64503, "Experimental GmbH"), "production": (64504, "Prod Corp"),
        "churner": (64505, "Churn Ltd"), "intent": (64506, "Intent LLC"),
        "ci": (16509, "AMAZON-02"), "mirror": (64510, "Mirror Hosting"), "isp": (7922, "Comcast Cable Communications"),
        "override": (64511, "Shared Office Space"),
    }  # fmt: skip
    for key, prefix in NETWORKS.items():
        number, name = asn_names[key]
        asn.insert_network(
            IPSet([f"{prefix}.0/24"]),
            {"autonomous_system_number": number, "autonomous_system_organization": name},
        )
    company = MMDBWriter(
        ip_version=4, database_type="GeoIP2-Enterprise", languages=["en"], description="test"
    )
    for key, name in COMPANY_DB.items():
        company.insert_network(
            IPSet([f"{NETWORKS[key]}.0/24"]),
            {
                "traits": {
                    "organization": name,
                    "user_type": "business",
                    "domain": name.split()[0].lower() + ".example",
                }
            },
        )
    paths = [directory / "asn.mmdb", directory / "company.mmdb"]
    asn.to_db_file(str(paths[0]))
    company.to_db_file(str(paths[1]))
    return paths


@dataclass
class Journey:
    """Helpers that append events for one organisation."""

    events: list[Event]
    key: str
    now: float

    def ip(self, n: int = 1) -> str:
        return f"{NETWORKS[self.key]}.{n}"

    def _add(self, event: Event, days_ago: float, ip: str, ua: str | None) -> None:
        event.ts = self.now - days_ago * DAY
        event.client_ip = ip
        event.user_agent = ua
        self.events.append(event)

    def download(self, days_ago: float, version: str = "1.0", *, ip: int = 1, package: str = "tool",
                 ua: str = "curl/8.5.0", channel: str = "file", ci: bool = False) -> None:  # fmt: skip
        kind, etype = {
            "file": ("file", "download"),
            "pypi": ("pypi", "download"),
            "container": ("oci", "pull"),
        }[channel]
        data = {"ci": True} if ci else None
        if channel == "pypi":
            ua = PIP_UA.format(ci="true" if ci else "null")
        e = Event(type=etype, host="get.acme.dev", method="GET", path=f"/{package}/{version}/x.tgz", route_id=package,
                  route_kind=kind, package=package, version=version, vars={"version": version}, status=307, data=data)  # fmt: skip
        self._add(e, days_ago, self.ip(ip), ua)

    def page(self, days_ago: float, value: str = "medium", *, url: str = "https://docs.acme.dev/install",
             ip: int = 1, ua: str = BROWSER) -> None:  # fmt: skip
        e = Event(type="page_view", host="get.acme.dev", method="GET", path="/px/p.png", route_id="px",
                  route_kind="pixel", status=200, referer=url,
                  data={"pixel_id": "p", "pixel_name": "p", "value_class": value, "page_url": url})  # fmt: skip
        self._add(e, days_ago, self.ip(ip), ua)

    def telemetry(self, days_ago: float, version: str, *, ip: int = 1) -> None:
        e = Event(type="telemetry", host="get.acme.dev", method="POST", path=f"/ping/tool/{version}",
                  route_id="ping", route_kind="telemetry", package="tool", version=version, status=204)  # fmt: skip
        self._add(e, days_ago, self.ip(ip), "tool/" + version)


def archetypes(now: float) -> list[Event]:
    """Events for every archetype, ``now`` being the moment the tests score at."""
    events: list[Event] = []

    def j(key: str) -> Journey:
        return Journey(events, key, now)

    j("driveby").page(10, "low", url="https://acme.dev/blog/post")

    docs = j("docs")
    for d in (12, 10, 4, 3):  # two consecutive weeks of install docs
        docs.page(d, "medium", url="https://docs.acme.dev/install", ip=1 + d % 2)
    for _ in range(30):  # a crawler on the same network must not promote it
        docs.page(
            5,
            "low",
            url="https://acme.dev/",
            ua="Googlebot/2.1 (+http://www.google.com/bot.html)",
            ip=50,
        )

    ev = j("evaluator")
    ev.page(20, "medium")
    ev.download(18, "1.2")

    ex = j("experimenter")
    ex.page(25, "medium")
    ex.page(20, "medium", url="https://docs.acme.dev/configuration")
    for d, v in ((15, "1.2"), (14, "1.2"), (5, "1.2")):
        ex.download(d, v, channel="pypi")

    prod = j("production")
    versions = (
        (150, "1.0"),
        (120, "1.0"),
        (90, "1.1"),
        (60, "1.1"),
        (30, "1.2"),
        (10, "1.2"),
        (2, "1.2"),
    )
    for i, (d, v) in enumerate(versions):
        prod.download(d, v, ip=1 + i % 4, channel="container" if i % 2 else "file")
    prod.page(140, "medium", ip=1)
    prod.page(45, "medium", url="https://docs.acme.dev/upgrade-guide", ip=2)
    prod.page(8, "medium", url="https://docs.acme.dev/upgrade-guide", ip=3)
    for d in (100, 50, 20, 6, 1):
        prod.telemetry(d, "1.2", ip=1)
        prod.telemetry(d, "1.2", ip=2)

    ch = j("churner")
    for d in (170, 160, 140, 120, 100, 75):
        ch.download(d, "1.0", ip=1 + d % 3)
        ch.page(d, "medium", ip=1 + d % 3)

    it = j("intent")
    it.download(9, "1.2")
    it.page(8, "high", url="https://acme.dev/pricing")
    it.page(7, "medium", url="https://acme.dev/features")

    ci = j("ci")
    for n in range(200):  # a CI burst: 200 downloads in 3 minutes from one runner
        ci.download(3 - n / (200 * 24 * 20), "1.2", ip=7, channel="pypi", ci=True)
    for d in range(1, 20):
        ci.download(d, "1.2", ip=8, channel="pypi", ci=True)
    ci.page(2, "medium")  # one human glance

    mirror = j("mirror")
    for d in range(1, 40):
        mirror.download(d, "1.2", ua="Artifactory/7.77.3")

    isp = j("isp")
    isp.page(3, "medium", ip=5)
    isp.download(3, "1.2", ip=5)
    isp.page(2, "medium", ip=6)

    ov = j("override")
    ov.page(6, "medium")

    dnt = j("driveby")
    for _ in range(5):
        dnt.download(1, "1.2", ip=99)
        events[-1].dnt = True
    return events


async def _write(db: Path, events: list[Event]) -> None:
    sink = EventSink(db, RowBuilder(Identifier(b"journeys")), batch_size=5000, flush_interval=0.01)
    await sink.start()
    for event in events:
        sink.put(event)
    await sink.close()
    assert sink.stats.written == len(events) and sink.stats.dropped == 0


def write_events(db: Path, events: list[Event]) -> None:
    """Through the real sink (privacy reduction, keyed ids), in order of time."""
    asyncio.run(_write(db, sorted(events, key=lambda e: e.ts)))


def moment(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
