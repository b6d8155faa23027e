"""`create_app(settings)`: the pipeline in order and the resources it opens. Wiring only."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import BinaryIO

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry

from proxy.admin import (
    ADMIN_APP,
    AdminApi,
    AdminGate,
    add_admin_routes,
    add_cache_admin_routes,
    add_strike_admin_routes,
    own_listener,
)
from proxy.allowance import Allowances
from proxy.auth import Authenticator, auth_handler
from proxy.breaker import Breaker
from proxy.cache import CacheRoom, ResponseCache, cache_middleware, cache_ttls
from proxy.cachestore import open_cache_backend
from proxy.call import IMAGE_OPERATIONS, PASSTHROUGH_CALL
from proxy.context import FACTS, SETTINGS, Check
from proxy.endpoints import ENDPOINTS, EndpointTable
from proxy.enduser import enduser_check
from proxy.errors import failure_answer
from proxy.health import STORE, UPSTREAM, add_health_routes
from proxy.instruments import Instruments
from proxy.keys import Clock, KeyService
from proxy.limiter import open_limiter
from proxy.lockout import Lockout
from proxy.log import build_logger, canonical_line
from proxy.metrics import EXPOSITION, RequestMetrics, exposition_registry, serve_metrics
from proxy.moderation import Moderator, moderation_middleware
from proxy.outcome import Observer, lifecycle_middleware
from proxy.permit import permit_check
from proxy.policy import Policy, load_policy
from proxy.quota import QUOTA_STATS, Quota
from proxy.route import expect_handler, route_middleware
from proxy.schemas import SCHEMAS
from proxy.settings import Settings
from proxy.store import Store, open_store
from proxy.strikes import open_strike_book
from proxy.tenancy import Tenancy
from proxy.upstream import Upstream
from proxy.usage import UsageApi, add_usage_routes
from proxy.validate import validate_check

CleanupContext = Callable[[web.Application], AsyncIterator[None]]
Applies = Callable[[str], bool]
CACHE = web.AppKey("cache", ResponseCache)
MODERATOR = web.AppKey("moderator", Moderator)
INSTRUMENTS = web.AppKey("instruments", Instruments)


def _resources(store: Store, upstream: Upstream) -> CleanupContext:
    """Open the upstream session at start-up; close it and the store at shutdown."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        app[STORE], app[UPSTREAM] = store, upstream
        await upstream.open()
        yield
        await upstream.close()
        await store.close()

    return lifecycle


def _chain(stages: list[Middleware], handler: Handler) -> Handler:
    """Compose middleware-shaped stages around `handler` once, at start-up."""
    for stage in reversed(stages):
        handler = _link(stage, handler)
    return handler


def _admin_app(
    app: web.Application, settings: Settings, middlewares: list[Middleware]
) -> web.Application:
    """Where the `/admin` routes go: the main app, or (with `admin.port`) an app of their own
    on that port, so that the main port has no `/admin` at all."""
    if settings.admin.port is None:
        return app
    admin = web.Application(middlewares=middlewares, client_max_size=settings.max_request_bytes)
    admin[SETTINGS] = settings
    app[ADMIN_APP] = admin
    where = (settings.admin.host or settings.host, settings.admin.port)
    shared = settings.metrics.multiproc_dir is not None  # one of several worker processes
    app.cleanup_ctx.append(own_listener(admin, *where, shared=shared))
    return admin


def _link(stage: Middleware, handler: Handler) -> Handler:
    """`stage` with its next handler bound: a plain function handing back the stage's
    coroutine, so awaiting it runs one frame. A `functools.partial` with a keyword (what
    aiohttp does for app middlewares) is a C-level call and a kwargs dict per request and
    stage, about three times the cost."""

    def link(request: web.Request) -> Awaitable[web.StreamResponse]:
        return stage(request, handler)

    return link


def _v1_handler(
    settings: Settings,
    authenticator: Authenticator,
    lockout: Lockout,
    tenancy: Tenancy,
    moderator: Moderator,
    cache: CacheRoom,
    upstream: Upstream,
    quota: Quota,
) -> Handler:
    """Every `/v1` request, in order: who, what, is it well formed, may they, on whose behalf,
    how much, is it acceptable content, is it cached, then upstream."""

    def forward(request: web.Request) -> Awaitable[web.StreamResponse]:
        facts = request[FACTS]
        return upstream.forward(request, facts.body, facts, facts.principal.credential)

    checks: list[tuple[Check, Applies]] = [
        (
            validate_check(settings.validation),
            lambda op: settings.validation != "off" and op in SCHEMAS,
        ),
        (permit_check(), _always),
        (enduser_check(tenancy), lambda op: op in IMAGE_OPERATIONS),
    ]
    stages: list[tuple[Middleware, Applies]] = [
        (quota.stage, _always),
        (moderation_middleware(moderator), moderator.applies),
        (cache_middleware(cache), cache.applies),
    ]
    route = route_middleware(
        EndpointTable(),
        passthrough=settings.passthrough,
        limit=settings.max_request_bytes,
        # Validation and moderation both need a form whole before any of it is sent.
        hold_forms=settings.validation != "off" or moderator.policy.enabled,
    )
    routed = _link(route, _per_operation(checks, stages, forward))
    return auth_handler(authenticator, lockout, routed)


def _always(operation: str) -> bool:
    """Rooms whose work depends on the key, not the operation, apply to every one."""
    return True


def _checked(checks: list[Check], handler: Handler) -> Handler:
    """`handler` after `checks`, run in turn in one plain call: the first that raises refuses."""
    if not checks:
        return handler

    def checked(request: web.Request) -> Awaitable[web.StreamResponse]:
        for check in checks:
            check(request)
        return handler(request)

    return checked


def _per_operation(
    checks: list[tuple[Check, Applies]], stages: list[tuple[Middleware, Applies]], handler: Handler
) -> Handler:
    """After `route`: one chain per operation, composed at start-up from only the checks and
    stages that apply to it, so a request pays for no room that has nothing to do with it."""
    operations = {endpoint.operation for endpoint in ENDPOINTS} | {PASSTHROUGH_CALL.operation}
    chains = {
        operation: _checked(
            [check for check, applies in checks if applies(operation)],
            _chain([stage for stage, applies in stages if applies(operation)], handler),
        )
        for operation in operations
    }

    def dispatch(request: web.Request) -> Awaitable[web.StreamResponse]:
        return chains[request[FACTS].call.operation](request)

    return dispatch


def create_app(
    settings: Settings,
    *,
    policy: Policy | None = None,
    log_stream: BinaryIO | None = None,
    clock: Clock = time.time,
) -> web.Application:
    """The whole Tollgate application for `settings`."""
    stream = log_stream or sys.stdout.buffer
    log = build_logger(settings.log, stream)
    policy = policy or load_policy(settings.config_file)
    tenancy = Tenancy(policy, settings)
    store = open_store(settings)
    upstream = Upstream(settings.upstream)
    instruments = Instruments(CollectorRegistry(), policy.teams, settings.metrics.top_users)
    observers: list[Observer] = [canonical_line(settings.log, stream)]
    if settings.metrics.enabled:
        observers.append(RequestMetrics(instruments.requests, policy.prices))
    middlewares = [lifecycle_middleware(observers, failure_answer(log))]
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_request_bytes)
    app[SETTINGS], app[INSTRUMENTS] = settings, instruments
    app[EXPOSITION] = exposition_registry(settings.metrics, instruments.registry)
    if settings.metrics.enabled:
        serve_metrics(app, settings.metrics, settings.host)
    app.cleanup_ctx.append(_resources(store, upstream))
    add_health_routes(app)
    lockout = Lockout(
        settings.auth,
        open_limiter(store, settings.quota, clock),
        clock,
        instruments.auth,
        settings.trusted_proxies,
    )
    admin, gate = _admin_app(app, settings, middlewares), AdminGate(settings.admin_token, lockout)
    keys = KeyService(store, clock)
    add_admin_routes(admin, AdminApi(keys, policy), gate)
    cache = CacheRoom(
        ResponseCache(
            open_cache_backend(
                settings.cache.max_bytes, store, Breaker.configured(settings.quota, clock)
            ),
            settings.cache,
            clock,
            instruments.cache,
        ),
        cache_ttls(settings.cache),
    )
    app[CACHE] = cache.cache
    add_cache_admin_routes(admin, cache.cache, tenancy, gate)
    moderator = Moderator(
        policy.moderation,
        upstream,
        cache.cache,
        open_strike_book(store),
        clock,
        instruments.moderation,
    )
    app[MODERATOR] = moderator
    add_strike_admin_routes(admin, moderator, gate)
    authenticator = Authenticator(policy, tenancy, store, clock)
    limiter = open_limiter(store, settings.quota, clock)
    allowances = Allowances(policy.limits, policy.prices)
    add_usage_routes(admin, UsageApi(allowances, limiter, keys, policy, clock), gate)
    quota = Quota(allowances, limiter, settings.quota, clock, instruments.quota)
    app[QUOTA_STATS] = quota.stats
    v1 = _v1_handler(settings, authenticator, lockout, tenancy, moderator, cache, upstream, quota)
    expect = expect_handler(settings.max_request_bytes)
    app.router.add_route("*", "/v1/{tail:.*}", v1, expect_handler=expect)
    return app
