"""The store behind Tollgate's shared state: one protocol, an embedded and a Redis backend."""

from __future__ import annotations

from typing import Protocol

from proxy.settings import Settings


class StoreUnavailable(Exception):
    """The store did not answer; the message names the backend, never its credentials."""


class Store(Protocol):
    """What every backend offers."""

    name: str

    async def ping(self) -> None:
        """Return when the store answers; raise `StoreUnavailable` when it does not."""

    async def close(self) -> None:
        """Release connections."""


def open_store(settings: Settings) -> Store:
    """The backend the settings name."""
    if settings.store == "redis":
        from proxy.store.redis import RedisStore

        return RedisStore(settings.redis)
    from proxy.store.memory import MemoryStore

    return MemoryStore()
