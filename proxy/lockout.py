"""Failed authentications per client address: past a limit, the address is refused for a while.

Each failure (a missing or wrong client key, a wrong admin token) is charged to its address's
counter, a GCRA rate of `max_failures` per `failure_window` in the quota limiter
(proxy/limiter.py), so on Redis every replica counts into the same counter. The failure that
does not fit is answered 429 instead of 401, and the address is remembered as locked out until
the counter allows another failure: from then on this replica refuses every request from it
before looking at its key, so a key guessed right looks exactly like one guessed wrong.

Successful requests pay one dict check (free while no address is locked out) and no store
call. Another replica learns of a lock-out at its own first failure from that address; until
then it still answers that address's valid keys. When the store cannot count, the failure is
answered 401 uncounted: the limit slows guessing down, it never stops valid keys working.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from urllib.parse import quote

from aiohttp import web

from proxy.address import Network, client_address
from proxy.context import FACTS
from proxy.errors import ProxyError
from proxy.instruments import AuthMetrics
from proxy.keys import Clock
from proxy.limiter import Counter, Limiter
from proxy.limits import Kind, Limit, Rule
from proxy.settings import AuthSettings
from proxy.store import StoreUnavailable

PRUNE_AT = 4096  # locked-out addresses remembered before expired ones are swept


class LockedOut(ProxyError):
    """429: too many failed authentications from this address; says when to come back."""

    def __init__(self, wait_ms: int) -> None:
        seconds = max(1, math.ceil(wait_ms / 1000))
        super().__init__(
            429,
            "Too many failed authentication attempts from your address. "
            f"Please try again in {seconds}s.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(seconds), "retry-after-ms": str(max(wait_ms, 1))},
        )


class Lockout:
    """Counts failures per address and refuses addresses that had too many."""

    def __init__(
        self,
        settings: AuthSettings,
        limiter: Limiter,
        clock: Clock,
        metrics: AuthMetrics,
        trusted: Sequence[Network] = (),
    ) -> None:
        self._enabled = settings.max_failures > 0
        period_ms = max(1, round(settings.failure_window * 1000))
        amount = max(1, settings.max_failures)
        self._rule = Rule(Limit(Kind.REQUESTS, amount, period_ms))
        self._limiter = limiter
        self._clock = clock
        self._metrics = metrics
        self._trusted = tuple(trusted)
        self._until: dict[str, int] = {}  # address -> locked out until, ms on the clock

    def _now_ms(self) -> int:
        return math.floor(self._clock() * 1000)

    def check(self, request: web.Request) -> None:
        """Refuse the request if its address is locked out (free while none is)."""
        if not self._until:
            return
        address = client_address(request, self._trusted)
        until = self._until.get(address)
        if until is None:
            return
        now = self._now_ms()
        if now >= until:
            del self._until[address]
            return
        self._refuse(request, address, until - now)

    async def failed(self, request: web.Request) -> None:
        """Count one failed authentication; raise `LockedOut` if it was one too many."""
        self._metrics.failed()
        if not self._enabled:
            return
        address = client_address(request, self._trusted)
        request[FACTS].auth = "failed"
        request[FACTS].client = address
        now = self._now_ms()
        try:
            admission = await self._limiter.charge([[(self._counter(address), 1)]], now)
        except StoreUnavailable:
            self._metrics.store_error()
            return
        if admission.admitted:
            return
        wait = max(1, admission.refusals[0].retry_ms)
        self._lock(address, now + wait, now)
        self._refuse(request, address, wait)

    def _counter(self, address: str) -> Counter:
        tag = quote(address, safe="")
        return Counter(f"tg:auth:{{a:{tag}}}:failures", self._rule, f"address {address}")

    def _lock(self, address: str, until: int, now: int) -> None:
        if len(self._until) >= PRUNE_AT:
            self._until = {a: end for a, end in self._until.items() if end > now}
        self._until[address] = until

    def _refuse(self, request: web.Request, address: str, wait_ms: int) -> None:
        facts = request[FACTS]
        facts.auth, facts.client = "locked_out", address
        self._metrics.locked_out()
        raise LockedOut(wait_ms)
