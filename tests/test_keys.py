"""Issued keys end to end, over both store backends: admin API, the door, revocation, rotation."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import redis
from pydantic import SecretStr

from proxy.settings import RedisSettings
from tests.conftest import (
    ADMIN_TOKEN,
    CLIENT_KEY,
    FakeClock,
    MakeProxy,
    Proxy,
    Upstream,
    free_port,
    sent_on,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def admin(
    proxy: Proxy, method: str, path: str, body: object = None, token: str | None = ADMIN_TOKEN
) -> tuple[int, dict[str, Any]]:
    """Call the admin API; the status and JSON answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as client:
        async with client.request(method, proxy.url(path), json=body, headers=headers) as r:
            answer: dict[str, Any] = await r.json()
            return r.status, answer


async def issue(proxy: Proxy, **fields: Any) -> dict[str, Any]:
    """A new key through the admin API (its secret is under "key")."""
    status, record = await admin(proxy, "POST", "/admin/keys", {"name": "ci", **fields})
    assert status == 201, record
    return record


async def models_status(proxy: Proxy, secret: str) -> int:
    """What GET /v1/models answers for `secret`."""
    headers = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=headers) as response:
            return response.status


async def test_an_issued_key_works_and_is_shown_once(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """A created key opens /v1 at once; listings and lookups never show it again."""
    proxy = await make_proxy(**store_settings)
    record = await issue(proxy, user="alice")
    assert record["key"].startswith("tg-")
    assert record["team"] == "default"
    assert await models_status(proxy, record["key"]) == 200
    _, listing = await admin(proxy, "GET", "/admin/keys")
    _, shown = await admin(proxy, "GET", f"/admin/keys/{record['id']}")
    assert record["key"] not in json.dumps([listing, shown])
    assert "hash" not in shown
    assert [item["id"] for item in listing["data"]] == [record["id"]]


def _raw_store(settings: dict[str, Any]) -> str:
    """Everything the store holds at rest, as text."""
    if settings["store"] == "memory":
        path: Path = settings["data_file"]
        return path.read_text()
    client = redis.Redis.from_url(settings["redis"].url.get_secret_value())
    text = "\n".join(f"{name!r}={client.get(name)!r}" for name in client.keys("*"))
    client.close()
    return text


async def test_only_hashes_are_kept_at_rest(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """The raw store holds the key's SHA-256, never the key."""
    proxy = await make_proxy(**store_settings)
    record = await issue(proxy, user="alice")
    raw = _raw_store(store_settings)
    assert record["id"] in raw
    assert record["key"] not in raw
    assert record["key"][3:20] not in raw


async def test_revocation_reaches_every_replica_within_a_second(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """Revoked on one instance, refused by another sharing the store within one second."""
    first, second = await make_proxy(**store_settings), await make_proxy(**store_settings)
    record = await issue(first, user="alice")
    assert await models_status(second, record["key"]) == 200
    status, revoked = await admin(first, "DELETE", f"/admin/keys/{record['id']}")
    assert status == 200
    assert revoked["revoked_at"] is not None
    revoked_at = time.monotonic()
    while await models_status(second, record["key"]) != 401:
        assert time.monotonic() - revoked_at < 1.0, "still accepted a second after revocation"
        await asyncio.sleep(0.05)
    assert await models_status(first, record["key"]) == 401


async def test_disabling_and_enabling_take_effect_at_once(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """A disabled key is refused like an unknown one, and works again once enabled."""
    proxy = await make_proxy(**store_settings)
    record = await issue(proxy, user="alice")
    await admin(proxy, "PATCH", f"/admin/keys/{record['id']}", {"disabled": True})
    assert await models_status(proxy, record["key"]) == 401
    await admin(proxy, "PATCH", f"/admin/keys/{record['id']}", {"disabled": False})
    assert await models_status(proxy, record["key"]) == 200


async def test_keys_expire_on_the_injected_clock(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """A key works until its expiry and is refused from that second on."""
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, **store_settings)
    record = await issue(proxy, user="alice", expires_at=int(clock.now) + 60)
    assert await models_status(proxy, record["key"]) == 200
    clock.advance(59)
    assert await models_status(proxy, record["key"]) == 200
    clock.advance(1)
    assert await models_status(proxy, record["key"]) == 401


async def test_rotation_keeps_the_id_and_retires_the_old_secret(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """After rotation the new secret works, the old one does not, and the id is the same."""
    proxy = await make_proxy(**store_settings)
    record = await issue(proxy, user="alice")
    status, rotated = await admin(proxy, "POST", f"/admin/keys/{record['id']}/rotate")
    assert status == 200
    assert rotated["id"] == record["id"]
    assert rotated["created_at"] == record["created_at"]
    assert rotated["rotated_at"] is not None
    assert await models_status(proxy, rotated["key"]) == 200
    assert await models_status(proxy, record["key"]) == 401


async def test_a_revoked_key_cannot_be_rotated_back_to_life(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """Rotation of a revoked key is a 404: revocation is final."""
    proxy = await make_proxy(**store_settings)
    record = await issue(proxy, user="alice")
    await admin(proxy, "DELETE", f"/admin/keys/{record['id']}")
    status, _ = await admin(proxy, "POST", f"/admin/keys/{record['id']}/rotate")
    assert status == 404


async def test_the_embedded_store_keeps_keys_across_a_restart(
    make_proxy: MakeProxy, tmp_path: Path
) -> None:
    """A key issued before a restart still works after it (memory store, same data file)."""
    data_file = tmp_path / "keys.json"
    before = await make_proxy(store="memory", data_file=data_file)
    record = await issue(before, user="alice")
    await before.server.close()
    after = await make_proxy(store="memory", data_file=data_file)
    assert await models_status(after, record["key"]) == 200


@pytest.mark.parametrize("token", [None, "wrong-token", ADMIN_TOKEN[:-1]])
async def test_the_admin_api_needs_its_token(proxy: Proxy, token: str | None) -> None:
    """Without the exact admin token every admin route is a 401 in OpenAI's shape."""
    for method, path in [("GET", "/admin/keys"), ("POST", "/admin/keys")]:
        status, answer = await admin(proxy, method, path, {"name": "x", "user": "u"}, token)
        assert status == 401
        assert answer["error"]["code"] == "invalid_api_key"


async def test_client_keys_do_not_open_the_admin_api(proxy: Proxy) -> None:
    """A client key is no admin token."""
    record = await issue(proxy, user="alice")
    status, _ = await admin(proxy, "GET", "/admin/keys", token=record["key"])
    assert status == 401


async def test_the_admin_api_is_off_without_a_token(make_proxy: MakeProxy) -> None:
    """With no admin token configured, the admin API refuses everything and says why."""
    proxy = await make_proxy(admin_token=None)
    status, answer = await admin(proxy, "GET", "/admin/keys")
    assert status == 401
    assert "TOLLGATE_ADMIN_TOKEN" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x"}, "user"),
        ({"name": "", "user": "u"}, "name"),
        ({"name": "x", "user": "u", "team": "nope"}, "team"),
        ({"name": "x", "user": "u", "expires_at": -5}, "expires_at"),
        ({"name": "x", "user": "u", "colour": "red"}, "colour"),
        ({"name": "x", "user": "u", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"name": "x", "user": "u", "allowed_operations": "images.*"}, "allowed_operations"),
    ],
)
async def test_bad_admin_input_names_the_field(
    proxy: Proxy, body: dict[str, Any], param: str
) -> None:
    """Invalid admin input is a 400 whose `param` names the offending field."""
    status, answer = await admin(proxy, "POST", "/admin/keys", body)
    assert status == 400
    assert answer["error"]["param"] == param
    assert answer["error"]["type"] == "invalid_request_error"


async def test_unknown_key_ids_are_404(proxy: Proxy) -> None:
    """Showing, changing or revoking a key that does not exist is a 404."""
    for method in ("GET", "PATCH", "DELETE"):
        status, answer = await admin(proxy, method, "/admin/keys/key_nope", {})
        assert status == 404
        assert answer["error"]["code"] == "key_not_found"


async def test_a_dead_store_is_a_503_not_a_401(
    make_proxy: MakeProxy,
) -> None:
    """With Redis down, issued keys get 503 (retry later), while static keys still work."""
    dead = RedisSettings(url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"))
    proxy = await make_proxy(store="redis", redis=dead)
    assert await models_status(proxy, "tg-" + "z" * 43) == 503
    assert await models_status(proxy, CLIENT_KEY) == 200


async def test_allowed_operations_and_models_are_enforced_at_the_door(
    proxy: Proxy, upstream: Upstream
) -> None:
    """A key limited to some operations and models gets the SDK's 403 for the rest."""
    record = await issue(
        proxy, user="alice", allowed_operations=["images.*"], allowed_models=["dall-e-2"]
    )
    sdk = openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key=record["key"], max_retries=0)
    await sdk.images.generate(prompt="an otter", model="dall-e-2")
    with pytest.raises(openai.PermissionDeniedError) as wrong_model:
        await sdk.images.generate(prompt="an otter", model="dall-e-3")
    with pytest.raises(openai.PermissionDeniedError) as wrong_operation:
        await sdk.models.list()
    await sdk.close()
    assert wrong_model.value.code == "model_not_allowed"
    assert wrong_operation.value.code == "operation_not_allowed"
    assert [seen.path for seen in sent_on(upstream)] == ["/v1/images/generations"]
