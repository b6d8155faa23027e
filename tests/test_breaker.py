"""The circuit breaker: open after N failures, fail fast while cooling down, probe, recover."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from proxy.breaker import Breaker, BreakerOpen
from proxy.limiter import Counter, open_limiter
from proxy.limits import parse_rule
from proxy.settings import QuotaSettings, RedisSettings, Settings
from proxy.store import StoreUnavailable, open_store
from tests.conftest import FakeClock, free_port


class Store:
    """A stand-in for any store: answers or fails as the test says, and counts the calls."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    async def call(self) -> str:
        self.calls += 1
        if not self.up:
            raise StoreUnavailable("down")
        return "ok"


async def test_it_opens_after_consecutive_failures_and_then_skips_the_store() -> None:
    """Three failures open it; then calls fail at once without reaching the store."""
    clock, store = FakeClock(), Store()
    breaker = Breaker(3, 5.0, clock)
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await breaker.call(store.call)
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen):
        await breaker.call(store.call)
    assert store.calls == 3
    assert breaker.retry_after() == 5.0


async def test_a_success_resets_the_count() -> None:
    """Only consecutive failures count."""
    clock, store = FakeClock(), Store()
    breaker = Breaker(2, 5.0, clock)
    with pytest.raises(StoreUnavailable):
        await breaker.call(store.call)
    store.up = True
    assert await breaker.call(store.call) == "ok"
    store.up = False
    with pytest.raises(StoreUnavailable):
        await breaker.call(store.call)
    assert breaker.state == "closed"


async def test_after_the_cooldown_one_probe_decides() -> None:
    """A failed probe opens it again; a good probe closes it."""
    clock, store = FakeClock(), Store()
    breaker = Breaker(1, 5.0, clock)
    with pytest.raises(StoreUnavailable):
        await breaker.call(store.call)
    clock.advance(5)
    assert breaker.state == "half_open"
    with pytest.raises(StoreUnavailable):
        await breaker.call(store.call)
    assert breaker.state == "open"
    clock.advance(5)
    store.up = True
    assert await breaker.call(store.call) == "ok"
    assert breaker.state == "closed"


async def test_only_one_probe_at_a_time() -> None:
    """While a probe is out, other calls still fail fast; a cancelled probe frees the way."""
    clock = FakeClock()
    breaker = Breaker(1, 1.0, clock)
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "ok"

    async def down() -> str:
        raise StoreUnavailable("down")

    with pytest.raises(StoreUnavailable):
        await breaker.call(down)
    clock.advance(1)
    probe = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0)
    with pytest.raises(BreakerOpen):
        await breaker.call(slow)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    release.set()
    assert await breaker.call(slow) == "ok"


async def test_a_limiter_on_a_dead_redis_fails_fast_then_stops_asking() -> None:
    """Nothing listens on the port: StoreUnavailable, then BreakerOpen without a connection."""
    clock = FakeClock()
    url = SecretStr(f"redis://127.0.0.1:{free_port()}/0")
    store = open_store(Settings(store="redis", redis=RedisSettings(url=url)))
    limiter = open_limiter(store, QuotaSettings(breaker_failures=2), clock)
    rule = parse_rule("1/minute")
    pairs = [[(Counter("tg:q:{u:x}:u:" + rule.id, rule, "user x"), 1)]]
    for _ in range(2):
        with pytest.raises(StoreUnavailable) as failed:
            await limiter.charge(pairs, 0)
        assert not isinstance(failed.value, BreakerOpen)
    with pytest.raises(BreakerOpen):
        await limiter.charge(pairs, 0)
    await store.close()
