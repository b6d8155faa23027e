"""The cache room: deterministic reads answered from the store, scoped per upstream credential.

Key: the credential's scope (base URL, organization, project; never a client key), the
operation, and the canonical request (path, sorted query, JSON body with sorted keys), so two
teams billing to different credentials can never see each other's answers. Only 2xx answers
that upstream did not mark `no-store`/`private` or answer with `Set-Cookie` are stored, and
never streamed ones. Concurrent identical misses in one process make one upstream call (the
others wait for it); across replicas a short lock in the store lets one replica fetch while
the others poll the store briefly. Clients say `Cache-Control: no-cache` to revalidate and
`no-store` to bypass. A store that fails makes the cache step aside: the request goes
upstream, the failure is counted, nothing breaks.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.breaker import BreakerOpen
from proxy.cachestore import PREFIX, CacheBackend
from proxy.call import Call
from proxy.context import FACTS, Facts
from proxy.endpoints import ENDPOINTS
from proxy.instruments import CacheStats
from proxy.keys import Clock
from proxy.quota_headers import add_rate_limit_headers
from proxy.settings import CacheSettings
from proxy.store import StoreUnavailable

# Headers that describe the content itself; a hit returns exactly these.
CONTENT_HEADERS = frozenset(
    {
        "content-type",
        "content-encoding",
        "content-language",
        "openai-version",
        "openai-organization",
        "openai-project",
    }
)
POLL_EVERY = 0.025


@dataclass(slots=True)
class Entry:
    """A stored answer: status, content headers and body, with when it was stored.
    Read-only by convention: one is decoded per hit, and frozen, each of its five fields
    would cost an `object.__setattr__`."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float
    expires_at: float

    def encode(self) -> bytes:
        """Length-prefixed JSON head, then the body as it came."""
        head = orjson.dumps([self.status, self.headers, self.stored_at, self.expires_at])
        return struct.pack(">I", len(head)) + head + self.body

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        """The entry `encode` wrote."""
        (size,) = struct.unpack(">I", raw[:4])
        status, headers, stored_at, expires_at = orjson.loads(raw[4 : 4 + size])
        pairs = tuple((name, value) for name, value in headers)
        return cls(status, pairs, raw[4 + size :], stored_at, expires_at)


@dataclass(frozen=True, slots=True)
class Shared:
    """What a leading fetch hands to the identical requests that waited for it."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(slots=True)
class ResponseCache:
    """Entries, in-flight fetches and counters for one app."""

    backend: CacheBackend
    settings: CacheSettings
    clock: Clock
    stats: CacheStats
    inflight: dict[str, asyncio.Future[Shared | None]] = field(default_factory=dict)

    def failed(self, failure: StoreUnavailable) -> None:
        """Count a store call that failed; one the circuit breaker skipped is no failure."""
        if not isinstance(failure, BreakerOpen):
            self.stats.store_error()

    async def lookup(self, key: str) -> Entry | None:
        """A fresh entry, or None (also when the store fails, which is counted)."""
        try:
            raw = await self.backend.get(key)
        except StoreUnavailable as failure:
            self.failed(failure)
            return None
        if raw is None:
            return None
        entry = Entry.decode(raw)
        return entry if self.clock() < entry.expires_at else None

    async def store(self, key: str, entry: Entry) -> None:
        """Keep `entry` until it expires; a failing store is counted and ignored."""
        if len(entry.body) > self.settings.max_entry_bytes:
            return
        try:
            await self.backend.put(key, entry.encode(), entry.expires_at - entry.stored_at)
        except StoreUnavailable as failure:
            self.failed(failure)

    async def drop(self, keys: list[str]) -> None:
        """Invalidate these keys; a failing store is counted and ignored."""
        try:
            await self.backend.delete(keys)
        except StoreUnavailable as failure:
            self.failed(failure)

    async def flush(self, scope: str | None) -> int:
        """Drop one scope's entries, or all of them."""
        return await self.backend.flush(PREFIX + ("{" + scope + "}" if scope else ""))


def cache_key(scope: str, call: Call, request: web.Request, fields: Mapping[str, object]) -> str:
    """The scope as a hash tag, the operation, and a digest of the canonical request."""
    query = sorted(request.rel_url.query.items()) if "?" in request.raw_path else []
    canonical = orjson.dumps(
        [request.method, request.path, query, fields], option=orjson.OPT_SORT_KEYS
    )
    digest = hashlib.sha256(canonical).hexdigest()[:40]
    return f"{PREFIX}{{{scope}}}:{call.operation}:{digest}"


def _path_key(scope: str, operation: str, path: str) -> str:
    canonical = orjson.dumps(["GET", path, [], {}], option=orjson.OPT_SORT_KEYS)
    return f"{PREFIX}{{{scope}}}:{operation}:{hashlib.sha256(canonical).hexdigest()[:40]}"


def model_keys(scope: str, model: str) -> list[str]:
    """The entries a deleted model makes stale: its own, and its scope's listing."""
    return [
        _path_key(scope, "models.retrieve", f"/v1/models/{model}"),
        _path_key(scope, "models.list", "/v1/models"),
    ]


def cache_ttls(settings: CacheSettings) -> dict[str, float]:
    """Operation -> TTL: the table's deterministic reads, plus what the operator opted in."""
    if not settings.enabled:
        return {}
    defaults = {e.operation: settings.ttl for e in ENDPOINTS if e.cached}
    return defaults | settings.operations


def _shared(response: web.StreamResponse, facts: Facts) -> Shared | None:
    """The answer as others may reuse it, if it was read whole (not streamed)."""
    if not isinstance(response, web.Response) or response.prepared or facts.aborted:
        return None
    body = response.body
    if not isinstance(body, bytes):
        return None
    kept = tuple((k, v) for k, v in response.headers.items() if k.lower() in CONTENT_HEADERS)
    return Shared(response.status, kept, body)


def _answer(shared: Shared | Entry, state: str, facts: Facts, age: float | None) -> web.Response:
    headers = CIMultiDict(shared.headers)
    headers["x-tollgate-cache"] = state
    headers["x-request-id"] = facts.request_id
    if age is not None:
        headers["Age"] = str(int(age))
    add_rate_limit_headers(headers, facts)
    return web.Response(status=shared.status, body=shared.body, headers=headers)


def _mark(response: web.StreamResponse, state: str, facts: Facts) -> web.StreamResponse:
    facts.cache = state
    if not response.prepared:
        response.headers["x-tollgate-cache"] = state
    return response


class CacheRoom:
    """The stage and what it needs: the cache, TTLs per operation, and the clock."""

    def __init__(self, cache: ResponseCache, ttls: dict[str, float]) -> None:
        self.cache = cache
        self.ttls = ttls

    def applies(self, operation: str) -> bool:
        """Whether the cache reads or invalidates for `operation` (fixed at start-up)."""
        return operation in self.ttls or operation == "models.delete"

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        facts = request[FACTS]
        call = facts.call
        if call.operation == "models.delete":
            return await self._invalidating(request, handler, call)
        ttl = self.ttls.get(call.operation)
        if ttl is None:
            return await handler(request)
        directives = _directives(request.headers.get("Cache-Control", ""))
        if "no-store" in directives:
            self.cache.stats.bypass()
            return _mark(await handler(request), "bypass", facts)
        scope = facts.principal.credential.scope
        key = cache_key(scope, call, request, facts.fields)
        if "no-cache" not in directives:
            entry = await self.cache.lookup(key)
            if entry is not None:
                self.cache.stats.hit()
                facts.cache = "hit"
                return _answer(entry, "hit", facts, self.cache.clock() - entry.stored_at)
            leader = self.cache.inflight.get(key)
            if leader is not None:
                return await self._follow(request, handler, leader)
        return await self._lead(request, handler, key, ttl)

    async def _follow(
        self, request: web.Request, handler: Handler, leader: asyncio.Future[Shared | None]
    ) -> web.StreamResponse:
        """Wait for the identical request already on its way upstream, and share its answer."""
        shared = await asyncio.shield(leader)
        facts = request[FACTS]
        if shared is None:
            self.cache.stats.miss()
            return _mark(await handler(request), "miss", facts)
        self.cache.stats.coalesced()
        facts.cache = "hit"
        return _answer(shared, "hit", facts, 0)

    async def _lead(
        self, request: web.Request, handler: Handler, key: str, ttl: float
    ) -> web.StreamResponse:
        """Fetch once for everyone asking the same now; store what may be stored."""
        future: asyncio.Future[Shared | None] = asyncio.get_running_loop().create_future()
        self.cache.inflight[key] = future
        shared: Shared | None = None
        try:
            response = await self._fetch_once_across_replicas(request, handler, key)
            shared = _shared(response, request[FACTS])
            if shared is not None and _storable(shared, request[FACTS]):
                now = self.cache.clock()
                entry = Entry(shared.status, shared.headers, shared.body, now, now + ttl)
                await self.cache.store(key, entry)
            return response
        finally:
            self.cache.inflight.pop(key, None)
            future.set_result(shared)

    async def _fetch_once_across_replicas(
        self, request: web.Request, handler: Handler, key: str
    ) -> web.StreamResponse:
        """Take the replicas' lock, or wait for the replica holding it to fill the cache."""
        facts, lock = request[FACTS], key + ":lock"
        lock_ttl = self.cache.settings.lock_ttl
        try:
            locked: bool | None = await self.cache.backend.lock(lock, lock_ttl)
        except StoreUnavailable as failure:
            self.cache.failed(failure)
            locked = None  # no store, so no replica to wait for: straight upstream
        if locked is False:
            entry = await self._wait_for(key, lock_ttl)
            if entry is not None:
                self.cache.stats.coalesced()
                facts.cache = "hit"
                return _answer(entry, "hit", facts, self.cache.clock() - entry.stored_at)
        try:
            self.cache.stats.miss()
            return _mark(await handler(request), "miss", facts)
        finally:
            if locked:
                await self._unlock(lock)

    async def _wait_for(self, key: str, limit: float) -> Entry | None:
        """Poll the store while another replica fetches; None if it never fills it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while loop.time() < deadline:
            await asyncio.sleep(POLL_EVERY)
            entry = await self.cache.lookup(key)
            if entry is not None:
                return entry
        return None

    async def _unlock(self, lock: str) -> None:
        try:
            await self.cache.backend.unlock(lock)
        except StoreUnavailable as failure:
            self.cache.failed(failure)

    async def _invalidating(
        self, request: web.Request, handler: Handler, call: Call
    ) -> web.StreamResponse:
        """A deleted model leaves no stale copy of itself or of its scope's listing."""
        response = await handler(request)
        if 200 <= response.status < 300 and call.model:
            scope = request[FACTS].principal.credential.scope
            await self.cache.drop(model_keys(scope, call.model))
        return response


def _directives(header: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in header.split(",") if part.strip()}


def _private(upstream: CIMultiDictProxy[str] | None) -> bool:
    """Whether upstream said its answer is not for sharing (cookies, no-store, private)."""
    if upstream is None:
        return False
    control = upstream.get("Cache-Control", "").lower()
    return "set-cookie" in upstream or "no-store" in control or "private" in control


def _storable(shared: Shared, facts: Facts) -> bool:
    """A 2xx upstream did not mark private, whose body is the JSON it says it is: a garbled
    or foreign answer (an HTML page, a truncated document) is relayed once, never kept."""
    if not 200 <= shared.status < 300 or _private(facts.upstream_headers):
        return False
    return _is_json(shared)


def _is_json(shared: Shared) -> bool:
    kind = next((v for k, v in shared.headers if k.lower() == "content-type"), "")
    if not kind.lower().startswith("application/json"):
        return False
    try:
        orjson.loads(shared.body)
    except orjson.JSONDecodeError:
        return False
    return True


def cache_middleware(room: CacheRoom) -> Middleware:
    """The room as a pipeline stage."""
    return room.__call__
