"""A circuit breaker: a store that keeps failing is left alone for a while, then probed.

After `threshold` consecutive failures the breaker opens: calls fail at once, without waiting
on the store, for `cooldown` seconds. Then one call at a time probes it (half open): a success
closes the breaker, a failure opens it for another cool-down. A dead Redis so costs no
per-request wait, and recovery needs no one's help.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.keys import Clock
from proxy.settings import QuotaSettings
from proxy.store import StoreUnavailable

T = TypeVar("T")


class BreakerOpen(StoreUnavailable):
    """The store was not asked: it failed too often lately."""


class Breaker:
    """Counts consecutive failures of one store and decides whether to call it at all."""

    @classmethod
    def configured(cls, settings: QuotaSettings, clock: Clock) -> Breaker:
        """A breaker with the thresholds of TOLLGATE_QUOTA__BREAKER_FAILURES and __COOLDOWN
        (every user of the store that has one: quotas, lock-outs, the cache)."""
        return cls(settings.breaker_failures, settings.breaker_cooldown, clock)

    def __init__(self, threshold: int, cooldown: float, clock: Clock) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        """ "closed" (calls go through), "open" (they fail at once) or "half_open"."""
        if self._failures < self._threshold:
            return "closed"
        return "open" if self._clock() < self._open_until else "half_open"

    def retry_after(self) -> float:
        """Seconds until the store will be tried again (0 when it is being tried)."""
        return max(0.0, self._open_until - self._clock()) if self.state == "open" else 0.0

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation` unless the breaker is open; keep count of how the store did."""
        self._admit()
        try:
            result = await operation()
        except StoreUnavailable:
            self._failed()
            raise
        except BaseException:
            self._probing = False  # cancelled or a bug: says nothing about the store
            raise
        self._failures, self._probing = 0, False
        return result

    def _admit(self) -> None:
        state = self.state
        if state == "open" or (state == "half_open" and self._probing):
            raise BreakerOpen("store skipped: circuit breaker open")
        self._probing = state == "half_open"

    def _failed(self) -> None:
        self._failures += 1
        self._probing = False
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._cooldown
