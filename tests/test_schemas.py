"""Property tests over the request models: what the reference allows passes, and what it
forbids is refused with the right `param`, whatever the rest of the request holds.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import InvalidRequest
from proxy.schemas import SCHEMAS
from proxy.settings import ValidationMode
from proxy.validate import check

MODES: list[ValidationMode] = ["documented", "strict"]


def refused(operation: str, body: dict[str, Any], mode: ValidationMode = "documented") -> str:
    """The `param` of the refusal `body` gets (the test fails if it passes)."""
    with pytest.raises(InvalidRequest) as raised:
        check(SCHEMAS[operation], body, strict=True, mode=mode)
    assert raised.value.status == 400
    assert raised.value.message
    return raised.value.param or ""


def accepted(operation: str, body: dict[str, Any], mode: ValidationMode = "documented") -> None:
    check(SCHEMAS[operation], body, strict=True, mode=mode)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dictionaries holding any subset of `fields`."""
    return st.fixed_dictionaries({}, optional=fields)


prompts = st.text(max_size=1000)
dall_e_2 = st.fixed_dictionaries(
    {"prompt": prompts},
    optional={
        "model": st.just("dall-e-2"),
        "n": st.integers(1, 10),
        "size": st.sampled_from(["256x256", "512x512", "1024x1024"]),
        "quality": st.sampled_from(["standard", "auto"]),
        "response_format": st.sampled_from(["url", "b64_json"]),
        "user": st.text(max_size=20),
    },
)
dall_e_3 = st.fixed_dictionaries(
    {"prompt": st.text(max_size=4000), "model": st.just("dall-e-3")},
    optional={
        "n": st.just(1),
        "size": st.sampled_from(["1024x1024", "1792x1024", "1024x1792"]),
        "quality": st.sampled_from(["standard", "hd", "auto"]),
        "style": st.sampled_from(["vivid", "natural"]),
        "response_format": st.sampled_from(["url", "b64_json"]),
    },
)
outside_n = st.one_of(st.integers(max_value=0), st.integers(min_value=11))
metadata_keys = st.text(max_size=64)


@given(body=dall_e_2, mode=st.sampled_from(MODES))
def test_any_dall_e_2_request_within_bounds_is_accepted(
    body: dict[str, Any], mode: ValidationMode
) -> None:
    """Every combination of documented dall-e-2 values passes, in both validating modes."""
    accepted("images.generate", body, mode)


@given(body=dall_e_3)
def test_any_dall_e_3_request_within_bounds_is_accepted(body: dict[str, Any]) -> None:
    """Every combination of documented dall-e-3 values passes."""
    accepted("images.generate", body)


@given(
    body=st.one_of(dall_e_2, dall_e_3),
    n=outside_n,
    model=st.sampled_from(["dall-e-2", "dall-e-3", "gpt-image-1", "anything"]),
)
def test_any_n_outside_1_to_10_is_refused_with_param_n(
    body: dict[str, Any], n: int, model: str
) -> None:
    """`n` outside 1..10 is refused for every model, known or not."""
    assert refused("images.generate", {**body, "model": model, "n": n}) == "n"


@given(n=st.integers(2, 10))
def test_dall_e_3_takes_only_one_image(n: int) -> None:
    """dall-e-3 refuses any n above 1."""
    assert refused("images.generate", {"prompt": "o", "model": "dall-e-3", "n": n}) == "n"


@given(extra=st.integers(1, 3000), model=st.sampled_from(["dall-e-2", "dall-e-3"]))
def test_prompts_over_the_models_limit_are_refused(extra: int, model: str) -> None:
    """1000 characters for dall-e-2, 4000 for dall-e-3; one more is refused."""
    limit = 1000 if model == "dall-e-2" else 4000
    assert refused("images.generate", {"prompt": "x" * (limit + extra), "model": model}) == "prompt"


@given(size=st.text(max_size=12).filter(lambda s: s not in {"256x256", "512x512", "1024x1024"}))
def test_sizes_outside_dall_e_2s_are_refused(size: str) -> None:
    """Any size string dall-e-2 does not list is refused with param size."""
    assert refused("images.generate", {"prompt": "o", "size": size}) == "size"


@given(prompt=st.text(min_size=1001, max_size=1200), size=st.text(max_size=12))
def test_documented_leaves_unknown_models_alone_strict_does_not(prompt: str, size: str) -> None:
    """A long prompt and any size pass for an unknown model under documented, not strict."""
    body = {"prompt": prompt, "model": "gpt-image-1", "size": size}
    accepted("images.generate", body, "documented")
    assert refused("images.generate", body, "strict") == "prompt"


@given(
    metadata=st.dictionaries(metadata_keys, st.text(max_size=512), min_size=17, max_size=40),
    operation=st.sampled_from(["beta.assistants.create", "beta.assistants.update"]),
)
def test_metadata_over_16_pairs_is_refused(metadata: dict[str, str], operation: str) -> None:
    """More than 16 metadata pairs is refused with param metadata."""
    assert refused(operation, {"model": "gpt-4o", "metadata": metadata}) == "metadata"


@given(
    metadata=st.dictionaries(metadata_keys, st.text(max_size=512), max_size=16),
    long_key=st.text(min_size=65, max_size=100),
    long_value=st.text(min_size=513, max_size=600),
)
def test_metadata_within_bounds_passes_and_long_keys_or_values_do_not(
    metadata: dict[str, str], long_key: str, long_value: str
) -> None:
    """Up to 16 pairs, keys to 64 and values to 512 characters pass; longer ones are refused."""
    run = {"assistant_id": "asst_1", "metadata": metadata}
    accepted("beta.runs.create", run)
    few = dict(list(metadata.items())[:15])
    assert refused("beta.runs.create", {**run, "metadata": {**few, long_key: "v"}}) == "metadata"
    assert refused("beta.runs.create", {**run, "metadata": {**few, "k": long_value}}) == "metadata"


@given(
    temperature=st.floats(allow_nan=False, allow_infinity=False),
    top_p=st.floats(allow_nan=False, allow_infinity=False),
)
def test_temperature_and_top_p_bounds(temperature: float, top_p: float) -> None:
    """temperature passes exactly within 0..2 and top_p within 0..1."""
    for field, value, high in (("temperature", temperature, 2), ("top_p", top_p, 1)):
        body = {"model": "gpt-4o", field: value}
        if 0 <= value <= high:
            accepted("beta.assistants.create", body)
        else:
            assert refused("beta.assistants.create", body) == field


@given(
    count=st.integers(0, 160),
    limit_and_body=st.sampled_from(
        [
            (128, "beta.assistants.create", {"model": "gpt-4o"}),
            (20, "beta.runs.create", {"assistant_id": "asst_1"}),
        ]
    ),
)
def test_tool_counts(count: int, limit_and_body: tuple[int, str, dict[str, Any]]) -> None:
    """Assistants take up to 128 tools, runs up to 20; one more is refused with param tools."""
    limit, operation, body = limit_and_body
    tools = [{"type": "code_interpreter"}] * count
    if count <= limit:
        accepted(operation, {**body, "tools": tools})
    else:
        assert refused(operation, {**body, "tools": tools}) == "tools"


@given(tokens=st.integers(), field=st.sampled_from(["max_prompt_tokens", "max_completion_tokens"]))
def test_run_token_limits_are_at_least_256(tokens: int, field: str) -> None:
    """max_prompt_tokens and max_completion_tokens below 256 are refused."""
    body = {"assistant_id": "asst_1", field: tokens}
    if tokens >= 256:
        accepted("beta.runs.create", body)
    else:
        assert refused("beta.runs.create", body) == field


@given(
    key=st.text(min_size=1, max_size=20).filter(
        lambda k: k not in {"role", "content", "attachments", "metadata"}
    )
)
def test_messages_refuse_additional_properties(key: str) -> None:
    """CreateMessageRequest: "Additional properties are NOT allowed"."""
    assert refused("beta.messages.create", {"role": "user", "content": "hi", key: 1}) == key


@given(role=st.text(max_size=12).filter(lambda r: r not in {"user", "assistant"}))
def test_message_roles(role: str) -> None:
    """A message's role is user or assistant."""
    assert refused("beta.messages.create", {"role": role, "content": "hi"}) == "role"


# The smallest accepted body of each JSON operation, and whether its reference closes it to
# properties it does not list.
SMALLEST: dict[str, tuple[dict[str, Any], bool]] = {
    "images.generate": ({"prompt": "an otter"}, False),
    "moderations.create": ({"input": "hi"}, False),
    "beta.assistants.create": ({"model": "gpt-4o"}, True),
    "beta.assistants.update": ({}, True),
    "beta.messages.create": ({"role": "user", "content": "hi"}, True),
    "beta.runs.create": ({"assistant_id": "asst_1"}, True),
    "uploads.create": (
        {"bytes": 1, "filename": "a.jsonl", "mime_type": "text/jsonl", "purpose": "batch"},
        True,
    ),
}


@pytest.mark.parametrize("operation", sorted(SMALLEST))
def test_unlisted_properties_pass_only_where_the_reference_leaves_the_body_open(
    operation: str,
) -> None:
    """A closed body refuses a property it does not list, naming it; an open one lets it by
    (the body is forwarded as it came, so upstream sees it)."""
    body, closed = SMALLEST[operation]
    accepted(operation, body)
    surprise = {**body, "x_surprise": 1}
    if closed:
        assert refused(operation, surprise) == "x_surprise"
    else:
        accepted(operation, surprise)
