"""Quota counters in this process: the Lua scripts' semantics (proxy/lua/) in Python.

Each call runs to completion without awaiting, so on one event loop it is as atomic as a
script in Redis. Python's integers are exact at any size, so a rate keeps its TAT as one
integer on its counter's clock where the script needs a pair. Counters past their time are
swept now and then, so memory stays bounded by the counters in use.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.limiter import Entry, ceil_div

SWEEP_EVERY = 1024  # charges between sweeps of counters past their time


class MemoryCounters:
    """Counters for one process (the embedded `memory` store)."""

    remote = False

    def __init__(self) -> None:
        self._rates: dict[str, tuple[int, int]] = {}  # key -> (TAT, expires at, ms)
        self._slots: dict[str, dict[str, int]] = {}  # key -> token -> lease end, ms
        self._calls = 0

    def _level(self, entry: Entry, now_ms: int) -> int:
        if entry.slots:
            leases = self._slots.setdefault(entry.key, {})
            for token in [token for token, end in leases.items() if end <= now_ms]:
                del leases[token]
            return len(leases)
        found = self._rates.get(entry.key)
        return 0 if found is None else max(0, found[0] - entry.now)

    def _take(self, entry: Entry, level: int, now_ms: int, token: str, lease_ms: int) -> None:
        if entry.slots:
            self._slots[entry.key][token] = now_ms + lease_ms
            return
        owed = level + entry.cost * entry.period_ms
        expires = now_ms + ceil_div(owed, entry.amount) + 1
        self._rates[entry.key] = (entry.now + owed, expires)

    async def charge(
        self, entries: Sequence[Entry], now_ms: int, token: str, lease_ms: int
    ) -> tuple[bool, list[tuple[int, bool]]]:
        """Check every entry; charge those that fit unless an enforced one does not."""
        found: list[tuple[int, bool]] = []
        admitted = True
        for entry in entries:
            level = self._level(entry, now_ms)
            unit = 1 if entry.slots else entry.period_ms
            fits = level + entry.cost * unit <= entry.amount * unit
            admitted = admitted and (fits or entry.shadow)
            found.append((level, fits))
        if admitted:
            for entry, (level, fits) in zip(entries, found, strict=True):
                if fits and entry.cost > 0:
                    self._take(entry, level, now_ms, token, lease_ms)
        self._sweep(now_ms)
        return admitted, found

    async def settle(self, entries: Sequence[Entry], token: str) -> None:
        """Give back what is still outstanding of each rate charge; free the token's slots."""
        for entry in entries:
            if entry.slots:
                self._slots.get(entry.key, {}).pop(token, None)
                continue
            back = min(entry.cost * entry.period_ms, max(0, entry.after - entry.now))
            found = self._rates.get(entry.key)
            if back <= 0 or found is None:
                continue
            tat, expires = found
            if tat - back <= entry.now:
                del self._rates[entry.key]
            else:
                self._rates[entry.key] = (tat - back, expires)

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget these counters."""
        for key in keys:
            self._rates.pop(key, None)
            self._slots.pop(key, None)

    def _sweep(self, now_ms: int) -> None:
        self._calls += 1
        if self._calls % SWEEP_EVERY:
            return
        self._rates = {k: v for k, v in self._rates.items() if v[1] > now_ms}
        self._slots = {
            key: live
            for key, leases in self._slots.items()
            if (live := {t: end for t, end in leases.items() if end > now_ms})
        }
