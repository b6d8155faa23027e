"""Tollgate client keys: how they are made and the only form in which they are kept (a hash)."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "tg-"


def generate_key() -> str:
    """A new client key: `tg-` and 32 random bytes, url-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: str) -> str:
    """The SHA-256 hex digest under which a key is listed and looked up."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
