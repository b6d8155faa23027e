"""The `tollgate` command as an operator runs it: real processes on loopback ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from proxy.keys import hash_key
from tests.conftest import MakeProxy, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "tollgate.example.yaml"
DEMO_KEY = "tg-demo-key-change-me"


def _tollgate(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m proxy ARGS` to completion."""
    command = [sys.executable, "-m", "proxy", *args]
    return subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=30, input=input, env=env
    )


def _wait_until_up(port: int, process: subprocess.Popen[str], path: str = "/healthz") -> None:
    """Return once `path` answers HTTP at all; fail if the process dies or nothing answers."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing answered on port {port}")


@pytest.fixture
def fake_upstream_process() -> Iterator[int]:
    """`tollgate fake-upstream` running on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "fake-upstream", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_until_up(port, process, "/v1/models")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _json_call(port: int, path: str, body: object, method: str = "POST") -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback http)
        return json.loads(answer.read())


def test_fake_upstream_takes_knobs_at_start_and_through_control() -> None:
    """`fake-upstream --knobs JSON --control` starts with those knobs and takes more live."""
    port = free_port()
    knobs = json.dumps({"flagged": {"sabotage": {"violence": 0.9}}})
    command = [sys.executable, "-m", "proxy", "fake-upstream", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--knobs", knobs, "--control"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_up(port, process, "/v1/models")
        verdict = _json_call(port, "/v1/moderations", {"input": "sabotage"})
        assert verdict["results"][0]["flagged"] is True
        now = _json_call(port, "/_fake/knobs", {"status": 429}, method="PUT")
        assert now["status"] == 429
        with pytest.raises(urllib.error.HTTPError) as refused:
            _json_call(port, "/v1/moderations", {"input": "hello"})
        assert refused.value.code == 429
        refused.value.close()
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_fake_upstream_refuses_bad_knobs_at_start() -> None:
    """A knob that does not exist stops `fake-upstream` with a message naming it."""
    result = _tollgate("fake-upstream", "--port", "1", "--knobs", '{"lateness": 1}')
    assert result.returncode == 2
    assert "lateness" in result.stderr


def test_keys_hash_prints_the_sha256() -> None:
    """`tollgate keys hash KEY` prints the digest the policy file lists."""
    result = _tollgate("keys", "hash", "tg-abc")
    assert result.returncode == 0
    assert result.stdout.strip() == hash_key("tg-abc")


def test_keys_hash_reads_standard_input() -> None:
    """Without an argument the key is read from standard input, kept out of shell history."""
    result = _tollgate("keys", "hash", input="tg-abc\n")
    assert result.stdout.strip() == hash_key("tg-abc")


def test_keys_generate_prints_a_key_and_its_hash() -> None:
    """`tollgate keys generate` prints a fresh key and the sha256 that goes in the policy."""
    lines = dict(line.split(":", 1) for line in _tollgate("keys", "generate").stdout.splitlines())
    key, digest = lines["key"].strip(), lines["sha256"].strip()
    assert key.startswith("tg-")
    assert digest == hash_key(key)


def test_check_config_summarises_without_secrets() -> None:
    """`tollgate check-config` reads the policy and says nothing secret."""
    env = {**os.environ, "TOLLGATE_UPSTREAM__API_KEY": "sk-very-secret"}
    result = _tollgate("check-config", "--config", str(EXAMPLE), env=env)
    assert result.returncode == 0
    assert "keys: 1" in result.stdout
    assert "upstream key set: True" in result.stdout
    assert "sk-very-secret" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "bad",
    [
        {"PROMETHEUS_MULTIPROC_DIR": "/tmp/tollgate-elsewhere"},  # fails the whole model
        {"TOLLGATE_PORT": "not-a-port"},  # fails one field
        {"TOLLGATE_UPSTREAM__BASE_URL": "https://u:sk-7@api.example"},  # a secret in the value
    ],
)
def test_a_bad_setting_never_prints_a_secret(bad: dict[str, str]) -> None:
    """A settings error names what is wrong, never the values around it (the upstream key)."""
    env = {
        "PATH": os.environ["PATH"],
        "TOLLGATE_UPSTREAM__API_KEY": "sk-9",
        "TOLLGATE_CREDENTIALS__EU__API_KEY": "sk-8",
        **bad,
    }
    result = _tollgate("check-config", env=env)
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert "sk-9" not in result.stderr + result.stdout
    assert "sk-8" not in result.stderr + result.stdout
    assert "sk-7" not in result.stderr + result.stdout


def test_serve_forwards_to_the_configured_upstream(fake_upstream_process: int) -> None:
    """`tollgate serve` with the example config answers the SDK and logs JSON to stdout."""
    port = free_port()
    env = {
        **os.environ,
        "TOLLGATE_UPSTREAM__BASE_URL": f"http://127.0.0.1:{fake_upstream_process}",
        "TOLLGATE_UPSTREAM__API_KEY": "sk-upstream",
    }
    command = [sys.executable, "-m", "proxy", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--config", str(EXAMPLE)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_up(port, process)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=DEMO_KEY)
        assert [model.id for model in client.models.list()]
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=20)
    assert process.returncode == 0
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("operation") == "models.list"]
    assert requests[0]["key_id"] == "key_demo"
    assert "sk-upstream" not in stdout


def test_serve_warns_when_nothing_is_configured() -> None:
    """Started with no upstream key and no client keys, serve says both before it listens."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    command = [sys.executable, "-m", "proxy", "serve", "--port", str(port)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_until_up(port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert "TOLLGATE_UPSTREAM__API_KEY is not set" in stderr
    assert "no client keys configured" in stderr


def _keys_cli(data_file: Path, *args: str) -> dict[str, Any]:
    """`tollgate keys ARGS --json` against the embedded store in `data_file`."""
    env = {**os.environ, "TOLLGATE_DATA_FILE": str(data_file), "TOLLGATE_STORE": "memory"}
    result = _tollgate("keys", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_keys_create_list_show_rotate_revoke(tmp_path: Path) -> None:
    """The key commands manage issued keys; secrets appear only where a key is made."""
    data_file = tmp_path / "keys.json"
    created = _keys_cli(
        data_file, "create", "--name", "ci", "--user", "alice", "--expires-in", "30d"
    )
    assert created["key"].startswith("tg-")
    assert created["expires_at"] - created["created_at"] == 30 * 86400
    env = {**os.environ, "TOLLGATE_DATA_FILE": str(data_file)}
    listing = _tollgate("keys", "list", env=env).stdout
    assert created["id"] in listing
    assert "active" in listing
    shown = _keys_cli(data_file, "show", created["id"])
    assert "key" not in shown
    rotated = _keys_cli(data_file, "rotate", created["id"])
    assert rotated["key"] != created["key"]
    revoked = _keys_cli(data_file, "revoke", created["id"])
    assert revoked["revoked_at"] is not None
    for secret in (created["key"], rotated["key"]):
        assert secret not in data_file.read_text()
        assert secret not in listing


def test_keys_commands_say_when_an_id_is_unknown(tmp_path: Path) -> None:
    """Showing a key that does not exist fails with a message, not a traceback."""
    env = {**os.environ, "TOLLGATE_DATA_FILE": str(tmp_path / "keys.json")}
    result = _tollgate("keys", "show", "key_nope", env=env)
    assert result.returncode == 1
    assert "no key with id" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_running_server_follows_cli_changes(make_proxy: MakeProxy, tmp_path: Path) -> None:
    """A key created, then revoked, with the CLI works, then stops, on a running server."""
    data_file = tmp_path / "keys.json"
    proxy = await make_proxy(store="memory", data_file=data_file)
    created = _keys_cli(data_file, "create", "--name", "ci", "--user", "alice")
    client = openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key=created["key"], max_retries=0)
    assert await _eventually(client, works=True)
    _keys_cli(data_file, "revoke", created["id"])
    assert await _eventually(client, works=False)
    await client.close()


async def _eventually(client: openai.AsyncOpenAI, *, works: bool) -> bool:
    """Whether the key reaches the wanted state within 1.5 seconds (the reload period is 1 s)."""
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        try:
            await client.models.list()
            if works:
                return True
        except openai.AuthenticationError:
            if not works:
                return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize(
    "policy_file", sorted([*ROOT.glob("config/*.yaml"), *ROOT.glob("bench/*.yaml")])
)
def test_every_shipped_policy_file_loads(policy_file: Path) -> None:
    """The example and benchmark policy files are valid (check-config accepts them)."""
    result = _tollgate("check-config", "--config", str(policy_file))
    assert result.returncode == 0, result.stderr


def test_a_bad_policy_file_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    """A policy naming an unknown team stops serve with a clear error and exit code 2."""
    policy = tmp_path / "bad.yaml"
    policy.write_text("keys:\n  - {id: k, sha256: " + "a" * 64 + ", team: nowhere}\n")
    result = _tollgate("serve", "--port", str(free_port()), "--config", str(policy))
    assert result.returncode == 2
    assert "unknown team(s): nowhere" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_key_pasted_where_its_hash_belongs_is_not_echoed(tmp_path: Path) -> None:
    """An operator who pastes the secret itself into `sha256` is told so without seeing it."""
    policy = tmp_path / "pasted.yaml"
    policy.write_text("keys:\n  - {id: k, sha256: tg-pasted-secret-123}\n")
    result = _tollgate("check-config", "--config", str(policy))
    assert result.returncode == 2
    assert "sha256" in result.stderr
    assert "tg-pasted-secret-123" not in result.stderr + result.stdout
