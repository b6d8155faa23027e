"""Redis killed (SIGKILL) and restarted on its port while traffic runs, for each quota failure
mode: every answer meanwhile is what the mode says, in OpenAI's shape; once Redis is back
(with its data: AOF, fsync on every write) nothing is admitted beyond a limit, issued keys
still work, the breaker closes again, and the proxy is healthy.

tests/test_quota_failure.py covers one request at a time (a dead, a hung, a restarted Redis);
here the same happens under concurrent load, with the counts kept across the restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from proxy.limits import LimitsPolicy
from proxy.settings import QuotaSettings, RedisSettings
from tests.conftest import (
    ADMIN_TOKEN,
    CLIENT_KEY,
    FakeClock,
    MakeProxy,
    Proxy,
    policy_for_tests,
    without_moderation,
)
from tests.healthy import assert_healthy
from tests.test_quota_failure import OwnRedis

LIMIT = 40  # requests an hour, for each limited key; the fake clock never gets near an hour
COOLDOWN = 5.0
WORKERS = 3  # concurrent clients per key
BOUND = 400  # polls of 25 ms: the longest any phase may take


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server of its own that keeps its data across a SIGKILL: AOF, fsync always."""
    server = OwnRedis(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    yield server
    server.kill()


@dataclass(frozen=True)
class Answer:
    """One answer under load, with the phase its request was sent in."""

    phase: str
    who: str
    status: int
    code: str | None
    remaining: int | None  # x-ratelimit-remaining-requests: the counter right after a charge
    request_id: str


class Load:
    """Clients sending GET /v1/models as fast as answers come, each key from its own workers,
    until told to stop; every answer is checked for OpenAI's shape and kept."""

    def __init__(self, proxy: Proxy, keys: dict[str, str]) -> None:
        self.proxy = proxy
        self.keys = keys
        self.phase = "up"
        self.answers: list[Answer] = []
        self.in_flight: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._tasks = [
            asyncio.create_task(self._worker(who, key))
            for who, key in self.keys.items()
            for _ in range(WORKERS)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._client.close()

    async def _worker(self, who: str, key: str) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        while not self._stop.is_set():
            phase = self.phase
            self.in_flight[phase] = self.in_flight.get(phase, 0) + 1
            try:
                self.answers.append(await self._send(phase, who, headers))
            finally:
                self.in_flight[phase] -= 1

    async def _send(self, phase: str, who: str, headers: dict[str, str]) -> Answer:
        async with self._client.get(self.proxy.url("/v1/models"), headers=headers) as r:
            body = await r.json(content_type=None)
            code = None if r.status == 200 else _openai_error_code(body)
            remaining = r.headers.get("x-ratelimit-remaining-requests")
            return Answer(
                phase,
                who,
                r.status,
                code,
                None if remaining is None else int(remaining),
                r.headers["x-request-id"],
            )

    async def shift(self, phase: str, change: Callable[[], None]) -> None:
        """Make `change` with nothing of the current phase still in flight, then begin
        `phase`: requests sent meanwhile belong to neither (phase "between")."""
        previous, self.phase = self.phase, "between"
        for _ in range(BOUND):
            if not self.in_flight.get(previous):
                break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError(f"requests of phase {previous} never finished")
        change()
        self.phase = phase

    def count(self, test: Callable[[Answer], bool]) -> int:
        return sum(1 for answer in self.answers if test(answer))

    async def each_sees(self, phase: str, answers: int) -> None:
        """Wait (bounded) until every key has had `answers` answers in `phase`."""
        for who in self.keys:
            await self.until(answered(phase, who), answers, f"{who} answered in {phase}")

    async def until(self, test: Callable[[Answer], bool], at_least: int, what: str) -> None:
        """Wait (bounded) until `at_least` answers pass `test`."""
        for _ in range(BOUND):
            if self.count(test) >= at_least:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"never happened: {what}")


def answered(phase: str, who: str, status: int | None = None) -> Callable[[Answer], bool]:
    """A test for answers to `who` in `phase` (with `status`, if given)."""

    def test(answer: Answer) -> bool:
        return (answer.phase, answer.who) == (phase, who) and status in (None, answer.status)

    return test


def _openai_error_code(body: Any) -> str | None:
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    code: str | None = body["error"]["code"]
    return code


async def _issue(proxy: Proxy, **fields: Any) -> str:
    """A new key through the admin API, kept in Redis; its secret."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as client:
        body = {"name": "faults", **fields}
        async with client.post(proxy.url("/admin/keys"), json=body, headers=headers) as r:
            assert r.status == 201, await r.text()
            secret: str = (await r.json())["key"]
            return secret


async def _readiness(proxy: Proxy) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/readyz")) as response:
            return response.status, await response.json()


def _quota_facts(proxy: Proxy) -> dict[str, tuple[str | None, str | None]]:
    """request id -> (quota, quota_reason), from the log lines."""
    lines = (json.loads(line) for line in proxy.log_lines())
    return {
        line["request_id"]: (line.get("quota"), line.get("quota_reason"))
        for line in lines
        if line.get("path") == "/v1/models"
    }


# What each phase may answer, by key: (status, error code). "down": sent after the SIGKILL;
# "restarted": Redis is back, the breaker still open; "probing": the cool-down is over;
# "closed": sent after an answer showed the breaker closed again.
Statuses = set[tuple[int, str | None]]
ISSUED_DOWN: Statuses = {(503, "key_store_unavailable")}  # issued keys live in Redis: not 401
QUOTA_DOWN: dict[str, Statuses] = {
    "fail_open": {(200, None)},
    "fail_closed": {(503, "quota_store_unavailable")},
}
ENFORCED: Statuses = {(200, None), (429, "rate_limit_exceeded")}


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
async def test_redis_killed_and_restarted_under_load(
    make_proxy: MakeProxy, persistent_redis: OwnRedis, mode: str
) -> None:
    """SIGKILL, restart on the same port, under load; then limits hold exactly across it."""
    clock = FakeClock()
    limits = LimitsPolicy.model_validate({"users": {"alice": [f"{LIMIT}/hour"]}})
    proxy = await make_proxy(
        clock=clock,
        policy=without_moderation(policy_for_tests()).model_copy(update={"limits": limits}),
        store="redis",
        redis=RedisSettings(url=SecretStr(persistent_redis.url), timeout=0.5),
        quota=QuotaSettings(failure_mode=mode, breaker_failures=2, breaker_cooldown=COOLDOWN),
    )
    issued = await _issue(proxy, user="erin", limits={"*": f"{LIMIT}/hour"})
    unlimited = await _issue(proxy, user="frank")
    async with Load(proxy, {"alice": CLIENT_KEY, "erin": issued}) as load:
        await load.until(lambda a: a.status == 200, 6, "traffic flowing")
        await load.shift("down", persistent_redis.kill)
        await load.each_sees("down", 5 * WORKERS)
        assert (await _readiness(proxy))[0] == 503
        await load.shift("restarted", persistent_redis.start)
        await load.each_sees("restarted", 5 * WORKERS)
        await load.shift("probing", lambda: clock.advance(COOLDOWN))
        facts = _quota_facts

        def closed(answer: Answer) -> bool:
            return facts(proxy).get(answer.request_id, (None, None))[0] == "admitted"

        await load.until(lambda a: a.phase == "probing" and closed(a), 1, "the breaker closing")
        load.phase = "closed"
        for who in ("alice", "erin"):
            await load.until(answered("closed", who, 429), WORKERS, f"{who}'s limit reached")
    quota = _quota_facts(proxy)
    seen: dict[tuple[str, str], Statuses] = {(a.phase, a.who): set() for a in load.answers}
    for answer in load.answers:
        seen[answer.phase, answer.who].add((answer.status, answer.code))
    anything = ENFORCED | QUOTA_DOWN[mode] | ISSUED_DOWN
    assert all(statuses <= anything for statuses in seen.values()), seen
    assert seen["down", "erin"] == ISSUED_DOWN
    assert seen["down", "alice"] == QUOTA_DOWN[mode]
    for who in ("alice", "erin"):
        assert seen["restarted", who] == QUOTA_DOWN[mode]  # the breaker, not Redis, says so
        assert seen["probing", who] <= ENFORCED | QUOTA_DOWN[mode]
        assert seen["closed", who] <= ENFORCED
        assert (429, "rate_limit_exceeded") in seen["closed", who]
    for answer in load.answers:
        reason = quota[answer.request_id][1] or ""
        if answer.phase == "closed":  # the breaker is closed: every request is checked
            assert quota[answer.request_id][0] in ("admitted", "refused"), answer
        if answer.phase == "restarted" and answer.status != 429:
            assert reason == "breaker_open", answer
    for who in ("alice", "erin"):
        _limit_held_across_the_restart(load.answers, quota, who)
    assert (await _readiness(proxy))[0] == 200
    await assert_healthy(proxy, key=unlimited)


def _limit_held_across_the_restart(
    answers: list[Answer], quota: dict[str, tuple[str | None, str | None]], who: str
) -> None:
    """Every charge Redis admitted shows the counter after it: no value twice (the count
    survived the restart), down to 0 (the limit was reached), so no more than LIMIT were
    admitted; a value missing is a charge Redis kept whose answer the kill cut off, at most
    one per request that failed at Redis itself (not at the breaker)."""
    admitted = [a for a in answers if a.who == who and quota[a.request_id][0] == "admitted"]
    remaining = sorted(a.remaining for a in admitted if a.remaining is not None)
    assert len(remaining) == len(admitted)  # every admitted answer shows the counter
    assert len(remaining) == len(set(remaining)), remaining
    assert remaining[0] == 0
    assert remaining[-1] <= LIMIT - 1
    cut_off = sum(
        1 for a in answers if a.who == who and (quota[a.request_id][1] or "").startswith("redis: ")
    )
    assert LIMIT - cut_off <= len(admitted) <= LIMIT, (len(admitted), cut_off)


async def test_a_restarted_redis_is_used_at_once_without_failures(
    make_proxy: MakeProxy, persistent_redis: OwnRedis
) -> None:
    """Redis restarts between two bursts: the pooled connections to the old process are dead,
    yet no request of the second burst fails on one (each is replaced), so issued keys work
    and limits are checked from the first request on."""
    proxy = await make_proxy(
        policy=without_moderation(policy_for_tests()),
        store="redis",
        redis=RedisSettings(url=SecretStr(persistent_redis.url), timeout=0.5),
        quota=QuotaSettings(breaker_failures=1),
    )
    issued = await _issue(proxy, user="erin", limits={"*": f"{LIMIT}/hour"})
    headers = {"Authorization": f"Bearer {issued}"}

    async def burst() -> list[tuple[int, str | None]]:
        async with aiohttp.ClientSession() as client:

            async def one() -> tuple[int, str | None]:
                async with client.get(proxy.url("/v1/models"), headers=headers) as r:
                    body = await r.json(content_type=None)
                    return r.status, None if r.status == 200 else _openai_error_code(body)

            return list(await asyncio.gather(*(one() for _ in range(8))))

    assert await burst() == [(200, None)] * 8  # several pooled connections to Redis now
    persistent_redis.kill()
    persistent_redis.start()
    assert await burst() == [(200, None)] * 8
    await assert_healthy(proxy, key=issued)
