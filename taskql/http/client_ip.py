"""The client's IP address: the peer's, or, behind trusted proxies, the one they were asked by.

`X-Forwarded-For` is a list each proxy appends to, so only its right end is trustworthy: walking it
from the right, the first address that is not one of our proxies is the client. A header sent by
a client that did not come through a trusted proxy is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_ip(connection: HTTPConnection, proxies: Sequence[Network]) -> str:
    peer = connection.client.host if connection.client else "unknown"
    if not _trusted(peer, proxies):
        return peer
    forwarded = [hop.strip() for hop in connection.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
    for hop in reversed(forwarded):
        if not _trusted(hop, proxies):
            return hop
    return forwarded[0] if forwarded else peer
