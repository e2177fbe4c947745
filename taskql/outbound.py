"""Where TaskQL may send requests (webhooks): an address policy against server-side request forgery.

A URL is checked when it is saved and again, on the addresses its host resolves to then, at every
delivery; the request then goes to the address that was checked (the hostname still names the
server for TLS and in `Host`), so a name that resolves to a public address when checked and to an
internal one a moment later (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
# Cloud metadata services answer on these: never a webhook's target, whatever else is allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)


class RefusedUrl(ValueError):
    """The URL is not one TaskQL sends requests to; the message says why."""


@dataclass(frozen=True)
class Target:
    url: str  # as given
    scheme: str
    host: str
    port: int
    address: str  # the checked address to connect to

    def url_to_address(self) -> str:
        """The URL with the checked address in place of the host."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return parts._replace(netloc=f"{literal}:{self.port}").geturl()


def check_url(url: str, *, allow_http: bool) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL TaskQL may call; RefusedUrl otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise RefusedUrl(f"must be at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        raise RefusedUrl("must start with https://" + (" or http://" if allow_http else ""))
    if not parts.hostname:
        raise RefusedUrl("must name a host")
    if parts.username or parts.password:
        raise RefusedUrl("must not hold credentials: the signature authenticates TaskQL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise RefusedUrl("has an invalid port") from exc
    return parts.scheme, parts.hostname, port


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for kind, refused in (
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a private", address.is_private),
        ("a multicast", address.is_multicast),
        # The rest that is not on the public internet: shared (carrier NAT), reserved, documentation…
        ("a non-public", not address.is_global),
    ):
        if refused:
            return f"{kind} address"
    return None


async def resolve(url: str, *, allow_http: bool, allow_private: bool) -> Target:
    """The URL's target after resolving its host now: every address it resolves to must be allowed
    (one bad answer among good ones is refused too: which one a connection takes is not ours to pick)."""
    scheme, host, port = check_url(url, allow_http=allow_http)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RefusedUrl(f"its host {host} cannot be resolved") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise RefusedUrl(f"its host {host} cannot be resolved")
    if not allow_private:
        for address in addresses:
            reason = _refusal(address)
            if reason is not None:
                raise RefusedUrl(f"its host {host} resolves to {address}, {reason}")
    return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))
