"""Who an anonymous caller is, for rate limits: a client address, proxy-aware, IPv6 by /64.

gRPC reports the TCP peer (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``,
``unix:/path``). Behind a gateway every caller has the gateway's address, so
one client could spend everybody's budget: a deployment names the header its
proxy sets (``trusted_proxy_header``, e.g. ``x-forwarded-for``) and the proxy
networks (``trusted_proxies``). The header is believed only when the TCP peer
is one of those proxies, and then the client is the right-most address in it
that is not itself a trusted proxy (the left part is whatever the client
wrote). IPv6 addresses are grouped by /64: one subscriber usually holds a
whole /64, so a limit per single address is no limit at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPV6_GROUP_PREFIX = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_peer(peer: str) -> Address | None:
    """The IP address of a gRPC peer string; None for unix sockets and anything unparsable."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    elif kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]")
    else:
        return None
    return _address(host)


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port" as some proxies write it
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def group(address: Address) -> str:
    """The rate-limit key of an address: itself for IPv4, its /64 for IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_GROUP_PREFIX), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class ClientAddresses:
    """Resolves the client key of a call; ``header`` is a lower-case gRPC metadata key."""

    header: str | None = None
    proxies: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, header: str | None, proxies: Iterable[str]) -> ClientAddresses:
        return cls(header.lower() if header else None, tuple(ipaddress.ip_network(p, strict=False) for p in proxies))

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.proxies)

    def key(self, peer: str, metadata: Sequence[tuple[str, str | bytes]]) -> str:
        address = parse_peer(peer)
        if address is None:
            return peer.rsplit(":", 1)[0] or "unknown"
        if self.header is not None and self._trusted(address):
            forwarded = [
                (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in metadata if k == self.header
            ]
            hops = [h for value in forwarded for h in value.split(",")]
            for hop in reversed(hops):
                candidate = _address(hop)
                if candidate is None:
                    break  # unparsable: stop at the last address we can vouch for
                address = candidate
                if not self._trusted(candidate):
                    break
        return group(address)
