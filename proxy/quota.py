"""The quota room: a request is charged against every limit it meets before it is sent.

One charge, all or nothing (proxy/limiter.py), before anything goes upstream, so concurrent
requests cannot overshoot a limit. Over a limit: 429 in OpenAI's shape (`rate_limit_exceeded`,
or `insufficient_quota` for a spend budget) with `Retry-After`; every answer of a limited
request carries `x-ratelimit-*` headers (proxy/quota_headers.py).

Afterwards the charge is settled: concurrency slots are always freed, and a request that got
no billable answer gets its charge back: no answer from upstream (502, 504, a refusal by a
later room, a client gone before upstream answered), upstream 5xx or 429, or a later room's
`not_billable(request, reason)` (a moderation refusal, say).

When the store fails (or the circuit breaker keeps it from being asked), the configured
failure mode decides: `fail_open` admits and counts the bypass, `fail_closed` answers 503.
Either way the log line says so. Shadow limits are counted and logged, never enforced.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.allowance import Allowances, Groups
from proxy.breaker import BreakerOpen
from proxy.context import FACTS, Facts
from proxy.instruments import QuotaMetrics
from proxy.keys import Clock
from proxy.limiter import Admission, Charge, Limiter
from proxy.limits import Kind
from proxy.quota_errors import OverLimit, QuotaUnavailable, worst_refusal
from proxy.quota_headers import rate_limit_headers
from proxy.settings import QuotaSettings
from proxy.store import StoreUnavailable


@dataclass(slots=True)
class QuotaStats:
    """Running counts for the metrics room to export."""

    admitted: int = 0
    refused: int = 0
    bypassed: int = 0  # fail_open: let through unchecked
    unavailable: int = 0  # fail_closed: refused with 503
    shadow_refusals: int = 0
    refunds: int = 0
    refunds_lost: int = 0


@dataclass(slots=True)
class Billing:
    """Whether a request's answer is billable; later rooms may say it is not."""

    waived: str | None = None


QUOTA_STATS = web.AppKey("quota_stats", QuotaStats)


def not_billable(request: web.Request, reason: str) -> None:
    """For rooms after quota: this request got no billable answer; give its charge back."""
    facts = request.get(FACTS)
    billing = facts.billing if facts is not None else None
    if billing is not None and billing.waived is None:
        billing.waived = reason


def _cost(charges: Sequence[Charge]) -> dict[str, int]:
    cost: dict[str, int] = {}
    for counter, units in (pair for tag in charges for pair in tag):
        kind = counter.rule.limit.kind
        cost["spend_micros" if kind is Kind.SPEND else kind.value] = units
    return cost


def _refund_reason(facts: Facts, billing: Billing, cancelled: bool) -> str | None:
    """Why the request is not billable, or None when it is."""
    if billing.waived is not None:
        return billing.waived
    if facts.cache == "hit":
        return None  # answered from the cache: the client got what it asked for
    status = facts.upstream_status
    if status is None:
        return "client_gone" if cancelled else "no_upstream_answer"
    if status >= 500 or status == 429:
        return f"upstream_{status}"
    return None


class Quota:
    """The quota stage, with its limiter, failure mode and counts."""

    def __init__(
        self,
        allowances: Allowances,
        limiter: Limiter,
        settings: QuotaSettings,
        clock: Clock,
        metrics: QuotaMetrics,
    ) -> None:
        self._metrics = metrics
        self._allowances = allowances
        self._limiter = limiter
        self._fail_open = settings.failure_mode == "fail_open"
        self._clock = clock
        self._settling: set[asyncio.Task[None]] = set()
        self.stats = QuotaStats()

    def _now_ms(self) -> int:
        return math.floor(self._clock() * 1000)

    def stage(self, request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        """Limit the request; one that meets no limit goes on as it is, with no coroutine of
        the stage's own (its estimated spend is counted by the metrics room)."""
        facts = request[FACTS]
        groups = self._allowances.groups(facts.principal, facts.call.operation)
        if not groups:
            return handler(request)
        return self._limited(request, handler, facts, groups)

    async def _limited(
        self, request: web.Request, handler: Handler, facts: Facts, groups: Groups
    ) -> web.StreamResponse:
        """Charge, refuse or admit; after the answer, settle (refund, free slots)."""
        charges = self._allowances.costs(groups, facts.call, facts.fields)
        if not charges:
            return await handler(request)
        facts.quota_cost = _cost(charges)
        admission = await self._admit(charges, facts)
        if admission is None:
            return await handler(request)
        facts.rate_headers = rate_limit_headers(admission.readings)
        billing = facts.billing = Billing()
        cancelled = False
        try:
            return await handler(request)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            await self._settle(admission, facts, billing, cancelled=cancelled)

    async def _admit(self, charges: Sequence[Charge], facts: Facts) -> Admission | None:
        """The admission, a 429 or 503, or None when the store is bypassed (fail_open)."""
        try:
            admission = await self._charge(charges, facts)
        except StoreUnavailable as exc:
            self._store_failed(exc, facts)
            return None
        shadow = admission.shadow_refusals
        if shadow:
            self.stats.shadow_refusals += 1
            facts.quota_shadow = [f"{r.counter.subject}: {r.counter.rule}" for r in shadow]
        if admission.undo_lost:
            self.stats.refunds_lost += 1
            facts.quota_refund = "refused_by_a_later_tag (lost)"
        if not admission.admitted:
            self.stats.refused += 1
            worst = worst_refusal(admission.refusals)
            self._metrics.refused(worst.counter.rule.limit.kind.value)
            facts.quota = "refused"
            facts.quota_reason = f"{worst.counter.subject}: {worst.counter.rule}"
            raise OverLimit(admission)
        self.stats.admitted += 1
        facts.quota = "admitted"
        return admission

    async def _charge(self, charges: Sequence[Charge], facts: Facts) -> Admission:
        """The limiter's charge, run to its end even if the client leaves meanwhile, and then
        given back: a charge cut off half way would keep its slots until their lease ends.
        An in-process charge never suspends, so it needs no such care."""
        if not self._limiter.remote:
            return await self._limiter.charge(charges, self._now_ms())
        charging = asyncio.ensure_future(self._limiter.charge(charges, self._now_ms()))
        try:
            return await asyncio.shield(charging)
        except asyncio.CancelledError:
            self._keep(self._give_back(charging, facts))
            raise

    async def _give_back(self, charging: asyncio.Future[Admission], facts: Facts) -> None:
        try:
            admission = await charging
        except StoreUnavailable:
            return
        if admission.admitted:
            await self._settle_now(admission, facts, "client_gone")

    def _store_failed(self, exc: StoreUnavailable, facts: Facts) -> None:
        facts.quota_reason = "breaker_open" if isinstance(exc, BreakerOpen) else str(exc)
        self._metrics.store_error()
        if self._fail_open:
            self._metrics.bypassed()
            self.stats.bypassed += 1
            facts.quota = "bypassed"
            return
        self.stats.unavailable += 1
        facts.quota = "unavailable"
        raise QuotaUnavailable(self._limiter.breaker.retry_after())

    async def _settle(
        self, admission: Admission, facts: Facts, billing: Billing, *, cancelled: bool
    ) -> None:
        """Free the slots, and refund an answer that was not billable, in a task of its own
        that a cancelled request cannot stop half way. Nothing to do costs nothing."""
        reason = _refund_reason(facts, billing, cancelled)
        charged = (reading for readings in admission.groups for reading in readings)
        if reason is None and not any(r.charged and r.counter.slots for r in charged):
            return
        if not self._limiter.remote:  # never suspends: nothing can cut it off
            await self._settle_now(admission, facts, reason)
            return
        await asyncio.shield(self._keep(self._settle_now(admission, facts, reason)))

    def _keep(self, settling: Coroutine[None, None, None]) -> asyncio.Task[None]:
        """Run `settling` as a task, and hold on to it until it is done."""
        task = asyncio.ensure_future(settling)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        return task

    async def _settle_now(self, admission: Admission, facts: Facts, reason: str | None) -> None:
        """Settle every charged tag. Never raises: a failure is a lost refund, logged."""
        now = self._now_ms()
        try:
            for readings in admission.groups:
                await self._limiter.settle_tag(
                    readings, admission.token, now, refund=reason is not None
                )
        except StoreUnavailable:
            if reason is not None:
                self.stats.refunds_lost += 1
                facts.quota_refund = f"{reason} (lost)"
            return
        if reason is not None:
            self.stats.refunds += 1
            facts.quota_refund = reason
