"""Who a request counts as: the socket's peer, or X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from ipaddress import ip_network

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from proxy.address import Network, client_address

LOOPBACK = ip_network("127.0.0.0/8")
INTERNAL = ip_network("10.0.0.0/8")


async def seen_as(
    aiohttp_server: AiohttpServer,
    trusted: tuple[Network, ...],
    forwarded: list[str],
    host: str = "127.0.0.1",
) -> str:
    """What `client_address` says about a real request carrying these X-Forwarded-For headers."""

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=client_address(request, trusted))

    app = web.Application()
    app.router.add_get("/", echo)
    server = await aiohttp_server(app, host=host)
    headers = [("X-Forwarded-For", value) for value in forwarded]
    async with aiohttp.ClientSession() as client:
        async with client.get(server.make_url("/"), headers=headers) as response:
            return await response.text()


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ([], "127.0.0.1"),
        (["203.0.113.7"], "203.0.113.7"),
        (["198.51.100.1, 203.0.113.7"], "203.0.113.7"),
        (["198.51.100.1", "203.0.113.7"], "203.0.113.7"),
        (["203.0.113.7, 10.1.2.3"], "203.0.113.7"),
        (["10.0.0.1, 10.0.0.2"], "10.0.0.1"),
        (["2001:db8::1"], "2001:db8::/64"),
        (["[2001:db8:0:5::9]"], "2001:db8:0:5::/64"),
        (["::ffff:203.0.113.9"], "203.0.113.9"),
        (["not an address"], "127.0.0.1"),
        (["not an address, 203.0.113.7"], "203.0.113.7"),
        (["203.0.113.7, nonsense"], "127.0.0.1"),
    ],
)
async def test_a_trusted_proxy_is_believed_from_the_right(
    aiohttp_server: AiohttpServer, forwarded: list[str], expected: str
) -> None:
    """The rightmost forwarded address that is not itself a trusted proxy is the client;
    what does not parse ends the walk."""
    assert await seen_as(aiohttp_server, (LOOPBACK, INTERNAL), forwarded) == expected


async def test_forwarded_for_from_anyone_else_is_ignored(aiohttp_server: AiohttpServer) -> None:
    """A peer that is not a trusted proxy is the client, whatever it writes."""
    assert await seen_as(aiohttp_server, (INTERNAL,), ["203.0.113.7"]) == "127.0.0.1"
    assert await seen_as(aiohttp_server, (), ["203.0.113.7"]) == "127.0.0.1"


async def test_an_ipv6_peer_counts_by_its_64(aiohttp_server: AiohttpServer) -> None:
    """A client on IPv6 is its /64: the block a single host can move around in."""
    assert await seen_as(aiohttp_server, (), [], host="::1") == "::/64"
