"""The log room, and the rule that no key ever shows: not in logs, answers, errors or repr."""

from __future__ import annotations

import asyncio
import io
import json
import re
from datetime import UTC, datetime

import aiohttp
import openai
import pytest
from aiohttp.test_utils import make_mocked_request

from proxy.context import Facts, Outcome
from proxy.log import CanonicalLine, JsonCanonicalLine, build_logger
from proxy.settings import LogSettings, Settings
from tests.conftest import (
    CLIENT_KEY,
    OTHER_KEY,
    UPSTREAM_KEY,
    MakeProxy,
    Proxy,
    Upstream,
    free_port,
    proxy_settings,
)

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
FIELDS = {
    "request_id",
    "key_id",
    "user",
    "team",
    "operation",
    "model",
    "status",
    "upstream_status",
    "upstream_error",
    "upstream_ms",
    "bytes_in",
    "bytes_out",
    "latency_ms",
    "method",
    "path",
    "aborted",
    "event",
    "level",
    "timestamp",
}


async def test_one_json_line_per_request(proxy: Proxy, sdk: openai.AsyncOpenAI) -> None:
    """Each request writes exactly one JSON line with the canonical fields."""
    await sdk.images.generate(prompt="an otter", model="dall-e-3", n=1)
    await sdk.models.retrieve("gpt-4o")
    lines = [json.loads(line) for line in proxy.log_lines()]
    assert len(lines) == 2
    assert all(set(line) >= FIELDS for line in lines)
    image, model = lines
    assert (image["operation"], image["model"], image["status"]) == (
        "images.generate",
        "dall-e-3",
        200,
    )
    assert (image["key_id"], image["user"], image["team"]) == ("key_alice", "alice", "red")
    assert image["bytes_in"] > 0
    assert image["bytes_out"] > 0
    assert image["latency_ms"] >= 0
    for line in lines:  # ISO 8601 in UTC, as structlog's stamp writes it
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", line["timestamp"])
        written = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - written).total_seconds()) < 60
        assert (line["level"], line["event"]) == ("info", "request")
    assert (model["operation"], model["model"], model["upstream_status"]) == (
        "models.retrieve",
        "gpt-4o",
        200,
    )


TIMESTAMP = re.compile(rb'"timestamp":"[0-9T:.Z-]+"')


def test_the_json_line_is_the_one_structlog_would_write() -> None:
    """The short JSON path writes, byte for byte, what the structlog logger writes for the
    same request (the time stamp aside), nested facts and a made-up request id included."""
    facts = Facts()
    facts.key_id, facts.user, facts.team = "key_alice", "alice", "red"
    facts.operation = "images.generate"
    facts.model, facts.upstream_status, facts.upstream_seconds = "dall-e-3", 200, 0.0123456
    facts.moderation = {"result": "clean", "categories": ["hate"], "score": 0.5}
    facts.quota, facts.quota_cost = "admitted", {"requests": 1, "spend_micros": 40000}
    facts.quota_shadow = ["user alice: 5/minute shadow"]
    outcome = Outcome(status=200, bytes_in=31, bytes_out=512, seconds=0.0456789)
    request = make_mocked_request("POST", "/v1/images/generations?x=%C3%A9")
    short_stream = io.BytesIO()
    JsonCanonicalLine(short_stream).finished(request, facts, outcome)
    structlog_stream = io.BytesIO()
    logger = build_logger(LogSettings(format="json"), structlog_stream, exceptions=False)
    CanonicalLine(logger).finished(request, facts, outcome)
    line = short_stream.getvalue()
    assert json.loads(line)["request_id"].startswith("req_")
    assert TIMESTAMP.sub(b"", line) == TIMESTAMP.sub(b"", structlog_stream.getvalue())


async def test_no_request_line_above_the_info_level(make_proxy: MakeProxy) -> None:
    """The canonical line is written at `info`: a warning level leaves it out."""
    proxy = await make_proxy(log=LogSettings(format="json", level="warning"))
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as response:
            assert response.status == 200
    assert proxy.log_lines() == []


async def test_refusals_are_logged_too(proxy: Proxy) -> None:
    """A request refused by Tollgate still gets its line, with its status and no key id."""
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url("/v1/models")) as response:
            assert response.status == 401
    line = json.loads(proxy.log_lines()[-1])
    assert (line["status"], line["key_id"], line["upstream_status"]) == (401, None, None)


async def _traffic(proxy: Proxy, upstream: Upstream) -> list[str]:
    """Successes, refusals and failures of every kind; returns everything the client saw."""
    seen: list[str] = []
    requests = [
        ("GET", "/v1/models", AUTH, None),
        ("POST", "/v1/moderations", AUTH, {"input": f"my key is {CLIENT_KEY}"}),
        ("GET", "/v1/models", {"Authorization": f"Bearer {OTHER_KEY}x"}, None),
        ("GET", "/v1/models", {"Authorization": f"Bearer {UPSTREAM_KEY}"}, None),
        ("POST", "/v1/images/generations", AUTH, {"prompt": "x" * 10}),
        ("GET", "/nowhere", AUTH, None),
    ]
    async with aiohttp.ClientSession() as client:
        for method, path, headers, body in requests:
            async with client.request(method, proxy.url(path), headers=headers, json=body) as r:
                seen.append(json.dumps(dict(r.headers)) + await r.text())
        upstream.state.knobs.status = 500
        async with client.get(proxy.url("/v1/models"), headers=AUTH) as r:
            seen.append(json.dumps(dict(r.headers)) + await r.text())
    return seen


async def test_no_key_ever_appears_in_logs_answers_or_errors(
    make_proxy: MakeProxy, upstream: Upstream
) -> None:
    """Neither the upstream key nor any client key is in a log line, answer or error body."""
    proxy = await make_proxy()
    answers = await _traffic(proxy, upstream)
    dead = await make_proxy(f"http://127.0.0.1:{free_port()}")
    async with aiohttp.ClientSession() as client:
        async with client.get(dead.url("/v1/models"), headers=AUTH) as r:
            answers.append(await r.text())
    everything = "\n".join([proxy.log_text(), dead.log_text(), *answers])
    assert len(proxy.log_lines()) == 7
    for secret in (UPSTREAM_KEY, CLIENT_KEY, OTHER_KEY):
        assert secret not in everything
        assert secret[8:24] not in everything


def test_settings_never_show_secrets_in_repr() -> None:
    """The upstream key, organization, project and Redis URL are SecretStr everywhere."""
    settings = proxy_settings("http://127.0.0.1:1")
    text = repr(settings) + str(settings) + settings.model_dump_json()
    assert UPSTREAM_KEY not in text
    assert "org-central" not in text


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """TOLLGATE_* variables, nested with "__", configure the process."""
    monkeypatch.setenv("TOLLGATE_UPSTREAM__BASE_URL", "http://upstream.test:9000")
    monkeypatch.setenv("TOLLGATE_UPSTREAM__API_KEY", "sk-from-env")
    monkeypatch.setenv("TOLLGATE_PORT", "9999")
    monkeypatch.setenv("TOLLGATE_PASSTHROUGH", "false")
    settings = Settings()
    assert settings.upstream.origin == "http://upstream.test:9000"
    assert settings.upstream.api_key is not None
    assert settings.upstream.api_key.get_secret_value() == "sk-from-env"
    assert (settings.port, settings.passthrough) == (9999, False)
    assert re.search("sk-from-env", repr(settings)) is None


def test_defaults_are_openai_on_loopback() -> None:
    """Out of the box: api.openai.com upstream, 127.0.0.1:8080, memory store."""
    settings = Settings()
    assert settings.upstream.origin == "https://api.openai.com"
    assert (settings.host, settings.port, settings.store) == ("127.0.0.1", 8080, "memory")


class _CountingStream(io.BytesIO):
    """A log stream that counts its flushes and what each one covered."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[int] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue().count(b"\n"))


async def test_json_lines_of_one_loop_turn_are_flushed_together() -> None:
    """Three answers finished in one turn of the event loop: three lines written at once,
    one flush for them all when the turn is over, before anything waits for I/O."""
    facts, outcome = Facts(), Outcome(status=200, bytes_in=0, bytes_out=10, seconds=0.01)
    request = make_mocked_request("GET", "/v1/models")
    stream = _CountingStream()
    line = JsonCanonicalLine(stream)
    for _ in range(3):
        line.finished(request, facts, outcome)
    assert stream.getvalue().count(b"\n") == 3
    assert stream.flushed == []
    await asyncio.sleep(0)
    assert stream.flushed == [3]
    line.finished(request, facts, outcome)
    await asyncio.sleep(0)
    assert stream.flushed == [3, 4]
