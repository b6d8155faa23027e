"""Strikes: the flagged prompts each user sent recently, as a sliding log per user.

Times come from the app's injected clock, not the store's, so windows behave the same on both
backends and in tests. In Redis a user's strikes are one sorted set scored by time.
"""

from __future__ import annotations

import secrets
from typing import Protocol, cast

from proxy.store.redis import RedisStore

PREFIX = "tg:strikes:"


class StrikeBook(Protocol):
    """Recent strikes per user."""

    async def add(self, who: str, now: float, window: float) -> list[float]:
        """Record a strike at `now`; the times of the strikes within `window`, oldest first."""

    async def recent(self, who: str, now: float, window: float) -> list[float]:
        """The times of the strikes within `window` before `now`, oldest first."""

    async def clear(self, who: str) -> None:
        """Forget every strike of `who`."""


class MemoryStrikes:
    """Strikes in this process."""

    def __init__(self) -> None:
        self._log: dict[str, list[float]] = {}

    async def add(self, who: str, now: float, window: float) -> list[float]:
        """Append and prune."""
        self._log.setdefault(who, []).append(now)
        return await self.recent(who, now, window)

    async def recent(self, who: str, now: float, window: float) -> list[float]:
        """Prune what left the window; what remains."""
        kept = sorted(t for t in self._log.get(who, []) if t > now - window)
        if kept:
            self._log[who] = kept
        else:
            self._log.pop(who, None)
        return kept

    async def clear(self, who: str) -> None:
        """Forget."""
        self._log.pop(who, None)


class RedisStrikes:
    """Strikes in the Redis every replica shares: one sorted set per user, one key per
    MULTI (so on a cluster each user's set lives on one node, and users spread)."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._client = store.client

    async def add(self, who: str, now: float, window: float) -> list[float]:
        """ZADD, prune and read back in one transaction."""
        key = PREFIX + who

        async def run() -> list[float]:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {f"{now}:{secrets.token_hex(4)}": now})
                pipe.zremrangebyscore(key, "-inf", now - window)
                pipe.zrange(key, 0, -1, withscores=True)
                pipe.expire(key, max(1, int(window)))
                answers = await pipe.execute()
            return [float(score) for _, score in answers[2]]

        return await self._store.call(run)

    async def recent(self, who: str, now: float, window: float) -> list[float]:
        """The strike times still in the window."""
        key = PREFIX + who

        async def run() -> list[float]:
            answer = await self._client.zrangebyscore(key, now - window, "+inf", withscores=True)
            found = cast("list[tuple[bytes, float]]", answer)  # withscores=True: (member, score)
            return [float(score) for _, score in found if float(score) > now - window]

        return await self._store.call(run)

    async def clear(self, who: str) -> None:
        """DEL the user's set."""
        await self._store.call(lambda: self._client.delete(PREFIX + who))


def open_strike_book(store: object) -> StrikeBook:
    """Redis when the store is Redis (sharing its pool), else this process's memory."""
    if isinstance(store, RedisStore):
        return RedisStrikes(store)
    return MemoryStrikes()
