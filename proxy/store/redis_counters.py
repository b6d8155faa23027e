"""Quota counters in Redis, shared by every replica: the scripts of proxy/lua/, one call each.

Scripts are loaded with SCRIPT LOAD and run with EVALSHA (redis-py's `register_script`), so a
charge is one round trip carrying only the keys and numbers. Each call's keys share one hash
tag (see proxy/limiter.py), so the layout works on Redis Cluster as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files

from proxy.limiter import Entry
from proxy.store.redis import RedisStore, Script


def _lua(name: str) -> str:
    return (files("proxy") / "lua" / name).read_text(encoding="utf-8")


def _pair(time: int, entry: Entry) -> list[str | int]:
    """A time on a rate's clock as the scripts take it: whole units of period, and the rest."""
    if entry.slots:
        return [0, 0]
    return list(divmod(time, entry.period_ms))


def _charge_args(entry: Entry) -> list[str | int]:
    kind = "s" if entry.slots else "r"
    shadow = "1" if entry.shadow else "0"
    return [kind, *_pair(entry.now, entry), entry.amount, entry.period_ms, entry.cost, shadow]


def _settle_args(entry: Entry) -> list[str | int]:
    kind = "s" if entry.slots else "r"
    return [kind, *_pair(entry.now, entry), entry.period_ms, entry.cost, *_pair(entry.after, entry)]


def _level(entry: Entry, a: int, b: int) -> int:
    """What a counter is owed, on its clock (rates), or its requests in flight (slots)."""
    return a if entry.slots else max(0, a * entry.period_ms + b)


class RedisCounters:
    """Counters in the Redis of a `RedisStore`, through its connection pool and timeout."""

    def __init__(self, store: RedisStore) -> None:
        self._charge: Script = store.script(_lua("charge.lua"))
        self._settle: Script = store.script(_lua("settle.lua"))
        self._reset: Script = store.script(_lua("reset.lua"))

    async def charge(
        self, entries: Sequence[Entry], now_ms: int, token: str, lease_ms: int
    ) -> tuple[bool, list[tuple[int, bool]]]:
        """One EVALSHA of charge.lua over one tag's counters."""
        args: list[str | int] = [now_ms, token, lease_ms]
        for entry in entries:
            args += _charge_args(entry)
        reply = [int(value) for value in await self._charge([e.key for e in entries], args)]
        found = [
            (_level(entry, reply[i], reply[i + 1]), reply[i + 2] == 1)
            for entry, i in zip(entries, range(1, len(reply), 3), strict=True)
        ]
        return reply[0] == 1, found

    async def settle(self, entries: Sequence[Entry], token: str) -> None:
        """One EVALSHA of settle.lua: refunds and released slots."""
        args: list[str | int] = [token]
        for entry in entries:
            args += _settle_args(entry)
        await self._settle([e.key for e in entries], args)

    async def reset(self, keys: Sequence[str]) -> None:
        """Delete the counters (keys of one tag)."""
        await self._reset(list(keys), [])
