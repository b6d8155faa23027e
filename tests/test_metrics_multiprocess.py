"""Worker processes sharing one metrics directory: any one's /metrics reports them all."""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import DEVNULL, Process
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from proxy.keys import hash_key
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, Upstream, free_port
from tests.metrics_text import Samples, parse, scrape, value

ALICE = {"Authorization": f"Bearer {CLIENT_KEY}"}
MODELS_OK = {"operation": "models.list", "status_class": "2xx", "team": "red"}


def _policy(directory: Path) -> Path:
    policy = directory / "policy.yaml"
    policy.write_text(
        "teams: {default: {}, red: {}}\n"
        f"keys: [{{id: key_alice, sha256: {hash_key(CLIENT_KEY)}, user: alice, team: red}}]\n"
    )
    return policy


@asynccontextmanager
async def serving(
    port: int, metrics_port: int, upstream: Upstream, shared: Path, tmp: Path
) -> AsyncIterator[str]:
    """A real `tollgate serve` process on `port`; stopped (SIGTERM) on the way out."""
    env = {
        **os.environ,
        "TOLLGATE_PORT": str(port),
        "TOLLGATE_METRICS__PORT": str(metrics_port),
        "TOLLGATE_UPSTREAM__BASE_URL": upstream.url,
        "TOLLGATE_UPSTREAM__API_KEY": UPSTREAM_KEY,
        "TOLLGATE_CONFIG_FILE": str(_policy(tmp)),
        "TOLLGATE_DATA_FILE": str(tmp / f"keys-{port}.json"),
        "TOLLGATE_METRICS__MULTIPROC_DIR": str(shared),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "serve", env=env, stdout=DEVNULL, stderr=DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _until_up(url, process)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def _until_up(url: str, process: Process) -> None:
    async with aiohttp.ClientSession() as client:
        for _ in range(400):
            if process.returncode is not None:
                raise RuntimeError(f"tollgate serve exited with {process.returncode}")
            try:
                async with client.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"tollgate serve did not answer on {url}")


async def _models(url: str, times: int) -> None:
    async with aiohttp.ClientSession() as client:
        for _ in range(times):
            async with client.get(url + "/v1/models", headers=ALICE) as response:
                assert response.status == 200
                await response.read()


async def _metrics(url: str) -> Samples:
    _, text = await scrape(url + "/metrics")
    return parse(text)


async def test_two_processes_add_up_in_one_scrape(upstream: Upstream, tmp_path: Path) -> None:
    """Two processes on one directory and one metrics port: every scrape sums both, whichever
    process answers it, and a stopped process's counts stay while its in-flight gauge goes."""
    shared, metrics = tmp_path / "metrics", f"http://127.0.0.1:{free_port()}"
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    port = int(metrics.rsplit(":", 1)[1])
    async with serving(free_port(), port, upstream, shared, first_dir) as first:
        async with serving(free_port(), port, upstream, shared, second_dir) as second:
            await _models(first, 2)
            await _models(second, 3)
            for _ in range(6):
                samples = await _metrics(metrics)
                assert value(samples, "tollgate_requests_total", **MODELS_OK) == 5
                assert value(samples, "tollgate_cache_requests_total", result="miss") == 2
                assert value(samples, "tollgate_cache_requests_total", result="hit") == 3
                assert value(samples, "tollgate_requests_in_flight") == 0
            live = sorted(path.name for path in shared.iterdir() if "livesum" in path.name)
            assert len(live) == 2
        samples = await _metrics(metrics)
        assert value(samples, "tollgate_requests_total", **MODELS_OK) == 5
        assert len([path for path in shared.iterdir() if "livesum" in path.name]) == 1
