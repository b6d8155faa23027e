"""The suite's leak detector: every secret the tests know, everything Tollgate produced while
they ran (log lines, answers, /metrics, stored state), and which of it holds which secret.

`tests/conftest.py` feeds it: every Tollgate made by the shared fixtures is watched (its log
stream, each answer's status line, headers and body as Tollgate wrote them, its metrics and
data file at the end), Redis is read before each flush, and secrets come from the fixtures'
settings (every `SecretStr`) and from the admin API's answers (each issued key, as it is
shown once). After each test what was recorded is scanned and dropped; at the end of the
session any finding fails the run, naming the secret, the place and the test.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, SecretStr

SHORTEST = 8  # shorter "secrets" (test placeholders) would match by chance
FRAGMENT = 16  # a secret this long from its middle also counts, to catch cut or masked copies
SHOWN_ONCE = ("/admin/keys",)  # the answers that hand out a new key's secret, on purpose


@dataclass(frozen=True, slots=True)
class Leak:
    """One secret found in one place."""

    secret: str  # its name, never its value
    where: str
    test: str
    excerpt: str  # the text around it, the secret itself blanked out

    def __str__(self) -> str:
        return f"{self.secret} in {self.where} (during {self.test}): {self.excerpt}"


def secret_values(model: BaseModel, prefix: str = "settings") -> Iterator[tuple[str, str]]:
    """(dotted name, value) of every `SecretStr` in `model`, nested models and maps included."""

    def walk(value: Any, name: str) -> Iterator[tuple[str, str]]:
        if isinstance(value, SecretStr):
            yield name, value.get_secret_value()
        elif isinstance(value, BaseModel):
            for key in type(value).model_fields:
                yield from walk(getattr(value, key), f"{name}.{key}")
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{name}.{key}")

    yield from walk(model, prefix)


def _excerpt(text: bytes, at: int, needle: bytes, secrets: Iterable[bytes]) -> str:
    """The text around a finding, with every secret (and the piece found) blanked out."""
    shown = text[max(0, at - 60) : at + len(needle) + 60]
    for secret in (needle, *secrets):
        shown = shown.replace(secret, b"<SECRET>")
    return shown.decode("utf-8", errors="replace").replace("\n", "\\n")


@dataclass(slots=True)
class Record:
    """One thing Tollgate wrote, in the chunks it was written in."""

    where: str
    chunks: list[bytes]
    shows: bytes | None = None  # the one secret this answer hands out on purpose


@dataclass
class Exposure:
    """Secrets, and the texts of the test running now."""

    secrets: dict[bytes, str] = field(default_factory=dict)  # value -> name
    records: list[Record] = field(default_factory=list)
    leaks: list[Leak] = field(default_factory=list)
    scanned: int = 0  # bytes, over the session
    seconds: float = 0.0  # spent scanning, over the session

    def learn(self, name: str, value: str) -> None:
        """Watch for `value` from now on (too short a value would match by chance)."""
        if len(value) >= SHORTEST:
            self.secrets.setdefault(value.encode("utf-8", "surrogateescape"), name)

    def learn_settings(self, model: BaseModel) -> None:
        """Watch for every secret of a settings object."""
        for name, value in secret_values(model):
            self.learn(name, value)

    def record(self, where: str, *chunks: bytes) -> Record:
        """Something Tollgate wrote (more chunks may be added to the record until the scan)."""
        record = Record(where, list(chunks))
        self.records.append(record)
        return record

    def watch(self, app: web.Application, name: str) -> None:
        """Record every answer `app` writes: status, headers, and body as it is written."""

        async def prepared(request: web.Request, response: web.StreamResponse) -> None:
            route = request.match_info.route.resource
            path = route.canonical if route is not None else "(no route)"
            where = f"answer of {name} to {request.method} {path}"
            head = f"{response.status} {response.reason}\n{dict(response.headers)}\n".encode()
            record = self.record(where, head)
            if isinstance(response, web.Response):
                body = response.body
                if isinstance(body, bytes | bytearray):
                    record.chunks.append(bytes(body))
                    record.shows = self._issued(request, bytes(body))
                return
            write = response.write

            async def recorded(data: bytes | bytearray | memoryview) -> None:
                record.chunks.append(bytes(data))
                await write(data)

            response.write = recorded  # type: ignore[method-assign]

        app.on_response_prepare.append(prepared)

    def _issued(self, request: web.Request, body: bytes) -> bytes | None:
        """An admin answer handing out a new key: learn the key; only this answer may show it."""
        if request.method != "POST" or not request.path.startswith(SHOWN_ONCE):
            return None
        try:
            shown = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(shown, dict) or not isinstance(shown.get("key"), str):
            return None
        self.learn(f"issued key {shown.get('id')}", shown["key"])
        return bytes(shown["key"].encode())

    def scan(self, test: str) -> None:
        """Look for every secret in what the test produced; keep the findings, drop the text."""
        started = time.perf_counter()
        for record in self.records:
            text = b"".join(record.chunks)
            self.scanned += len(text)
            for secret, name in self.secrets.items():
                if secret != record.shows:
                    self._look(text, secret, name, record.where, test)
        self.records.clear()
        self.seconds += time.perf_counter() - started

    def _look(self, text: bytes, secret: bytes, name: str, where: str, test: str) -> None:
        """The secret whole, or for a long one a piece of its middle (a cut or masked copy)."""
        needle = secret
        at = text.find(secret)
        if at < 0 and len(secret) >= 2 * FRAGMENT:
            middle = len(secret) // 2 - FRAGMENT // 2
            needle = secret[middle : middle + FRAGMENT]
            at = text.find(needle)
            name += " (a part of it)"
        if at >= 0:
            excerpt = _excerpt(text, at, needle, self.secrets)
            self.leaks.append(Leak(name, where, test, excerpt))
