"""The client's address, as far as Tollgate can vouch for it: the socket's peer, or what
trusted proxies in front of Tollgate say in `X-Forwarded-For`.

`X-Forwarded-For` is anyone's to write, so it is read only when the peer is one of the
`trusted_proxies`, and then from the right: each proxy appends the address it got the
connection from, so the rightmost address that is not a trusted proxy is the first one that
no trusted party vouches past. IPv6 addresses count by their /64, the block one host usually
has to itself (a per-address count is otherwise escaped by changing the interface id).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp import web

Network = IPv4Network | IPv6Network
UNKNOWN = "unknown"  # a peer without an IP address (a Unix socket), counted as one client


def _parsed(text: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(text.strip().removeprefix("[").split("]")[0])
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPv4Address | IPv6Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def _forwarded(
    request: web.Request, trusted: Sequence[Network]
) -> IPv4Address | IPv6Address | None:
    """The rightmost `X-Forwarded-For` address that is not a trusted proxy (or the leftmost,
    if every one is); None when the header holds nothing usable."""
    hops = [
        hop for value in request.headers.getall("X-Forwarded-For", ()) for hop in value.split(",")
    ]
    found: IPv4Address | IPv6Address | None = None
    for hop in reversed(hops):
        address = _parsed(hop)
        if address is None:
            break  # past a hop no trusted proxy could have written: stop at the last good one
        found = address
        if not _trusted(address, trusted):
            break
    return found


def client_address(request: web.Request, trusted: Sequence[Network] = ()) -> str:
    """Who a request counts as: an IPv4 address, an IPv6 /64, or `unknown`."""
    peer = _parsed(request.remote or "")
    if peer is None:
        return UNKNOWN
    if trusted and _trusted(peer, trusted):
        peer = _forwarded(request, trusted) or peer
    if isinstance(peer, IPv6Address):
        return str(ip_network(f"{peer}/64", strict=False))
    return str(peer)
