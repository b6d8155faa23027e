"""The admin API under `/admin`: issue, show, change, rotate and revoke keys, behind its own
token (`AdminGate`), on the main port or on a listener of its own (`own_listener`)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from proxy.auth import bearer_token
from proxy.cache import ResponseCache
from proxy.errors import InvalidRequest, ProxyError, Unauthorized
from proxy.keys import KeyRecord, KeyService, UnknownKey
from proxy.limits import key_rules
from proxy.lockout import Lockout
from proxy.moderation import Moderator
from proxy.policy import Policy
from proxy.server import TollgateRunner
from proxy.store import StoreUnavailable
from proxy.tenancy import Tenancy

Pattern = str
_OFF = "The admin API is off: set TOLLGATE_ADMIN_TOKEN to turn it on."
_WRONG = "Incorrect admin token."
ADMIN_APP = web.AppKey("admin_app", web.Application)  # the admin API's own app, on its own port
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _small_map(value: dict[str, str]) -> dict[str, str]:
    """OpenAI's metadata rule, used for key metadata too: 16 pairs, keys 64, values 512."""
    if len(value) > 16:
        raise ValueError("at most 16 pairs")
    if any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
        raise ValueError("keys at most 64 characters, values at most 512")
    return value


class KeyChange(BaseModel):
    """What an admin may set on a key after it exists."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=128)
    expires_at: int | None = Field(default=None, ge=0)
    disabled: bool | None = None
    allowed_operations: tuple[Pattern, ...] | None = Field(default=None, max_length=64)
    allowed_models: tuple[Pattern, ...] | None = Field(default=None, max_length=64)
    limits: dict[str, str] | None = None
    metadata: dict[str, str] | None = None

    _maps = field_validator("limits", "metadata")(lambda cls, v: v if v is None else _small_map(v))

    @field_validator("limits")
    @classmethod
    def _limits_parse(cls, limits: dict[str, str] | None) -> dict[str, str] | None:
        """Operation pattern -> limit string(s), e.g. {"images.*": "10 images/day"}."""
        if limits is not None:
            key_rules(limits)
        return limits


class KeyCreate(KeyChange):
    """A new key: who it is for, and optionally its team and restrictions."""

    name: str = Field(min_length=1, max_length=128)
    user: str = Field(min_length=1, max_length=256)
    team: str | None = Field(default=None, min_length=1, max_length=64)


class UnknownKeyError(ProxyError):
    """404 for a key id that was never issued."""

    def __init__(self, key_id: str) -> None:
        super().__init__(404, f"No key with id {key_id!r}.", param="key_id", code="key_not_found")


async def _body(request: web.Request, model: type[KeyChange]) -> KeyChange:
    """The JSON body validated by `model`; a 400 naming the field otherwise."""
    try:
        raw: Any = orjson.loads(await request.read() or b"{}")
        return model.model_validate(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"Invalid {field or 'body'}: {first['msg']}.", param=field) from None


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _shown(record: KeyRecord, secret: str | None = None) -> web.Response:
    shown = record.public()
    if secret is not None:
        shown["key"] = secret
    return _json(shown, 201 if secret is not None and record.rotated_at is None else 200)


class AdminApi:
    """The handlers, bound to one key service and policy."""

    def __init__(self, service: KeyService, policy: Policy) -> None:
        self._service = service
        self._policy = policy

    async def _record(self, key_id: str) -> KeyRecord:
        try:
            return await self._service.get(key_id)
        except UnknownKey:
            raise UnknownKeyError(key_id) from None

    async def create(self, request: web.Request) -> web.Response:
        """POST /admin/keys: a new key; its secret is in this answer and nowhere else."""
        spec = await _body(request, KeyCreate)
        assert isinstance(spec, KeyCreate)
        team = self._policy.team_of(spec.user, spec.team)
        if team not in self._policy.teams:
            raise InvalidRequest(f"Invalid team: no team named {team!r}.", param="team")
        fields = spec.model_dump(exclude_none=True) | {"team": team}
        record, secret = await self._service.create(**fields)
        return _shown(record, secret)

    async def list(self, request: web.Request) -> web.Response:
        """GET /admin/keys: every key, revoked ones included; never a secret or hash."""
        records = await self._service.list()
        return _json({"object": "list", "data": [record.public() for record in records]})

    async def show(self, request: web.Request) -> web.Response:
        """GET /admin/keys/{key_id}."""
        return _shown(await self._record(request.match_info["key_id"]))

    async def update(self, request: web.Request) -> web.Response:
        """PATCH /admin/keys/{key_id}: change expiry, disabled, limits or allowances."""
        key_id = request.match_info["key_id"]
        changes = (await _body(request, KeyChange)).model_dump(exclude_unset=True)
        await self._record(key_id)
        return _shown(await self._service.update(key_id, **changes))

    async def revoke(self, request: web.Request) -> web.Response:
        """DELETE /admin/keys/{key_id}: revoked at once, on every replica."""
        key_id = request.match_info["key_id"]
        await self._record(key_id)
        return _shown(await self._service.revoke(key_id))

    async def rotate(self, request: web.Request) -> web.Response:
        """POST /admin/keys/{key_id}/rotate: a new secret, same id and history."""
        key_id = request.match_info["key_id"]
        try:
            record, secret = await self._service.rotate(key_id)
        except UnknownKey:
            raise UnknownKeyError(key_id) from None
        return _shown(record, secret)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class AdminGate:
    """The admin token's check: compared as digests (equal length, constant time, whatever
    was sent), taken only from the `Authorization` header, failures counted per address."""

    def __init__(self, token: SecretStr | None, lockout: Lockout) -> None:
        self._digest = None if token is None else _digest(token.get_secret_value())
        self._lockout = lockout

    def guarded(self, handler: Handler) -> Handler:
        """`handler`, answering 401 unless the request bears the admin token."""

        async def checked(request: web.Request) -> web.StreamResponse:
            if self._digest is None:
                raise Unauthorized(_OFF)
            self._lockout.check(request)
            given = bearer_token(request.headers.get("Authorization", "")) or ""
            if not hmac.compare_digest(_digest(given), self._digest):
                await self._lockout.failed(request)
                raise Unauthorized(_WRONG)
            return await handler(request)

        return checked


def own_listener(admin: web.Application, host: str, port: int, *, shared: bool) -> CleanupContext:
    """Serve `admin` on a port of its own while the main app runs (SO_REUSEPORT when the
    server's worker processes all bind it, as they do the metrics port)."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        runner = TollgateRunner(admin, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=shared or None).start()
        yield
        await runner.cleanup()

    return lifecycle


def add_admin_routes(app: web.Application, api: AdminApi, gate: AdminGate) -> None:
    """Mount the admin API on `app` under `/admin`."""
    routes = [
        ("POST", "/admin/keys", api.create),
        ("GET", "/admin/keys", api.list),
        ("GET", "/admin/keys/{key_id}", api.show),
        ("PATCH", "/admin/keys/{key_id}", api.update),
        ("DELETE", "/admin/keys/{key_id}", api.revoke),
        ("POST", "/admin/keys/{key_id}/rotate", api.rotate),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, gate.guarded(handler))


class CacheFlush(BaseModel):
    """Which cached answers to drop: one team's scope, one scope, or (neither) all."""

    model_config = ConfigDict(extra="forbid")

    team: str | None = None
    scope: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")


def add_cache_admin_routes(
    app: web.Application, cache: ResponseCache, tenancy: Tenancy, gate: AdminGate
) -> None:
    """POST /admin/cache/flush: drop a team's or a scope's cached answers, or all of them."""

    async def flush(request: web.Request) -> web.Response:
        try:
            spec = CacheFlush.model_validate(orjson.loads(await request.read() or b"{}"))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise InvalidRequest(f"Invalid body: {exc}".splitlines()[0], param=None) from None
        scope = spec.scope
        if spec.team is not None:
            if not tenancy.has_team(spec.team):
                raise InvalidRequest(f"Invalid team: no team named {spec.team!r}.", param="team")
            scope = tenancy.credential(spec.team).scope
        return _json({"flushed": await cache.flush(scope), "scope": scope})

    app.router.add_post("/admin/cache/flush", gate.guarded(flush))


def add_strike_admin_routes(app: web.Application, moderator: Moderator, gate: AdminGate) -> None:
    """GET and DELETE /admin/strikes/{team}/{user}: a user's moderation strikes, and forgiving."""

    async def show(request: web.Request) -> web.Response:
        team, user = request.match_info["team"], request.match_info["user"]
        try:
            return _json(await moderator.strike_report(team, user))
        except StoreUnavailable:
            raise ProxyError(503, "The store is unavailable.", type="server_error") from None

    async def clear(request: web.Request) -> web.Response:
        team, user = request.match_info["team"], request.match_info["user"]
        try:
            await moderator.clear_strikes(team, user)
        except StoreUnavailable:
            raise ProxyError(503, "The store is unavailable.", type="server_error") from None
        return _json(await moderator.strike_report(team, user))

    app.router.add_get("/admin/strikes/{team}/{user}", gate.guarded(show))
    app.router.add_delete("/admin/strikes/{team}/{user}", gate.guarded(clear))
