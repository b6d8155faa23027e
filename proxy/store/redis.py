"""The Redis store: state shared by every replica, reached with a short timeout."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.settings import RedisSettings
from proxy.store import StoreUnavailable


class RedisStore:
    """One Redis server, through redis-py's asyncio client and its connection pool."""

    name = "redis"

    def __init__(self, settings: RedisSettings) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            settings.url.get_secret_value(),
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
        )

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless Redis answers PING in time."""
        try:
            await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from None

    async def close(self) -> None:
        """Close the pool's connections."""
        await self._client.aclose()
