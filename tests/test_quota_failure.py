"""Redis dies mid-test: each failure mode does what it says, visibly, and quotas come back."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from proxy.quota import QUOTA_STATS, QuotaStats
from proxy.settings import QuotaSettings, RedisSettings
from tests.conftest import FakeClock, MakeProxy, Proxy, free_port
from tests.test_quota import DAVE_KEY, last_line, limited, send

COOLDOWN = 5.0


class OwnRedis:
    """A redis-server of this test's own, on its own port, to kill and start again."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.extra = extra  # more redis-server options (persistence, say)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.workdir), *self.extra]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        for _ in range(200):
            try:
                client.ping()
                client.close()
                return
            except redis.RedisError:
                time.sleep(0.05)  # waiting for a process to start, not for a clock
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def pause(self, paused: bool) -> None:
        """Stop the process (it hangs, answering nothing) or let it go on."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()


async def proxy_on(
    make_proxy: MakeProxy, server: OwnRedis, clock: FakeClock, mode: str, origin: str | None = None
) -> Proxy:
    """Tollgate on `server`: alice limited to 3/minute, dave (same team) unlimited."""
    return await make_proxy(
        origin,
        clock=clock,
        policy=limited({"users": {"alice": ["3/minute"]}}),
        store="redis",
        redis=RedisSettings(url=SecretStr(server.url), timeout=0.5),
        quota=QuotaSettings(failure_mode=mode, breaker_failures=2, breaker_cooldown=COOLDOWN),
    )


def stats(proxy: Proxy) -> QuotaStats:
    return proxy.server.app[QUOTA_STATS]


def quota_facts(proxy: Proxy) -> tuple[Any, ...]:
    line = last_line(proxy)
    return line["status"], line["quota"], line["quota_reason"]


async def test_fail_open_admits_counts_and_logs_every_bypass_then_recovers(
    make_proxy: MakeProxy, own_redis: OwnRedis
) -> None:
    """Redis gone: admitted past the limit, each bypass counted and logged; then enforced again."""
    clock = FakeClock()
    proxy = await proxy_on(make_proxy, own_redis, clock, "fail_open")
    assert (await send(proxy))[0] == 200
    own_redis.kill()
    for _ in range(2):
        assert (await send(proxy))[0] == 200
        status, quota, reason = quota_facts(proxy)
        assert (status, quota) == (200, "bypassed")
        assert reason.startswith("redis: ")
    for _ in range(3):  # past the limit: nothing is counting, and nothing waits on Redis
        status, headers, _ = await send(proxy)
        assert (status, "x-ratelimit-limit-requests" in headers) == (200, False)
        assert quota_facts(proxy) == (200, "bypassed", "breaker_open")
    assert stats(proxy).bypassed == 5
    own_redis.start()
    assert quota_facts(proxy)[1:] == ("bypassed", "breaker_open")  # cool-down still running
    clock.advance(COOLDOWN)
    answers = [await send(proxy) for _ in range(4)]  # the restarted Redis starts from zero
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    assert answers[0][1]["x-ratelimit-remaining-requests"] == "2"
    assert quota_facts(proxy) == (429, "refused", "user alice: 3/minute")


async def test_a_hung_redis_costs_one_timeout_per_failure_until_the_breaker_opens(
    make_proxy: MakeProxy, own_redis: OwnRedis
) -> None:
    """A Redis that accepts and never answers: each call gives up at the store timeout (redis-py's
    retries included), then the breaker stops asking; a probe after the cool-down recovers."""
    clock = FakeClock()
    proxy = await proxy_on(make_proxy, own_redis, clock, "fail_open")
    assert (await send(proxy))[0] == 200
    own_redis.pause(True)
    try:
        reasons = []
        for _ in range(3):
            assert (await send(proxy))[0] == 200
            reasons.append(quota_facts(proxy)[2])
    finally:
        own_redis.pause(False)
    assert reasons == ["redis: TimeoutError", "redis: TimeoutError", "breaker_open"]
    clock.advance(COOLDOWN)
    assert (await send(proxy))[0] == 200
    assert quota_facts(proxy) == (200, "admitted", None)


async def test_fail_closed_answers_503_and_recovers(
    make_proxy: MakeProxy, own_redis: OwnRedis
) -> None:
    """Redis gone: limited requests get OpenAI-shaped 503s; unlimited ones are unaffected."""
    clock = FakeClock()
    proxy = await proxy_on(make_proxy, own_redis, clock, "fail_closed")
    assert (await send(proxy))[0] == 200
    own_redis.kill()
    for expected in ("redis: ", "redis: ", "breaker_open"):
        status, headers, body = await send(proxy)
        assert (status, body["error"]["code"]) == (503, "quota_store_unavailable")
        assert body["error"]["type"] == "server_error"
        assert quota_facts(proxy)[1] == "unavailable"
        assert quota_facts(proxy)[2].startswith(expected)
    assert headers["Retry-After"] == str(int(COOLDOWN))
    assert (await send(proxy, key=DAVE_KEY))[0] == 200  # dave has no limits: no Redis needed
    assert stats(proxy).unavailable == 3
    own_redis.start()
    clock.advance(COOLDOWN)
    assert (await send(proxy))[0] == 200
    assert quota_facts(proxy) == (200, "admitted", None)


async def test_a_client_gone_while_its_charge_is_in_flight_gets_it_back(
    make_proxy: MakeProxy, own_redis: OwnRedis
) -> None:
    """The charge is finished and then undone, so no slot or allowance leaks."""
    proxy = await make_proxy(
        clock=FakeClock(),
        policy=limited({"users": {"alice": ["2/minute", "1 concurrent"]}}),
        store="redis",
        redis=RedisSettings(url=SecretStr(own_redis.url), timeout=10.0),
    )
    assert (await send(proxy))[0] == 200  # a pooled connection, the scripts loaded
    own_redis.pause(True)
    try:
        leaving = asyncio.create_task(send(proxy))
        await asyncio.sleep(0.3)  # let the request's charge reach Redis, which holds it
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
    finally:
        own_redis.pause(False)
    for _ in range(200):  # until the charge, finished after all, has been given back
        status, _, body = await send(proxy)
        if status == 200:
            break
        await asyncio.sleep(0.01)
    assert status == 200, body
    assert stats(proxy).refunds == 1


async def test_a_refund_lost_with_redis_is_logged_and_counted(
    make_proxy: MakeProxy, own_redis: OwnRedis, aiohttp_server: AiohttpServer
) -> None:
    """Redis dies while upstream works, then upstream fails: the refund is lost, and says so."""

    async def failing(request: web.Request) -> web.Response:
        own_redis.kill()
        return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)

    app = web.Application()
    app.router.add_get("/v1/models", failing)
    origin = await aiohttp_server(app)
    url = str(origin.make_url("")).rstrip("/")
    proxy = await proxy_on(make_proxy, own_redis, FakeClock(), "fail_closed", url)
    assert (await send(proxy))[0] == 500
    assert last_line(proxy)["quota_refund"] == "upstream_500 (lost)"
    assert (stats(proxy).refunds, stats(proxy).refunds_lost) == (0, 1)


async def test_a_slot_whose_release_failed_is_freed_once_redis_answers_again(
    make_proxy: MakeProxy, own_redis: OwnRedis, aiohttp_server: AiohttpServer
) -> None:
    """Redis hangs while a request is upstream, so freeing its concurrency slot fails: the next
    request that reaches Redis frees it first, rather than the slot being held for its lease
    (a few Redis blips would otherwise lock a user out for 15 minutes)."""

    answered: list[str] = []

    async def answer_while_redis_hangs(request: web.Request) -> web.Response:
        if not answered:  # the first request only
            own_redis.pause(True)
        answered.append(request.path)
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_get("/v1/models", answer_while_redis_hangs)
    origin = await aiohttp_server(app)
    proxy = await make_proxy(
        str(origin.make_url("")).rstrip("/"),
        clock=FakeClock(),
        policy=limited({"users": {"alice": ["1 concurrent"]}}),
        store="redis",
        redis=RedisSettings(url=SecretStr(own_redis.url), timeout=0.5),
        cache={"enabled": False},
    )
    try:
        assert (await send(proxy))[0] == 200  # answered; its slot could not be freed
    finally:
        own_redis.pause(False)
    status, _, body = await send(proxy)
    assert status == 200, body
    assert len(answered) == 2
