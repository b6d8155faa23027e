"""The suite's leak detector finds a secret wherever Tollgate wrote it, and fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import redis
from pydantic import SecretStr

from tests.conftest import (
    ADMIN_TOKEN,
    CLIENT_KEY,
    MakeProxy,
    RedisServer,
    Upstream,
    proxy_settings,
    redis_contents,
)
from tests.exposure import Exposure

ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_a_secret_is_found_whole_or_in_part_and_named_never_shown() -> None:
    """A secret, or a long piece of its middle, is reported by name and place, blanked out."""
    exposure = Exposure()
    exposure.learn("the key", CLIENT_KEY)
    exposure.learn("too short", "abc")
    exposure.record("log", b'{"path": "/v1/' + CLIENT_KEY.encode() + b'"}')
    exposure.record("answer", b"masked: " + CLIENT_KEY[10:40].encode() + b"***")
    exposure.record("metrics", b"nothing to see, abc")
    exposure.scan("test_x")
    found = [(leak.secret, leak.where, leak.test) for leak in exposure.leaks]
    assert found == [("the key", "log", "test_x"), ("the key (a part of it)", "answer", "test_x")]
    assert all(CLIENT_KEY[10:26] not in str(leak) for leak in exposure.leaks)
    assert exposure.records == []


def test_every_secret_of_the_settings_is_learned() -> None:
    """Each SecretStr in the settings, nested ones included, is watched for."""
    settings = proxy_settings("http://127.0.0.1:1", pseudonym_secret=SecretStr("pseudo-secret-1"))
    exposure = Exposure()
    exposure.learn_settings(settings)
    names = set(exposure.secrets.values())
    assert {"settings.upstream.api_key", "settings.admin_token", "settings.pseudonym_secret"} <= (
        names
    )
    assert "settings.credentials.blue.api_key" in names


async def test_an_issued_key_may_be_in_its_one_answer_and_nowhere_else(
    make_proxy: MakeProxy, upstream: Upstream, exposure: Exposure
) -> None:
    """The answer that hands out a new key may hold it; any other place holding it is a leak."""
    proxy = await make_proxy()
    body = {"name": "ci", "user": "alice"}
    async with aiohttp.ClientSession() as client:
        async with client.post(proxy.url("/admin/keys"), json=body, headers=ADMIN) as r:
            secret = (await r.json())["key"]
    assert secret.encode() in exposure.secrets
    mine = Exposure(secrets=dict(exposure.secrets), records=list(exposure.records))
    mine.scan("here")
    assert mine.leaks == []
    mine.record("log", f"oops {secret}".encode())
    mine.scan("here")
    assert [leak.where for leak in mine.leaks] == ["log"]


LEAKY_TEST = """
import aiohttp

from tests.conftest import ADMIN_TOKEN, CLIENT_KEY, MakeProxy


async def test_passes_but_leaks(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url(f"/v1/{ADMIN_TOKEN}"), headers=auth) as response:
            assert response.status == 404
"""


def test_a_leak_fails_a_run_whose_tests_all_pass(tmp_path: Path) -> None:
    """A session whose only test passes, but which made Tollgate write the admin token (into
    its log and a 404 body), exits non-zero and says where the token went."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(LEAKY_TEST))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 passed" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 1
    assert "ADMIN_TOKEN in log of proxy #0" in done.stdout
    assert "ADMIN_TOKEN in answer of proxy #0 to GET /v1/{tail}" in done.stdout
    assert ADMIN_TOKEN not in done.stdout


def test_what_redis_holds_is_read_whatever_its_type(flush_redis: RedisServer) -> None:
    """Strings, hashes, lists, sets and sorted sets all reach the scan, names and values."""
    client = redis.Redis(port=flush_redis.port)
    client.set("s", "string-value")
    client.hset("h", "field", "hash-value")
    client.rpush("l", "list-value")
    client.sadd("t", "set-value")
    client.zadd("z", {"zset-member": 1})
    text = redis_contents(client)
    client.close()
    for seen in (b"string-value", b"hash-value", b"list-value", b"set-value", b"zset-member"):
        assert seen in text
