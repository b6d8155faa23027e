"""Where cached answers live: an LRU bounded in bytes for one process, or Redis for all replicas.

Both store opaque bytes under a key and know nothing of HTTP. Expiry is judged by the cache
room against its injected clock (the entry carries its own expiry), so both backends behave
the same in tests; Redis also gets a real TTL so abandoned entries disappear by themselves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from proxy.breaker import Breaker
from proxy.store.redis import RedisStore, guarded

PREFIX = "tg:cache:"
T = TypeVar("T")


class CacheBackend(Protocol):
    """Bytes by key, with a lock for one-fetch-per-replica coalescing."""

    async def get(self, key: str) -> bytes | None:
        """The stored bytes, or None."""

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value`; it may be dropped after `ttl` seconds, or earlier under pressure."""

    async def delete(self, keys: list[str]) -> None:
        """Drop these keys."""

    async def flush(self, prefix: str) -> int:
        """Drop every key starting with `prefix`; how many were dropped."""

    async def lock(self, key: str, ttl: float) -> bool:
        """Take a short lock shared by every replica; False when another holds it."""

    async def unlock(self, key: str) -> None:
        """Release a lock taken with `lock`."""


class MemoryCache:
    """Least recently used entries go first once the byte budget is spent."""

    def __init__(self, max_bytes: int) -> None:
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._max_bytes = max_bytes
        self._bytes = 0

    @property
    def size(self) -> int:
        """Bytes held now (keys and values)."""
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        """The entry, marked as just used."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Keep `value`, evicting the least recently used entries to stay within budget."""
        await self.delete([key])
        cost = len(key) + len(value)
        if cost > self._max_bytes:
            return
        while self._bytes + cost > self._max_bytes:
            old_key, old_value = self._entries.popitem(last=False)
            self._bytes -= len(old_key) + len(old_value)
        self._entries[key] = value
        self._bytes += cost

    async def delete(self, keys: list[str]) -> None:
        """Drop these keys, if present."""
        for key in keys:
            value = self._entries.pop(key, None)
            if value is not None:
                self._bytes -= len(key) + len(value)

    async def flush(self, prefix: str) -> int:
        """Drop every key under `prefix`."""
        doomed = [key for key in self._entries if key.startswith(prefix)]
        await self.delete(doomed)
        return len(doomed)

    async def lock(self, key: str, ttl: float) -> bool:
        """One process: the cache room's own coalescing already makes one fetch."""
        return True

    async def unlock(self, key: str) -> None:
        """Nothing was taken."""


class RedisCache:
    """Entries and locks in the Redis every replica shares; any failure is `StoreUnavailable`.

    An entry and its lock share the scope's hash tag (proxy/cache.py), so on a cluster each
    scope's entries live on one node and different scopes spread over the nodes."""

    def __init__(self, store: RedisStore, breaker: Breaker) -> None:
        self._store = store
        self._client = store.client
        self._breaker = breaker

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        """One command, unless the breaker says Redis failed too often lately: a hung Redis
        then costs the timeout a few times per cool-down, not on every cacheable read."""
        return await self._breaker.call(lambda: self._store.call(command))

    async def get(self, key: str) -> bytes | None:
        """One GET."""
        value = await self._call(lambda: self._client.get(key))
        if value is None or isinstance(value, bytes):
            return value
        return value.encode()

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """One SET with a TTL in milliseconds."""
        await self._call(lambda: self._client.set(key, value, px=max(1, int(ttl * 1000))))

    async def delete(self, keys: list[str]) -> None:
        """One DEL (keys of one scope share a hash tag, so this works on Cluster too)."""
        if keys:
            await self._call(lambda: self._client.delete(*keys))

    async def flush(self, prefix: str) -> int:
        """SCAN for the prefix (every primary of a cluster) and delete what it finds; each
        command has the timeout, the whole scan as long as it takes."""

        async def scan_and_delete() -> int:
            doomed = [key async for key in self._client.scan_iter(match=prefix + "*", count=500)]
            for start in range(0, len(doomed), 500):
                await self._client.delete(*doomed[start : start + 500])
            return len(doomed)

        return await guarded(scan_and_delete)

    async def lock(self, key: str, ttl: float) -> bool:
        """SET NX PX: true for the one replica that gets it."""
        taken = await self._call(
            lambda: self._client.set(key, b"1", nx=True, px=max(1, int(ttl * 1000)))
        )
        return bool(taken)

    async def unlock(self, key: str) -> None:
        """DEL the lock."""
        await self._call(lambda: self._client.delete(key))


def open_cache_backend(max_bytes: int, store: object, breaker: Breaker) -> CacheBackend:
    """Redis when the store is Redis (sharing its pool, behind `breaker`), else a bounded
    in-process LRU."""
    if isinstance(store, RedisStore):
        return RedisCache(store, breaker)
    return MemoryCache(max_bytes)
