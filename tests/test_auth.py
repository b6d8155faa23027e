"""The auth room: only Tollgate keys get in, and a refusal says nothing about which keys exist."""

from __future__ import annotations

import time

import aiohttp
import openai
import pytest

from proxy.auth import Authenticator, bearer_token
from proxy.keys import generate_key, hash_key
from proxy.policy import Policy, StaticKey
from proxy.settings import Settings
from proxy.store.memory import MemoryStore
from proxy.tenancy import Tenancy
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, Proxy, Upstream


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
    found = await door.principal(secret)
    assert found is not None
    assert (found.key_id, found.user, found.team) == ("k1", "u", "default")
    assert await door.principal(hash_key(secret)) is None
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
