"""POST /v1/threads/{id}/messages and /v1/threads/{id}/runs: a message, and a run.

Both references say "Additional properties are NOT allowed", and so does the spec, for the
message, the run, and each of a run's `additional_messages`. `reasoning_effort` takes the
spec's values, a superset of the seeds' low, medium, high.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Required, Self

from pydantic import Field, model_validator, with_config
from typing_extensions import TypedDict

from proxy.schemas.assistants import ReasoningEffort, Tool
from proxy.schemas.base import CLOSED, Metadata, Part, Schema, Temperature, TopP, missing

RUN_TOOLS = 20
Detail = Literal["auto", "low", "high"] | None
MaxTokens = Annotated[int, Field(ge=256)] | None


class ImageFileRef(Part):
    """An image File by id."""

    file_id: str
    detail: Detail = None


class ImageUrlRef(Part):
    """An image by URL."""

    url: str
    detail: Detail = None


class ContentPart(Part):
    """`text`, `image_file` or `image_url`, each with the field of its own name.

    One flat model rather than a union, so errors inside name a plain path.
    """

    type: Literal["image_file", "image_url", "text"]
    text: str | None = None
    image_file: ImageFileRef | None = None
    image_url: ImageUrlRef | None = None

    @model_validator(mode="after")
    def _field_of_its_type(self) -> Self:
        if getattr(self, self.type) is None:
            raise missing(self.type)
        return self


class AttachmentTool(Part):
    """The tools a file can be added to."""

    type: Literal["code_interpreter", "file_search"]


class Attachment(Part):
    """A file attached to a message, and the tools it is added to."""

    file_id: str
    tools: list[AttachmentTool]


@with_config(CLOSED)
class CreateMessageRequest(TypedDict, total=False):
    """A message on a thread: a role, and text or content parts."""

    role: Required[Literal["user", "assistant"]]
    content: Required[str | Annotated[list[ContentPart], Field(min_length=1)]]
    attachments: list[Attachment] | None
    metadata: Metadata


class TruncationStrategy(Part):
    """How the thread is truncated before the run."""

    type: Literal["auto", "last_messages"]
    last_messages: Annotated[int, Field(ge=1)] | None = None


class ToolChoiceFunction(Part):
    """The function a tool choice forces."""

    name: str


class ToolChoice(Part):
    """A particular tool the model must call."""

    type: Literal["function", "code_interpreter", "file_search"]
    function: ToolChoiceFunction | None = None


@with_config(CLOSED)
class CreateRunRequest(TypedDict, total=False):
    """A run of an assistant on a thread."""

    assistant_id: Required[str]
    model: str | None
    reasoning_effort: ReasoningEffort
    instructions: str | None
    additional_instructions: str | None
    additional_messages: list[CreateMessageRequest] | None
    tools: Annotated[list[Tool], Field(max_length=RUN_TOOLS)] | None
    metadata: Metadata
    temperature: Temperature
    top_p: TopP
    stream: bool | None
    max_prompt_tokens: MaxTokens
    max_completion_tokens: MaxTokens
    truncation_strategy: TruncationStrategy | None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None
    parallel_tool_calls: bool | None
    response_format: Any


MESSAGE = Schema(CreateMessageRequest)
RUN = Schema(CreateRunRequest)
