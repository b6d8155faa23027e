"""Typed keys and the per-request record that the pipeline rooms share."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from aiohttp import web

from proxy.settings import Settings


def new_request_id() -> str:
    """A fresh id in OpenAI's `req_<hex>` style, for answers upstream gave no id to."""
    return "req_" + os.urandom(16).hex()


@dataclass(slots=True)
class Facts:
    """What is known about one request; filled in by each room, written out by the log room."""

    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    key_id: str | None = None
    user: str | None = None
    team: str | None = None
    operation: str | None = None
    model: str | None = None
    upstream_status: int | None = None
    aborted: str | None = None  # "client_gone" or "upstream_broke" once the answer has started


SETTINGS = web.AppKey("settings", Settings)
FACTS = web.RequestKey("facts", Facts)
