"""The admin view of quotas: usage and what is left, per key, user and team; resets.

`GET /admin/usage/{keys|users|teams}/{name}` shows each limit of that subject with what is
used and remaining now and when it is whole again; `DELETE` on the same path resets its
counters (`?limit=<id>` one of them), answering with the usage after. The admin token guards
it, as it does the rest of `/admin`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.admin import AdminGate, UnknownKeyError
from proxy.allowance import Allowances
from proxy.errors import ProxyError
from proxy.keys import Clock, KeyService, UnknownKey
from proxy.limiter import Counter, Limiter, Reading
from proxy.limits import Kind
from proxy.policy import Policy
from proxy.quota_headers import duration
from proxy.store import StoreUnavailable

UNITS = {
    Kind.REQUESTS: "requests",
    Kind.IMAGES: "images",
    Kind.SPEND: "usd_micros",
    Kind.CONCURRENT: "requests_in_flight",
}


class UnknownSubject(ProxyError):
    """404 for a team the policy does not name, or a limit id the subject does not have."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(404, message, param=param, code="not_found")


class UsageUnavailable(ProxyError):
    """503: the counters cannot be read or reset right now."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "Usage cannot be read right now; please retry shortly.",
            type="server_error",
            code="quota_store_unavailable",
        )


def shown(reading: Reading) -> dict[str, object]:
    """One limit's state, as admins see it."""
    rule = reading.counter.rule
    used = rule.limit.amount - reading.remaining
    return {
        "id": rule.id,
        "limit": str(rule.limit),
        "kind": rule.limit.kind.value,
        "operations": list(rule.operations),
        "shadow": rule.shadow,
        "unit": UNITS[rule.limit.kind],
        "amount": rule.limit.amount,
        "used": used,
        "remaining": reading.remaining,
        "reset": duration(reading.reset_ms),
        "reset_ms": reading.reset_ms,
    }


class UsageApi:
    """Usage handlers over one limiter, policy and key service."""

    def __init__(
        self,
        allowances: Allowances,
        limiter: Limiter,
        keys: KeyService,
        policy: Policy,
        clock: Clock,
    ) -> None:
        self._allowances = allowances
        self._limiter = limiter
        self._keys = keys
        self._policy = policy
        self._clock = clock

    async def _key(self, key_id: str) -> tuple[Counter, ...]:
        static = next((key for key in self._policy.keys if key.id == key_id), None)
        if static is not None:
            return self._allowances.key_counters(key_id, static.user, {})
        try:
            record = await self._keys.get(key_id)
        except UnknownKey:
            raise UnknownKeyError(key_id) from None
        return self._allowances.key_counters(key_id, record.user, record.limits)

    async def _counters(self, request: web.Request) -> tuple[Counter, ...]:
        scope, name = request.match_info["scope"], request.match_info["name"]
        if scope == "keys":
            return await self._key(name)
        if scope == "users":
            return self._allowances.user_counters("", name)
        if name not in self._policy.teams:
            raise UnknownSubject(f"No team named {name!r}.", "team")
        return self._allowances.team_counters(name)

    async def _answer(self, request: web.Request, counters: Sequence[Counter]) -> web.Response:
        now_ms = math.floor(self._clock() * 1000)
        try:
            readings = await self._limiter.read(counters, now_ms) if counters else []
        except StoreUnavailable:
            raise UsageUnavailable() from None
        body = {
            "object": "usage",
            "scope": request.match_info["scope"].removesuffix("s"),
            "name": request.match_info["name"],
            "limits": [shown(reading) for reading in readings],
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def show(self, request: web.Request) -> web.Response:
        """GET: each limit's use now."""
        return await self._answer(request, await self._counters(request))

    async def reset(self, request: web.Request) -> web.Response:
        """DELETE: make the subject's limits whole again (`?limit=<id>`: only that one)."""
        counters = await self._counters(request)
        chosen = request.query.get("limit")
        picked = [c for c in counters if chosen is None or c.rule.id == chosen]
        if chosen is not None and not picked:
            raise UnknownSubject(f"No limit with id {chosen!r} here.", "limit")
        try:
            if picked:
                await self._limiter.reset(picked)
        except StoreUnavailable:
            raise UsageUnavailable() from None
        return await self._answer(request, counters)


def add_usage_routes(app: web.Application, api: UsageApi, gate: AdminGate) -> None:
    """Mount the usage API under `/admin/usage`, behind the admin token."""
    path = "/admin/usage/{scope:keys|users|teams}/{name}"
    handlers: list[tuple[str, Handler]] = [("GET", api.show), ("DELETE", api.reset)]
    for method, handler in handlers:
        app.router.add_route(method, path, gate.guarded(handler))
