"""The limiter: one atomic check-and-charge of every limit a request meets, over the store.

Algorithm: GCRA (the generic cell rate algorithm, a token bucket kept as one number), chosen
over sliding windows because

- it keeps O(1) state per limit (one "theoretical arrival time", TAT) where a sliding log
  keeps every request, and it has no window edge where fixed windows let twice the limit
  through;
- a cost fits naturally (`n` images, micro-dollars): it moves the TAT by cost x period/amount;
- a refund is exact and safe: the TAT moves back by what is still outstanding of that
  charge, never by allowance that time had already given back;
- it means what OpenAI's own headers mean: remaining = what fits now, reset = the time until
  the bucket is full again ("60/minute" after one request: remaining 59, reset "1s").

Exact integers: a limit of `amount` per `period_ms` measures time in units of 1/amount ms,
so one unit of allowance (period/amount ms) is exactly `period_ms` of them and no division is
ever made: "7/minute" admits exactly 7 at once, and the 8th is admitted exactly 8571.43 ms
later, not a millisecond sooner. A counter's level is what it is owed, max(0, TAT - now); a
cost fits when level + cost x period <= amount x period. In Python these are plain integers;
the Lua script, whose numbers are doubles, keeps each time as a pair (whole units, remainder
below `period_ms`) that it only adds and compares, so every value it holds stays exact (the
rate bound in limits.py keeps the whole units below 2^53). Concurrency limits are sorted sets
of leases (token -> lease end): a crashed replica's slots expire with their lease.

All or nothing: one script call charges every counter of one hash tag atomically, in one
Redis round trip. The counters of a key and of its user share the user's tag; a team's
counters, shared by many users, have the team's own tag so that they can live on another
Cluster node. So a request meets at most two tags, charged one after the other in a fixed
order (the user's first, then the team's); when a later tag refuses, the earlier ones get
their charge back before the request is refused. Between the two calls another request may
see the first charge and be refused for it: a limit can refuse a little early for a moment,
never admit too much. Requests that meet one tag (the common case) take one round trip.

Slots outlive a store failure only briefly: when freeing a request's slots fails (Redis dead or
hung as the request ends), the limiter keeps them (up to `UNFREED_MAX`) and frees them before
its next charge once the breaker lets calls through. Freeing a slot is removing the request's
token, which is harmless to repeat. Refunds are not retried (repeating one would give back
twice): they stay lost, and said so. Past `UNFREED_MAX`, or if this process dies, the lease
ends them.

Time comes from the app's injected clock, not Redis's TIME, so tests move it by hand; keep
replicas' clocks in sync (NTP), as a replica that runs ahead sees a little more allowance.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol

from proxy.breaker import Breaker
from proxy.keys import Clock
from proxy.limits import Kind, Rule
from proxy.settings import QuotaSettings
from proxy.store import Store, StoreUnavailable

EPOCH_MS = 1_700_000_000_000  # rate clocks count from here, keeping them small
UNFREED_MAX = 10_000  # slots kept for freeing after a store failure; older ones wait for the lease
NEVER = -1  # retry_ms when a request costs more than the whole limit


def clock_of(now_ms: int, rule: Rule) -> int:
    """The clock of `rule`'s counter: 1/amount ms since `EPOCH_MS` for a rate, ms for slots."""
    limit = rule.limit
    if limit.kind is Kind.CONCURRENT:
        return now_ms
    return (now_ms - EPOCH_MS) * limit.amount


def ceil_div(a: int, b: int) -> int:
    """Integer division rounded up."""
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class Counter:
    """One rule counted for one subject, under a key of the store."""

    key: str
    rule: Rule
    subject: str  # "key key_123", "user alice", "team red"
    slots: bool = field(init=False)  # counts requests in flight rather than a rate
    unit: int = field(init=False)  # one unit of allowance on the counter's clock

    def __post_init__(self) -> None:
        slots = self.rule.limit.kind is Kind.CONCURRENT
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "unit", 1 if slots else self.rule.limit.period_ms)


@dataclass(slots=True)
class Entry:
    """One counter as a backend sees it in one call. Read-only by convention: a frozen
    dataclass costs an `object.__setattr__` per field, and a charge makes a few per request."""

    key: str
    slots: bool
    now: int  # the counter's clock (`clock_of`)
    amount: int
    period_ms: int
    cost: int  # in units (requests, images, micro-dollars, slots)
    shadow: bool
    after: int = 0  # settle only: the rate's TAT right after the charge


@dataclass(slots=True)
class Reading:
    """What one counter said about one request (what follows from it is worked out once)."""

    counter: Counter
    cost: int
    at: int  # the counter's clock when read
    level: int  # before this request: owed, on the counter's clock, or requests in flight
    fits: bool
    charged: bool
    owed: int = field(init=False)  # the level once this request is counted (or not)
    remaining: int = field(init=False)  # whole units that still fit
    reset_ms: int = field(init=False)  # until the limit is whole again (0 for concurrency)

    def __post_init__(self) -> None:
        counter, unit = self.counter, self.counter.unit
        amount = counter.rule.limit.amount
        self.owed = owed = self.level + self.cost * unit if self.charged else self.level
        self.remaining = max(0, amount - ceil_div(owed, unit))
        self.reset_ms = 0 if counter.slots else ceil_div(owed, amount)

    @property
    def retry_ms(self) -> int:
        """Milliseconds until this request would fit (`NEVER` if it never can)."""
        limit = self.counter.rule.limit
        if self.cost > limit.amount:
            return NEVER
        if self.counter.slots:
            return 1000
        excess = self.level + (self.cost - limit.amount) * self.counter.unit
        return ceil_div(max(0, excess), limit.amount)


@dataclass(slots=True)
class Admission:
    """The outcome of charging one request: admitted or not, and every counter's reading."""

    admitted: bool
    readings: list[Reading]
    token: str
    groups: list[list[Reading]] = field(default_factory=list)  # charged, tag by tag
    undo_lost: bool = False  # a refusal whose earlier tags could not be given back

    @property
    def refusals(self) -> list[Reading]:
        """Enforced counters the request did not fit."""
        return [r for r in self.readings if not r.fits and not r.counter.rule.shadow]

    @property
    def shadow_refusals(self) -> list[Reading]:
        """Shadow counters the request did not fit: counted and logged, not refused."""
        return [r for r in self.readings if not r.fits and r.counter.rule.shadow]


Charge = Sequence[tuple[Counter, int]]  # one tag's counters and what the request costs each


class CounterStore(Protocol):
    """Where counters live: the same semantics in memory and in Redis (one script each)."""

    remote: bool  # calls go over the network (and so can be cut off half way)

    async def charge(
        self, entries: Sequence[Entry], now_ms: int, token: str, lease_ms: int
    ) -> tuple[bool, list[tuple[int, bool]]]:
        """Check every entry; charge all that fit unless an enforced one does not fit.

        Returns whether it charged, and each entry's level before the call (what it is
        owed, max(0, TAT - now), or the requests in flight) and whether the entry fits.
        """

    async def settle(self, entries: Sequence[Entry], token: str) -> None:
        """Give back rate charges still outstanding (`cost`, `after`); free the token's slots."""

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget these counters (keys of one tag)."""


def _entry(counter: Counter, cost: int, now_ms: int, after: int = 0) -> Entry:
    limit = counter.rule.limit
    now = clock_of(now_ms, counter.rule)
    return Entry(
        counter.key,
        counter.slots,
        now,
        limit.amount,
        limit.period_ms,
        cost,
        counter.rule.shadow,
        after,
    )


def _settle_entry(reading: Reading, now_ms: int) -> Entry:
    return _entry(reading.counter, reading.cost, now_ms, after=reading.at + reading.owed)


class Limiter:
    """Charges requests tag by tag, all or nothing, behind a circuit breaker."""

    def __init__(self, store: CounterStore, breaker: Breaker, lease_ms: int) -> None:
        self._store = store
        self._breaker = breaker
        self._lease_ms = lease_ms
        # (one tag's slot readings, the request's token) the store failed to free
        self._unfreed: deque[tuple[list[Reading], str]] = deque(maxlen=UNFREED_MAX)

    @property
    def remote(self) -> bool:
        """Whether a charge waits on the network: an in-process one never suspends."""
        return self._store.remote

    @property
    def breaker(self) -> Breaker:
        """The breaker guarding the store (the quota room reports its state)."""
        return self._breaker

    async def _charge_tag(self, charge: Charge, now_ms: int, token: str) -> list[Reading]:
        entries = [_entry(counter, cost, now_ms) for counter, cost in charge]
        admitted, found = await self._breaker.call(
            lambda: self._store.charge(entries, now_ms, token, self._lease_ms)
        )
        return [
            Reading(counter, cost, entry.now, level, fits, admitted and fits and cost > 0)
            for (counter, cost), entry, (level, fits) in zip(charge, entries, found, strict=True)
        ]

    async def charge(self, charges: Sequence[Charge], now_ms: int) -> Admission:
        """Charge every tag in order; if one refuses, give the earlier ones back and refuse.

        Raises `StoreUnavailable` (after giving back what it could) when the store fails.
        """
        await self._free_unfreed(now_ms)
        admission = Admission(True, [], secrets.token_hex(12))
        for charge in charges:
            try:
                readings = await self._charge_tag(charge, now_ms, admission.token)
            except BaseException:
                await self._undo(admission, now_ms)
                raise
            admission.readings.extend(readings)
            if any(not r.fits and not r.counter.rule.shadow for r in readings):
                await self._undo(admission, now_ms)
                admission.admitted = False
                return admission
            admission.groups.append(readings)
        return admission

    async def _undo(self, admission: Admission, now_ms: int) -> None:
        """Give back the tags charged so far. A store failure here loses the refund (the
        limit refuses early for a while, never admits too much): it is noted, not raised."""
        charged = admission.groups
        admission.groups = []
        admission.readings = [replace(r, charged=False) for r in admission.readings]
        for readings in charged:
            try:
                await self.settle_tag(readings, admission.token, now_ms, refund=True)
            except StoreUnavailable:
                admission.undo_lost = True

    async def settle_tag(
        self, readings: Sequence[Reading], token: str, now_ms: int, *, refund: bool
    ) -> bool:
        """Free one tag's slots, and give its charges back when `refund`.

        Returns False, without a call to the store, when there was nothing to do.
        """
        entries = [
            _settle_entry(r, now_ms) for r in readings if r.charged and (refund or r.counter.slots)
        ]
        if not entries:
            return False
        try:
            await self._breaker.call(lambda: self._store.settle(entries, token))
        except StoreUnavailable:
            slots = [r for r in readings if r.charged and r.counter.slots]
            if slots:
                self._unfreed.append((slots, token))
            raise
        return True

    async def _free_unfreed(self, now_ms: int) -> None:
        """Free the slots earlier settles could not, oldest first, while the store takes them.

        Not while the breaker is open: that would cost nothing, but free nothing either."""
        while self._unfreed and self._breaker.state != "open":
            slots, token = self._unfreed.popleft()
            entries = [_settle_entry(r, now_ms) for r in slots]
            try:
                await self._breaker.call(partial(self._store.settle, entries, token))
            except StoreUnavailable:
                self._unfreed.appendleft((slots, token))  # tried again before a later charge
                return
            except BaseException:  # cancelled half way: freeing it again is harmless
                self._unfreed.appendleft((slots, token))
                raise

    async def read(self, counters: Sequence[Counter], now_ms: int) -> list[Reading]:
        """Each counter's state now, charging nothing (counters of one tag)."""
        return await self._charge_tag([(c, 0) for c in counters], now_ms, "read")

    async def reset(self, counters: Sequence[Counter]) -> None:
        """Forget these counters (of one tag): their limits are whole again."""
        keys = [counter.key for counter in counters]
        await self._breaker.call(lambda: self._store.reset(keys))


def open_limiter(store: Store, settings: QuotaSettings, clock: Clock) -> Limiter:
    """A limiter over the same backend as `store`: Redis shares counters between replicas."""
    counters: CounterStore
    if store.name == "redis":
        from proxy.store.redis import RedisStore
        from proxy.store.redis_counters import RedisCounters

        assert isinstance(store, RedisStore)
        counters = RedisCounters(store)
    else:
        from proxy.store.memory_counters import MemoryCounters

        counters = MemoryCounters()
    return Limiter(counters, Breaker.configured(settings, clock), int(settings.lease * 1000))
