"""The metrics room: what each request counts, how labels stay bounded, where /metrics lives."""

from __future__ import annotations

import asyncio
import shutil
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from proxy.app import INSTRUMENTS
from proxy.call import Call
from proxy.context import Facts, Outcome
from proxy.instruments import (
    IMAGE_LABEL_SETS,
    MODERATION_CATEGORIES,
    QUOTA_KINDS,
    UPSTREAM_ERRORS,
    QuotaMetrics,
    RequestMeter,
    current,
)
from proxy.limits import LimitsPolicy
from proxy.metrics import BATCH, RequestMetrics, exposition_registry
from proxy.prices import PriceTable, images_asked
from proxy.settings import MetricsSettings, Settings
from tests.conftest import (
    ADMIN_TOKEN,
    BLUE_UPSTREAM_KEY,
    CLIENT_KEY,
    OTHER_KEY,
    UPSTREAM_KEY,
    MakeProxy,
    Proxy,
    ProxyBefore,
    Upstream,
    free_port,
    policy_for_tests,
    without_moderation,
)
from tests.metrics_text import label_values, parse, scrape, total, value

ALICE = {"Authorization": f"Bearer {CLIENT_KEY}"}
BOB = {"Authorization": f"Bearer {OTHER_KEY}"}


async def metrics_of(proxy: Proxy) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The proxy's /metrics, parsed."""
    content_type, text = await scrape(proxy.url("/metrics"))
    assert content_type.startswith("text/plain")
    return parse(text)


async def get(proxy: Proxy, path: str, headers: dict[str, str] | None = None) -> int:
    """GET through Tollgate, reading the whole answer; the status."""
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url(path), headers=headers or ALICE) as response:
            await response.read()
            return response.status


async def test_requests_are_counted_by_operation_status_class_and_team(
    proxy: Proxy, sdk: openai.AsyncOpenAI
) -> None:
    """Each /v1 request counts once, with its latency and bytes; refusals count as `none`."""
    await sdk.models.list()
    await sdk.images.generate(prompt="an otter", model="dall-e-2", n=2, size="1024x1024")
    assert await get(proxy, "/v1/models", {"Authorization": "Bearer tg-nobody"}) == 401
    samples = await metrics_of(proxy)
    ok = {"status_class": "2xx", "team": "red"}
    assert value(samples, "tollgate_requests_total", operation="models.list", **ok) == 1
    assert value(samples, "tollgate_requests_total", operation="images.generate", **ok) == 1
    refused = {"operation": "none", "status_class": "4xx", "team": "none"}
    assert value(samples, "tollgate_requests_total", **refused) == 1
    image = {"operation": "images.generate"}
    assert value(samples, "tollgate_request_duration_seconds_count", **image) == 1
    assert value(samples, "tollgate_upstream_duration_seconds_count", **image) == 1
    assert total(samples, "tollgate_request_bytes_total", **image) > 0
    assert total(samples, "tollgate_response_bytes_total", **image) > 0
    assert value(samples, "tollgate_requests_in_flight") == 0


async def test_probes_and_metrics_are_not_counted_as_traffic(proxy: Proxy) -> None:
    """Only /v1 requests are usage: scrapes and probes leave the request counter alone."""
    assert await get(proxy, "/healthz") == 200
    await metrics_of(proxy)
    samples = await metrics_of(proxy)
    assert total(samples, "tollgate_requests_total") == 0


async def test_images_are_counted_from_the_call_on_success_only(
    proxy: Proxy, sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """`n` images per 2xx answer, by model, size and quality (documented defaults filled in);
    a failed answer counts none."""
    await sdk.images.generate(prompt="otter", model="dall-e-3", size="1024x1792", quality="hd")
    await sdk.images.generate(prompt="otter", model="dall-e-2", n=3, size="256x256")
    upstream.state.knobs.status = 500
    with pytest.raises(openai.InternalServerError):
        await sdk.images.generate(prompt="otter", model="dall-e-2", n=5)
    samples = await metrics_of(proxy)
    hd = {"team": "red", "model": "dall-e-3", "size": "1024x1792", "quality": "hd"}
    assert value(samples, "tollgate_images_generated_total", **hd) == 1
    small = {"team": "red", "model": "dall-e-2", "size": "256x256", "quality": "standard"}
    assert value(samples, "tollgate_images_generated_total", **small) == 3
    assert total(samples, "tollgate_images_generated_total") == 4
    assert value(samples, "tollgate_upstream_errors_total", kind="5xx") == 1


async def test_cache_results_come_from_the_cache_room(proxy: Proxy) -> None:
    """A miss, then a hit; `no-store` is a bypass; zeros are there before any traffic."""
    before = await metrics_of(proxy)
    for result in ("hit", "coalesced", "miss", "bypass"):
        assert value(before, "tollgate_cache_requests_total", result=result) == 0
    assert value(before, "tollgate_cache_store_errors_total") == 0
    await get(proxy, "/v1/models")
    await get(proxy, "/v1/models")
    await get(proxy, "/v1/models", {**ALICE, "Cache-Control": "no-store"})
    samples = await metrics_of(proxy)
    assert value(samples, "tollgate_cache_requests_total", result="miss") == 1
    assert value(samples, "tollgate_cache_requests_total", result="hit") == 1
    assert value(samples, "tollgate_cache_requests_total", result="bypass") == 1


async def test_moderation_counts_results_and_categories(
    proxy: Proxy, sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """Clean and flagged checks by result, refusals by category; a repeat is a cached verdict."""
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97, "harassment": 0.61}}
    await sdk.images.generate(prompt="an otter")
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            await sdk.images.generate(prompt="kill the otter")
    samples = await metrics_of(proxy)
    assert value(samples, "tollgate_moderation_checks_total", result="clean") == 1
    assert value(samples, "tollgate_moderation_checks_total", result="flagged") == 2
    assert value(samples, "tollgate_moderation_checks_total", result="unavailable") == 0
    assert value(samples, "tollgate_moderation_flagged_total", category="violence") == 2
    assert value(samples, "tollgate_moderation_flagged_total", category="harassment") == 2
    assert value(samples, "tollgate_moderation_flagged_total", category="hate") == 0
    assert value(samples, "tollgate_moderation_cached_verdicts_total") == 1
    assert label_values(samples, "tollgate_moderation_flagged_total", "category") == set(
        MODERATION_CATEGORIES
    )
    refused = {"operation": "images.generate", "status_class": "4xx", "team": "red"}
    assert value(samples, "tollgate_requests_total", **refused) == 2


async def test_upstream_errors_are_counted_by_kind(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """A refused connection, a reset, a timeout and a 5xx each count under their own kind."""
    dead = await make_proxy(f"http://127.0.0.1:{free_port()}")
    assert await get(dead, "/v1/models") == 502
    proxy = await make_proxy(upstream={"read_timeout": 0.2})
    upstream.state.knobs.reset_mid_body = True
    assert await get(proxy, "/v1/models", {**ALICE, "Cache-Control": "no-store"}) == 502
    upstream.state.knobs.reset_mid_body = False
    upstream.state.knobs.latency = 2.0
    assert await get(proxy, "/v1/models", {**ALICE, "Cache-Control": "no-store"}) == 504
    upstream.state.knobs.latency = 0.0
    upstream.state.knobs.status = 503
    assert await get(proxy, "/v1/models", {**ALICE, "Cache-Control": "no-store"}) == 503
    samples, refused = await metrics_of(proxy), await metrics_of(dead)
    assert value(refused, "tollgate_upstream_errors_total", kind="connect") == 1
    for kind in ("reset", "timeout", "5xx"):
        assert value(samples, "tollgate_upstream_errors_total", kind=kind) == 1, kind
    assert value(samples, "tollgate_upstream_errors_total", kind="connect") == 0
    assert label_values(samples, "tollgate_upstream_errors_total", "kind") == set(UPSTREAM_ERRORS)


async def test_per_user_labels_are_off_by_default(proxy: Proxy) -> None:
    """No user names in the metrics unless the operator asks for them."""
    await get(proxy, "/v1/models")
    _, text = await scrape(proxy.url("/metrics"))
    assert "tollgate_user_requests" not in text
    assert "alice" not in text


async def test_per_user_labels_are_capped(make_proxy: MakeProxy) -> None:
    """With a cap of one, the first user keeps a label and every later one counts as other."""
    proxy = await make_proxy(metrics=MetricsSettings(top_users=1))
    await get(proxy, "/v1/models", ALICE)
    await get(proxy, "/v1/models", BOB)
    await get(proxy, "/v1/models", ALICE)
    samples = await metrics_of(proxy)
    assert value(samples, "tollgate_user_requests_total", team="red", user="alice") == 2
    assert value(samples, "tollgate_user_requests_total", team="blue", user="other") == 1
    assert label_values(samples, "tollgate_user_requests_total", "user") == {"alice", "other"}


async def test_quota_and_spend_are_exported_before_the_quota_room_calls(proxy: Proxy) -> None:
    """Every limit kind and every policy team is exported at zero from the start."""
    samples = await metrics_of(proxy)
    for kind in QUOTA_KINDS:
        assert value(samples, "tollgate_quota_refusals_total", kind=kind) == 0
    assert value(samples, "tollgate_quota_bypasses_total") == 0
    assert value(samples, "tollgate_quota_store_errors_total") == 0
    teams = label_values(samples, "tollgate_spend_estimated_dollars_total", "team")
    assert teams == set(policy_for_tests().teams)


async def test_the_quota_interface_feeds_its_metrics(proxy: Proxy) -> None:
    """What the quota room calls shows up in /metrics: refusals, bypasses, store errors."""
    quota: QuotaMetrics = proxy.server.app[INSTRUMENTS].quota
    quota.refused("images")
    quota.refused("spend")
    quota.bypassed()
    quota.store_error()
    samples = await metrics_of(proxy)
    assert value(samples, "tollgate_quota_refusals_total", kind="images") == 1
    assert value(samples, "tollgate_quota_refusals_total", kind="requests") == 0
    assert value(samples, "tollgate_quota_bypasses_total") == 1
    assert value(samples, "tollgate_quota_store_errors_total") == 1


async def test_metrics_can_have_a_port_of_their_own(make_proxy: MakeProxy) -> None:
    """With a metrics port, /metrics is served there and not on the API port."""
    port = free_port()
    proxy = await make_proxy(metrics=MetricsSettings(port=port))
    assert await get(proxy, "/v1/models") == 200
    assert await get(proxy, "/metrics") == 404
    _, text = await scrape(f"http://127.0.0.1:{port}/metrics")
    samples = parse(text)
    assert total(samples, "tollgate_requests_total", operation="models.list") == 1


async def test_metrics_can_be_turned_off(make_proxy: MakeProxy) -> None:
    """TOLLGATE_METRICS__ENABLED=false: no /metrics at all."""
    proxy = await make_proxy(metrics=MetricsSettings(enabled=False))
    assert await get(proxy, "/metrics") == 404


def _held_upstream(arrived: asyncio.Event, release: asyncio.Event) -> web.Application:
    """An upstream that answers only once the test says so."""

    async def models(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    return app


async def test_the_in_flight_gauge_counts_requests_being_answered(
    proxy_before: ProxyBefore,
) -> None:
    """A request held upstream shows as in flight, and is gone once answered."""
    arrived, release = asyncio.Event(), asyncio.Event()
    proxy = await proxy_before(_held_upstream(arrived, release))
    request = asyncio.ensure_future(get(proxy, "/v1/models"))
    await asyncio.wait_for(arrived.wait(), timeout=30)  # a bound on a hang, not on speed
    held = value(await metrics_of(proxy), "tollgate_requests_in_flight")
    release.set()
    assert await request == 200
    assert held == 1
    assert value(await metrics_of(proxy), "tollgate_requests_in_flight") == 0


async def test_no_secret_ever_appears_in_the_metrics(
    make_proxy: MakeProxy, sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """Keys (client, upstream, admin) never show, not even with per-user labels on."""
    proxy = await make_proxy(metrics=MetricsSettings(top_users=10))
    for headers in (ALICE, BOB, {"Authorization": f"Bearer {UPSTREAM_KEY}"}):
        await get(proxy, "/v1/models", headers)
    _, text = await scrape(proxy.url("/metrics"))
    assert "tollgate_user_requests_total" in text
    for secret in (CLIENT_KEY, OTHER_KEY, UPSTREAM_KEY, BLUE_UPSTREAM_KEY, ADMIN_TOKEN):
        assert secret not in text
        assert secret[8:24] not in text


async def test_promtool_finds_nothing_to_lint(
    proxy: Proxy, sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """`promtool check metrics` passes on Tollgate's output after traffic of every kind."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: run scripts/test, which installs it"
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97}}
    await sdk.models.list()
    await sdk.models.list()
    await sdk.images.generate(prompt="an otter", model="dall-e-3", size="1024x1024")
    with pytest.raises(openai.BadRequestError):
        await sdk.images.generate(prompt="kill")
    await get(proxy, "/v1/models", {"Authorization": "Bearer nobody"})
    _, text = await scrape(proxy.url("/metrics"))
    check = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
    )
    said, _ = await check.communicate(text.encode())
    assert (check.returncode, said) == (0, b"")
    assert "tollgate_images_generated_total" in text


def test_a_multiprocess_directory_needs_the_process_switched(tmp_path: Path) -> None:
    """The app refuses a shared directory this process does not write its metrics to."""
    settings = MetricsSettings(multiproc_dir=tmp_path)
    with pytest.raises(RuntimeError, match="share_across_processes"):
        exposition_registry(settings, CollectorRegistry())


def test_settings_decide_the_multiprocess_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PROMETHEUS_MULTIPROC_DIR set by hand must agree with Tollgate's own setting."""
    monkeypatch.setenv("TOLLGATE_METRICS__MULTIPROC_DIR", str(tmp_path))
    assert Settings().metrics.multiproc_dir == tmp_path
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert Settings().metrics.multiproc_dir == tmp_path
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(ValidationError, match="PROMETHEUS_MULTIPROC_DIR"):
        Settings()
    monkeypatch.delenv("TOLLGATE_METRICS__MULTIPROC_DIR")
    with pytest.raises(ValidationError, match="PROMETHEUS_MULTIPROC_DIR"):
        Settings()


def test_image_labels_past_the_cap_count_as_other() -> None:
    """Clients choose image parameters, so only the first few label sets get their own."""
    meter = RequestMeter(CollectorRegistry(), top_users=0)
    for number in range(IMAGE_LABEL_SETS + 5):
        meter.image("red", f"model-{number}", "1024x1024", "hd").inc()
    meter.image("red", "model-0", "1024x1024", "hd").inc()
    samples = parse(generate_latest(meter.images).decode())
    models = label_values(samples, "tollgate_images_generated_total", "model")
    assert len(models) == IMAGE_LABEL_SETS + 1
    other = {"team": "red", "model": "other", "size": "other", "quality": "other"}
    assert value(samples, "tollgate_images_generated_total", **other) == 5
    first = {"team": "red", "model": "model-0", "size": "1024x1024", "quality": "hd"}
    assert value(samples, "tollgate_images_generated_total", **first) == 2


async def test_quota_refusals_and_spend_are_counted(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """A 429 counts under its limit's kind; each billable image adds its price to its team."""
    policy = without_moderation(policy_for_tests())
    limits = LimitsPolicy.model_validate({"default": ["2 images/day"]})
    proxy = await make_proxy(policy=policy.model_copy(update={"limits": limits}))
    client = openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key=CLIENT_KEY, max_retries=0)
    await client.images.generate(prompt="otter", model="dall-e-3", size="1024x1024")
    await client.images.generate(prompt="otter", model="dall-e-2", size="256x256")
    with pytest.raises(openai.RateLimitError):
        await client.images.generate(prompt="otter")
    await client.close()
    samples = await metrics_of(proxy)
    assert value(samples, "tollgate_quota_refusals_total", kind="images") == 1
    spend = value(samples, "tollgate_spend_estimated_dollars_total", team="red")
    assert spend == pytest.approx(0.040 + 0.016)


async def test_spend_of_an_operation_priced_per_request_is_counted(
    make_proxy: MakeProxy,
) -> None:
    """With no limits at all, an operation the price table prices per request still adds its
    price to the team's estimated spend on each billable answer."""
    policy = without_moderation(policy_for_tests())
    prices = PriceTable.model_validate({"operations": {"models.*": 0.01}})
    proxy = await make_proxy(policy=policy.model_copy(update={"prices": prices}))
    assert await get(proxy, "/v1/models") == 200
    assert await get(proxy, "/v1/models/gpt-4o") == 200
    samples = await metrics_of(proxy)
    spend = value(samples, "tollgate_spend_estimated_dollars_total", team="red")
    assert spend == pytest.approx(0.02)


def _finished_requests() -> list[tuple[str, Facts, Outcome]]:
    """Requests of every kind the metrics tell apart: operations (and none, refused before
    the route), statuses, teams, users, upstream errors, image parameters and counts."""
    requests: list[tuple[str, Facts, Outcome]] = []
    for number in range(96):
        facts = Facts()
        facts.team = ("red", "blue", None)[number % 3]
        facts.user = ("alice", "bob", "carol", None)[number % 4]
        if number % 5:
            operation = ("models.list", "images.generate", "moderations.create")[number % 3]
            facts.operation = operation
            model, n = ("dall-e-3", "dall-e-2", None)[number % 3 - 1], number % 4 or None
            complete = number % 7 != 3  # a form whose fields were not all read: priced at most
            facts.call = Call(operation, True, model, n=n, fields_complete=complete)
            facts.fields = {"n": n} if number % 11 < 5 else {}
            facts.upstream_seconds = number / 100 if number % 7 else None
            facts.upstream_error = ("timeout", "5xx", None, None)[number % 4]
            facts.upstream_status = (200, 500, 201, None)[number % 4]
        status = (200, 201, 400, 429, 502, 499)[number % 6]
        requests.append(("/v1/models", facts, Outcome(status, number * 10, number, number / 50)))
    return requests


PRICES = PriceTable.model_validate({"operations": {"moderations.*": 0.002}})


def _count_one(meter: RequestMeter, facts: Facts, outcome: Outcome) -> None:
    """What one finished request counts, updated at once: the reference for the rows."""
    operation, team = facts.operation or "none", facts.team or "none"
    meter.request(operation, outcome.status, team).inc()
    children = meter.operation(operation)
    children.duration.observe(outcome.seconds)
    children.bytes_in.inc(outcome.bytes_in)
    children.bytes_out.inc(outcome.bytes_out)
    if facts.upstream_seconds is not None:
        children.upstream.observe(facts.upstream_seconds)
    if facts.upstream_error is not None:
        meter.upstream_errors[facts.upstream_error].inc()
    if facts.user is not None:
        meter.user(team, facts.user).inc()
    if operation == "images.generate" and 200 <= outcome.status < 300:
        call = facts.call
        asked = (call.model or "none", call.size or "none", call.quality or "none")
        meter.image(team, *asked).inc(call.n or 1)
    if facts.operation is not None and 200 <= (facts.upstream_status or 0) < 300:
        micros = PRICES.cost(facts.call, images_asked(facts.call, facts.fields))
        if micros:
            meter.spent(team).inc(micros / 1_000_000)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        key: round(number, 9)
        for key, number in parse(generate_latest(registry).decode()).items()
        if not key[0].endswith("_created")
    }


def test_kept_rows_read_as_an_update_per_request_would() -> None:
    """Rows counted in bulk when the metrics are read give the same samples, every one, as
    updating each request's children as it finished (estimated spend included); in flight is
    back to zero."""
    direct_registry, rows_registry = CollectorRegistry(), CollectorRegistry()
    direct = RequestMeter(direct_registry, top_users=2)
    observer = RequestMetrics(RequestMeter(rows_registry, top_users=2), PRICES)
    for path, facts, outcome in _finished_requests():
        request = make_mocked_request("POST", path)
        observer.started(request)
        observer.finished(request, facts, outcome)
        _count_one(direct, facts, outcome)
    counted = _samples(rows_registry)
    assert counted == _samples(direct_registry)
    assert counted[("tollgate_requests_in_flight", frozenset())] == 0
    assert total(counted, "tollgate_images_generated_total") > 0
    assert total(counted, "tollgate_user_requests_total", user="other") > 0
    assert total(counted, "tollgate_spend_estimated_dollars_total") > 0


def test_rows_are_counted_when_a_batch_is_full_without_a_read() -> None:
    """Nobody scraping: every `BATCH` rows are counted all the same, and nothing is kept."""
    meter = RequestMeter(CollectorRegistry(), top_users=0)
    observer = RequestMetrics(meter, PriceTable())
    facts, outcome = Facts(), Outcome(200, 0, 0, 0.01)
    facts.operation, facts.team = "models.list", "red"
    request = make_mocked_request("GET", "/v1/models")
    for _ in range(BATCH * 2 + 1):
        observer.started(request)
        observer.finished(request, facts, outcome)
    assert current(meter.request("models.list", 200, "red")) == BATCH * 2
    observer.fold()
    assert current(meter.request("models.list", 200, "red")) == BATCH * 2 + 1
