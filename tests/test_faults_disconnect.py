"""Clients that leave half way: mid-upload and mid-stream. The upstream request is cancelled
(the fake upstream sees its client go), the request is logged as 499, and nothing leaks: the
counts of asyncio tasks, of sockets between Tollgate and upstream (both ends) and of open file
descriptors are exactly what they were before, pooled keep-alive connections included.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.policy import Policy
from tests.conftest import CLIENT_KEY, MakeProxy, Proxy, Upstream, policy_for_tests
from tests.conftest import without_moderation as no_moderation
from tests.healthy import AUTH, assert_healthy
from tests.samples import png

BOUND = 200  # polls of 25 ms: how long anything here may take to settle, at most


def _socket_inodes() -> set[str]:
    """The inodes of this process's open sockets."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed since it was listed
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _tcp_ends(port: int) -> tuple[int, int]:
    """This process's TCP sockets connected to `port`, and accepted on it (any state)."""
    ours, to_port, on_port = _socket_inodes(), 0, 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode not in ours or inode == "0":
                continue
            if int(remote.rsplit(":", 1)[1], 16) == port:
                to_port += 1
            elif int(local.rsplit(":", 1)[1], 16) == port and int(fields[3], 16) != 0x0A:
                on_port += 1  # accepted connections, not the listening socket
    return to_port, on_port


@dataclass(frozen=True)
class Resources:
    """What a leak would show in."""

    tasks: int
    fds: int
    to_upstream: int  # Tollgate's connections to upstream: its pool
    at_upstream: int  # the same connections as upstream accepted them
    temp_files: frozenset[str]  # files open in the temporary directory (a held form on disk)


def resources(upstream_port: int) -> Resources:
    fds = os.listdir("/proc/self/fd")
    to_upstream, at_upstream = _tcp_ends(upstream_port)
    return Resources(
        tasks=len(asyncio.all_tasks()),
        fds=len(fds),
        to_upstream=to_upstream,
        at_upstream=at_upstream,
        temp_files=_temp_files(),
    )


def _temp_files() -> frozenset[str]:
    """Descriptors open on files in the temporary directory (pytest's capture files too)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(tempfile.gettempdir()):
            found.add(f"{fd} -> {target}")
    return frozenset(found)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for `condition`; fail naming `what` if it never holds."""
    for _ in range(BOUND):
        if condition():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"never happened: {what}")


async def settled(upstream: Upstream, expected: Resources) -> Resources:
    """The resources once closing connections and finishing tasks have had their turn: the
    first reading equal to `expected`, or the last one (the leak) after the bound."""
    now = resources(upstream.server.port or 0)
    for _ in range(BOUND):
        if now == expected:
            break
        await asyncio.sleep(0.025)
        now = resources(upstream.server.port or 0)
    return now


async def steady(proxy: Proxy, upstream: Upstream) -> Resources:
    """A healthy proxy with its pooled connection to upstream open, and the resources then."""
    await assert_healthy(proxy)
    await asyncio.sleep(0)
    before = resources(upstream.server.port or 0)
    assert before.to_upstream == before.at_upstream == 1  # one pooled keep-alive connection
    return await settled(upstream, before)


async def after_fault(proxy: Proxy, upstream: Upstream, before: Resources) -> None:
    """Healthy again (a normal request through the pool), and nothing more held than before."""
    await assert_healthy(proxy)
    assert await settled(upstream, before) == before


def last_line(proxy: Proxy) -> dict[str, Any]:
    """The latest log line (empty before the first)."""
    lines = proxy.log_lines()
    line: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return line


async def test_a_client_leaving_mid_stream_cancels_upstream_and_leaks_nothing(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """The client reads the first event of a run and hangs up: upstream's stream is dropped."""
    upstream.state.knobs.event_pause = 0.1  # the run's 14 events would take over a second
    proxy = await make_proxy()
    before = await steady(proxy, upstream)
    body = {"assistant_id": "asst_1", "stream": True}
    async with aiohttp.ClientSession() as client:
        url = proxy.url("/v1/threads/thread_1/runs")
        async with client.post(url, json=body, headers=AUTH) as response:
            first = await response.content.readuntil(b"\n\n")
            assert first.startswith(b"event: thread.run.created")
            response.close()
    path = "/v1/threads/thread_1/runs"
    await until(lambda: path in upstream.state.cut_off, "upstream saw its client go")
    await until(lambda: last_line(proxy).get("path") == path, "the stream's log line")
    assert (last_line(proxy)["status"], last_line(proxy)["aborted"]) == (499, "client_gone")
    await after_fault(proxy, upstream, before)


async def _upload_head(proxy: Proxy, path: str, content_type: str, head: bytes, total: int) -> Any:
    """Start a request whose body is `total` bytes long, send its first `head`, and return
    the connection's writer, to hang up with."""
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {CLIENT_KEY}",
        f"Content-Type: {content_type}",
        f"Content-Length: {total}",
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + head)
    await writer.drain()
    return writer


PART_HEAD = (
    b'--b\r\nContent-Disposition: form-data; name="data"; filename="part"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


def _edit_head(file_bytes: int) -> bytes:
    """An image edit form: its fields, then the start of the image file."""
    fields = b"".join(
        f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in {"prompt": "an otter", "model": "dall-e-2"}.items()
    )
    image = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="otter.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png(1)
    )
    return fields + image + b"\x00" * file_bytes


STREAMED = [
    pytest.param("/v1/uploads/upload_1/parts", PART_HEAD + b"x" * 65536, {}, id="upload-part"),
    pytest.param(
        "/v1/images/edits",
        _edit_head(65536),
        {"validation": "off", "policy": no_moderation(policy_for_tests())},
        id="image-edit-streamed",
    ),
]


@pytest.mark.parametrize(("path", "head", "settings"), STREAMED)
async def test_a_client_leaving_mid_upload_cancels_upstream_and_leaks_nothing(
    make_proxy: MakeProxy, upstream: Upstream, path: str, head: bytes, settings: dict[str, Any]
) -> None:
    """A body streamed on as it comes: upstream has begun receiving it when the client hangs
    up, and sees its own client (Tollgate) go too."""
    proxy = await make_proxy(**settings)
    before = await steady(proxy, upstream)
    writer = await _upload_head(proxy, path, "multipart/form-data; boundary=b", head, 8 << 20)
    await until(lambda: path in upstream.state.arrived, "the upload reached upstream")
    writer.transport.abort()
    await until(lambda: path in upstream.state.cut_off, "upstream saw its client go")
    await until(lambda: last_line(proxy).get("path") == path, "the upload's log line")
    assert last_line(proxy)["status"] == 499
    assert not [seen for seen in upstream.state.received if seen.path == path]
    await after_fault(proxy, upstream, before)


async def test_a_client_leaving_while_its_form_is_held_leaves_no_spool(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """A form held for validation and moderation, already spooled to disk, when the client
    hangs up: nothing reaches upstream, and the spool file is closed and gone."""
    policy: Policy = policy_for_tests()
    proxy = await make_proxy(policy=policy)
    before = await steady(proxy, upstream)
    head = _edit_head(3 << 20)  # past the 1 MiB held in memory: the spool is a file
    writer = await _upload_head(
        proxy, "/v1/images/edits", "multipart/form-data; boundary=b", head, 8 << 20
    )
    await until(lambda: _temp_files() > before.temp_files, "the held form spooled to disk")
    writer.transport.abort()
    await until(lambda: last_line(proxy).get("path") == "/v1/images/edits", "the upload's log line")
    assert last_line(proxy)["status"] == 499
    assert "/v1/images/edits" not in upstream.state.arrived
    await after_fault(proxy, upstream, before)
