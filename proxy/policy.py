"""The YAML policy file (config/tollgate.yaml): who may use Tollgate, and how much, as frozen
models."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.limits import LimitsPolicy
from proxy.moderation_policy import ModerationPolicy
from proxy.prices import PriceTable


class StaticKey(BaseModel):
    """A client key listed by its SHA-256 hash (`tollgate keys hash` prints one)."""

    # hide_input: a secret pasted where its hash belongs must not be echoed back
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    id: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    user: str = Field(default="", max_length=256)
    team: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("sha256")
    @classmethod
    def _lowercase(cls, digest: str) -> str:
        return digest.lower()


class Team(BaseModel):
    """A team bills to one upstream credential: a name under TOLLGATE_CREDENTIALS, or the
    central TOLLGATE_UPSTREAM one when none is named."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    credential: str | None = Field(default=None, min_length=1, max_length=64)


class User(BaseModel):
    """A person or service, and the team it belongs to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    team: str = Field(min_length=1, max_length=64)


class Policy(BaseModel):
    """Everything the policy file says."""

    # hide_input: the whole file would be echoed, a pasted secret with it
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    default_team: str = "default"
    teams: dict[str, Team] = Field(default_factory=lambda: {"default": Team()})
    users: dict[str, User] = Field(default_factory=dict)
    keys: tuple[StaticKey, ...] = ()
    moderation: ModerationPolicy = ModerationPolicy()
    limits: LimitsPolicy = LimitsPolicy()
    prices: PriceTable = PriceTable()

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: tuple[StaticKey, ...]) -> tuple[StaticKey, ...]:
        for attribute in ("id", "sha256"):
            values = [getattr(key, attribute) for key in keys]
            if len(values) != len(set(values)):
                raise ValueError(f"two keys share one {attribute}")
        return keys

    @model_validator(mode="after")
    def _teams_exist(self) -> Policy:
        named = {self.default_team} | {user.team for user in self.users.values()}
        named |= {key.team for key in self.keys if key.team is not None}
        named |= set(self.limits.teams)
        unknown = sorted(named - set(self.teams))
        if unknown:
            raise ValueError(f"unknown team(s): {', '.join(unknown)}")
        return self

    def team_of(self, user: str, team: str | None = None) -> str:
        """The team a key of `user` bills to: its own, else the user's, else the default."""
        if team is not None:
            return team
        member = self.users.get(user)
        return member.team if member else self.default_team


def load_policy(path: Path | None) -> Policy:
    """The policy in `path`; no file means no keys (every request is refused)."""
    if path is None:
        return Policy()
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return Policy.model_validate(document)
