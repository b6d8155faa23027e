"""Liveness and readiness: `/healthz` (the process answers) and `/readyz` (it can serve)."""

from __future__ import annotations

from aiohttp import web

from proxy.store import Store, StoreUnavailable
from proxy.upstream import Upstream

STORE = web.AppKey("store", Store)
UPSTREAM = web.AppKey("upstream", Upstream)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers."""
    return web.json_response({"status": "ok"})


async def _store_ok(store: Store) -> bool:
    try:
        await store.ping()
    except StoreUnavailable:
        return False
    return True


async def readyz(request: web.Request) -> web.Response:
    """Ready: the store and the upstream both answer; 503 names which one does not."""
    checks = {
        "store": await _store_ok(request.app[STORE]),
        "upstream": await request.app[UPSTREAM].reachable(),
    }
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return web.json_response(body, status=200 if ready else 503)


def add_health_routes(app: web.Application) -> None:
    """Mount both probes on the root app, outside `/v1` and its auth."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
