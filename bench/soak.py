"""The soak's driver (bench/soak.sh runs it): mixed traffic through Tollgate while faults are
injected on a schedule, every answer classified, the Tollgate process sampled, a report written.

It owns three processes on loopback: a redis-server with persistence (append-only file, fsync
on every write), `tollgate fake-upstream --control`, and `tollgate serve` in front of both with
the Redis store, quotas and moderation on. Then, for the run's length:

- `--concurrency` workers send a weighted mix of requests and judge every answer
  (bench/soak_traffic.py);
- a fault task kills and restarts Redis and the upstream, and turns the upstream's fault knobs
  (`PUT /_fake/knobs`) on and off, recording when each fault was in force;
- a sampler reads Tollgate's RSS (/proc/PID/status) and open descriptors (/proc/PID/fd).

Then it stops the traffic, waits for idle keep-alive connections to close, checks /readyz, the
in-flight gauge and the over-quota user's count in Redis, and writes the report
(bench/soak_report.py). Anything unexpected makes the exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
from soak_report import EndState, Run, load_average, report
from soak_traffic import (
    BREAKER_COOLDOWN,
    CAP_IMAGES,
    FAULTS,
    FLAG_NEEDLE,
    GUESSER_ADDRESS,
    KEYS,
    KINDS,
    OK,
    REDIS_TIMEOUT,
    SLOW_LATENCY,
    TEAMS,
    TIMEOUT_LATENCY,
    UPSTREAM_READ_TIMEOUT,
    Tally,
    Target,
    Window,
    one,
    worker,
)

from proxy.keys import hash_key

FAULT_SECONDS: Final = 10.0  # how long an upstream knob fault stays on
DOWN_SECONDS: Final = 5.0  # how long Redis or the upstream stays dead
QUIET_SECONDS: Final = 10.0  # between faults
QUIET_TAIL: Final = 20.0  # no fault starts this close to the end
IDLE_BEFORE_END: Final = 17.0  # after traffic: aiohttp's client keep-alive (15 s) runs out
ADMIN_TOKEN: Final = "soak-admin-token-0123456789abcdef"  # noqa: S105 (loopback only)
UPSTREAM_KEY: Final = "sk-soak-upstream-0123456789abcdef"

# ---------------------------------------------------------------- faults

KNOB_FAULTS: Final[Mapping[str, dict[str, object]]] = {
    "upstream slow (0.4 s)": {"latency": SLOW_LATENCY},
    "upstream timing out (3 s > read timeout 2 s)": {"latency": TIMEOUT_LATENCY},
    "upstream 500": {"status": 500},
    "upstream 429": {"status": 429},
    "upstream resets mid-body": {"reset_mid_body": True},
    "upstream cuts SSE half way": {"reset_after_events": 7},
}
CALM: Final[dict[str, object]] = {
    "latency": 0,
    "status": None,
    "reset_mid_body": False,
    "reset_after_events": None,
}

# ---------------------------------------------------------------- processes


@dataclass
class Ports:
    redis: int
    upstream: int
    tollgate: int


@dataclass
class Processes:
    """The three servers, each restartable with the same command; stopped at the end."""

    tmp: Path
    ports: Ports
    tollgate_bin: str
    redis_bin: str
    pin: list[str]
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.tmp / f"{name}.log").open("ab")
        self.running[name] = subprocess.Popen(
            [*self.pin, *command], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        self._list()

    def _list(self) -> None:
        """The running servers' pids, for soak.sh to stop should this driver die first."""
        pids = "".join(f"{process.pid}\n" for process in self.running.values())
        (self.tmp / "pids").write_text(pids)

    def start_redis(self) -> None:
        data = self.tmp / "redis"
        data.mkdir(exist_ok=True)
        self._spawn(
            "redis",
            [
                *(self.redis_bin, "--port", str(self.ports.redis), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
                *("--dir", str(data), "--protected-mode", "yes"),
            ],
        )

    def start_upstream(self) -> None:
        knobs = json.dumps({"flagged": {FLAG_NEEDLE: {"violence": 0.93}}})
        self._spawn(
            "upstream",
            [
                *(self.tollgate_bin, "fake-upstream", "--port", str(self.ports.upstream)),
                *("--control", "--knobs", knobs),
            ],
        )

    def start_tollgate(self, policy: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "PROM"))}
        env |= {
            "TOLLGATE_STORE": "redis",
            "TOLLGATE_REDIS__URL": f"redis://127.0.0.1:{self.ports.redis}/0",
            "TOLLGATE_REDIS__TIMEOUT": str(REDIS_TIMEOUT),
            "TOLLGATE_UPSTREAM__BASE_URL": f"http://127.0.0.1:{self.ports.upstream}",
            "TOLLGATE_UPSTREAM__API_KEY": UPSTREAM_KEY,
            "TOLLGATE_UPSTREAM__READ_TIMEOUT": str(UPSTREAM_READ_TIMEOUT),
            "TOLLGATE_UPSTREAM__CONNECT_TIMEOUT": "1",
            "TOLLGATE_QUOTA__BREAKER_COOLDOWN": str(BREAKER_COOLDOWN),
            "TOLLGATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "TOLLGATE_DATA_FILE": "",
            "TOLLGATE_SHUTDOWN_GRACE": "5",
        }
        command = [self.tollgate_bin, "serve", "--port", str(self.ports.tollgate)]
        self._spawn("tollgate", [*command, "--config", str(policy)], env)

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        self._list()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in self.running.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.running.clear()
        self._list()

    def pid(self, name: str) -> int:
        return self.running[name].pid


def write_policy(path: Path) -> None:
    keys = [
        {"id": f"key_{user}", "sha256": hash_key(key), "user": user, "team": TEAMS[user]}
        for user, key in KEYS.items()
    ]
    images = {"limit": "100000 images/day", "operations": "images.*"}
    policy = {
        "teams": {"default": {}, "studio": {}, "lab": {}},
        "users": {user: {"team": team} for user, team in TEAMS.items()}
        | {"ivy": {"team": "studio"}},
        "keys": keys,
        "limits": {
            "default": ["100000/minute", images, "$100000/day", "16 concurrent"],
            "users": {"cap": [{"limit": f"{CAP_IMAGES} images/day", "operations": "images.*"}]},
            "teams": {"studio": ["$100000/day"]},
        },
        "moderation": {"enabled": True, "failure": "fail_closed", "timeout": 2, "strikes": None},
    }
    path.write_text(json.dumps(policy, indent=2))  # JSON is YAML


# ---------------------------------------------------------------- faults on a schedule


async def _redis_answers(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"*1\r\n$4\r\nPING\r\n")
        async with asyncio.timeout(1):
            return (await reader.readline()).startswith(b"+PONG")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not come back within 10 s")


@dataclass
class Injector:
    """Turns faults on and off; `control` is the fake upstream's knobs URL."""

    processes: Processes
    session: aiohttp.ClientSession
    control: str

    async def knobs(self, changes: Mapping[str, object]) -> None:
        async with self.session.put(self.control, json=changes) as answer:
            if answer.status != 200:
                raise RuntimeError(f"the fake upstream refused knobs {changes}: {answer.status}")

    async def upstream_up(self) -> bool:
        try:
            async with self.session.get(self.control) as answer:
                return answer.status == 200
        except aiohttp.ClientError:
            return False

    async def inject(self, name: str) -> None:
        """One fault, from on to off (dead processes back and answering)."""
        if name in KNOB_FAULTS:
            await self.knobs(KNOB_FAULTS[name])
            await asyncio.sleep(FAULT_SECONDS)
            await self.knobs(CALM)
        elif name.startswith("redis"):
            await asyncio.to_thread(self.processes.kill, "redis")
            await asyncio.sleep(DOWN_SECONDS)
            self.processes.start_redis()
            await _until(lambda: _redis_answers(self.processes.ports.redis), "redis")
        else:
            await asyncio.to_thread(self.processes.kill, "upstream")
            await asyncio.sleep(DOWN_SECONDS)
            self.processes.start_upstream()
            await _until(self.upstream_up, "the fake upstream")


async def inject_faults(injector: Injector, tally: Tally, until: float) -> None:
    """Each fault in turn, with quiet spells between, until QUIET_TAIL before the end."""
    names = list(FAULTS)
    turn = 0
    await asyncio.sleep(QUIET_SECONDS)
    while tally.clock() + FAULT_SECONDS + QUIET_TAIL < until:
        window = Window(names[turn % len(names)], tally.clock())
        tally.faults.append(window)
        await injector.inject(window.name)
        window.end = tally.clock()
        turn += 1
        await asyncio.sleep(QUIET_SECONDS)


# ---------------------------------------------------------------- the Tollgate process


def sample(pid: int) -> tuple[int, int]:
    """RSS in kB and open descriptors of `pid`."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def descriptors(pid: int, ports: Ports) -> Counter[str]:
    """What `pid`'s open descriptors are: sockets by the server at their other end, or kind."""
    peers = {ports.redis: "redis", ports.upstream: "upstream"}
    sockets: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            what = "listening" if fields[3] == "0A" else peers.get(remote, "")
            sockets[fields[9]] = what or ("client" if local == ports.tollgate else "other tcp")
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            inode = target.removeprefix("socket:[").removesuffix("]")
            kinds[
                sockets.get(inode, "socket") if target.startswith("socket:") else _kind(target)
            ] += 1
    return kinds


def _kind(target: str) -> str:
    return target.split(":", 1)[0] if ":" in target else "file"


async def sampler(pid: int, tally: Tally, until: float, every: float) -> None:
    while tally.clock() < until:
        tally.samples.append((tally.clock(), *sample(pid)))
        await asyncio.sleep(every)


async def end_state(session: aiohttp.ClientSession, base: str) -> EndState:
    async with session.get(f"{base}/readyz") as ready:
        readyz = f"{ready.status} {(await ready.text()).strip()}"
    async with session.get(f"{base}/metrics") as metrics:
        lines = (await metrics.text()).splitlines()
    in_flight = next(
        (line.split()[-1] for line in lines if line.startswith("tollgate_requests_in_flight ")),
        "absent",
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with session.get(f"{base}/admin/usage/users/cap", headers=admin) as usage:
        limits = (await usage.json()).get("limits", [])
    used = next((int(limit["used"]) for limit in limits if limit["kind"] == "images"), None)
    return EndState(readyz, in_flight, used)


# ---------------------------------------------------------------- start, run, stop


async def _ready(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as answer:
            return answer.status == 200
    except aiohttp.ClientError:
        return False


async def start(processes: Processes, session: aiohttp.ClientSession) -> Target:
    """Redis, the upstream, then Tollgate; a key issued through the admin API (in Redis)."""
    processes.start_redis()
    await _until(lambda: _redis_answers(processes.ports.redis), "redis")
    processes.start_upstream()
    control = f"http://127.0.0.1:{processes.ports.upstream}/_fake/knobs"
    await _until(lambda: _ready(session, control), "the fake upstream")
    policy = processes.tmp / "policy.yaml"
    write_policy(policy)
    processes.start_tollgate(policy)
    base = f"http://127.0.0.1:{processes.ports.tollgate}"
    await _until(lambda: _ready(session, f"{base}/readyz"), "tollgate")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    issue = {"name": "soak", "user": "ivy", "team": "studio"}
    async with session.post(f"{base}/admin/keys", headers=admin, json=issue) as issued:
        key = str((await issued.json())["key"])
    return Target(base, key)


async def warm_up(session: aiohttp.ClientSession, target: Target) -> None:
    """Each kind of request that should succeed, once, so lazy start-up is not counted as growth."""
    for kind in KINDS:
        if kind.expected == OK:
            answer = await one(session, target, kind)
            if answer.label != "200":
                raise RuntimeError(f"warm-up: {kind.name} got {answer.label} {answer.detail}")


async def soak(processes: Processes, seconds: float, concurrency: int, seed: int) -> Run:
    load_before = load_average()
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    jar = aiohttp.DummyCookieJar()
    guessing = aiohttp.TCPConnector(local_addr=(GUESSER_ADDRESS, 0))
    async with (
        aiohttp.ClientSession(connector=connector, cookie_jar=jar) as session,
        aiohttp.ClientSession(connector=guessing, cookie_jar=aiohttp.DummyCookieJar()) as guesser,
    ):
        target = await start(processes, session)
        target.guesser = guesser
        await warm_up(session, target)
        await asyncio.sleep(2)
        pid = processes.pid("tollgate")
        first = sample(pid)
        tally = Tally()
        control = f"http://127.0.0.1:{processes.ports.upstream}/_fake/knobs"
        injector = Injector(processes, session, control)
        async with asyncio.TaskGroup() as tasks:
            for n in range(concurrency):
                tasks.create_task(worker(session, target, tally, seed + n, seconds))
            tasks.create_task(inject_faults(injector, tally, seconds))
            tasks.create_task(sampler(pid, tally, seconds, 10.0))
        elapsed = tally.clock()
    await asyncio.sleep(IDLE_BEFORE_END)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        end = await end_state(session, target.base)
    last = sample(pid)
    fds = descriptors(pid, processes.ports)
    tally.samples.append((tally.clock(), *last))
    log = processes.tmp / "tollgate.log"
    measured = (first, last, end, elapsed, load_before, log, IDLE_BEFORE_END, fds)
    return Run(seconds, concurrency, seed, tally, *measured)


# ---------------------------------------------------------------- main


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--tmp", type=Path, required=True, help="a folder for logs and data")
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--ports", type=int, nargs=3, required=True, metavar=("REDIS", "UP", "TG"))
    parser.add_argument("--tollgate", default="tollgate")
    parser.add_argument("--redis-server", default="redis-server")
    parser.add_argument("--pin", default="", help="a prefix for the servers, e.g. 'taskset -c 0'")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    ports = Ports(*args.ports)
    pin = args.pin.split()
    processes = Processes(args.tmp, ports, args.tollgate, args.redis_server, pin)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    try:
        run = asyncio.run(soak(processes, args.seconds, args.concurrency, args.seed))
    finally:
        processes.stop_all()
    text, bad = report(run, time.strftime("%Y-%m-%d"))
    args.report.write_text(text)
    print(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
