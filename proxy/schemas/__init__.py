"""The documented request bodies' schemas, by the operation that takes them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from proxy.schemas.assistants import CREATE_ASSISTANT, MODIFY_ASSISTANT
from proxy.schemas.base import Schema, UploadedFile
from proxy.schemas.images import EDIT, GENERATION, VARIATION
from proxy.schemas.moderations import MODERATION
from proxy.schemas.threads import MESSAGE, RUN
from proxy.schemas.uploads import UPLOAD, UPLOAD_PART

SCHEMAS: Mapping[str, Schema[Any]] = MappingProxyType(
    {
        "images.generate": GENERATION,
        "images.edit": EDIT,
        "images.create_variation": VARIATION,
        "moderations.create": MODERATION,
        "beta.assistants.create": CREATE_ASSISTANT,
        "beta.assistants.update": MODIFY_ASSISTANT,
        "beta.messages.create": MESSAGE,
        "beta.runs.create": RUN,
        "uploads.create": UPLOAD,
        "uploads.parts.create": UPLOAD_PART,
    }
)

__all__ = ["SCHEMAS", "Schema", "UploadedFile"]
