"""`tollgate serve --workers N`: many processes on one port, and no request lost on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "tollgate.example.yaml"
AUTH = {"Authorization": "Bearer tg-demo-key-change-me"}


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else b""
            try:
                async with client.get(url) as response:
                    await response.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"nothing answered at {url}")


@pytest.fixture
async def slow_upstream() -> AsyncIterator[str]:
    """`tollgate fake-upstream` answering after one second, and streaming slowly; up and
    listening before the test starts."""
    port = free_port()
    process = _spawn(
        "fake-upstream", "--port", str(port), "--latency", "1.0", "--event-pause", "0.1"
    )
    await _wait_until_up(f"http://127.0.0.1:{port}/v1/nowhere", process)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    if process.stderr:
        process.stderr.close()


def _serve(
    upstream: str, port: int, workers: int, redis: RedisServer | None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TOLLGATE_UPSTREAM__BASE_URL": upstream,
        "TOLLGATE_SHUTDOWN_GRACE": "15",
        "TOLLGATE_DATA_FILE": "",
    }
    if redis is not None:
        env |= {"TOLLGATE_STORE": "redis", "TOLLGATE_REDIS__URL": redis.url}
    return _spawn(
        "serve", "--port", str(port), "--workers", str(workers), "--config", str(EXAMPLE), env=env
    )


async def _moderate(client: aiohttp.ClientSession, url: str) -> int:
    async with client.post(url, json={"input": "hello"}, headers=AUTH) as response:
        await response.read()
        return response.status


async def _stream(client: aiohttp.ClientSession, url: str, started: asyncio.Event) -> bytes:
    body = {"assistant_id": "asst_1", "stream": True}
    async with client.post(url, json=body, headers=AUTH) as response:
        assert response.status == 200
        seen = b""
        async for chunk in response.content.iter_any():
            seen += chunk
            started.set()
        return seen


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_lets_requests_in_flight_finish(
    slow_upstream: str, redis_server: RedisServer, workers: int
) -> None:
    """SIGTERM during load: every request in flight, and a stream, completes; exit code 0."""
    port = free_port()
    process = _serve(slow_upstream, port, workers, redis_server if workers > 1 else None)
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_until_up(f"{base}/healthz", process)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
            started = asyncio.Event()
            stream = asyncio.create_task(_stream(client, f"{base}/v1/threads/t/runs", started))
            calls = [
                asyncio.create_task(_moderate(client, f"{base}/v1/moderations")) for _ in range(12)
            ]
            await asyncio.wait_for(started.wait(), 10)
            process.send_signal(signal.SIGTERM)
            statuses = await asyncio.gather(*calls)
            events = await stream
        assert statuses == [200] * 12
        assert events.endswith(b"data: [DONE]\n\n")
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()


def test_many_workers_need_a_shared_store() -> None:
    """With the memory store, more than one worker is refused with a clear message."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--workers", "2", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")},
    )
    assert result.returncode == 2
    assert "TOLLGATE_STORE=redis" in result.stderr


def _children(pid: int) -> list[int]:
    """The direct children of `pid`, from /proc."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


async def test_workers_stop_when_their_master_is_killed(
    slow_upstream: str, redis_server: RedisServer
) -> None:
    """SIGKILL on the master leaves no worker serving unmanaged: each one stops by itself."""
    port = free_port()
    process = _serve(slow_upstream, port, 2, redis_server)
    workers: list[int] = []
    try:
        await _wait_until_up(f"http://127.0.0.1:{port}/healthz", process)
        workers = _children(process.pid)
        assert len(workers) == 2
        process.kill()
        process.wait(timeout=10)
        for _ in range(200):  # up to 20 s for a graceful stop
            if not any(_alive(pid) for pid in workers):
                break
            await asyncio.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for pid in workers:  # never leave a worker behind, even when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.stderr:
            process.stderr.close()
