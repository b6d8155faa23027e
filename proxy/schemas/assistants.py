"""POST /v1/assistants and /v1/assistants/{id}: create and modify an assistant, and tools.

The seeds do not say whether unknown fields are refused; the spec does
(`additionalProperties: false` on CreateAssistantRequest and ModifyAssistantRequest), so they
are. `reasoning_effort` takes the spec's values, a superset of the seeds' low, medium, high.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Required, Self

from pydantic import Field, model_validator, with_config
from typing_extensions import TypedDict

from proxy.schemas.base import CLOSED, Metadata, Part, Schema, Temperature, TopP, missing

ASSISTANT_TOOLS = 128
Name = Annotated[str, Field(max_length=256)] | None
Description = Annotated[str, Field(max_length=512)] | None
Instructions = Annotated[str, Field(max_length=256_000)] | None
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None


class FunctionObject(Part):
    """A function tool: a name of letters, digits, `_` and `-`, at most 64 long."""

    name: Annotated[str, Field(max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FileSearchOptions(Part):
    """Overrides for the file search tool."""

    max_num_results: Annotated[int, Field(ge=1, le=50)] | None = None


class Tool(Part):
    """`code_interpreter`, `file_search` or `function` (which needs its `function`).

    One flat model rather than a union, so errors inside name a plain path.
    """

    type: Literal["code_interpreter", "file_search", "function"]
    function: FunctionObject | None = None
    file_search: FileSearchOptions | None = None

    @model_validator(mode="after")
    def _function_tools_name_their_function(self) -> Self:
        if self.type == "function" and self.function is None:
            raise missing("function")
        return self


@with_config(CLOSED)
class _Assistant(TypedDict, total=False):
    """An assistant's fields and limits, but its model (closed, as the two below are: pydantic
    takes a TypedDict's config from its bases)."""

    name: Name
    description: Description
    instructions: Instructions
    reasoning_effort: ReasoningEffort
    tools: Annotated[list[Tool], Field(max_length=ASSISTANT_TOOLS)] | None
    tool_resources: dict[str, Any] | None
    metadata: Metadata
    temperature: Temperature
    top_p: TopP
    response_format: Any


class CreateAssistantRequest(_Assistant, total=False):
    """Create an assistant with a model and instructions."""

    model: Required[str]


class ModifyAssistantRequest(_Assistant, total=False):
    """Modify an assistant: the same fields and limits, none required."""

    model: str | None


CREATE_ASSISTANT = Schema(CreateAssistantRequest)
MODIFY_ASSISTANT = Schema(ModifyAssistantRequest)
