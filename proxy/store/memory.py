"""The embedded store: state in this process, key records persisted to one local JSON file.

The file is rewritten whole on every change (keys change rarely): written to a temporary file,
fsynced, and renamed over the old one, so a crash leaves either the old or the new file, never
half of one. Changes take an exclusive `flock` and re-read the file first, so the CLI and a
running server can both change keys without losing each other's writes; the server notices
outside changes (a CLI revoke, say) within a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from proxy.keys import KeyRecord

RELOAD_EVERY = 1.0


class MemoryStore:
    """Always reachable; shares nothing with other processes but its file."""

    name = "memory"

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._records: dict[str, KeyRecord] = {}
        self._by_hash: dict[str, KeyRecord] = {}
        self._seen: tuple[int, int] | None = None
        self._checked = 0.0
        self._load()

    async def ping(self) -> None:
        """The process's own memory always answers."""

    async def close(self) -> None:
        """Nothing to release: every change is on disk already."""

    async def key_by_hash(self, digest: str) -> KeyRecord | None:
        """The indexed record for `digest` (revoked records are not indexed)."""
        self._reload_if_changed()
        return self._by_hash.get(digest)

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        """Any record by id."""
        self._reload_if_changed()
        return self._records.get(key_id)

    async def all_keys(self) -> list[KeyRecord]:
        """Every record."""
        self._reload_if_changed()
        return list(self._records.values())

    async def save_key(self, record: KeyRecord, previous_hash: str | None = None) -> None:
        """Merge `record` into the file (under its lock) and into memory."""
        with self._locked():
            self._load()
            self._records[record.id] = record
            self._index()
            self._write()

    def _index(self) -> None:
        self._by_hash = {r.hash: r for r in self._records.values() if r.revoked_at is None}

    def _stat(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            found = self._path.stat()
        except FileNotFoundError:
            return None
        return found.st_mtime_ns, found.st_size

    def _load(self) -> None:
        """Read the file as it is now (no file: keep what is in memory)."""
        self._seen = self._stat()
        if self._path is None or self._seen is None:
            return
        document = json.loads(self._path.read_text(encoding="utf-8"))
        records = (KeyRecord.model_validate(item) for item in document.get("keys", []))
        self._records = {record.id: record for record in records}
        self._index()

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if self._path is None or now - self._checked < RELOAD_EVERY:
            return
        self._checked = now
        if self._stat() != self._seen:
            self._load()

    def _write(self) -> None:
        if self._path is None:
            return
        document = {"keys": [r.model_dump(mode="json") for r in self._records.values()]}
        temporary = self._path.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._path)
        self._seen = self._stat()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._path is None:
            yield
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.with_suffix(".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
