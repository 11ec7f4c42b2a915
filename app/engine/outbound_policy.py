"""The SSRF policy of outbound HTTP: where a node may connect, and its time and size caps.

``OutboundPolicy`` holds what the settings allow (hosts and networks opened on purpose) and
the caps; ``is_forbidden_address`` names why an address is no place for a request (cloud
metadata, loopback, private, link-local, ..., also when embedded in an IPv6 address); and
``resolve_allowed`` resolves a host once and refuses it when any address is refused.
``app.engine.outbound``, the client, connects only to the addresses this returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from app.engine.nodes.base import NodeFailure
from app.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_RESPONSE_BYTES = 5 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_REDIRECTS = 5

# Refusals are logged under the client's name, as they were when the two were one module.
log = logging.getLogger("app.engine.outbound")


# Checked in order: the metadata endpoints (AWS, GCP, Azure, OCI, DigitalOcean at
# 169.254.169.254; Alibaba; Oracle Classic; Azure WireServer; AWS over IPv6) come first.
_FORBIDDEN = (
    ("cloud metadata", "169.254.169.254 100.100.100.200 192.0.0.192 168.63.129.16 fd00:ec2::254"),
    ("unspecified", "0.0.0.0/8 ::/128"),
    ("loopback", "127.0.0.0/8 ::1/128"),
    ("private", "10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7 fec0::/10 64:ff9b:1::/48"),
    ("link-local", "169.254.0.0/16 fe80::/10"),
    ("carrier-grade NAT", "100.64.0.0/10"),
    ("benchmarking", "198.18.0.0/15"),
    ("documentation", "192.0.2.0/24 198.51.100.0/24 203.0.113.0/24 2001:db8::/32"),
    ("multicast", "224.0.0.0/4 ff00::/8"),
    ("broadcast", "255.255.255.255/32"),
    ("reserved", "240.0.0.0/4 192.0.0.0/24 192.88.99.0/24 100::/64"),
)
_FORBIDDEN_NETWORKS = tuple(
    (ipaddress.ip_network(network), reason)
    for reason, networks in _FORBIDDEN
    for network in networks.split()
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class OutboundError(NodeFailure):
    """An outbound request that did not complete: refused, unreachable, too slow or too big."""


class OutboundBlocked(OutboundError):
    """The policy refused the destination; nothing was sent to it."""

    def __init__(self, message: str, *, host: str, reason: str) -> None:
        super().__init__(message)
        self.host = host
        self.reason = reason


class OutboundTimeout(OutboundError):
    """No complete response within the policy's time limit."""


class ResponseTooLarge(OutboundError):
    """The response body is larger than the policy allows; reading it was stopped."""


def is_forbidden_address(ip: IPAddress) -> str | None:
    """Why ``ip`` is no place for outbound requests (e.g. "loopback"), or None when public."""
    for network, reason in _FORBIDDEN_NETWORKS:
        if ip in network:
            return reason
    if isinstance(ip, ipaddress.IPv6Address):
        for kind, embedded in _embedded_ipv4(ip):
            inner = is_forbidden_address(embedded)
            if inner is not None:
                return f"{kind} {inner}"
        if ip.ipv4_mapped is not None or ip in _NAT64:
            return None  # it reaches a public IPv4 address
        if ip in _IPV4_COMPATIBLE:
            return "reserved"
    return None if ip.is_global else "reserved"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> Iterator[tuple[str, ipaddress.IPv4Address]]:
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        yield "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        yield "NAT64", low32
    if ip in _IPV4_COMPATIBLE:
        yield "IPv4-compatible", low32
    if ip.sixtofour is not None:
        yield "6to4", ip.sixtofour
    if ip.teredo is not None:
        yield "Teredo", ip.teredo[1]


def _host_key(host: str) -> str:
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True)
class OutboundPolicy:
    """Where outbound requests may go, and how much time and data they may take."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_redirects: int = DEFAULT_MAX_REDIRECTS

    def for_node(self, timeout_seconds: float | None) -> OutboundPolicy:
        """This policy for a node whose own ``timeoutSeconds`` (when set) bounds its calls
        instead of FLOWDECK_HTTP_TIMEOUT_SECONDS (a model's answer may take minutes)."""
        if timeout_seconds is None:
            return self
        return dataclasses.replace(self, timeout_seconds=timeout_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        """The policy the settings describe; a missing setting takes its default."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in getattr(settings, "outbound_allow", None) or ():
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                hosts.add(_host_key(entry))
        return cls(
            allow_hosts=frozenset(hosts),
            allow_networks=tuple(networks),
            max_response_bytes=int(
                getattr(settings, "http_max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)
            ),
            timeout_seconds=float(
                getattr(settings, "http_timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
            ),
            max_redirects=int(getattr(settings, "http_max_redirects", DEFAULT_MAX_REDIRECTS)),
        )

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Why connecting to ``ip`` (resolved from ``host``) is refused, or None when allowed."""
        if _host_key(host) in self.allow_hosts:
            return None
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if any(c in network for c in candidates for network in self.allow_networks):
            return None
        return is_forbidden_address(ip)


def _blocked(host: str, ip: IPAddress, reason: str) -> OutboundBlocked:
    # The resolved address stays out of the message (every reader of the run sees it, and it
    # would map internal DNS); the log keeps it for operators.
    log.info("outbound request refused", extra={"host": host, "address": str(ip), "reason": reason})
    message = f"Refused to connect to {host}: {reason} address is not allowed."
    return OutboundBlocked(message, host=host, reason=reason)


async def resolve_allowed(policy: OutboundPolicy, host: str, port: int) -> list[str]:
    """Resolve ``host`` once; its addresses to connect to, or OutboundBlocked if any is refused."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundError(f"Could not resolve {host}: {exc}.") from exc
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(sockaddr[0])
        reason = policy.refusal(host, ip)
        if reason is not None:
            raise _blocked(host, ip, reason)
        scope = sockaddr[3] if len(sockaddr) == 4 else 0
        address = f"{sockaddr[0]}%{scope}" if scope else str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OutboundError(f"Could not resolve {host}: no IPv4 or IPv6 address.")
    return addresses
