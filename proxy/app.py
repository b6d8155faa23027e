"""`create_app(settings)`: the pipeline in order and the resources it opens. Wiring only."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import BinaryIO

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

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
from proxy.upstream import Upstream

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _resources(upstream: Upstream, settings: Settings) -> CleanupContext:
    """Open the upstream session and the store at start-up; close both at shutdown."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = open_store(settings)
        app[STORE], app[UPSTREAM] = store, upstream
        await upstream.open()
        yield
        await upstream.close()
        await store.close()

    return lifecycle


def _chain(stages: list[Middleware], handler: Handler) -> Handler:
    """Compose middleware-shaped stages around `handler` once, at start-up."""
    for stage in reversed(stages):
        handler = partial(stage, handler=handler)
    return handler


def _v1_handler(settings: Settings, policy: Policy, upstream: Upstream) -> Handler:
    """Every `/v1` request: auth, then route, then upstream."""

    async def forward(request: web.Request) -> web.StreamResponse:
        return await upstream.forward(request, request[BODY], request[FACTS])

    pipeline = [
        auth_middleware(KeyRing(policy)),
        route_middleware(
            EndpointTable(), passthrough=settings.passthrough, limit=settings.max_request_bytes
        ),
    ]
    return _chain(pipeline, forward)


def create_app(
    settings: Settings, *, policy: Policy | None = None, log_stream: BinaryIO | None = None
) -> web.Application:
    """The whole Tollgate application for `settings`."""
    log = build_logger(settings.log, log_stream or sys.stdout.buffer)
    app = web.Application(
        middlewares=[log_middleware(log), error_middleware(log)],
        client_max_size=settings.max_request_bytes,
    )
    app[SETTINGS] = settings
    upstream = Upstream(settings.upstream)
    app.cleanup_ctx.append(_resources(upstream, settings))
    add_health_routes(app)
    policy = policy or load_policy(settings.config_file)
    app.router.add_route("*", "/v1/{tail:.*}", _v1_handler(settings, policy, upstream))
    return app
