"""The store behind Tollgate's shared state: one protocol, an embedded and a Redis backend."""

from __future__ import annotations

from typing import Protocol

from proxy.keys import KeyStore
from proxy.settings import Settings


class StoreUnavailable(Exception):
    """The store did not answer; the message names the backend, never its credentials."""


class Store(KeyStore, Protocol):
    """What every backend offers: key records, and a way to tell it is alive."""

    name: str

    async def ping(self) -> None:
        """Return when the store answers; raise `StoreUnavailable` when it does not."""

    async def close(self) -> None:
        """Release connections."""


def open_store(settings: Settings) -> Store:
    """The backend the settings name (Redis connects lazily, on first use)."""
    if settings.store == "redis":
        from proxy.store.redis import RedisStore

        return RedisStore(settings.redis)
    from proxy.store.memory import MemoryStore

    return MemoryStore(settings.data_file)
