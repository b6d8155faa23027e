"""The auth room: `Authorization: Bearer <tollgate key>` becomes a `Principal`, or a 401."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.context import FACTS
from proxy.errors import Unauthorized
from proxy.keys import hash_key
from proxy.policy import Policy

_MISSING = (
    "You didn't provide an API key. You need to provide your Tollgate key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_INCORRECT = "Incorrect API key provided. Ask your platform team for a valid Tollgate key."


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, its user and its team. Never the secret."""

    key_id: str
    user: str
    team: str


PRINCIPAL = web.RequestKey("principal", Principal)


class KeyRing:
    """Known keys by hash; the secret itself is hashed on arrival and never kept."""

    def __init__(self, policy: Policy) -> None:
        self._by_hash = {key.sha256: Principal(key.id, key.user, key.team) for key in policy.keys}

    def lookup(self, secret: str) -> Principal | None:
        """The principal whose key hashes like `secret`, if any."""
        return self._by_hash.get(hash_key(secret))


def bearer_token(header: str) -> str | None:
    """The token of a `Bearer` authorization header, or None."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def auth_middleware(keyring: KeyRing) -> Middleware:
    """Attach `PRINCIPAL` to every `/v1` request, or refuse it with `invalid_api_key`."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            raise Unauthorized(_MISSING)
        principal = keyring.lookup(token)
        if principal is None:
            raise Unauthorized(_INCORRECT)
        facts = request[FACTS]
        facts.key_id, facts.user, facts.team = principal.key_id, principal.user, principal.team
        request[PRINCIPAL] = principal
        return await handler(request)

    return auth
