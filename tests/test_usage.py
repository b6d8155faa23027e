"""The admin usage API: use and what is left per key, user and team; resets; the token."""

from __future__ import annotations

from typing import Any

from tests.conftest import FakeClock, MakeProxy
from tests.test_keys import admin, issue
from tests.test_quota import DAVE_KEY, IMAGE, limited, send

POLICY = {
    "default": ["10/minute", {"limit": "$1/day", "operations": "images.*"}],
    "teams": {"red": ["100/hour", "2 concurrent"]},
    "keys": {"key_alice": ["5/minute"]},
}


def by_limit(usage: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["limit"]: item for item in usage["limits"]}


async def test_usage_per_user_key_and_team(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """After traffic, each subject shows what it used, what is left and when it is whole."""
    proxy = await make_proxy(clock=FakeClock(), policy=limited(POLICY), **store_settings)
    await send(proxy, "POST", "/v1/images/generations", IMAGE)
    await send(proxy)
    await send(proxy, key=DAVE_KEY)
    status, alice = await admin(proxy, "GET", "/admin/usage/users/alice")
    assert (status, alice["object"], alice["scope"], alice["name"]) == (
        200,
        "usage",
        "user",
        "alice",
    )
    requests, spend = by_limit(alice)["10/minute"], by_limit(alice)["$1/day"]
    assert (requests["used"], requests["remaining"], requests["reset"]) == (2, 8, "12s")
    assert (spend["unit"], spend["used"], spend["remaining"]) == ("usd_micros", 40_000, 960_000)
    assert spend["operations"] == ["images.*"]
    _, key = await admin(proxy, "GET", "/admin/usage/keys/key_alice")
    assert [(item["limit"], item["used"]) for item in key["limits"]] == [("5/minute", 2)]
    _, team = await admin(proxy, "GET", "/admin/usage/teams/red")
    assert by_limit(team)["100/hour"]["used"] == 3
    assert by_limit(team)["2 concurrent"]["used"] == 0  # nothing in flight any more


async def test_an_issued_keys_own_limits_show_under_its_id(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """Issued keys' record limits are found through the key store."""
    proxy = await make_proxy(clock=FakeClock(), policy=limited({}), **store_settings)
    record = await issue(proxy, user="erin", limits={"*": "3/hour"})
    await send(proxy, key=record["key"])
    status, usage = await admin(proxy, "GET", f"/admin/usage/keys/{record['id']}")
    assert status == 200
    assert [(item["limit"], item["remaining"]) for item in usage["limits"]] == [("3/hour", 2)]


async def test_reset_makes_a_subject_whole_again(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """DELETE resets all of a subject's counters, or one by id; refused requests pass again."""
    proxy = await make_proxy(
        clock=FakeClock(), policy=limited({"default": ["1/hour", "5/day"]}), **store_settings
    )
    await send(proxy)
    assert (await send(proxy))[0] == 429
    _, usage = await admin(proxy, "GET", "/admin/usage/users/alice")
    hourly = by_limit(usage)["1/hour"]["id"]
    status, after = await admin(proxy, "DELETE", f"/admin/usage/users/alice?limit={hourly}")
    assert status == 200
    assert [(i["limit"], i["used"]) for i in after["limits"]] == [("1/hour", 0), ("5/day", 1)]
    assert (await send(proxy))[0] == 200
    _, after = await admin(proxy, "DELETE", "/admin/usage/users/alice")
    assert [i["used"] for i in after["limits"]] == [0, 0]


async def test_unknown_subjects_are_404s(make_proxy: MakeProxy) -> None:
    """Unknown keys, teams and limit ids are named in a 404; unknown users just have defaults."""
    proxy = await make_proxy(clock=FakeClock(), policy=limited({"default": ["1/hour"]}))
    status, body = await admin(proxy, "GET", "/admin/usage/keys/key_nope")
    assert (status, body["error"]["code"]) == (404, "key_not_found")
    status, body = await admin(proxy, "GET", "/admin/usage/teams/green")
    assert (status, body["error"]["param"]) == (404, "team")
    status, body = await admin(proxy, "DELETE", "/admin/usage/users/alice?limit=nope")
    assert (status, body["error"]["param"]) == (404, "limit")
    status, body = await admin(proxy, "GET", "/admin/usage/users/zoe")
    assert (status, [i["remaining"] for i in body["limits"]]) == (200, [1])


async def test_the_usage_api_needs_the_admin_token(make_proxy: MakeProxy) -> None:
    """Same guard as the rest of /admin."""
    proxy = await make_proxy(policy=limited({"default": ["1/hour"]}))
    status, body = await admin(proxy, "GET", "/admin/usage/users/alice", token="wrong")
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    status, _ = await admin(proxy, "DELETE", "/admin/usage/users/alice", token=None)
    assert status == 401
