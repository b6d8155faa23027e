"""The Redis store: state shared by every replica, reached with a short timeout.

One Redis server, or a Redis Cluster (`TOLLGATE_REDIS__CLUSTER`): every key Tollgate writes
carries a `{hash tag}`, and every MULTI or script touches the keys of one tag only, so each
runs on the one node that serves the tag's slot (redis-py routes it there).

Key records live twice under one hash tag, `{tg-keys}`, so they share a Cluster slot and one
MULTI writes both: by id (for admins) and by hash (for the door). Looking a key up is one GET;
a revoked key is gone from the by-hash side in the same transaction that marks it revoked, so
every replica refuses it from its very next request.

On one server, a pooled connection found dead (Redis restarted since it was last used) is
replaced and the call made again at once, once: without that, each stale connection fails one
request after Redis is back, enough to refuse keys and reopen the quotas' circuit breaker.
Timeouts are not retried, so a hung Redis still costs one timeout a call.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from proxy.keys import KeyRecord
from proxy.settings import RedisSettings
from proxy.store import StoreUnavailable

T = TypeVar("T")

# One server or a cluster: the commands Tollgate uses behave the same on both.
RedisClient = aioredis.Redis | RedisCluster


async def guarded(operation: Callable[[], Awaitable[T]]) -> T:
    """Run one Redis operation; any failure is `StoreUnavailable`, never a credential.

    On a cluster that includes what is not a `RedisError`: no node reachable, a slot no node
    serves (`RedisClusterException`), and whatever redis-py itself raises from inside when a
    topology refresh closes connections under commands still in flight (its async cluster
    client does that after a cluster error, an `AttributeError` on a vanished socket)."""
    try:
        return await operation()
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"redis: {type(exc).__name__}") from None
    except Exception as exc:
        if not _raised_in_redis_py(exc):
            raise
        raise StoreUnavailable(f"redis: {type(exc).__name__}") from None


def _raised_in_redis_py(exc: BaseException) -> bool:
    """Whether the innermost frame of `exc` is redis-py's own code, not ours."""
    trace = exc.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    module = "" if trace is None else str(trace.tb_frame.f_globals.get("__name__", ""))
    return module == "redis" or module.startswith("redis.")


def connect(settings: RedisSettings) -> RedisClient:
    """A client for the server or cluster `settings` name (it connects on first use)."""
    url, timeout = settings.url.get_secret_value(), settings.timeout
    if settings.cluster:
        # reinitialize_steps=0: a MOVED updates the slot it names and nothing else. redis-py's
        # default rebuilds the whole map every 5th MOVED, closing every node's connections,
        # those of commands in flight included: under load, a resharding or failover would
        # fail requests that had nothing to do with the slots that moved.
        return RedisCluster.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, reinitialize_steps=0
        )
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


BY_ID = "tg:{tg-keys}:id:"
BY_HASH = "tg:{tg-keys}:hash:"

Script = Callable[[Sequence[str], Sequence[str | int]], Awaitable[Any]]


class RedisStore:
    """One Redis server or cluster, through redis-py's asyncio client and its pools."""

    name = "redis"

    def __init__(self, settings: RedisSettings) -> None:
        self._client = connect(settings)
        self._cluster = self._client if isinstance(self._client, RedisCluster) else None
        self._timeout = settings.timeout

    @property
    def client(self) -> RedisClient:
        """The shared client and pool, for other rooms that keep state in this Redis."""
        return self._client

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one short operation (a command, a MULTI): `StoreUnavailable` on any failure,
        and never a wait longer than the timeout in all, retries and redirections
        (a cluster's MOVED, reconnects) included."""

        async def bounded() -> T:
            async with asyncio.timeout(self._timeout):
                if self._cluster is not None:
                    await self._known()
                return await operation()

        return await guarded(bounded)

    async def _known(self) -> None:
        """Learn the cluster's slots before a command needs them (a no-op once known). Left
        to redis-py, the first commands of a cold client race the discovery, go to the
        wrong node and come back MOVED, all at once."""
        assert self._cluster is not None
        await self._cluster.initialize()

    def script(self, source: str) -> Script:
        """A Lua script, run by EVALSHA: one round trip carrying its keys and arguments.

        A node that does not know it yet (first use, a restart, a new master) answers
        NOSCRIPT, and the same call is made once more as EVAL, which runs the script and
        leaves it cached there. Both go to the node of the keys' slot only; redis-py's own
        `register_script` loads a script on every primary of a cluster instead, so that one
        master down would fail scripts on all the others. A run fails like any call here,
        and never waits longer than the timeout in all.
        """
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()  # its name in Redis
        client = self._client

        async def once(keys: Sequence[str], args: Sequence[str | int]) -> Any:
            try:
                return await client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                return await client.eval(source, len(keys), *keys, *args)

        async def run(keys: Sequence[str], args: Sequence[str | int]) -> Any:
            return await self.call(lambda: once(keys, args))

        return run

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless Redis answers PING in time (on a cluster, every
        primary: a node down is a share of users who cannot be served)."""
        client = self._client
        if isinstance(client, RedisCluster):
            await self.call(lambda: client.ping(target_nodes=RedisCluster.PRIMARIES))
        else:
            await self.call(client.ping)

    async def close(self) -> None:
        """Close the pool's connections."""
        await self._client.aclose()

    async def _record(self, key: str) -> KeyRecord | None:
        raw = await self.call(lambda: self._client.get(key))
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

        await self.call(write)
