"""The `tollgate` command: serve, keys, check-config and fake-upstream."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from proxy.app import create_app
from proxy.keys import KeyRecord, KeyService, UnknownKey, generate_key, hash_key
from proxy.policy import Policy, load_policy
from proxy.settings import Settings
from proxy.store import open_store
from proxy.tenancy import TenancyError
from proxy.workers import WorkerError, check_workers, serve_many, serve_one, share_metrics


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
    try:
        check_workers(settings, args.workers)
    except WorkerError as problem:
        print(f"tollgate: {problem}", file=sys.stderr)
        return 2
    settings = share_metrics(settings, args.workers)
    for warning in _start_warnings(settings):
        print(f"tollgate: warning: {warning}", file=sys.stderr)
    where = f"http://{settings.host}:{settings.port}"
    print(f"tollgate listening on {where} with {args.workers} worker(s)", file=sys.stderr)
    if args.workers == 1:
        serve_one(settings, create_app)
        return 0
    return serve_many(settings, create_app, args.workers)


def _start_warnings(settings: Settings) -> list[str]:
    """What an operator should know before the first request fails."""
    warnings = []
    if settings.upstream.api_key is None:
        warnings.append("TOLLGATE_UPSTREAM__API_KEY is not set: upstream will refuse requests")
    if not load_policy(settings.config_file).keys:
        warnings.append("no client keys configured (--config): every request will get 401")
    return warnings


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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    """`90s`, `15m`, `12h` or `30d` in seconds."""
    if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit():
        raise argparse.ArgumentTypeError(f"not a duration like 30d or 12h: {text!r}")
    return int(text[:-1]) * _UNITS[text[-1]]


def _print_record(record: KeyRecord, secret: str | None, as_json: bool) -> None:
    shown = record.public() | ({"key": secret} if secret else {})
    if as_json:
        print(json.dumps(shown, indent=2))
        return
    for name, value in shown.items():
        print(f"{name:>18}: {value}")
    if secret:
        print("\nThe key is shown once: hand it over now.", file=sys.stderr)


async def _keys_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `tollgate keys ...` command against the configured store."""
    store = open_store(settings)
    service = KeyService(store, time.time)
    try:
        result: int = await args.keys_run(args, service, load_policy(settings.config_file))
        return result
    except UnknownKey as missing:
        print(f"tollgate keys: no key with id {missing}", file=sys.stderr)
        return 1
    finally:
        await store.close()


async def _create(args: argparse.Namespace, service: KeyService, policy: Policy) -> int:
    team = policy.team_of(args.user, args.team)
    if team not in policy.teams:
        print(f"tollgate keys: no team named {team!r} in the policy file", file=sys.stderr)
        return 2
    expires = int(time.time()) + args.expires_in if args.expires_in else None
    record, secret = await service.create(
        name=args.name, user=args.user, team=team, expires_at=expires
    )
    _print_record(record, secret, args.json)
    return 0


async def _list(args: argparse.Namespace, service: KeyService, policy: Policy) -> int:
    records = await service.list()
    if args.json:
        print(json.dumps([record.public() for record in records], indent=2))
        return 0
    for r in records:
        state = "revoked" if r.revoked_at else "disabled" if r.disabled else "active"
        print(f"{r.id}  {state:8}  {r.team:12}  {r.user:20}  {r.name}")
    return 0


async def _show(args: argparse.Namespace, service: KeyService, policy: Policy) -> int:
    _print_record(await service.get(args.key_id), None, args.json)
    return 0


async def _revoke(args: argparse.Namespace, service: KeyService, policy: Policy) -> int:
    _print_record(await service.revoke(args.key_id), None, args.json)
    return 0


async def _rotate(args: argparse.Namespace, service: KeyService, policy: Policy) -> int:
    record, secret = await service.rotate(args.key_id)
    _print_record(record, secret, args.json)
    return 0


def _keys(args: argparse.Namespace) -> int:
    return asyncio.run(_keys_command(args, _settings(args)))


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    policy = load_policy(settings.config_file)
    print(f"upstream: {settings.upstream.origin}")
    print(f"upstream key set: {settings.upstream.api_key is not None}")
    print(f"store: {settings.store}")
    print(f"keys: {len(policy.keys)}")
    return 0


def _fake_upstream(args: argparse.Namespace) -> int:
    from proxy.fake_upstream import FakeKnobs, run_fake_upstream, set_knobs

    # Nobody can read what a separate process recorded: keep its memory flat on long runs.
    knobs = FakeKnobs(
        latency=args.latency, status=args.status, event_pause=args.event_pause, record=False
    )
    try:
        set_knobs(knobs, json.loads(args.knobs))
    except ValueError as problem:
        print(f"tollgate fake-upstream: --knobs: {problem}", file=sys.stderr)
        return 2
    run_fake_upstream(args.host, args.port, knobs, control=args.control)
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
    commands.choices["serve"].add_argument(
        "--workers", type=int, default=1, help="processes on one port (needs the redis store)"
    )
    keys = commands.add_parser("keys").add_subparsers(dest="keys_command", required=True)
    hashing = keys.add_parser("hash", help="print the sha256 of a key (argument or stdin)")
    hashing.add_argument("key", nargs="?")
    hashing.set_defaults(run=_keys_hash)
    keys.add_parser("generate", help="make a key for the policy file").set_defaults(
        run=_keys_generate
    )
    _add_store_commands(keys)
    fake = commands.add_parser("fake-upstream", help="an OpenAI look-alike for demos")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=9000)
    fake.add_argument("--latency", type=float, default=0.0)
    fake.add_argument("--status", type=int, default=None)
    fake.add_argument("--event-pause", type=float, default=0.0)
    fake.add_argument("--knobs", default="{}", help="more knobs as a JSON object")
    fake.add_argument(
        "--control", action="store_true", help="serve GET/PUT /_fake/knobs to change knobs live"
    )
    fake.set_defaults(run=_fake_upstream)
    return parser


def _add_store_commands(keys: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`keys create|list|show|revoke|rotate`: issued keys in the configured store."""
    specs = {
        "create": (_create, "issue a key (the secret is printed once)"),
        "list": (_list, "list keys, never secrets"),
        "show": (_show, "show one key"),
        "revoke": (_revoke, "revoke a key at once"),
        "rotate": (_rotate, "give a key a new secret, same id"),
    }
    for name, (run, summary) in specs.items():
        command = keys.add_parser(name, help=summary)
        command.add_argument("--config", dest="config_file", type=Path)
        command.add_argument("--json", action="store_true", help="machine-readable output")
        if name in ("show", "revoke", "rotate"):
            command.add_argument("key_id")
        command.set_defaults(run=_keys, keys_run=run)
    create = keys.choices["create"]
    create.add_argument("--name", required=True)
    create.add_argument("--user", required=True)
    create.add_argument("--team")
    create.add_argument("--expires-in", type=_duration, help="e.g. 30d, 12h")


def main(argv: list[str] | None = None) -> int:
    """Run one `tollgate` command; a bad policy file or setting is a message, not a traceback."""
    args = _parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except (ValidationError, TenancyError, yaml.YAMLError, OSError) as problem:
        print(f"tollgate: configuration error: {problem}", file=sys.stderr)
        return 2
    return result
