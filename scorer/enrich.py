"""Network prefix → organisation, offline and layered, with a confidence.

Sources, most trusted first:

1. the maintainer's overrides file (network CIDRs or endpoint ids → organisation, plus
   "this is not X" corrections);
2. an organisation directory (CSV or TOML: CIDR → name, domain, type);
3. MaxMind-format databases (GeoLite2/GeoIP2 ASN, ISP, Enterprise; IPinfo ASN/company
   files) read with ``maxminddb``;
4. reverse DNS of the prefix — off unless asked for.

Networks are classified company / isp / hosting / ci / mirror / unknown with name and
ASN lists (``scorer/data/networks.toml`` + the rules' ``[networks]``).
"""

from __future__ import annotations

import csv
import ipaddress
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import maxminddb

SOURCE_CONFIDENCE = {
    "override": 1.0,
    "directory": 0.9,
    "company_db": 0.75,
    "isp_db": 0.6,
    "asn_db": 0.5,
    "rdns": 0.35,
}
TYPES = ("company", "isp", "hosting", "ci", "mirror", "unknown")
_TYPE_ALIASES = {
    "business": "company", "corporate": "company", "enterprise": "company", "education": "company",
    "government": "company", "organization": "company", "residential": "isp", "cellular": "isp",
    "cable/dsl": "isp", "dialup": "isp", "mobile": "isp", "hosting": "hosting", "cdn": "hosting",
    "content delivery network": "hosting", "isp": "isp", "ci": "ci", "mirror": "mirror",
    "company": "company",
}  # fmt: skip


class EnrichmentError(ValueError):
    pass


@dataclass(frozen=True)
class Organisation:
    name: str
    type: str
    domain: str | None
    confidence: float
    source: str


def confidence_label(value: float) -> str:
    return "high" if value >= 0.75 else "medium" if value >= 0.5 else "low"


@dataclass
class _Candidate:
    name: str
    type: str | None
    domain: str | None
    source: str
    asn: int | None = None


@dataclass
class Classifier:
    names: dict[str, list[str]] = field(default_factory=dict)
    asns: dict[int, str] = field(default_factory=dict)

    @classmethod
    def load(cls, extra: dict[str, Any]) -> Classifier:
        data = tomllib.loads((Path(__file__).parent / "data" / "networks.toml").read_text())
        out = cls()
        for kind in ("ci", "mirror", "hosting", "isp"):  # most specific first
            section = data.get(kind, {})
            user = extra.get(kind, {})
            out.names[kind] = [
                n.lower() for n in [*section.get("names", []), *user.get("names", [])]
            ]
            for asn in [*section.get("asns", []), *user.get("asns", [])]:
                out.asns.setdefault(int(asn), kind)
        return out

    def classify(self, name: str, asn: int | None, hint: str | None) -> str:
        if hint:
            mapped = _TYPE_ALIASES.get(hint.lower())
            if mapped:
                return mapped
        if asn is not None and asn in self.asns:
            return self.asns[asn]
        lowered = name.lower()
        for kind, names in self.names.items():
            if any(n in lowered for n in names):
                return kind
        return "company"


def _normalise(name: str) -> str:
    return " ".join(name.lower().replace(",", " ").replace(".", " ").split())


class Enricher:
    """Resolves network prefixes (and endpoint ids) to organisations, with caching."""

    def __init__(
        self,
        *,
        overrides: Path | None = None,
        directory: Path | None = None,
        databases: list[Path] | None = None,
        reverse_dns: bool = False,
        networks: dict[str, Any] | None = None,
    ) -> None:
        self.classifier = Classifier.load(networks or {})
        self.override_nets: list[tuple[ipaddress._BaseNetwork, _Candidate]] = []
        self.override_endpoints: dict[str, _Candidate] = {}
        self.not_x: list[tuple[ipaddress._BaseNetwork, str]] = []
        self.directory: list[tuple[ipaddress._BaseNetwork, _Candidate]] = []
        self.readers: list[maxminddb.Reader] = []
        self.reverse_dns = reverse_dns
        self._cache: dict[str, Organisation | None] = {}
        if overrides:
            self._load_overrides(overrides)
        if directory:
            self._load_directory(directory)
        for db in databases or []:
            try:
                self.readers.append(maxminddb.open_database(str(db)))
            except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                raise EnrichmentError(f"{db}: cannot read MaxMind database: {exc}") from None
        self.sources_digest = repr(
            (str(overrides), str(directory), [str(d) for d in databases or []], reverse_dns,
             [Path(p).stat().st_mtime if p and Path(p).exists() else None for p in (overrides, directory, *(databases or []))])
        )  # fmt: skip

    # ------------------------------------------------------------------ loading

    def _load_overrides(self, path: Path) -> None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise EnrichmentError(f"{path}: {exc}") from None
        for n, org in enumerate(data.get("org", []), 1):
            if not isinstance(org, dict) or not isinstance(org.get("name"), str):
                raise EnrichmentError(f"{path}: [[org]] #{n} needs a name")
            cand = _Candidate(
                org["name"], org.get("type", "company"), org.get("domain"), "override"
            )
            for cidr in org.get("networks", []):
                self.override_nets.append((_network(cidr, path), cand))
            for endpoint in org.get("endpoints", []):
                self.override_endpoints[endpoint] = cand
        for n, item in enumerate(data.get("not", []), 1):
            if not isinstance(item, dict) or "network" not in item or "organisation" not in item:
                raise EnrichmentError(f"{path}: [[not]] #{n} needs network and organisation")
            self.not_x.append((_network(item["network"], path), _normalise(item["organisation"])))
        self.override_nets.sort(key=lambda pair: pair[0].prefixlen, reverse=True)

    def _load_directory(self, path: Path) -> None:
        rows: list[dict[str, Any]]
        try:
            if path.suffix.lower() == ".csv":
                with path.open(newline="") as fh:
                    rows = list(csv.DictReader(fh))
            else:
                rows = tomllib.loads(path.read_text()).get("network", [])
        except (OSError, tomllib.TOMLDecodeError, csv.Error) as exc:
            raise EnrichmentError(f"{path}: {exc}") from None
        for n, row in enumerate(rows, 1):
            cidr, name = (
                row.get("network") or row.get("cidr"),
                row.get("organisation") or row.get("name"),
            )
            if not cidr or not name:
                raise EnrichmentError(
                    f"{path}: entry {n} needs network (CIDR) and organisation/name"
                )
            kind = (row.get("type") or "company").strip().lower()
            if kind not in TYPES:
                raise EnrichmentError(f"{path}: entry {n}: type must be one of {', '.join(TYPES)}")
            self.directory.append(
                (
                    _network(cidr, path),
                    _Candidate(name, kind, row.get("domain") or None, "directory"),
                )
            )
        self.directory.sort(key=lambda pair: pair[0].prefixlen, reverse=True)

    # ------------------------------------------------------------------ lookups

    def endpoint(self, endpoint_id: str) -> Organisation | None:
        cand = self.override_endpoints.get(endpoint_id)
        return self._finish([cand]) if cand else None

    def network(self, prefix: str | None) -> Organisation | None:
        if not prefix:
            return None
        if prefix in self._cache:
            return self._cache[prefix]
        org = self._resolve(prefix)
        self._cache[prefix] = org
        return org

    def _resolve(self, prefix: str) -> Organisation | None:
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            return None
        for known, cand in self.override_nets:
            if _inside(net, known):
                return self._finish([cand])
        rejected = {name for known, name in self.not_x if _inside(net, known)}
        candidates: list[_Candidate] = []
        for known, cand in self.directory:
            if _inside(net, known):
                candidates.append(cand)
                break
        for reader in self.readers:
            cand = _from_mmdb(reader, net)
            if cand:
                candidates.append(cand)
        if self.reverse_dns and not candidates:
            cand = _from_rdns(net)
            if cand:
                candidates.append(cand)
        candidates = [c for c in candidates if _normalise(c.name) not in rejected]
        return self._finish(candidates) if candidates else None

    def _finish(self, candidates: list[_Candidate]) -> Organisation:
        best = min(candidates, key=lambda c: -SOURCE_CONFIDENCE[c.source])
        confidence = SOURCE_CONFIDENCE[best.source]
        agreeing = {c.source for c in candidates if _normalise(c.name) == _normalise(best.name)}
        confidence = min(1.0, confidence + 0.1 * (len(agreeing) - 1))
        disagreeing = [c for c in candidates if _normalise(c.name) != _normalise(best.name)]
        if disagreeing and best.source not in ("override", "directory"):
            confidence = max(0.1, confidence - 0.1)
        asn = next((c.asn for c in candidates if c.asn is not None), None)
        kind = self.classifier.classify(best.name, asn, best.type)
        return Organisation(best.name, kind, best.domain, round(confidence, 2), best.source)


def _network(cidr: str, path: Path) -> ipaddress._BaseNetwork:
    try:
        return ipaddress.ip_network(str(cidr).strip(), strict=False)
    except ValueError as exc:
        raise EnrichmentError(f"{path}: {exc}") from None


def _inside(net: ipaddress._BaseNetwork, container: ipaddress._BaseNetwork) -> bool:
    return net.version == container.version and (
        net.subnet_of(container) or container.subnet_of(net)  # type: ignore[arg-type]
    )


def _from_mmdb(reader: maxminddb.Reader, net: ipaddress._BaseNetwork) -> _Candidate | None:
    try:
        record = reader.get(str(net.network_address))
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    db_type = reader.metadata().database_type.lower()
    asn = record.get("autonomous_system_number")
    if isinstance(record.get("asn"), str) and record["asn"].upper().startswith("AS"):
        digits = record["asn"][2:]
        asn = int(digits) if digits.isdigit() else None
    traits = record.get("traits") if isinstance(record.get("traits"), dict) else {}
    company = (
        record.get("organization")
        or traits.get("organization")
        or (record.get("name") if "company" in db_type else None)
    )
    isp = record.get("isp") or traits.get("isp")
    as_name = (
        record.get("autonomous_system_organization")
        or traits.get("autonomous_system_organization")
        or record.get("as_name")
    )
    hint = (
        record.get("type")
        or traits.get("user_type")
        or record.get("connection_type")
        or traits.get("connection_type")
    )
    domain = record.get("domain") or record.get("as_domain") or traits.get("domain")
    if company:
        return _Candidate(company, hint, domain, "company_db", asn)
    if isp:
        return _Candidate(isp, hint or "isp", domain, "isp_db", asn)
    if as_name:
        return _Candidate(as_name, hint, domain, "asn_db", asn)
    return None


def _from_rdns(net: ipaddress._BaseNetwork) -> _Candidate | None:
    host = next(iter(net.hosts()), net.network_address)
    try:
        name = socket.gethostbyaddr(str(host))[0]
    except OSError:
        return None
    parts = name.rstrip(".").split(".")
    if len(parts) < 2:
        return None
    domain = ".".join(parts[-2:])
    return _Candidate(domain, None, domain, "rdns")
