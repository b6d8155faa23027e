"""The Redis store: state shared by every replica, reached with a short timeout.

Key records live twice under one hash tag, `{tg-keys}`, so they share a Cluster slot and one
MULTI writes both: by id (for admins) and by hash (for the door). Looking a key up is one GET;
a revoked key is gone from the by-hash side in the same transaction that marks it revoked, so
every replica refuses it from its very next request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from proxy.keys import KeyRecord
from proxy.settings import RedisSettings
from proxy.store import StoreUnavailable

T = TypeVar("T")


async def guarded(operation: Callable[[], Awaitable[T]]) -> T:
    """Run one Redis operation; any failure is `StoreUnavailable`, never a credential."""
    try:
        return await operation()
    except (RedisError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"redis: {type(exc).__name__}") from None


BY_ID = "tg:{tg-keys}:id:"
BY_HASH = "tg:{tg-keys}:hash:"

Script = Callable[[Sequence[str], Sequence[str | int]], Awaitable[Any]]


class RedisStore:
    """One Redis server, through redis-py's asyncio client and its connection pool."""

    name = "redis"

    def __init__(self, settings: RedisSettings) -> None:
        # With maintenance notifications on (redis-py 8 turns them on for RESP3 by itself), the
        # pool stops checking a connection before handing it out, so every connection a
        # restarted Redis left in the pool failed once: a 503 each, and the breaker reopened
        # (redis/redis-py#4128). Only managed Redis offerings send these notifications.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            settings.url.get_secret_value(),
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._timeout = settings.timeout

    @property
    def client(self) -> aioredis.Redis:
        """The shared client and pool, for other rooms that keep state in this Redis."""
        return self._client

    def script(self, source: str) -> Script:
        """A Lua script, run by EVALSHA (loaded on first use and after a Redis restart).

        A run fails like any call here, and never waits longer than the timeout in all,
        redis-py's reconnect retries included.
        """
        registered = self._client.register_script(source)

        async def run(keys: Sequence[str], args: Sequence[str | int]) -> Any:
            async def bounded() -> Any:
                async with asyncio.timeout(self._timeout):
                    return await registered(keys=keys, args=args)

            return await guarded(bounded)

        return run

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless Redis answers PING in time."""
        await guarded(self._client.ping)

    async def close(self) -> None:
        """Close the pool's connections."""
        await self._client.aclose()

    async def _record(self, key: str) -> KeyRecord | None:
        raw = await guarded(lambda: self._client.get(key))
        return None if raw is None else KeyRecord.model_validate_json(raw)

    async def key_by_hash(self, digest: str) -> KeyRecord | None:
        """One GET: the usable record for `digest`."""
        return await self._record(BY_HASH + digest)

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        """Any record by id."""
        return await self._record(BY_ID + key_id)

    async def all_keys(self) -> list[KeyRecord]:
        """Every record, by scanning the by-id side."""

        async def scan() -> list[bytes | str | None]:
            names = [name async for name in self._client.scan_iter(match=BY_ID + "*")]
            return list(await self._client.mget(names)) if names else []

        return [KeyRecord.model_validate_json(raw) for raw in await guarded(scan) if raw]

    async def save_key(self, record: KeyRecord, previous_hash: str | None = None) -> None:
        """Write both sides of the record in one MULTI."""
        document = record.model_dump_json()

        async def write() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(BY_ID + record.id, document)
                if previous_hash is not None and previous_hash != record.hash:
                    pipe.delete(BY_HASH + previous_hash)
                if record.revoked_at is None:
                    pipe.set(BY_HASH + record.hash, document)
                else:
                    pipe.delete(BY_HASH + record.hash)
                await pipe.execute()

        await guarded(write)
