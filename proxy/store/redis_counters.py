"""Quota counters in Redis, shared by every replica: the scripts of proxy/lua/, one call each.

Scripts are loaded with SCRIPT LOAD and run with EVALSHA (redis-py's `register_script`), so a
charge is one round trip carrying only the keys and numbers: one argument per counter, its
numbers in one string, as packing each argument costs redis-py more than Lua's parsing. Each
call's keys share one hash tag (see proxy/limiter.py), so the layout works on Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files

from proxy.limiter import Entry
from proxy.store.redis import RedisStore, Script


def _lua(name: str) -> str:
    return (files("proxy") / "lua" / name).read_text(encoding="utf-8")


def _charge_arg(entry: Entry) -> str:
    """One counter as charge.lua reads it: "kind whole rest amount period cost shadow"."""
    if entry.slots:
        return f"s 0 0 {entry.amount} 0 {entry.cost} {int(entry.shadow)}"
    whole, rest = divmod(entry.now, entry.period_ms)
    return f"r {whole} {rest} {entry.amount} {entry.period_ms} {entry.cost} {int(entry.shadow)}"


def _settle_arg(entry: Entry) -> str:
    """One counter as settle.lua reads it: "kind whole rest period cost after_whole after_rest"."""
    if entry.slots:
        return "s 0 0 1 0 0 0"
    period = entry.period_ms
    (whole, rest), (after_whole, after_rest) = (
        divmod(entry.now, period),
        divmod(entry.after, period),
    )
    return f"r {whole} {rest} {period} {entry.cost} {after_whole} {after_rest}"


def _level(entry: Entry, a: int, b: int) -> int:
    """What a counter is owed, on its clock (rates), or its requests in flight (slots)."""
    return a if entry.slots else max(0, a * entry.period_ms + b)


class RedisCounters:
    """Counters in the Redis of a `RedisStore`, through its connection pool and timeout."""

    remote = True

    def __init__(self, store: RedisStore) -> None:
        self._charge: Script = store.script(_lua("charge.lua"))
        self._settle: Script = store.script(_lua("settle.lua"))
        self._reset: Script = store.script(_lua("reset.lua"))

    async def charge(
        self, entries: Sequence[Entry], now_ms: int, token: str, lease_ms: int
    ) -> tuple[bool, list[tuple[int, bool]]]:
        """One EVALSHA of charge.lua over one tag's counters."""
        args: list[str | int] = [now_ms, token, lease_ms, *map(_charge_arg, entries)]
        reply = [int(value) for value in await self._charge([e.key for e in entries], args)]
        found = [
            (_level(entry, reply[i], reply[i + 1]), reply[i + 2] == 1)
            for entry, i in zip(entries, range(1, len(reply), 3), strict=True)
        ]
        return reply[0] == 1, found

    async def settle(self, entries: Sequence[Entry], token: str) -> None:
        """One EVALSHA of settle.lua: refunds and released slots."""
        await self._settle([e.key for e in entries], [token, *map(_settle_arg, entries)])

    async def reset(self, keys: Sequence[str]) -> None:
        """Delete the counters (keys of one tag)."""
        await self._reset(list(keys), [])
