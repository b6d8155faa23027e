"""Fuzzing the documented operations through a real Tollgate with schemathesis.

schemathesis (4.x) generates requests from the OpenAI spec in `tests/openapi`, both
valid ones (positive) and ones that break the spec (negative), for exactly the operations in
`proxy/endpoints.py`; each is sent with `Case.call` to a real Tollgate in front of the fake
upstream, both on loopback, served from a thread of their own (schemathesis calls are
synchronous). Bounded: a few examples an operation, no deadline, a 10 s timeout a call.

The rule: Tollgate never answers 5xx of its own (a 5xx may only be upstream's, relayed), and
every 4xx is OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.openapi import from_dict

from proxy.app import create_app
from proxy.endpoints import ENDPOINTS, BodyKind
from proxy.fake_upstream import FAKE_UPSTREAM, FakeUpstream, create_fake_upstream
from proxy.server import TollgateRunner
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, policy_for_tests, proxy_settings
from tests.exposure import Exposure

SPEC = Path(__file__).resolve().parent / "openapi" / "openapi.yaml"  # README.md beside it
OPERATIONS = [(e.method, e.pattern.removeprefix("/v1")) for e in ENDPOINTS]
EXAMPLES = 10  # an operation and a generation mode
FORMS = {
    e.pattern.removeprefix("/v1") for e in ENDPOINTS if e.body in (BodyKind.FORM, BodyKind.PART)
}
CALL_TIMEOUT = 10.0


@dataclass
class Served:
    """Tollgate and the fake upstream running on loopback in a thread of their own."""

    url: str
    upstream: FakeUpstream
    logs: io.BytesIO


async def _start(
    site_app: web.Application, runner_class: type[web.AppRunner] = web.AppRunner
) -> tuple[web.AppRunner, int]:
    runner = runner_class(site_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, port


async def _serve(
    ready: threading.Event, stop: asyncio.Event, out: list[Served], exposure: Exposure
) -> None:
    """Run both servers until `stop` is set (Tollgate watched for leaks, like the fixtures')."""
    fake = create_fake_upstream()
    fake[FAKE_UPSTREAM].knobs.expected_key = UPSTREAM_KEY
    upstream_runner, upstream_port = await _start(fake)
    logs = io.BytesIO()
    settings_ = proxy_settings(f"http://127.0.0.1:{upstream_port}")
    app = create_app(settings_, policy=policy_for_tests(), log_stream=logs)
    exposure.learn_settings(settings_)
    exposure.watch(app, "the fuzzed proxy")
    runner, port = await _start(app, TollgateRunner)
    out.append(Served(f"http://127.0.0.1:{port}/v1", fake[FAKE_UPSTREAM], logs))
    ready.set()
    await stop.wait()
    await runner.cleanup()
    await upstream_runner.cleanup()
    exposure.record("log of the fuzzed proxy", logs.getvalue())


@pytest.fixture(scope="module")
def served(exposure: Exposure) -> Iterator[Served]:
    """Start the servers in a thread with its own event loop; stop them after the module."""
    loop = asyncio.new_event_loop()
    ready, stop, out = threading.Event(), asyncio.Event(), list[Served]()
    serving = _serve(ready, stop, out, exposure)
    thread = threading.Thread(target=loop.run_until_complete, args=(serving,))
    thread.start()
    assert ready.wait(30), "the servers did not start"
    yield out[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    loop.close()


@pytest.fixture(scope="module")
def spec() -> schemathesis.BaseSchema:
    """The OpenAI spec (server `/v1`), narrowed to Tollgate's documented operations."""
    raw: dict[str, Any] = yaml.load(SPEC.read_text(), Loader=yaml.CSafeLoader)
    paths = {path for _, path in OPERATIONS}
    raw["paths"] = {path: item for path, item in raw["paths"].items() if path in paths}
    return from_dict(raw)


def _openai_error(body: Any) -> bool:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"message", "type", "param", "code"}
        and isinstance(body["error"]["message"], str)
    )


FuzzCase = schemathesis.Case[Any]


def _check(case: FuzzCase, served: Served) -> None:
    """Send `case` through Tollgate; hold its answer to the rule."""
    before = len(served.upstream.received)
    headers = {**dict(case.headers or {}), "Authorization": f"Bearer {CLIENT_KEY}"}
    response = case.call(base_url=served.url, headers=headers, timeout=CALL_TIMEOUT)
    reached_upstream = len(served.upstream.received) > before
    if response.status_code >= 500:
        assert reached_upstream, f"Tollgate's own {response.status_code}: {response.text}"
    if 400 <= response.status_code < 500:
        assert _openai_error(response.json()), response.text
    assert b"unhandled_error" not in served.logs.getvalue()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzzed_requests_get_openai_shaped_answers(
    spec: schemathesis.BaseSchema, served: Served, method: str, path: str
) -> None:
    """Valid and invalid requests alike: no 5xx from Tollgate, every 4xx in OpenAI's shape;
    both generation modes reach every operation, and the form operations get forms."""
    operation = spec[path][method]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES * 2,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run, so a CI failure can be replayed
        suppress_health_check=list(HealthCheck),
    )
    def run(case: FuzzCase) -> None:
        assert case.meta is not None
        seen.add((case.meta.generation.mode, case.media_type))
        _check(case, served)

    seen: set[tuple[GenerationMode, str | None]] = set()
    run()
    assert {mode for mode, _ in seen} == {GenerationMode.POSITIVE, GenerationMode.NEGATIVE}
    if path in FORMS:  # the form operations are fuzzed as forms, not only as JSON
        assert "multipart/form-data" in {media for _, media in seen}
