"""The soak's traffic (bench/soak.py runs it): what is sent, and how each answer is judged.

Every answer gets a label (`200`, `429 rate_limit_exceeded` for Tollgate's own errors by their
code, `500 upstream` for errors relayed from upstream, `cut` for a stream that ended early,
`aborted` when the client left on purpose, `transport ...`, `hang`) and is judged against
what its kind of request should get plus what the faults in force during it explain
(`FAULTS`). What neither explains is "unexpected".
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import struct
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import aiohttp

HANG_AFTER: Final = 30.0  # seconds: an answer slower than this is a hang
UPSTREAM_READ_TIMEOUT: Final = 2.0  # Tollgate's; the timeout fault's latency is above it
SLOW_LATENCY: Final = 0.4
TIMEOUT_LATENCY: Final = 3.0
BREAKER_COOLDOWN: Final = 5.0
REDIS_TIMEOUT: Final = 1.0  # the 50 ms default is for an unsaturated proxy (README, Quotas)
CAP_IMAGES: Final = 5  # the over-quota user's images a day
GUESSER_ADDRESS: Final = "127.0.0.2"  # loopback too: where the bad keys come from
FLAG_NEEDLE: Final = "sabotage"
KEYS: Final[Mapping[str, str]] = {  # user -> static key
    "ana": "tg-soak-ana-" + "a" * 32,
    "ben": "tg-soak-ben-" + "b" * 32,
    "mal": "tg-soak-mal-" + "m" * 32,
    "cap": "tg-soak-cap-" + "c" * 32,
}
TEAMS: Final[Mapping[str, str]] = {"ana": "studio", "ben": "studio", "mal": "lab", "cap": "lab"}

Labels = frozenset[str]


# ---------------------------------------------------------------- answers


@dataclass(frozen=True)
class Answer:
    """What one request got. `label` is what judging and counting read."""

    label: str
    shaped: bool = True  # an error body in OpenAI's shape (2xx: always True)
    detail: str = ""


def _error_label(status: int, headers: Mapping[str, str], body: bytes) -> Answer:
    """`STATUS CODE` for Tollgate's own errors, `STATUS upstream` for relayed ones."""
    try:
        error = json.loads(body)["error"]
        shaped = isinstance(error, dict) and {"message", "type", "param", "code"} <= error.keys()
    except (ValueError, KeyError, TypeError):
        error, shaped = {}, False
    relayed = "openai-processing-ms" in headers  # the fake upstream stamps every answer
    code = "upstream" if relayed else str(error.get("code") if shaped else "?")
    return Answer(f"{status} {code}", shaped, "" if shaped else body[:200].decode(errors="replace"))


async def _answer(response: aiohttp.ClientResponse) -> Answer:
    body = await response.read()
    if response.status < 300:
        return Answer(str(response.status))
    return _error_label(response.status, response.headers, body)


async def _stream_answer(response: aiohttp.ClientResponse, stop_after: int | None) -> Answer:
    """An SSE run: `200` when it reached `[DONE]`, `aborted` when we left after `stop_after`
    events, `cut` when it ended early."""
    if response.status >= 300:
        return await _answer(response)
    events = 0
    try:
        async for line in response.content:
            if line.startswith(b"data: [DONE]"):
                return Answer("200")
            if line.startswith(b"event: "):
                events += 1
                if stop_after is not None and events >= stop_after:
                    response.close()
                    return Answer("aborted")
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        return Answer("cut", detail=f"after {events} events")
    return Answer("cut", detail=f"after {events} events, no [DONE]")


# ---------------------------------------------------------------- requests


def _png_rgba(side: int) -> bytes:
    """A square RGBA PNG (transparency is what a mask-less dall-e-2 edit needs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x10\x20\x30\x00" * side for _ in range(side))
    image = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + image


PNG: Final = _png_rgba(16)
PART: Final = os.urandom(64 * 1024)


@dataclass
class Target:
    """Where Tollgate is and who the traffic is."""

    base: str
    issued_key: str
    counter: int = 0
    guesser: aiohttp.ClientSession | None = None  # bad keys come from GUESSER_ADDRESS

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def next(self) -> int:
        self.counter += 1
        return self.counter


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


Send = Callable[[aiohttp.ClientSession, Target], Awaitable[Answer]]


async def _get(session: aiohttp.ClientSession, url: str, key: str) -> Answer:
    async with session.get(url, headers=_auth(key)) as response:
        return await _answer(response)


async def _post(session: aiohttp.ClientSession, url: str, key: str, body: object) -> Answer:
    async with session.post(url, headers=_auth(key), json=body) as response:
        return await _answer(response)


async def models(session: aiohttp.ClientSession, target: Target) -> Answer:
    return await _get(session, target.url("/v1/models"), KEYS["ana"])


async def moderation(session: aiohttp.ClientSession, target: Target) -> Answer:
    body = {"input": f"a picnic by the river, #{target.next()}"}
    return await _post(session, target.url("/v1/moderations"), KEYS["ben"], body)


def _image(prompt: str) -> dict[str, object]:
    return {"model": "dall-e-2", "prompt": prompt, "size": "256x256", "n": 1}


async def image(session: aiohttp.ClientSession, target: Target) -> Answer:
    body = _image(f"a lighthouse at dawn, #{target.next()}")
    return await _post(session, target.url("/v1/images/generations"), KEYS["ana"], body)


async def image_flagged(session: aiohttp.ClientSession, target: Target) -> Answer:
    body = _image(f"plans for {FLAG_NEEDLE} of the dam, #{target.next()}")
    return await _post(session, target.url("/v1/images/generations"), KEYS["mal"], body)


async def image_over_quota(session: aiohttp.ClientSession, target: Target) -> Answer:
    body = _image(f"a quiet harbour, #{target.next()}")
    return await _post(session, target.url("/v1/images/generations"), KEYS["cap"], body)


async def image_edit(session: aiohttp.ClientSession, target: Target) -> Answer:
    form = aiohttp.FormData()
    form.add_field("model", "dall-e-2")
    form.add_field("prompt", f"add a red kite, #{target.next()}")
    form.add_field("size", "256x256")
    form.add_field("image", PNG, filename="picture.png", content_type="image/png")
    url = target.url("/v1/images/edits")
    async with session.post(url, headers=_auth(KEYS["ben"]), data=form) as response:
        return await _answer(response)


async def chat(session: aiohttp.ClientSession, target: Target) -> Answer:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello?"}]}
    return await _post(session, target.url("/v1/chat/completions"), KEYS["ana"], body)


async def issued_key(session: aiohttp.ClientSession, target: Target) -> Answer:
    """A key issued through the admin API at the start: it lives in Redis only."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Still me?"}]}
    return await _post(session, target.url("/v1/chat/completions"), target.issued_key, body)


async def _run(session: aiohttp.ClientSession, target: Target, stop_after: int | None) -> Answer:
    url = target.url(f"/v1/threads/thread_soak{target.next()}/runs")
    body = {"assistant_id": "asst_soak", "stream": True}
    async with session.post(url, headers=_auth(KEYS["ben"]), json=body) as response:
        return await _stream_answer(response, stop_after)


async def run_stream(session: aiohttp.ClientSession, target: Target) -> Answer:
    return await _run(session, target, None)


async def run_stream_left(session: aiohttp.ClientSession, target: Target) -> Answer:
    """The client hangs up after two events."""
    return await _run(session, target, 2)


def _part_form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("data", PART, filename="part.bin", content_type="application/octet-stream")
    return form


async def upload_part(session: aiohttp.ClientSession, target: Target) -> Answer:
    url = target.url(f"/v1/uploads/upload_soak{target.next()}/parts")
    async with session.post(url, headers=_auth(KEYS["ana"]), data=_part_form()) as response:
        return await _answer(response)


async def upload_part_left(session: aiohttp.ClientSession, target: Target) -> Answer:
    """The client sends the form's head and half the file, then hangs up."""
    boundary = f"soakboundary{target.next()}"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="p.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    async def half() -> AsyncIterator[bytes]:
        yield head + PART[: len(PART) // 2]
        await asyncio.sleep(HANG_AFTER)

    url = target.url(f"/v1/uploads/upload_soak{target.next()}/parts")
    headers = _auth(KEYS["ana"]) | {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        async with asyncio.timeout(0.3):
            async with session.post(url, headers=headers, data=half()) as response:
                return await _answer(response)  # answered before the body ended
    except TimeoutError:
        return Answer("aborted")


async def bad_key(session: aiohttp.ClientSession, target: Target) -> Answer:
    """A wrong key from another address than everyone else's: past Tollgate's failed-auth
    limit (10 a minute by default) that address is locked out (429), the others never are."""
    key = f"tg-soak-nobody-{target.next():032d}"
    return await _get(target.guesser or session, target.url("/v1/models"), key)


@dataclass(frozen=True)
class Kind:
    """One kind of request: how to send it, how often, and what it should get."""

    name: str
    send: Send
    weight: int
    expected: Labels


OK = frozenset({"200"})
KINDS: Final = (
    Kind("models (cached)", models, 12, OK),
    Kind("moderations", moderation, 10, OK),
    Kind("image generation", image, 10, OK),
    Kind(
        "image generation, flagged prompt",
        image_flagged,
        5,
        frozenset({"400 content_policy_violation"}),
    ),
    Kind(
        "image generation, over quota",
        image_over_quota,
        4,
        frozenset({"200", "429 rate_limit_exceeded"}),
    ),
    Kind("image edit (multipart)", image_edit, 6, OK),
    Kind("chat completion (pass-through)", chat, 10, OK),
    Kind("chat completion, issued key", issued_key, 4, OK),
    Kind("run, stream=true (SSE)", run_stream, 8, OK),
    Kind("run, client leaves mid-stream", run_stream_left, 4, frozenset({"aborted"})),
    Kind("upload part (multipart)", upload_part, 6, OK),
    Kind("upload part, client leaves mid-upload", upload_part_left, 3, frozenset({"aborted"})),
    Kind("bad key", bad_key, 5, frozenset({"401 invalid_api_key", "429 rate_limit_exceeded"})),
)

# ---------------------------------------------------------------- faults

MODERATION_DOWN: Final = "503 moderation_unavailable"
FAULTS: Final[Mapping[str, Labels]] = {  # fault -> the answers it explains
    "redis SIGKILLed and restarted": frozenset(
        {"503 quota_store_unavailable", "503 key_store_unavailable"}
    ),
    "upstream slow (0.4 s)": frozenset(),
    "upstream timing out (3 s > read timeout 2 s)": frozenset(
        {"504 upstream_unavailable", MODERATION_DOWN}
    ),
    "upstream 500": frozenset({"500 upstream", MODERATION_DOWN}),
    "upstream 429": frozenset({"429 upstream", MODERATION_DOWN}),
    "upstream resets mid-body": frozenset({"502 upstream_unavailable", MODERATION_DOWN, "cut"}),
    "upstream cuts SSE half way": frozenset({"cut"}),
    "upstream refusing connections": frozenset(
        {"502 upstream_unavailable", MODERATION_DOWN, "cut"}
    ),
}
GRACE: Final[Mapping[str, float]] = {  # how long after its end a fault can still show
    "redis SIGKILLed and restarted": BREAKER_COOLDOWN + 3,
    "upstream timing out (3 s > read timeout 2 s)": TIMEOUT_LATENCY + 1,
}


@dataclass
class Window:
    """When a fault was in force (monotonic seconds); `end` is None while it is."""

    name: str
    start: float
    end: float | None = None

    def overlaps(self, start: float, end: float) -> bool:
        if self.start > end:
            return False
        return self.end is None or start <= self.end + GRACE.get(self.name, 1.0)


# ---------------------------------------------------------------- counting and judging


@dataclass
class Tally:
    """Everything counted during the run; times are seconds since `origin`."""

    origin: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)  # the origin on the wall clock
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    unexpected: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    faults: list[Window] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # t, RSS kB, fds
    cap_admitted: int = 0
    sent: int = 0

    def clock(self) -> float:
        return time.monotonic() - self.origin

    def explained(self, start: float, end: float) -> tuple[Labels, list[str]]:
        seen = [w.name for w in self.faults if w.overlaps(start, end)]
        labels: set[str] = set()
        for name in seen:
            labels |= FAULTS[name]
        return frozenset(labels), seen

    def judge(self, kind: Kind, answer: Answer, start: float, end: float) -> None:
        self.answers[(kind.name, answer.label)] += 1
        if kind.send is image_over_quota and answer.label == "200":
            self.cap_admitted += 1
        explained, seen = self.explained(start, end)
        why = _unexpected(kind, answer, explained, self.cap_admitted)
        if why is not None:
            self.note(f"{kind.name}: {answer.label}", why, seen, start, end, answer.detail)
            self.unexpected[(kind.name, answer.label, why)] += 1

    def note(
        self, what: str, why: str, seen: list[str], start: float, end: float, detail: str = ""
    ) -> None:
        if len(self.examples) < 40:
            faults = ", ".join(seen) or "no fault"
            tail = f": {detail}" if detail else ""
            self.examples.append(f"{what} ({why}; {faults}; {start:.1f}-{end:.1f} s){tail}")


def _unexpected(kind: Kind, answer: Answer, explained: Labels, cap_admitted: int) -> str | None:
    """Why `answer` is unexpected for `kind` under faults explaining `explained`, or None."""
    if answer.label == "hang":
        return f"no answer within {HANG_AFTER:.0f} s"
    if not answer.shaped:
        return "error body not in OpenAI's shape"
    if kind.send is image_over_quota and answer.label == "200" and cap_admitted > CAP_IMAGES:
        return f"admitted past the user's {CAP_IMAGES} images/day"
    if answer.label in kind.expected or answer.label in explained:
        return None
    if answer.label.startswith("transport ") and "cut" in explained:
        return None
    return "not explained by a fault in force"


async def one(session: aiohttp.ClientSession, target: Target, kind: Kind) -> Answer:
    try:
        async with asyncio.timeout(HANG_AFTER):
            return await kind.send(session, target)
    except TimeoutError:
        return Answer("hang")
    except aiohttp.ClientError as problem:
        return Answer(f"transport {type(problem).__name__}")


async def worker(
    session: aiohttp.ClientSession, target: Target, tally: Tally, seed: int, until: float
) -> None:
    rng = random.Random(seed)
    weights = [kind.weight for kind in KINDS]
    while tally.clock() < until:
        kind = rng.choices(KINDS, weights)[0]
        start = tally.clock()
        tally.sent += 1
        answer = await one(session, target, kind)
        tally.judge(kind, answer, start, tally.clock())
