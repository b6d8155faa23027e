"""The YAML policy file (config/tollgate.yaml): who may use Tollgate, as frozen models."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class StaticKey(BaseModel):
    """A client key listed by its SHA-256 hash (`tollgate keys hash` prints one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    user: str = Field(default="", max_length=256)
    team: str = Field(default="default", min_length=1, max_length=64)

    @field_validator("sha256")
    @classmethod
    def _lowercase(cls, digest: str) -> str:
        return digest.lower()


class Policy(BaseModel):
    """Everything the policy file says."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: tuple[StaticKey, ...] = ()

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: tuple[StaticKey, ...]) -> tuple[StaticKey, ...]:
        for attribute in ("id", "sha256"):
            values = [getattr(key, attribute) for key in keys]
            if len(values) != len(set(values)):
                raise ValueError(f"two keys share one {attribute}")
        return keys


def load_policy(path: Path | None) -> Policy:
    """The policy in `path`; no file means no keys (every request is refused)."""
    if path is None:
        return Policy()
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return Policy.model_validate(document)
