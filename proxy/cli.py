"""The `tollgate` command: serve, keys, check-config and fake-upstream."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy.app import create_app
from proxy.keys import generate_key, hash_key
from proxy.policy import load_policy
from proxy.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    """Environment settings, with the flags given on the command line on top."""
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "config_file"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    app = create_app(settings)
    for warning in _start_warnings(settings):
        print(f"tollgate: warning: {warning}", file=sys.stderr)
    print(f"tollgate listening on http://{settings.host}:{settings.port}", file=sys.stderr)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        handler_cancellation=True,
        loop=_event_loop(),
    )
    return 0


def _start_warnings(settings: Settings) -> list[str]:
    """What an operator should know before the first request fails."""
    warnings = []
    if settings.upstream.api_key is None:
        warnings.append("TOLLGATE_UPSTREAM__API_KEY is not set: upstream will refuse requests")
    if not load_policy(settings.config_file).keys:
        warnings.append("no client keys configured (--config): every request will get 401")
    return warnings


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed, the standard loop elsewhere."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _keys_hash(args: argparse.Namespace) -> int:
    secret = args.key if args.key is not None else sys.stdin.readline().strip()
    if not secret:
        print("tollgate keys hash: give a key as argument or on standard input", file=sys.stderr)
        return 2
    print(hash_key(secret))
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    secret = generate_key()
    print(f"key:    {secret}\nsha256: {hash_key(secret)}")
    print("The key is shown once; list only its sha256 in the policy file.", file=sys.stderr)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    policy = load_policy(settings.config_file)
    print(f"upstream: {settings.upstream.origin}")
    print(f"upstream key set: {settings.upstream.api_key is not None}")
    print(f"store: {settings.store}")
    print(f"keys: {len(policy.keys)}")
    return 0


def _fake_upstream(args: argparse.Namespace) -> int:
    from proxy.fake_upstream import FakeKnobs, run_fake_upstream

    knobs = FakeKnobs(latency=args.latency, status=args.status, event_pause=args.event_pause)
    run_fake_upstream(args.host, args.port, knobs)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run in (("serve", _serve), ("check-config", _check_config)):
        command = commands.add_parser(name)
        command.add_argument("--host")
        command.add_argument("--port", type=int)
        command.add_argument("--config", dest="config_file", type=Path)
        command.set_defaults(run=run)
    keys = commands.add_parser("keys").add_subparsers(dest="keys_command", required=True)
    hashing = keys.add_parser("hash", help="print the sha256 of a key (argument or stdin)")
    hashing.add_argument("key", nargs="?")
    hashing.set_defaults(run=_keys_hash)
    keys.add_parser("generate", help="make a new key").set_defaults(run=_keys_generate)
    fake = commands.add_parser("fake-upstream", help="an OpenAI look-alike for demos")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=9000)
    fake.add_argument("--latency", type=float, default=0.0)
    fake.add_argument("--status", type=int, default=None)
    fake.add_argument("--event-pause", type=float, default=0.0)
    fake.set_defaults(run=_fake_upstream)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `tollgate` command."""
    args = _parser().parse_args(argv)
    result: int = args.run(args)
    return result
