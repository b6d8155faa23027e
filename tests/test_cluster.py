"""Redis Cluster: keys, quotas, cache and readiness on three real masters, shared by two apps."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from pydantic import SecretStr, ValidationError
from pytest_aiohttp import AiohttpServer

from proxy.app import create_app
from proxy.policy import Policy
from proxy.settings import RedisSettings, Settings
from proxy.store import StoreUnavailable
from proxy.store.redis import BY_HASH, guarded
from tests.conftest import (
    CLIENT_KEY,
    FakeClock,
    MakeProxy,
    Proxy,
    Upstream,
    free_ports,
    policy_for_tests,
    proxy_settings,
    without_moderation,
)
from tests.redis_cluster import RedisClusterServers, start_cluster
from tests.test_cache import ALICE, BOB, _per_credential_upstream, get
from tests.test_keys import admin, issue, models_status
from tests.test_quota import DAVE_KEY, limited
from tests.test_quota_exact import statuses, storm


def on_cluster(servers: RedisClusterServers, timeout: float = 2.0) -> dict[str, Any]:
    """Settings overrides for the cluster store (a loaded test machine gets a long timeout)."""
    redis = RedisSettings(url=SecretStr(servers.url), cluster=True, timeout=timeout)
    return {"store": "redis", "redis": redis}


def nodes_holding(servers: RedisClusterServers, prefix: bytes) -> int:
    """How many masters hold at least one key starting with `prefix`."""
    return sum(1 for keys in servers.keys_by_node() if any(k.startswith(prefix) for k in keys))


async def two_apps(
    aiohttp_server: AiohttpServer, upstream: Upstream, policy: Policy, **store: Any
) -> list[TestServer]:
    """Two Tollgate apps on one cluster and one frozen clock (nothing refills mid-test)."""
    clock, settings = FakeClock(), proxy_settings(upstream.url, **store)
    apps = [create_app(settings, policy=policy, log_stream=io.BytesIO(), clock=clock)]
    apps.append(create_app(settings, policy=policy, log_stream=io.BytesIO(), clock=clock))
    return [await aiohttp_server(app) for app in apps]


def test_the_environment_says_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOLLGATE_REDIS__CLUSTER=true turns the URL into a cluster's; a non-boolean, or a
    database other than 0, is refused at start-up without showing the URL."""
    monkeypatch.setenv("TOLLGATE_REDIS__URL", "redis://10.0.0.7:7000/0")
    monkeypatch.setenv("TOLLGATE_REDIS__CLUSTER", "true")
    assert Settings().redis.cluster is True
    monkeypatch.setenv("TOLLGATE_REDIS__CLUSTER", "perhaps")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("TOLLGATE_REDIS__CLUSTER")
    assert Settings().redis.cluster is False
    monkeypatch.setenv("TOLLGATE_REDIS__CLUSTER", "1")
    monkeypatch.setenv("TOLLGATE_REDIS__URL", "redis://:hunter2-secret@10.0.0.7:7000/3")
    with pytest.raises(ValidationError, match="database 0 only") as refused:
        Settings()
    assert "hunter2" not in str(refused.value)


async def test_keys_issued_on_one_app_work_and_die_on_another(
    make_proxy: MakeProxy, flush_cluster: RedisClusterServers
) -> None:
    """Issue on one app, use and list on the second; rotate and revoke on the first: the
    second refuses the old secret, then the new one, from its next request."""
    store = on_cluster(flush_cluster)
    first, second = await make_proxy(**store), await make_proxy(**store)
    record = await issue(first, user="alice")
    assert await models_status(second, record["key"]) == 200
    status, listing = await admin(second, "GET", "/admin/keys")
    assert status == 200
    assert [key["id"] for key in listing["data"]] == [record["id"]]
    status, rotated = await admin(first, "POST", f"/admin/keys/{record['id']}/rotate")
    assert status == 200
    assert await models_status(second, record["key"]) == 401
    assert await models_status(second, rotated["key"]) == 200
    status, _ = await admin(first, "DELETE", f"/admin/keys/{record['id']}")
    assert status == 200
    assert await models_status(second, rotated["key"]) == 401
    assert await models_status(first, rotated["key"]) == 401


async def test_a_user_and_a_team_limit_are_exact_across_two_apps(
    aiohttp_server: AiohttpServer, upstream: Upstream, flush_cluster: RedisClusterServers
) -> None:
    """600 concurrent requests from two users of one team over two apps: 80 each, 100 for the
    team, and exactly 100 reach upstream; the counters live on more than one master."""
    policy = limited({"default": ["80/day"], "teams": {"red": ["100/day"]}})
    servers = await two_apps(aiohttp_server, upstream, policy, **on_cluster(flush_cluster))
    seen = await storm(servers, "/v1/moderations", {"input": "hi"}, [CLIENT_KEY, DAVE_KEY])
    assert statuses(seen) == Counter({200: 100, 429: 500})
    assert seen[CLIENT_KEY, 200] <= 80
    assert seen[DAVE_KEY, 200] <= 80
    assert len(upstream.state.received) == 100
    assert nodes_holding(flush_cluster, b"tg:q:") >= 2


async def test_the_cache_is_shared_by_apps_and_never_crosses_tenants(
    aiohttp_server: AiohttpServer, make_proxy: MakeProxy, flush_cluster: RedisClusterServers
) -> None:
    """A miss on one app is a hit on the other; a team on another credential gets its own;
    a flush finds the entries on every master."""
    origin = await aiohttp_server(_per_credential_upstream())
    url, policy = str(origin.make_url("")).rstrip("/"), without_moderation(policy_for_tests())
    first = await make_proxy(url, policy=policy, **on_cluster(flush_cluster))
    second = await make_proxy(url, policy=policy, **on_cluster(flush_cluster))
    _, headers, alice = await get(first, headers=ALICE)
    assert headers["x-tollgate-cache"] == "miss"
    _, headers, again = await get(second, headers=ALICE)
    assert (headers["x-tollgate-cache"], again) == ("hit", alice)
    _, headers, bob = await get(second, headers=BOB)
    assert headers["x-tollgate-cache"] == "miss"
    assert bob != alice
    _, headers, bob_again = await get(first, headers=BOB)
    assert (headers["x-tollgate-cache"], bob_again) == ("hit", bob)
    status, answer = await admin(second, "POST", "/admin/cache/flush", {})
    assert (status, answer["flushed"]) == (200, 2)
    assert (await get(first, headers=ALICE))[1]["x-tollgate-cache"] == "miss"


async def test_ready_on_a_healthy_cluster(
    make_proxy: MakeProxy, flush_cluster: RedisClusterServers
) -> None:
    """/readyz asks every master, and says the store is fine."""
    proxy = await make_proxy(**on_cluster(flush_cluster))
    status, answer = await ready(proxy)
    assert (status, answer["checks"]["store"]) == (200, True)


async def ready(proxy: Proxy) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/readyz")) as response:
            answer: dict[str, Any] = await response.json()
            return response.status, answer


async def status_of(proxy: Proxy, key: str) -> tuple[int, str | None]:
    """POST /v1/moderations as `key`: the status and the error code, if any."""
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as client:
        url = proxy.url("/v1/moderations")
        async with client.post(url, json={"input": "hi"}, headers=headers) as response:
            answer = await response.json()
            return response.status, (answer.get("error") or {}).get("code")


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A cluster of this test's own, for tests that stop one of its nodes. Its nodes wait a
    minute before failing a silent one, so the cluster as a whole stays up meanwhile."""
    servers = start_cluster(tmp_path, free_ports(6), node_timeout_ms=60_000)
    yield servers
    servers.stop()


async def limited_on(
    make_proxy: MakeProxy, cluster: RedisClusterServers, store_timeout: float = 0.3
) -> tuple[Proxy, str]:
    """Tollgate on `cluster` with limits for alice and dave, and an issued key for erin.
    Key records and dave's counters share a master; alice's are on another. The store
    timeout is short, for tests that wait it out on a stalled master."""
    limits = {"users": {"alice": ["50/day"], "dave": ["50/day"]}}
    proxy = await make_proxy(policy=limited(limits), **on_cluster(cluster, timeout=store_timeout))
    record = await issue(proxy, user="erin")
    assert cluster.node_for(BY_HASH) is cluster.node_for("tg:q:{u:dave}:u:")
    assert cluster.node_for(BY_HASH) is not cluster.node_for("tg:q:{u:alice}:u:")
    return proxy, record["key"]


async def test_a_stalled_master_is_a_bounded_503(
    make_proxy: MakeProxy, own_cluster: RedisClusterServers
) -> None:
    """A master stops answering: what lives on it (key records, dave's counters) is a 503
    after the store timeout, never a 500 or a hang, and /readyz says the store is down."""
    proxy, issued_key = await limited_on(make_proxy, own_cluster)
    stalled = own_cluster.node_for(BY_HASH)
    stalled.pause()
    try:
        issued, dave, (readiness, answer) = await asyncio.gather(
            status_of(proxy, issued_key), status_of(proxy, DAVE_KEY), ready(proxy)
        )
    finally:
        stalled.resume()
    assert issued == (503, "key_store_unavailable")
    assert dave == (503, "quota_store_unavailable")
    assert (readiness, answer["checks"]["store"]) == (503, False)


async def test_a_dead_master_fails_its_share_only(
    make_proxy: MakeProxy, own_cluster: RedisClusterServers
) -> None:
    """A master is gone: key records and dave's counters are a 503; alice, whose counters
    live on a master still up, carries on. (A dead master refuses connections at once, so
    nothing here waits out the store timeout: it is left long, so that alice's commands,
    sent while the client rebuilds its view of the cluster, are not cut short on a loaded
    machine. Twice in some fifteen runs of the whole suite alice was refused with the
    timeout at 0.3 s; that the timeout was why is a guess, not something seen.)"""
    proxy, issued_key = await limited_on(make_proxy, own_cluster, store_timeout=2.0)
    own_cluster.node_for(BY_HASH).kill()
    assert await status_of(proxy, issued_key) == (503, "key_store_unavailable")
    assert await status_of(proxy, DAVE_KEY) == (503, "quota_store_unavailable")
    assert await status_of(proxy, CLIENT_KEY) == (200, None)
    status, answer = await ready(proxy)
    assert (status, answer["checks"]["store"]) == (503, False)


async def test_a_moved_storm_admits_exactly_the_limit(
    aiohttp_server: AiohttpServer, upstream: Upstream, own_cluster: RedisClusterServers
) -> None:
    """The slots of every counter change master under two warm apps: 600 concurrent requests
    each meet MOVED first, and still exactly 100 are admitted, none is a 500."""
    policy = limited({"default": ["80/day"], "teams": {"red": ["100/day"]}})
    servers = await two_apps(aiohttp_server, upstream, policy, **on_cluster(own_cluster))
    for server in servers:
        async with aiohttp.ClientSession() as client:
            async with client.get(server.make_url("/readyz")) as response:
                assert response.status == 200  # the apps know the cluster's slots now
    tags = ["tg:q:{u:alice}:", "tg:q:{u:dave}:", "tg:q:{t:red}:"]
    moved = {
        tag: own_cluster.nodes[(own_cluster.nodes.index(own_cluster.node_for(tag)) + 1) % 3]
        for tag in tags
    }
    for tag, to in moved.items():
        own_cluster.move(tag, to)
    seen = await storm(servers, "/v1/moderations", {"input": "hi"}, [CLIENT_KEY, DAVE_KEY])
    assert statuses(seen) == Counter({200: 100, 429: 500})
    assert sum(1 for seen in upstream.state.received if seen.path == "/v1/moderations") == 100
    for tag, to in moved.items():
        with to.client() as client:
            assert client.keys(tag + "*"), f"{tag} counters are not on their new master"


async def test_what_redis_py_raises_from_inside_is_a_store_failure() -> None:
    """A command on a connection closed under it (what redis-py's cluster client does to
    commands in flight when it rebuilds its slot map) fails inside redis-py with an
    AttributeError: that is `StoreUnavailable`; the same error raised by our code is not."""
    closed = aioredis.Connection(host="127.0.0.1", port=free_ports(1)[0])
    with pytest.raises(StoreUnavailable, match="AttributeError"):
        await guarded(lambda: closed._send_packed_command([b"PING\r\n"]))

    async def ours() -> None:
        raise AttributeError("a bug of ours")

    with pytest.raises(AttributeError, match="a bug of ours"):
        await guarded(ours)


async def test_a_cluster_that_is_down_is_a_503_for_everyone(
    make_proxy: MakeProxy, tmp_path: Path
) -> None:
    """Once the other masters have failed a dead one (no replica to promote), the cluster
    refuses every command (CLUSTERDOWN, which redis-py retries until the store timeout ends
    it): limited requests get 503, never a 500 or a hang."""
    cluster = start_cluster(tmp_path, free_ports(6), node_timeout_ms=500)
    try:
        proxy, _ = await limited_on(make_proxy, cluster)
        assert await status_of(proxy, CLIENT_KEY) == (200, None)
        dead = cluster.node_for(BY_HASH)
        dead.kill()
        cluster.wait_for_state("fail", [node for node in cluster.nodes if node is not dead])
        assert await status_of(proxy, CLIENT_KEY) == (503, "quota_store_unavailable")
    finally:
        cluster.stop()
