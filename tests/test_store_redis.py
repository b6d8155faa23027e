"""The Redis store survives its Redis: what a restart leaves behind is never used."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from proxy.settings import RedisSettings
from proxy.store.redis import RedisStore
from tests.test_quota_failure import OwnRedis, own_redis  # noqa: F401 (the fixture)

COUNT = "return redis.call('INCR', KEYS[1])"


async def test_connections_pooled_before_a_restart_are_replaced_not_used(
    own_redis: OwnRedis,  # noqa: F811
) -> None:
    """After Redis is killed and started again, no call fails on a connection the dead server
    left in the pool (each such failure was a 503, and five in a row reopened the breaker)."""
    store = RedisStore(RedisSettings(url=SecretStr(own_redis.url), timeout=1.0))
    count = store.script(COUNT)
    try:
        assert sorted(await asyncio.gather(*(count(["n"], []) for _ in range(8)))) == list(
            range(1, 9)
        )  # eight calls at once: eight pooled connections
        own_redis.kill()
        await asyncio.sleep(0)  # the loop sees the connections close, as a busy server would
        own_redis.start()
        after = await asyncio.gather(*(count(["n"], []) for _ in range(8)), return_exceptions=True)
    finally:
        await store.close()
    assert [type(result).__name__ for result in after if isinstance(result, BaseException)] == []
    counts = sorted(int(result) for result in after if not isinstance(result, BaseException))
    assert counts == list(range(1, 9))  # a fresh Redis (no persistence) counts from 1 again
