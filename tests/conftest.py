"""Shared fixtures: a real fake upstream, a real Tollgate on a socket, the real SDK, real Redis."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner
from prometheus_client import generate_latest
from pydantic import SecretStr
from pytest_aiohttp import AiohttpServer

from proxy.admin import ADMIN_APP
from proxy.app import create_app
from proxy.fake_upstream import FAKE_UPSTREAM, FakeUpstream, Recorded, create_fake_upstream
from proxy.keys import Clock, hash_key
from proxy.metrics import EXPOSITION
from proxy.policy import Policy, StaticKey, Team, User
from proxy.server import TollgateRunner
from proxy.settings import CredentialSettings, RedisSettings, Settings, UpstreamSettings
from tests.exposure import Exposure
from tests.redis_cluster import RedisClusterServers, start_cluster

UPSTREAM_KEY = "sk-upstream-central-0123456789abcdef"
BLUE_UPSTREAM_KEY = "sk-upstream-blue-team-fedcba9876543210"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
UPSTREAM_ORG = "org-central"
UPSTREAM_PROJECT = "proj_central"
CLIENT_KEY = "tg-client-alice-" + "a" * 32
OTHER_KEY = "tg-client-bob-" + "b" * 32
EXPOSURE = pytest.StashKey[Exposure]()


def pytest_configure(config: pytest.Config) -> None:
    """One leak detector for the session, watching for the suite's own secrets from the start."""
    exposure = config.stash[EXPOSURE] = Exposure()
    for name in ("UPSTREAM_KEY", "BLUE_UPSTREAM_KEY", "ADMIN_TOKEN", "CLIENT_KEY", "OTHER_KEY"):
        exposure.learn(name, globals()[name])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Once a test's fixtures have handed over what they recorded, scan it and let it go."""
    try:
        yield
    finally:
        item.config.stash[EXPOSURE].scan(item.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A secret anywhere Tollgate wrote it fails the run, however the tests themselves did."""
    if session.config.stash[EXPOSURE].leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say what leaked where, or how much was scanned."""
    exposure = config.stash[EXPOSURE]
    if not exposure.leaks:
        terminalreporter.write_line(
            f"no secret in logs, answers, metrics or stores "
            f"({len(exposure.secrets)} secrets, {exposure.scanned:,} bytes scanned "
            f"in {exposure.seconds:.2f} s)"
        )
        return
    terminalreporter.section("secrets leaked", red=True)
    for leak in exposure.leaks:
        terminalreporter.write_line(str(leak), red=True)


@pytest.fixture(scope="session")
def exposure(pytestconfig: pytest.Config) -> Exposure:
    """The session's leak detector (see tests/exposure.py)."""
    return pytestconfig.stash[EXPOSURE]


def policy_for_tests() -> Policy:
    """Two clients on two teams; team blue bills to its own upstream credential."""
    return Policy(
        teams={"default": Team(), "red": Team(), "blue": Team(credential="blue")},
        users={"carol": User(team="blue")},
        keys=(
            StaticKey(id="key_alice", sha256=hash_key(CLIENT_KEY), user="alice", team="red"),
            StaticKey(id="key_bob", sha256=hash_key(OTHER_KEY), user="bob", team="blue"),
        ),
    )


@dataclass
class Upstream:
    """The fake upstream as a test sees it: its server and what it recorded."""

    server: TestServer
    state: FakeUpstream

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


def sent_on(upstream: Upstream) -> list[Recorded]:
    """What upstream received for the clients, leaving out Tollgate's own moderation checks."""
    return [seen for seen in upstream.state.received if seen.path != "/v1/moderations"]


@dataclass
class Proxy:
    """A running Tollgate, what it logged, and how to reach it."""

    server: TestServer
    logs: io.BytesIO

    def url(self, path: str = "") -> str:
        return str(self.server.make_url(path))

    def log_text(self) -> str:
        return self.logs.getvalue().decode()

    def log_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if line]


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> Upstream:
    """The fake OpenAI on a real socket, expecting the central key."""
    app = create_fake_upstream()
    app[FAKE_UPSTREAM].knobs.expected_key = UPSTREAM_KEY
    server = await aiohttp_server(app)
    return Upstream(server, app[FAKE_UPSTREAM])


def proxy_settings(upstream_url: str, **overrides: Any) -> Settings:
    """Settings pointing at `upstream_url` with the central credential."""
    upstream = UpstreamSettings(
        base_url=upstream_url,
        api_key=SecretStr(UPSTREAM_KEY),
        organization=SecretStr(UPSTREAM_ORG),
        project=SecretStr(UPSTREAM_PROJECT),
        **overrides.pop("upstream", {}),
    )
    blue = CredentialSettings(api_key=SecretStr(BLUE_UPSTREAM_KEY))
    defaults: dict[str, Any] = {
        "credentials": {"blue": blue},
        "admin_token": SecretStr(ADMIN_TOKEN),
        "data_file": None,
    }
    return Settings(upstream=upstream, **(defaults | overrides))


class TollgateTestServer(TestServer):
    """A test server that runs a Tollgate app as `tollgate serve` does: on `TollgateRunner`,
    so requests aiohttp's parser refuses get the same answers as in production."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return TollgateRunner(self.app, **kwargs)


ServeTollgate = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
async def tollgate_server() -> AsyncIterator[ServeTollgate]:
    """Start Tollgate apps on loopback like `aiohttp_server`; close them after the test."""
    servers: list[TollgateTestServer] = []

    async def start(app: web.Application) -> TestServer:
        server = TollgateTestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    while servers:
        await servers.pop().close()


MakeProxy = Callable[..., Awaitable[Proxy]]


def _hand_over(exposure: Exposure, proxy: Proxy, settings: Settings, name: str) -> None:
    """What a Tollgate keeps and wrote besides its answers: log, metrics, data file."""
    exposure.record(f"log of {name}", proxy.logs.getvalue())
    exposure.record(f"metrics of {name}", generate_latest(proxy.server.app[EXPOSITION]))
    if settings.data_file is not None and settings.data_file.exists():
        exposure.record(f"data file of {name}", settings.data_file.read_bytes())


@pytest.fixture
async def make_proxy(
    tollgate_server: ServeTollgate, upstream: Upstream, exposure: Exposure
) -> AsyncIterator[MakeProxy]:
    """Start a Tollgate in front of the fake upstream, with settings (and policy) as asked.

    Each one is watched for leaks: its secrets are learned, its answers recorded as written,
    and its log, metrics and data file handed to the leak detector when the test ends."""
    made: list[tuple[Proxy, Settings]] = []

    async def make(
        upstream_url: str | None = None,
        *,
        clock: Clock = time.time,
        policy: Policy | None = None,
        **overrides: Any,
    ) -> Proxy:
        logs = io.BytesIO()
        settings = proxy_settings(upstream_url or upstream.url, **overrides)
        policy = policy or policy_for_tests()
        app = create_app(settings, policy=policy, log_stream=logs, clock=clock)
        exposure.learn_settings(settings)
        exposure.watch(app, f"proxy #{len(made)}")
        if ADMIN_APP in app:
            exposure.watch(app[ADMIN_APP], f"admin listener of proxy #{len(made)}")
        proxy = Proxy(await tollgate_server(app), logs)
        made.append((proxy, settings))
        return proxy

    yield make
    for number, (proxy, settings) in enumerate(made):
        _hand_over(exposure, proxy, settings, f"proxy #{number}")


ProxyBefore = Callable[..., Awaitable[Proxy]]


def without_moderation(policy: Policy) -> Policy:
    """The same policy with moderation off: for upstreams that answer no moderation checks."""
    moderation = policy.moderation.model_copy(update={"enabled": False})
    return policy.model_copy(update={"moderation": moderation})


@pytest.fixture
def proxy_before(aiohttp_server: AiohttpServer, make_proxy: MakeProxy) -> ProxyBefore:
    """Start a test's own upstream app, and a Tollgate in front of it (no moderation checks:
    the test's app only answers what the test is about)."""

    async def start(app: web.Application, **overrides: Any) -> Proxy:
        origin = await aiohttp_server(app)
        policy = without_moderation(policy_for_tests())
        return await make_proxy(str(origin.make_url("")).rstrip("/"), policy=policy, **overrides)

    return start


@pytest.fixture
async def proxy(make_proxy: MakeProxy) -> Proxy:
    """Tollgate with default settings in front of the fake upstream."""
    return await make_proxy()


@pytest.fixture
async def sdk(proxy: Proxy) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK pointed at Tollgate with a Tollgate key, strict about response shapes."""
    client = openai.AsyncOpenAI(
        base_url=proxy.url("/v1"),
        api_key=CLIENT_KEY,
        max_retries=0,
        _strict_response_validation=True,
    )
    yield client
    await client.close()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class FakeClock:
    """A clock tests move by hand: no sleeping to reach an expiry or a window's edge."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RedisServer:
    """A real redis-server on loopback, owned by the test session."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _wait_for_redis(port: int) -> None:
    client = redis.Redis(port=port, socket_timeout=0.2, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            client.close()
            return
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start on port {port}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the whole session; the test command installs it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run scripts/test, which installs it")
    port = free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_redis(port)
    yield RedisServer(port, process)
    process.terminate()
    process.wait(timeout=10)


def _redis_value(client: redis.Redis, name: bytes) -> object:
    """A key's value, read the way its type is read."""
    kind = client.type(name)
    if kind == b"hash":
        return client.hgetall(name)
    if kind == b"list":
        return client.lrange(name, 0, -1)
    if kind == b"set":
        return client.smembers(name)
    if kind == b"zset":
        return client.zrange(name, 0, -1, withscores=True)
    return client.get(name) if kind == b"string" else kind


def redis_contents(client: redis.Redis) -> bytes:
    """Every key in Redis and its value, whatever its type, as one text."""
    names: list[bytes] = list(client.scan_iter(count=1000))
    return b"\n".join(repr((name, _redis_value(client, name))).encode() for name in names)


@pytest.fixture
def flush_redis(redis_server: RedisServer, exposure: Exposure) -> Iterator[RedisServer]:
    """The session's redis-server, emptied before and after the test (what the test left
    there goes to the leak detector first)."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    yield redis_server
    exposure.record("redis", redis_contents(client))
    client.flushall()
    client.close()


@pytest.fixture(params=["memory", "redis"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Settings overrides for each store backend: a data file, or a flushed real Redis."""
    if request.param == "memory":
        return {"store": "memory", "data_file": tmp_path / "keys.json"}
    server: RedisServer = request.getfixturevalue("flush_redis")
    # A busy test machine can miss the 50 ms production timeout; failures are tested apart.
    redis = RedisSettings(url=SecretStr(server.url), timeout=1.0)
    return {"store": "redis", "redis": redis}


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on loopback that nothing listens on right now."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A three-master Redis Cluster on loopback for the whole session (tests/redis_cluster.py)."""
    servers = start_cluster(tmp_path_factory.mktemp("redis-cluster"), free_ports(6))
    yield servers
    servers.stop()


@pytest.fixture
def flush_cluster(
    redis_cluster: RedisClusterServers, exposure: Exposure
) -> Iterator[RedisClusterServers]:
    """The session's cluster, emptied before and after the test (what the test left on each
    node goes to the leak detector first)."""
    redis_cluster.flush()
    yield redis_cluster
    for node in redis_cluster.nodes:
        if node.process.poll() is None:
            with node.client() as client:
                exposure.record(f"redis cluster node {node.port}", redis_contents(client))
    redis_cluster.flush()
