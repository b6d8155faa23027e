"""Tenancy: which upstream credential each team bills to, resolved once at start-up."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from proxy.policy import Policy
from proxy.settings import CredentialSettings, Settings, UpstreamSettings

PSEUDONYMS_KEPT = 4096


class TenancyError(ValueError):
    """The policy names a credential the settings do not define."""


@dataclass(frozen=True, slots=True)
class Credential:
    """Where a team's requests go and the headers that bill them.

    `scope` identifies the credential without revealing it (base URL, organization and
    project, hashed): it is what a cache may key on, never the key itself.
    """

    name: str
    origin: str
    headers: dict[str, str]
    scope: str

    def __repr__(self) -> str:
        return f"Credential(name={self.name!r}, origin={self.origin!r})"


def _headers(source: UpstreamSettings | CredentialSettings) -> dict[str, str]:
    headers: dict[str, str] = {}
    if source.api_key is not None:
        headers["Authorization"] = "Bearer " + source.api_key.get_secret_value()
    if source.organization is not None:
        headers["OpenAI-Organization"] = source.organization.get_secret_value()
    if source.project is not None:
        headers["OpenAI-Project"] = source.project.get_secret_value()
    return headers


def _credential(name: str, origin: str, headers: dict[str, str]) -> Credential:
    identity = "\n".join(
        [origin, headers.get("OpenAI-Organization", ""), headers.get("OpenAI-Project", "")]
    )
    return Credential(name, origin, headers, hashlib.sha256(identity.encode()).hexdigest()[:32])


def central_credential(upstream: UpstreamSettings) -> Credential:
    """The TOLLGATE_UPSTREAM credential, used by teams that name none."""
    return _credential("central", upstream.origin, _headers(upstream))


def named_credential(name: str, settings: Settings) -> Credential:
    """A TOLLGATE_CREDENTIALS entry, inheriting the central base URL unless it sets one."""
    entry = settings.credentials.get(name.lower())
    if entry is None:
        raise TenancyError(
            f"credential {name!r} is not set (TOLLGATE_CREDENTIALS__{name.upper()}__API_KEY)"
        )
    origin = str(entry.base_url).rstrip("/") if entry.base_url else settings.upstream.origin
    return _credential(name, origin, _headers(entry))


class Tenancy:
    """Teams to credentials, and users to pseudonymous ids, for one policy and settings."""

    def __init__(self, policy: Policy, settings: Settings) -> None:
        central = central_credential(settings.upstream)
        self._by_team = {
            team: named_credential(spec.credential, settings) if spec.credential else central
            for team, spec in policy.teams.items()
        }
        secret = settings.pseudonym_secret
        self._pseudonym_key = secret.get_secret_value().encode() if secret else b"tollgate"
        # Every image request needs its user's pseudonym; users are few and names short.
        self.pseudonym = lru_cache(maxsize=PSEUDONYMS_KEPT)(self._pseudonym)

    def has_team(self, team: str) -> bool:
        """Whether the policy names `team`."""
        return team in self._by_team

    def credential(self, team: str) -> Credential:
        """The credential `team` bills to (teams are checked when the policy loads)."""
        return self._by_team[team]

    def _pseudonym(self, team: str, user: str) -> str:
        """A stable id for `user` that OpenAI can tell apart from others, never the name
        (`pseudonym`, the same remembered for the last few thousand users)."""
        digest = hmac.digest(self._pseudonym_key, f"{team}\n{user}".encode(), "sha256")
        return "tg-user-" + digest.hex()[:32]
