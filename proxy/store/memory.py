"""The embedded store: state in this process only, the default for a single instance."""

from __future__ import annotations


class MemoryStore:
    """Always reachable; shares nothing with other processes."""

    name = "memory"

    async def ping(self) -> None:
        """The process's own memory always answers."""

    async def close(self) -> None:
        """Nothing to release."""
