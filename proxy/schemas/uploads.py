"""POST /v1/uploads and /v1/uploads/{id}/parts: an upload's declaration, and one part's file.

The spec lists the purposes `assistants`, `batch`, `fine-tune` and `vision`; the part's form
must carry its bytes as a file named `data` and nothing else (`additionalProperties: false`).
A part streams to upstream as it arrives, so only the fields before its first file are seen.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import Field, with_config
from typing_extensions import TypedDict

from proxy.schemas.base import CLOSED, File, Part, Schema


class ExpiresAfter(Part):
    """When the file expires: 1 hour to 30 days after its creation."""

    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(ge=3600, le=2_592_000)]


@with_config(CLOSED)
class CreateUploadRequest(TypedDict):
    """The upload's size, name, type and purpose."""

    bytes: int
    filename: str
    mime_type: str
    purpose: Literal["assistants", "batch", "fine-tune", "vision"]
    expires_after: NotRequired[ExpiresAfter | None]


@with_config(CLOSED)
class AddUploadPartRequest(TypedDict):
    """One part: the chunk of bytes, as the file `data`."""

    data: File


UPLOAD = Schema(CreateUploadRequest)
UPLOAD_PART = Schema(AddUploadPartRequest)
