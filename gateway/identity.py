"""Privacy-preserving client identity: network prefix and keyed ids, never the raw IP.

``endpoint_id`` = HMAC-SHA256(key, ip) and ``origin_id`` = HMAC-SHA256(key, ip + UA),
truncated to 128 bits.  Without the key the ids cannot be reversed by enumerating
the IPv4 space; rotating the key unlinks old and new ids.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

KEY_ENV = "GATEPOST_KEY"


def load_or_create_key(key_file: Path) -> bytes:
    """The HMAC key: ``$GATEPOST_KEY`` if set, else a file created on first run (0600)."""
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode()
    try:
        return key_file.read_text().strip().encode()
    except FileNotFoundError:
        pass
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    tmp = key_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    try:
        os.link(tmp, key_file)  # never overwrite a key another process just created
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return key_file.read_text().strip().encode()


_DOTTED = re.compile(
    r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
)


@lru_cache(maxsize=65536)
def network_prefix(ip: str) -> str | None:
    """``203.0.113.7`` → ``203.0.113.0/24``; IPv6 → /48; IPv4-mapped IPv6 → IPv4 /24."""
    m = _DOTTED.fullmatch(ip)
    if m:  # the common case, without building address objects
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}.0/24"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


class Identifier:
    """Computes keyed ids with one shared key.

    Results are memoised in-process (clients repeat); the cache lives in memory
    only, like the raw address it is computed from, and is never written anywhere.
    """

    __slots__ = ("_keyed", "endpoint_id", "origin_id")

    def __init__(self, key: bytes) -> None:
        # The key is absorbed once; each id copies that state (a third cheaper than hmac.digest).
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)
        self.endpoint_id = lru_cache(maxsize=65536)(self._endpoint_id)
        self.origin_id = lru_cache(maxsize=65536)(self._origin_id)

    def _mac(self, message: bytes) -> str:
        h = self._keyed.copy()
        h.update(message)
        return h.hexdigest()[:32]

    def _endpoint_id(self, ip: str) -> str:
        return self._mac(ip.encode())

    def _origin_id(self, ip: str, user_agent: str | None) -> str:
        return self._mac(f"{ip}\x00{user_agent or ''}".encode())


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


class ClientAddress:
    """Finds the client IP: the socket peer, or forwarded headers from trusted proxies only."""

    __slots__ = ("_trusted",)

    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self._trusted = tuple(trusted)

    @property
    def trusts_any(self) -> bool:
        """False when forwarded headers are never read (no trusted proxies configured)."""
        return bool(self._trusted)

    def _is_trusted(self, ip: str) -> bool:
        if not self._trusted:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._trusted)

    def resolve(self, peer: str | None, headers: list[tuple[str, str]]) -> str | None:
        if peer is None or not self._trusted or not self._is_trusted(peer):
            return peer
        chain: list[str] = []
        for name, value in headers:
            if name == "x-forwarded-for":
                chain.extend(p.strip() for p in value.split(","))
        if not chain:
            for name, value in headers:
                if name == "forwarded":
                    chain.extend(_forwarded_for(value))
        # Walk from the nearest hop outwards; the first untrusted address is the client.
        for hop in reversed(chain):
            hop = _strip_port(hop)
            if not hop:
                break
            if not self._is_trusted(hop):
                return hop if _valid_ip(hop) else peer
        return peer


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _forwarded_for(value: str) -> list[str]:
    out: list[str] = []
    for element in value.split(","):
        for pair in element.split(";"):
            key, _, val = pair.strip().partition("=")
            if key.lower() == "for":
                out.append(val.strip().strip('"'))
    return out


def _strip_port(hop: str) -> str:
    if hop.startswith("["):
        return hop[1 : hop.find("]")] if "]" in hop else ""
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop
