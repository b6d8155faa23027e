"""The Grafana dashboard: every query it runs returns data from a real Prometheus scraping a
running Tollgate under load; its provisioning names one data source."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from asyncio.subprocess import DEVNULL
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from proxy.policy import Policy
from proxy.settings import AuthSettings, MetricsSettings
from tests.conftest import (
    CLIENT_KEY,
    OTHER_KEY,
    MakeProxy,
    Proxy,
    Upstream,
    free_port,
    policy_for_tests,
)

DEPLOY = Path(__file__).parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "tollgate.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
ALICE = {"Authorization": f"Bearer {CLIENT_KEY}"}
# What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$team": ".*"}
ROUNDS = 120  # about a minute at most


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def expressions() -> list[str]:
    """Every PromQL expression of every panel, with Grafana's variables filled in."""
    found = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, replacement in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, replacement)
            assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
            found.append(expr)
    return found


def test_every_panel_queries_the_provisioned_data_source() -> None:
    """Panels and the team variable name the uid Grafana's provisioning gives Prometheus."""
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert [(s["type"], s["uid"]) for s in provisioned] == [("prometheus", "prometheus")]
    assert panels()
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus"
    variables = dashboard()["templating"]["list"]
    assert [(v["name"], v["datasource"]["uid"]) for v in variables] == [("team", "prometheus")]


def test_the_dashboard_covers_what_operators_asked_for() -> None:
    """Traffic, errors, latency, cache, moderation, quota, images, spend and users each have
    a panel, and each panel reads Tollgate's own metrics."""
    text = " ".join(expressions())
    for metric in (
        "tollgate_requests_total",
        "tollgate_request_duration_seconds_bucket",
        "tollgate_upstream_duration_seconds_bucket",
        "tollgate_upstream_errors_total",
        "tollgate_cache_requests_total",
        "tollgate_moderation_flagged_total",
        "tollgate_quota_refusals_total",
        "tollgate_images_generated_total",
        "tollgate_spend_estimated_dollars_total",
        "tollgate_user_requests_total",
    ):
        assert metric in text
    for expr in expressions():
        assert re.search(r"tollgate_\w+", expr), expr


@asynccontextmanager
async def prometheus(target: str, tmp_path: Path) -> AsyncIterator[str]:
    """A real Prometheus on loopback scraping `target` every second; stopped on the way out."""
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is not installed: run scripts/test, which installs it"
    config = tmp_path / "prometheus.yml"
    scrape = {"job_name": "tollgate", "static_configs": [{"targets": [target]}]}
    config.write_text(
        yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]})
    )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=DEVNULL,
        stderr=DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _until_ready(url)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def _until_ready(url: str) -> None:
    async with aiohttp.ClientSession() as client:
        for _ in range(400):
            try:
                async with client.get(url + "/-/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("prometheus did not become ready")


async def query(client: aiohttp.ClientSession, url: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector `expr` evaluates to now."""
    async with client.get(url + "/api/v1/query", params={"query": expr}) as response:
        answer = await response.json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def load(proxy: Proxy, sdk: openai.AsyncOpenAI, upstream: Upstream) -> None:
    """One round of everything the dashboard shows: cache misses and hits, images, a
    moderation refusal, an upstream 5xx and a refused key."""
    await sdk.models.list()
    await sdk.models.list()
    await sdk.images.generate(prompt="an otter", model="dall-e-3", quality="hd")
    with pytest.raises(openai.BadRequestError):
        await sdk.images.generate(prompt="kill the otter")
    upstream.state.knobs.status = 500
    with pytest.raises(openai.InternalServerError):
        await sdk.files.list()
    upstream.state.knobs.status = None
    async with aiohttp.ClientSession() as client:
        for headers in ({"Authorization": f"Bearer {OTHER_KEY}"}, {"Authorization": "Bearer x"}):
            async with client.get(proxy.url("/v1/models"), headers=headers) as response:
                await response.read()


def _no_strikes() -> Policy:
    """The test policy with no strike limit: the load sends a refused prompt every round."""
    policy = policy_for_tests()
    moderation = policy.moderation.model_copy(update={"strikes": None})
    return policy.model_copy(update={"moderation": moderation})


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    make_proxy: MakeProxy, upstream: Upstream, tmp_path: Path
) -> None:
    """Prometheus scrapes a Tollgate under load until every panel's query has data."""
    proxy = await make_proxy(
        policy=_no_strikes(),
        metrics=MetricsSettings(top_users=10),
        auth=AuthSettings(max_failures=0),  # every round has a refused key, from one address
    )
    upstream.state.knobs.flagged = {"kill": {"violence": 0.97}}
    sdk = openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key=CLIENT_KEY, max_retries=0)
    empty = expressions()
    async with sdk, prometheus(f"127.0.0.1:{proxy.server.port}", tmp_path) as url:
        async with aiohttp.ClientSession() as client:
            for _ in range(ROUNDS):
                await load(proxy, sdk, upstream)
                empty = [expr for expr in empty if not await query(client, url, expr)]
                if not empty:
                    break
                await asyncio.sleep(0.25)
            assert empty == []
            await _check_values(client, url)


async def _check_values(client: aiohttp.ClientSession, url: str) -> None:
    """Beyond having data: the numbers say what the load did."""

    async def single(expr: str) -> float:
        result = await query(client, url, expr)
        return float(result[0]["value"][1])

    async with client.get(
        url + "/api/v1/label/team/values", params={"match[]": "tollgate_requests_total"}
    ) as response:
        teams = (await response.json())["data"]
    assert {"red", "blue", "none"} <= set(teams)  # the dashboard's team variable
    assert await single('tollgate_cache_requests_total{result="hit"}') > 0
    assert await single('tollgate_moderation_flagged_total{category="violence"}') > 0
    assert await single('sum(tollgate_images_generated_total{team="red"})') > 0
    assert await single('tollgate_user_requests_total{team="red", user="alice"}') > 0
    assert await single('tollgate_quota_refusals_total{kind="spend"}') == 0
