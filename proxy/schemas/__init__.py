"""The documented request bodies, as pydantic models, by the operation that takes them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from proxy.schemas.assistants import CreateAssistantRequest, ModifyAssistantRequest
from proxy.schemas.base import Request, UploadedFile
from proxy.schemas.images import (
    CreateImageEditRequest,
    CreateImageRequest,
    CreateImageVariationRequest,
)
from proxy.schemas.moderations import CreateModerationRequest
from proxy.schemas.threads import CreateMessageRequest, CreateRunRequest
from proxy.schemas.uploads import AddUploadPartRequest, CreateUploadRequest

SCHEMAS: Mapping[str, type[Request]] = MappingProxyType(
    {
        "images.generate": CreateImageRequest,
        "images.edit": CreateImageEditRequest,
        "images.create_variation": CreateImageVariationRequest,
        "moderations.create": CreateModerationRequest,
        "beta.assistants.create": CreateAssistantRequest,
        "beta.assistants.update": ModifyAssistantRequest,
        "beta.messages.create": CreateMessageRequest,
        "beta.runs.create": CreateRunRequest,
        "uploads.create": CreateUploadRequest,
        "uploads.parts.create": AddUploadPartRequest,
    }
)

__all__ = ["SCHEMAS", "Request", "UploadedFile"]
