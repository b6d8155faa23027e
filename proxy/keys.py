"""Tollgate client keys: how they are made, the record kept of each (by hash), issue and revoke.

Keys are `tg-` and 32 random bytes. The store keeps only their SHA-256: with 256 bits of
entropy no dictionary or brute force reaches a key from its hash, so a pepper (HMAC with a
server secret) would protect nothing more, and would make the secret itself impossible to
rotate without reissuing every key.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

KEY_PREFIX = "tg-"

Clock = Callable[[], float]


def generate_key() -> str:
    """A new client key: `tg-` and 32 random bytes, url-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: str) -> str:
    """The SHA-256 hex digest under which a key is listed and looked up.

    Any header text hashes, bytes that are not UTF-8 included (aiohttp hands those over as
    surrogate escapes): a malformed key is one more unknown key, never an error of its own.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


class KeyRecord(BaseModel):
    """What Tollgate keeps of an issued key: everything but the secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    user: str
    team: str
    hash: str
    created_at: int
    expires_at: int | None = None
    disabled: bool = False
    revoked_at: int | None = None
    rotated_at: int | None = None
    allowed_operations: tuple[str, ...] | None = None
    allowed_models: tuple[str, ...] | None = None
    limits: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)

    def public(self) -> dict[str, object]:
        """The record as shown to admins: no hash, no secret."""
        return self.model_dump(mode="json", exclude={"hash"})

    def refusal(self, now: float) -> str | None:
        """Why this key cannot be used at `now`, or None when it can."""
        if self.revoked_at is not None:
            return "revoked"
        if self.disabled:
            return "disabled"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return None


class KeyStore(Protocol):
    """Where key records live; every store backend provides this."""

    async def key_by_hash(self, digest: str) -> KeyRecord | None:
        """The usable (not revoked) record whose secret hashes to `digest`."""

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        """Any record by id, revoked ones included."""

    async def all_keys(self) -> list[KeyRecord]:
        """Every record, revoked ones included."""

    async def save_key(self, record: KeyRecord, previous_hash: str | None = None) -> None:
        """Write `record`; index its hash unless revoked; drop `previous_hash` from the index."""


class UnknownKey(LookupError):
    """No key record has that id."""


class KeyService:
    """Issue, change, rotate and revoke keys: the one implementation the admin API and CLI use."""

    def __init__(self, store: KeyStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def create(self, **fields: object) -> tuple[KeyRecord, str]:
        """A new record and its secret; the secret is never stored and shown only here."""
        secret = generate_key()
        record = KeyRecord.model_validate(
            {
                **fields,
                "id": "key_" + secrets.token_hex(8),
                "hash": hash_key(secret),
                "created_at": int(self._clock()),
            }
        )
        await self._store.save_key(record)
        return record, secret

    async def get(self, key_id: str) -> KeyRecord:
        """The record with `key_id`, or `UnknownKey`."""
        record = await self._store.key_by_id(key_id)
        if record is None:
            raise UnknownKey(key_id)
        return record

    async def list(self) -> list[KeyRecord]:
        """All records, oldest first."""
        return sorted(await self._store.all_keys(), key=lambda r: (r.created_at, r.id))

    async def update(self, key_id: str, **changes: object) -> KeyRecord:
        """Change a key's expiry, state, limits or allowances; takes effect on the next request."""
        record = await self.get(key_id)
        updated = record.model_validate({**record.model_dump(), **changes})
        await self._store.save_key(updated, previous_hash=record.hash)
        return updated

    async def revoke(self, key_id: str) -> KeyRecord:
        """Revoke for good: the record stays for history, its hash leaves the index."""
        return await self.update(key_id, revoked_at=int(self._clock()))

    async def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """A new secret for the same id and history; the old secret stops working at once."""
        record = await self.get(key_id)
        if record.revoked_at is not None:
            raise UnknownKey(key_id)
        secret = generate_key()
        rotated = await self.update(key_id, hash=hash_key(secret), rotated_at=int(self._clock()))
        return rotated, secret
