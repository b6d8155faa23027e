"""The auth room: only Tollgate keys get in, and a refusal says nothing about which keys exist."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import aiohttp
import openai
import pytest
import redis

from proxy.auth import Authenticator, bearer_token
from proxy.keys import generate_key, hash_key
from proxy.policy import Policy, StaticKey
from proxy.settings import AuthSettings, Settings
from proxy.store.memory import MemoryStore
from proxy.tenancy import Tenancy
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, FakeClock, MakeProxy, Proxy, Upstream
from tests.test_keys import admin


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {CLIENT_KEY}",
        f"Bearer {CLIENT_KEY}x",
        f"Bearer {UPSTREAM_KEY}",
        f"Bearer {hash_key(CLIENT_KEY)}",
    ],
)
async def test_missing_or_wrong_keys_get_invalid_api_key(
    proxy: Proxy, upstream: Upstream, authorization: str | None
) -> None:
    """No key, a wrong key, the upstream key or a key's hash: 401 invalid_api_key, nothing sent."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=headers) as response:
            assert response.status == 401
            body = await response.json()
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "invalid_request_error"
    assert upstream.state.received == []


async def test_the_refusal_is_the_same_for_every_wrong_key(proxy: Proxy) -> None:
    """Two different wrong keys get the very same message: no hint of what exists."""
    messages = set()
    async with aiohttp.ClientSession() as client:
        for key in (CLIENT_KEY[:-1] + "Z", "tg-" + "q" * 43):
            headers = {"Authorization": f"Bearer {key}"}
            async with client.get(proxy.url("/v1/models"), headers=headers) as response:
                messages.add((await response.json())["error"]["message"])
    assert len(messages) == 1


async def test_the_sdk_raises_its_authentication_error(proxy: Proxy) -> None:
    """The official SDK understands Tollgate's 401 as its own AuthenticationError."""
    client = openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key="tg-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.models.list()
    await client.close()
    assert caught.value.code == "invalid_api_key"


async def test_static_keys_are_found_by_hash_only() -> None:
    """The policy's static keys: the right secret finds its principal, its hash does not."""
    secret = generate_key()
    policy = Policy(keys=(StaticKey(id="k1", sha256=hash_key(secret), user="u"),))
    settings = Settings(data_file=None)
    door = Authenticator(policy, Tenancy(policy, settings), MemoryStore(), time.time)
    found = door.static(hash_key(secret))
    assert found is not None
    assert (found.key_id, found.user, found.team) == ("k1", "u", "default")
    assert door.static(hash_key(hash_key(secret))) is None
    assert await door.issued(hash_key(hash_key(secret))) is None
    assert secret not in repr(found)


def test_generated_keys_are_long_and_url_safe() -> None:
    """New keys are `tg-` and 32 random bytes in url-safe base64, never the same twice."""
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith("tg-")
        assert len(key) == 3 + 43
        assert set(key[3:]) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Token abc", None), ("Bearer", None)],
)
def test_bearer_tokens_are_read_from_the_header(header: str, token: str | None) -> None:
    """Only the Bearer scheme carries a token; blanks around it do not count."""
    assert bearer_token(header) == token


async def _answer(proxy: Proxy, authorization: str | None) -> tuple[int, tuple[str, ...], bytes]:
    """Status, header names and body of GET /v1/models with this Authorization header."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=headers) as response:
            return response.status, tuple(sorted(response.headers)), await response.read()


def _commands(client: redis.Redis) -> dict[str, int]:
    """Calls per command so far (INFO itself left out)."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return {name: stat["calls"] for name, stat in stats.items() if name != "cmdstat_info"}


async def _bad_keys(proxy: Proxy, clock: FakeClock) -> dict[str, str]:
    """Issued keys that can no longer be used, one for each reason, and keys never issued."""
    made = {}
    for reason in ("revoked", "disabled", "expired", "rotated away"):
        status, record = await admin(
            proxy, "POST", "/admin/keys", {"name": reason, "user": "alice", "expires_at": 2e9}
        )
        assert status == 201
        made[reason] = record["key"]
        key_id = record["id"]
        changes = {
            "revoked": ("DELETE", f"/admin/keys/{key_id}", None),
            "disabled": ("PATCH", f"/admin/keys/{key_id}", {"disabled": True}),
            "expired": ("PATCH", f"/admin/keys/{key_id}", {"expires_at": int(clock.now) + 5}),
            "rotated away": ("POST", f"/admin/keys/{key_id}/rotate", None),
        }
        assert (await admin(proxy, *changes[reason]))[0] in (200, 201)
    clock.advance(10)
    return made | {
        "unknown": "tg-" + secrets.token_urlsafe(32),
        "one character off a real key": CLIENT_KEY[:-1] + "Z",
        "a real key's prefix": CLIENT_KEY[:12],
        "short": "x",
        "long": "tg-" + "L" * 4000,
        "not ascii": "tg-ключ-🔑",
        "with blanks": "tg-a b c",
        "a real key's hash": hash_key(CLIENT_KEY),
        "the upstream key": UPSTREAM_KEY,
    }


async def test_a_wrong_key_reveals_nothing_about_which_keys_exist(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """Unknown, malformed, revoked, disabled, expired and rotated-away keys get byte-for-byte
    the same answer and, on Redis, make the very same store calls (a GET by hash, the
    failure counted); a missing key gets OpenAI's own other message, the same for every way
    of leaving it out."""
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, auth=AuthSettings(max_failures=1000), **store_settings)
    bad = await _bad_keys(proxy, clock)
    on_redis = store_settings["store"] == "redis"
    client = (
        redis.Redis.from_url(store_settings["redis"].url.get_secret_value()) if on_redis else None
    )
    answers, calls = {}, {}
    await _answer(proxy, "Bearer warm-up")  # loads the failure counter's script into Redis
    for reason, key in bad.items():
        before = _commands(client) if client else {}
        answers[reason] = await _answer(proxy, f"Bearer {key}")
        after = _commands(client) if client else {}
        calls[reason] = {
            name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)
        }
    if client is not None:
        client.close()
        assert calls["unknown"]["cmdstat_get"] >= 1  # by hash (and in the failure's script)
        assert calls["unknown"]["cmdstat_evalsha"] == 1
    assert all(answer == answers["unknown"] for answer in answers.values()), answers
    assert all(made == calls["unknown"] for made in calls.values()), calls
    status, _, body = answers["unknown"]
    assert status == 401
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
    missing = {
        await _answer(proxy, header) for header in (None, "", "Bearer", "Bearer  ", "Basic x")
    }
    assert len(missing) == 1
    missing_status, _, missing_body = missing.pop()
    assert (missing_status, json.loads(missing_body)["error"]["code"]) == (401, "invalid_api_key")
    assert missing_body != body


async def _raw_get(proxy: Proxy, path: str, authorization: bytes) -> tuple[bytes, bytes]:
    """A request written byte by byte (no client would send such a header): status line, body."""
    url = proxy.server.make_url(path)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: tollgate\r\nConnection: close\r\n"
        b"Authorization: " + authorization + b"\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


@pytest.mark.parametrize("path", ["/v1/models", "/admin/keys"])
async def test_a_key_that_is_not_utf8_is_just_a_wrong_key(proxy: Proxy, path: str) -> None:
    """Bytes that are not UTF-8 in the header are refused like any wrong key, never a 500."""
    status, body = await _raw_get(proxy, path, b"Bearer tg-\xff\xfe\xc3")
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
