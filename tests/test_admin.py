"""The admin API's door: nothing behind it without the token, and on a port of its own."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.admin import ADMIN_APP
from proxy.settings import AdminSettings, AuthSettings
from tests.conftest import ADMIN_TOKEN, CLIENT_KEY, MakeProxy, Proxy, free_port

SAMPLE = {"key_id": "key_0123", "team": "red", "user": "alice", "scope": "users", "name": "alice"}
QUERY_NAMES = ("token", "admin_token", "api_key", "key", "access_token", "authorization")


def admin_routes(app: web.Application) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /admin, its path parameters filled in."""
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        canonical = route.resource.canonical if route.resource else ""
        if not canonical.startswith("/admin") or route.method == "HEAD":
            continue
        path = info.get("path") or canonical.format(**SAMPLE)
        found.append((route.method, path))
    return found


async def answer(
    url: str, method: str, headers: dict[str, str] | None = None, **query: str
) -> tuple[int, bytes]:
    """Status and body of one request with a small JSON body."""
    async with aiohttp.ClientSession() as client:
        async with client.request(
            method, url, headers=headers, params=query, json={"name": "x", "user": "alice"}
        ) as response:
            return response.status, await response.read()


async def test_every_admin_route_is_shut_without_the_token(make_proxy: MakeProxy) -> None:
    """Every /admin route answers the very same 401 to a missing token, a wrong one, a client
    key, another scheme, and the token sent in the query string instead of the header."""
    proxy = await make_proxy(auth=AuthSettings(max_failures=0))
    routes = admin_routes(proxy.server.app)
    assert len(routes) >= 11, routes
    refusals = set()
    query = dict.fromkeys(QUERY_NAMES, ADMIN_TOKEN)
    for method, path in routes:
        url = proxy.url(path)
        refusals |= {
            await answer(url, method),
            await answer(url, method, {"Authorization": "Bearer wrong"}),
            await answer(url, method, {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"}),
            await answer(url, method, {"Authorization": f"Bearer {ADMIN_TOKEN}x"}),
            await answer(url, method, {"Authorization": f"Bearer {CLIENT_KEY}"}),
            await answer(url, method, {"Authorization": f"Basic {ADMIN_TOKEN}"}),
            await answer(url, method, {"Authorization": ADMIN_TOKEN}),
            await answer(url, method, {"X-Admin-Token": ADMIN_TOKEN}, **query),
        }
        allowed, _ = await answer(url, method, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert allowed != 401, (method, path)
    assert len(refusals) == 1, refusals
    status, body = refusals.pop()
    assert status == 401
    assert b'"code": "invalid_api_key"' in body


async def _admin_on_own_port(make_proxy: MakeProxy) -> tuple[Proxy, str]:
    port = free_port()
    proxy = await make_proxy(admin=AdminSettings(port=port, host="127.0.0.1"))
    return proxy, f"http://127.0.0.1:{port}"


async def test_the_admin_api_can_live_on_a_port_of_its_own(make_proxy: MakeProxy) -> None:
    """With `admin.port`, /admin is served there (behind its token), and the main port has
    no /admin at all: it answers 404 like any unknown path, token or not."""
    proxy, admin_base = await _admin_on_own_port(make_proxy)
    token = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created, _ = await answer(f"{admin_base}/admin/keys", "POST", token)
    assert created == 201
    assert (await answer(f"{admin_base}/admin/keys", "GET", token))[0] == 200
    assert (await answer(f"{admin_base}/admin/keys", "GET"))[0] == 401
    for method, path in admin_routes(proxy.server.app[ADMIN_APP]):
        status, body = await answer(proxy.url(path), method, token)
        assert status == 404, (method, path)
        assert b'"type": "invalid_request_error"' in body
    assert admin_routes(proxy.server.app) == []


async def test_the_admin_port_serves_nothing_but_admin(make_proxy: MakeProxy) -> None:
    """The admin listener does not answer /v1, whatever key: clients stay on the main port."""
    proxy, admin_base = await _admin_on_own_port(make_proxy)
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    status, body = await answer(f"{admin_base}/v1/models", "GET", auth)
    assert status == 404
    assert b"Invalid URL" in body
    assert (await answer(proxy.url("/v1/models"), "GET", auth))[0] == 200


@pytest.mark.parametrize("port", [None, "own"])
async def test_admin_requests_are_logged_either_way(make_proxy: MakeProxy, port: Any) -> None:
    """Admin requests get their canonical log line on the main port or their own."""
    if port is None:
        proxy, base = await make_proxy(), ""
    else:
        proxy, base = await _admin_on_own_port(make_proxy)
    url = f"{base}/admin/keys" if base else proxy.url("/admin/keys")
    assert (await answer(url, "GET"))[0] == 401
    assert '"path":"/admin/keys"' in proxy.log_text()
