"""The quota room end to end: 429s, headers, refunds, slots, shadow mode, key and team limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpServer

from proxy.allowance import Allowances
from proxy.auth import Principal
from proxy.call import Call
from proxy.context import FACTS, Facts
from proxy.errors import ProxyError, render
from proxy.health import STORE
from proxy.instruments import QuotaMetrics
from proxy.keys import hash_key
from proxy.limiter import Limiter, open_limiter
from proxy.limits import LimitsPolicy
from proxy.policy import Policy, StaticKey
from proxy.prices import PriceTable
from proxy.quota import Quota, not_billable
from proxy.settings import QuotaSettings, Settings
from proxy.store import open_store
from proxy.tenancy import Credential
from tests.conftest import (
    CLIENT_KEY,
    FakeClock,
    MakeProxy,
    Proxy,
    Upstream,
    free_port,
    policy_for_tests,
    without_moderation,
)
from tests.samples import png
from tests.test_keys import issue

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
DAVE_KEY = "tg-client-dave-" + "d" * 32  # a second user on alice's team, red
IMAGE = {"prompt": "an otter", "model": "dall-e-3", "n": 1, "size": "1024x1024"}


def limited(limits: dict[str, Any]) -> Policy:
    """The test policy with `limits`, and dave on team red beside alice; moderation off, so
    upstream sees only what quotas let through (test_moderation covers the two together)."""
    base = without_moderation(policy_for_tests())
    dave = StaticKey(id="key_dave", sha256=hash_key(DAVE_KEY), user="dave", team="red")
    return base.model_copy(
        update={"limits": LimitsPolicy.model_validate(limits), "keys": (*base.keys, dave)}
    )


async def send(
    proxy: Proxy,
    method: str = "GET",
    path: str = "/v1/models",
    body: dict[str, Any] | None = None,
    key: str = CLIENT_KEY,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request; its status, headers and JSON body."""
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as client:
        async with client.request(method, proxy.url(path), json=body, headers=headers) as r:
            return r.status, dict(r.headers), await r.json(content_type=None)


def last_line(proxy: Proxy) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(proxy.log_lines()[-1])
    return line


async def test_over_a_request_limit_is_openais_429(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """The SDK sees RateLimitError with rate_limit_exceeded, and upstream never sees the request."""
    proxy = await make_proxy(
        clock=FakeClock(), policy=limited({"default": ["2/minute"]}), **store_settings
    )
    client = openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key=CLIENT_KEY, max_retries=0)
    await client.models.list()
    await client.models.list()
    reached = len(upstream.state.received)  # the second was answered from the cache
    with pytest.raises(openai.RateLimitError) as refused:
        await client.models.list()
    await client.close()
    error = refused.value
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert "Please try again in 30s" in error.message
    assert error.response.headers["Retry-After"] == "30"
    assert error.response.headers["retry-after-ms"] == "30000"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(upstream.state.received) == reached
    line = last_line(proxy)
    assert (line["status"], line["quota"], line["quota_reason"]) == (
        429,
        "refused",
        "user alice: 2/minute",
    )


async def test_every_answer_carries_openai_style_rate_limit_headers(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """Requests, images and spend each get limit, remaining and reset headers."""
    policy = limited({"default": ["60/minute", "10 images/day", "$1/day"]})
    proxy = await make_proxy(clock=FakeClock(), policy=policy, **store_settings)
    image = {**IMAGE, "model": "dall-e-2", "n": 2}
    status, headers, _ = await send(proxy, "POST", "/v1/images/generations", image)
    assert status == 200
    shown = {k: v for k, v in headers.items() if k.startswith("x-ratelimit")}
    assert shown == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-images": "10",
        "x-ratelimit-remaining-images": "8",
        "x-ratelimit-reset-images": "4h48m0s",
        "x-ratelimit-limit-spend": "1",
        "x-ratelimit-remaining-spend": "0.96",
        "x-ratelimit-reset-spend": "57m36s",
    }
    cost = last_line(proxy)["quota_cost"]
    assert cost == {"requests": 1, "images": 2, "spend_micros": 40_000}


async def test_each_image_request_costs_what_it_asks_for(make_proxy: MakeProxy) -> None:
    """Other operations' costs are worked out once per counters; an image request's are not:
    two, then three, then one image take 2, 3 and 1 from the images limit."""
    proxy = await make_proxy(clock=FakeClock(), policy=limited({"default": ["10 images/day"]}))
    remaining = []
    for n in (2, 3, 1):
        image = {**IMAGE, "model": "dall-e-2", "n": n}
        status, headers, _ = await send(proxy, "POST", "/v1/images/generations", image)
        assert status == 200
        remaining.append(headers["x-ratelimit-remaining-images"])
    assert remaining == ["8", "5", "4"]


async def test_free_requests_show_only_the_limits_they_meet(make_proxy: MakeProxy) -> None:
    """A models listing costs no images or money: only the request headers appear."""
    policy = limited({"default": ["60/minute", "10 images/day", "$1/day"]})
    proxy = await make_proxy(clock=FakeClock(), policy=policy)
    _, headers, _ = await send(proxy)
    assert "x-ratelimit-limit-requests" in headers
    assert not any(k.endswith(("-images", "-spend")) for k in headers)


async def test_every_answer_of_an_admitted_request_shows_its_limits(
    make_proxy: MakeProxy,
) -> None:
    """Not only upstream's answers: one from the cache, and Tollgate's own 502 when upstream
    cannot be reached, carry the headers of the charge the request was admitted with."""
    policy = limited({"default": ["60/minute"]})
    proxy = await make_proxy(clock=FakeClock(), policy=policy)
    await send(proxy)
    _, cached, _ = await send(proxy)
    assert cached["x-tollgate-cache"] == "hit"
    assert cached["x-ratelimit-remaining-requests"] == "58"
    unreachable = await make_proxy(f"http://127.0.0.1:{free_port()}", policy=policy)
    status, headers, body = await send(unreachable)
    assert (status, body["error"]["code"]) == (502, "upstream_unavailable")
    assert headers["x-ratelimit-remaining-requests"] == "59"


async def test_the_most_constraining_limit_of_a_kind_is_reported(make_proxy: MakeProxy) -> None:
    """A team's 3/minute binds tighter than the user's 100/minute."""
    policy = limited({"default": ["100/minute"], "teams": {"red": ["3/minute"]}})
    proxy = await make_proxy(clock=FakeClock(), policy=policy)
    _, headers, _ = await send(proxy)
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == (
        "3",
        "2",
    )
    assert headers["x-ratelimit-reset-requests"] == "20s"


async def test_an_exhausted_budget_is_insufficient_quota(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """Spend limits answer like OpenAI's billing: 429 insufficient_quota."""
    proxy = await make_proxy(
        clock=FakeClock(), policy=limited({"default": ["$0.05/day"]}), **store_settings
    )
    client = openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key=CLIENT_KEY, max_retries=0)
    await client.images.generate(prompt="an otter", model="dall-e-3", size="1024x1024")
    with pytest.raises(openai.RateLimitError) as refused:
        await client.images.generate(prompt="an otter", model="dall-e-3", size="1024x1024")
    await client.close()
    assert (refused.value.code, refused.value.type) == ("insufficient_quota", "insufficient_quota")
    assert "You exceeded your current quota" in refused.value.message
    assert refused.value.response.headers["x-ratelimit-remaining-spend"] == "0.01"


async def test_a_request_dearer_than_the_whole_budget_gets_no_retry_after(
    make_proxy: MakeProxy,
) -> None:
    """Retrying can never help, so no Retry-After is offered."""
    proxy = await make_proxy(clock=FakeClock(), policy=limited({"default": ["$0.10/day"]}))
    hd = {**IMAGE, "quality": "hd", "size": "1792x1024"}
    status, headers, body = await send(proxy, "POST", "/v1/images/generations", hd)
    assert (status, body["error"]["code"]) == (429, "insufficient_quota")
    assert "Retry-After" not in headers
    assert "cannot succeed" in body["error"]["message"]


async def test_image_limits_count_n(make_proxy: MakeProxy, upstream: Upstream) -> None:
    """An image request costs n images; other operations are not image-limited."""
    policy = limited({"default": [{"limit": "3 images/day", "operations": "images.*"}]})
    proxy = await make_proxy(clock=FakeClock(), policy=policy)
    two = {**IMAGE, "model": "dall-e-2", "n": 2}
    assert (await send(proxy, "POST", "/v1/images/generations", two))[0] == 200
    status, headers, body = await send(proxy, "POST", "/v1/images/generations", two)
    assert (status, body["error"]["type"]) == (429, "images")
    assert headers["x-ratelimit-remaining-images"] == "1"
    assert (await send(proxy))[0] == 200


async def test_limits_on_some_operations_leave_the_others_alone(make_proxy: MakeProxy) -> None:
    """`operations: images.*` limits images and nothing else."""
    policy = limited({"default": [{"limit": "1/minute", "operations": ["images.*"]}]})
    proxy = await make_proxy(clock=FakeClock(), policy=policy)
    assert (await send(proxy, "POST", "/v1/images/generations", IMAGE))[0] == 200
    assert (await send(proxy, "POST", "/v1/images/generations", IMAGE))[0] == 429
    for _ in range(3):
        assert (await send(proxy))[0] == 200


async def test_the_clock_brings_allowance_back(make_proxy: MakeProxy) -> None:
    """Refused now, admitted once the clock has moved on by period/amount."""
    clock = FakeClock()
    proxy = await make_proxy(clock=clock, policy=limited({"default": ["1/minute"]}))
    assert (await send(proxy))[0] == 200
    clock.advance(59.999)
    status, headers, _ = await send(proxy)
    assert (status, headers["Retry-After"], headers["retry-after-ms"]) == (429, "1", "1")
    clock.advance(0.001)
    assert (await send(proxy))[0] == 200


@pytest.mark.parametrize(
    ("knob", "value", "status", "reason"),
    [
        ("status", 500, 500, "upstream_500"),
        ("status", 503, 503, "upstream_503"),
        ("status", 429, 429, "upstream_429"),
        ("latency", 2.0, 504, "no_upstream_answer"),
    ],
)
async def test_no_billable_answer_means_no_charge(
    make_proxy: MakeProxy,
    upstream: Upstream,
    store_settings: dict[str, Any],
    knob: str,
    value: float,
    status: int,
    reason: str,
) -> None:
    """Upstream 5xx or 429 and timeouts give the charge back; the next request fits."""
    policy = limited({"default": ["1/minute", "$0.04/day"]})
    proxy = await make_proxy(
        clock=FakeClock(), policy=policy, upstream={"read_timeout": 0.2}, **store_settings
    )
    setattr(upstream.state.knobs, knob, value)
    assert (await send(proxy, "POST", "/v1/images/generations", IMAGE))[0] == status
    assert last_line(proxy)["quota_refund"] == reason
    setattr(upstream.state.knobs, knob, None if knob == "status" else 0.0)
    status, headers, _ = await send(proxy, "POST", "/v1/images/generations", IMAGE)
    assert (status, headers["x-ratelimit-remaining-spend"]) == (200, "0")
    assert last_line(proxy)["quota_refund"] is None


async def test_a_client_error_keeps_its_charge(make_proxy: MakeProxy, upstream: Upstream) -> None:
    """An upstream 400 was answered and is the client's doing: it counts."""
    proxy = await make_proxy(clock=FakeClock(), policy=limited({"default": ["1/minute"]}))
    upstream.state.knobs.status = 400
    assert (await send(proxy))[0] == 400
    upstream.state.knobs.status = None
    assert (await send(proxy))[0] == 429


async def _until(condition: Any, what: str) -> None:
    """Wait for something the servers do on their own (an event, not a time, is awaited)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_a_client_gone_before_upstream_answered_is_refunded(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """Hanging up while upstream works cancels the request and gives its charge back."""
    policy = limited({"default": ["1/minute", "1 concurrent"]})
    proxy = await make_proxy(clock=FakeClock(), policy=policy, **store_settings)
    upstream.state.knobs.latency = 30
    waiting = asyncio.create_task(send(proxy))
    await _until(lambda: upstream.state.received, "upstream has the request")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await _until(lambda: proxy.log_lines(), "the request's log line")
    line = last_line(proxy)
    assert (line["status"], line["quota_refund"]) == (499, "client_gone")
    upstream.state.knobs.latency = 0
    assert (await send(proxy))[0] == 200


async def test_concurrency_slots_are_held_while_in_flight_and_always_freed(
    make_proxy: MakeProxy, upstream: Upstream, store_settings: dict[str, Any]
) -> None:
    """1 concurrent: a second request waits for the first; errors free slots too."""
    proxy = await make_proxy(
        clock=FakeClock(), policy=limited({"default": ["1 concurrent"]}), **store_settings
    )
    upstream.state.knobs.latency = 30
    first = asyncio.create_task(send(proxy))
    await _until(lambda: upstream.state.received, "the first request is upstream")
    status, _, body = await send(proxy)
    assert (status, body["error"]["code"], body["error"]["type"]) == (
        429,
        "rate_limit_exceeded",
        "requests",
    )
    assert "in flight" in body["error"]["message"]
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await _until(lambda: len(proxy.log_lines()) == 2, "the first request's log line")
    upstream.state.knobs.latency = 0
    upstream.state.knobs.status = 500
    assert (await send(proxy))[0] == 500
    upstream.state.knobs.status = None
    assert (await send(proxy))[0] == 200
    assert (await send(proxy))[0] == 200


async def test_shadow_limits_log_but_never_refuse(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """Over a shadow limit: admitted, no header shows it, the log line names it."""
    policy = limited({"default": ["100/minute", {"limit": "1/minute", "shadow": True}]})
    proxy = await make_proxy(clock=FakeClock(), policy=policy, **store_settings)
    answers = [await send(proxy) for _ in range(3)]
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert answers[2][1]["x-ratelimit-limit-requests"] == "100"
    shadows = [json.loads(line)["quota_shadow"] for line in proxy.log_lines()]
    assert shadows == [None, ["user alice: 1/minute (shadow)"], ["user alice: 1/minute (shadow)"]]


async def test_a_team_limit_is_shared_by_its_members(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """Alice and dave share red's 3/minute; bob on blue does not."""
    policy = limited({"teams": {"red": ["3/minute"]}})
    proxy = await make_proxy(clock=FakeClock(), policy=policy, **store_settings)
    statuses = [(await send(proxy, key=key))[0] for key in (CLIENT_KEY, DAVE_KEY) * 2]
    assert statuses == [200, 200, 200, 429]
    assert last_line(proxy)["quota_reason"] == "team red: 3/minute"


async def test_users_get_their_own_allowance_or_the_default(make_proxy: MakeProxy) -> None:
    """`users.dave` replaces the default for dave; alice keeps the default; each their own."""
    policy = limited({"default": ["1/minute"], "users": {"dave": ["2/minute"]}})
    proxy = await make_proxy(clock=FakeClock(), policy=policy)
    alice = [(await send(proxy))[0] for _ in range(2)]
    dave = [(await send(proxy, key=DAVE_KEY))[0] for _ in range(3)]
    assert (alice, dave) == ([200, 429], [200, 200, 429])


async def test_an_issued_keys_limits_narrow_that_key(
    make_proxy: MakeProxy, store_settings: dict[str, Any]
) -> None:
    """`limits` on a key record count that key alone, on top of its user's."""
    policy = limited({"default": ["100/minute"]})
    proxy = await make_proxy(clock=FakeClock(), policy=policy, **store_settings)
    record = await issue(proxy, user="alice", team="red", limits={"*": "2/minute"})
    statuses = [(await send(proxy, key=record["key"]))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert last_line(proxy)["quota_reason"] == f"key {record['id']}: 2/minute"
    assert (await send(proxy))[0] == 200  # alice's other key is not held back


async def test_a_key_with_a_bad_limit_is_refused_at_the_admin_api(make_proxy: MakeProxy) -> None:
    """A limit string that does not parse is a 400 naming `limits`."""
    proxy = await make_proxy()
    headers = {"Authorization": "Bearer admin-token-for-tests-0123456789"}
    body = {"name": "x", "user": "alice", "limits": {"*": "lots/minute"}}
    async with aiohttp.ClientSession() as client:
        async with client.post(proxy.url("/admin/keys"), json=body, headers=headers) as r:
            assert r.status == 400
            error = (await r.json())["error"]
    assert error["param"] == "limits"
    assert "invalid limit" in error["message"]


async def test_unlimited_principals_pay_nothing(make_proxy: MakeProxy) -> None:
    """No limit applies: no headers of Tollgate's, nothing in the log line."""
    proxy = await make_proxy(policy=limited({"teams": {"blue": ["1/day"]}}))
    _, headers, _ = await send(proxy)
    assert "x-ratelimit-limit-requests" not in headers
    assert last_line(proxy)["quota"] is None


@pytest.fixture
async def quota_and_limiter(store_settings: dict[str, Any]) -> Any:
    clock = FakeClock()
    store = open_store(Settings(**store_settings))
    limiter = open_limiter(store, QuotaSettings(), clock)
    policy = LimitsPolicy.model_validate({"default": ["1/minute"]})
    registry = CollectorRegistry()
    metrics = QuotaMetrics(registry)
    quota = Quota(Allowances(policy, PriceTable()), limiter, QuotaSettings(), clock, metrics)
    yield quota, limiter
    await store.close()


async def _through_quota(
    aiohttp_server: AiohttpServer, quota: Quota, later: Any
) -> tuple[Facts, int]:
    """One request through the quota stage with `later` as the rest of the pipeline."""
    facts = Facts()
    principal = Principal("key_alice", "alice", "red", Credential("c", "http://x", {}, "s"))

    async def handler(request: web.Request) -> web.StreamResponse:
        request[FACTS], facts.principal = facts, principal
        facts.call, facts.fields = Call("moderations.create", True), {}
        try:
            return await quota.stage(request, later)
        except ProxyError as refused:
            return render(refused, "req_test")

    app = web.Application()
    app.router.add_post("/", handler)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as client:
        async with client.post(server.make_url("/")) as response:
            return facts, response.status


async def test_a_later_room_can_mark_an_answer_not_billable(
    aiohttp_server: AiohttpServer, quota_and_limiter: tuple[Quota, Limiter]
) -> None:
    """`not_billable` (a moderation refusal, a cache hit) gives the charge back."""
    quota, _ = quota_and_limiter

    async def moderation(request: web.Request) -> web.StreamResponse:
        not_billable(request, "moderation_refused")
        return web.json_response({"error": "flagged"}, status=400)

    facts, status = await _through_quota(aiohttp_server, quota, moderation)
    assert (status, facts.quota, facts.quota_refund) == (400, "admitted", "moderation_refused")

    async def billable(request: web.Request) -> web.StreamResponse:
        request[FACTS].upstream_status = 200
        return web.json_response({})

    assert (await _through_quota(aiohttp_server, quota, billable))[1] == 200
    facts, status = await _through_quota(aiohttp_server, quota, billable)
    assert (status, facts.quota) == (429, "refused")


async def test_a_key_record_with_unreadable_limits_is_refused(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """An old record holding a limit that does not parse: 500 naming the key, nothing sent."""
    proxy = await make_proxy(clock=FakeClock(), policy=limited({}))
    record = await issue(proxy, user="alice", team="red")
    store = proxy.server.app[STORE]
    saved = await store.key_by_id(record["id"])
    assert saved is not None
    await store.save_key(saved.model_copy(update={"limits": {"*": "lots"}}))
    status, _, body = await send(proxy, key=record["key"])
    assert (status, body["error"]["code"]) == (500, "invalid_key_limits")
    assert record["id"] in body["error"]["message"]
    assert upstream.state.received == []


def _edit_form(n: int) -> tuple[bytes, dict[str, str]]:
    """An image edit form: its text fields (prompt, n), then the image, as the SDKs send it."""
    text = (
        b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nan otter\r\n'
        b'--b\r\nContent-Disposition: form-data; name="n"\r\n\r\n' + str(n).encode() + b"\r\n"
    )
    image = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png() + b"\r\n"
    )
    return text + image + b"--b--\r\n", {**AUTH, "Content-Type": "multipart/form-data; boundary=b"}


async def test_image_edits_are_charged_their_n(make_proxy: MakeProxy) -> None:
    """An edit form's `n`, read ahead of its file, is what it is charged (the worst case for a
    head too long to read is priced in tests/test_prices.py)."""
    policy = limited({"default": [{"limit": "12 images/day", "operations": "images.*"}]})
    proxy = await make_proxy(clock=FakeClock(), policy=policy)
    body, headers = _edit_form(n=3)
    async with aiohttp.ClientSession() as client:
        async with client.post(proxy.url("/v1/images/edits"), data=body, headers=headers) as r:
            assert (r.status, r.headers["x-ratelimit-remaining-images"]) == (200, "9")
    assert last_line(proxy)["quota_cost"] == {"images": 3}
