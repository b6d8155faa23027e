"""The auth room: `Authorization: Bearer <tollgate key>` becomes a `Principal`, or a 401.

Keys are looked up by their SHA-256: first among the policy file's static keys (in memory),
then among issued keys in the store (one lookup, no local cache, so a revocation holds from
the next request on every replica). A store that does not answer is a 503, never a 401: an
outage must not tell clients their keys are bad.

Every wrong key, unknown or malformed or no longer usable, takes the same path (one digest,
one store lookup) to the same answer, so the answer tells nothing about which keys exist; each
failure is counted against the client's address (proxy/lockout.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.context import FACTS
from proxy.errors import ProxyError, Unauthorized
from proxy.keys import Clock, KeyRecord, hash_key
from proxy.lockout import Lockout
from proxy.policy import Policy
from proxy.store import Store, StoreUnavailable
from proxy.tenancy import Credential, Tenancy

_MISSING = (
    "You didn't provide an API key. You need to provide your Tollgate key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_INCORRECT = "Incorrect API key provided. Ask your platform team for a valid Tollgate key."


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling and what they may do. Never the secret."""

    key_id: str
    user: str
    team: str
    credential: Credential
    allowed_operations: tuple[str, ...] | None = None
    allowed_models: tuple[str, ...] | None = None
    limits: Mapping[str, str] = field(default_factory=dict)


class StoreDown(ProxyError):
    """503: keys cannot be checked right now."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "Tollgate cannot check keys right now; please retry shortly.",
            type="server_error",
            code="key_store_unavailable",
        )


class Authenticator:
    """Finds the principal for a secret: static keys first, then issued ones."""

    def __init__(self, policy: Policy, tenancy: Tenancy, store: Store, clock: Clock) -> None:
        self._tenancy = tenancy
        self._store = store
        self._clock = clock
        self._static = {
            key.sha256: self._make(key.id, key.user, policy.team_of(key.user, key.team))
            for key in policy.keys
        }
        self._teams = set(policy.teams)

    def _make(
        self, key_id: str, user: str, team: str, record: KeyRecord | None = None
    ) -> Principal:
        if record is None:
            return Principal(key_id, user, team, self._tenancy.credential(team))
        return Principal(
            key_id,
            user,
            team,
            self._tenancy.credential(team),
            record.allowed_operations,
            record.allowed_models,
            record.limits,
        )

    def static(self, digest: str) -> Principal | None:
        """The principal of the policy file's key with this SHA-256, if any (in memory: no
        coroutine, for the keys most requests come with)."""
        return self._static.get(digest)

    async def issued(self, digest: str) -> Principal | None:
        """The principal of the issued key with this SHA-256, if it may be used now."""
        try:
            record = await self._store.key_by_hash(digest)
        except StoreUnavailable:
            raise StoreDown() from None
        if record is None or record.refusal(self._clock()) or record.team not in self._teams:
            return None
        return self._make(record.id, record.user, record.team, record)


def bearer_token(header: str) -> str | None:
    """The token of a `Bearer` authorization header, or None."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def auth_handler(authenticator: Authenticator, lockout: Lockout, handler: Handler) -> Handler:
    """Set the facts' `principal` for every `/v1` request, then hand it to `handler`; or refuse
    it with `invalid_api_key` (or 429, from an address with too many failures: see
    proxy/lockout.py). The first room, so it is the route's handler itself (not a middleware
    wrapped in one: a coroutine less on every request)."""

    async def auth(request: web.Request) -> web.StreamResponse:
        lockout.check(request)
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            await lockout.failed(request)
            raise Unauthorized(_MISSING)
        digest = hash_key(token)
        principal = authenticator.static(digest) or await authenticator.issued(digest)
        if principal is None:
            await lockout.failed(request)
            raise Unauthorized(_INCORRECT)
        facts = request[FACTS]
        facts.key_id, facts.user, facts.team = principal.key_id, principal.user, principal.team
        facts.principal = principal
        return await handler(request)

    return auth
