"""`create_app(settings)`: the pipeline in order and the resources it opens. Wiring only."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import TextIO

from aiohttp import web

from proxy.auth import KeyRing, auth_middleware
from proxy.context import FACTS, SETTINGS
from proxy.endpoints import EndpointTable
from proxy.errors import error_middleware
from proxy.health import STORE, UPSTREAM, add_health_routes
from proxy.log import build_logger, log_middleware
from proxy.policy import Policy, load_policy
from proxy.route import BODY, route_middleware
from proxy.settings import Settings
from proxy.store import open_store
from proxy.upstream import Upstream, client_session


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].upstream
    async with client_session(settings) as session:
        app[UPSTREAM] = Upstream(settings, session)
        yield


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[SETTINGS])
    app[STORE] = store
    yield
    await store.close()


async def _forward(request: web.Request) -> web.StreamResponse:
    """The end of the `/v1` pipeline: send the parsed request upstream."""
    upstream = request.config_dict[UPSTREAM]
    return await upstream.forward(request, request[BODY], request[FACTS])


def _v1_app(settings: Settings, policy: Policy) -> web.Application:
    """The `/v1` sub-app: auth, then route, then upstream."""
    pipeline = [
        auth_middleware(KeyRing(policy)),
        route_middleware(
            EndpointTable(), passthrough=settings.passthrough, limit=settings.max_request_bytes
        ),
    ]
    v1 = web.Application(middlewares=pipeline, client_max_size=settings.max_request_bytes)
    v1.router.add_route("*", "/{tail:.*}", _forward)
    return v1


def create_app(
    settings: Settings, *, policy: Policy | None = None, log_stream: TextIO | None = None
) -> web.Application:
    """The whole Tollgate application for `settings`."""
    log = build_logger(settings.log, log_stream or sys.stdout)
    app = web.Application(
        middlewares=[log_middleware(log), error_middleware(log)],
        client_max_size=settings.max_request_bytes,
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_upstream_ctx)
    add_health_routes(app)
    app.add_subapp("/v1", _v1_app(settings, policy or load_policy(settings.config_file)))
    return app
