"""The validate room: documented requests that break their reference get OpenAI's 400 and cost
nothing upstream; valid ones pass untouched; the setting chooses how much is checked.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import CLIENT_KEY, MakeProxy, Proxy, Upstream, sent_on
from tests.test_keys import issue

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
CODE = [{"type": "code_interpreter"}]
FUNCTION = {"type": "function", "function": {"name": "get_weather"}}


async def post_json(proxy: Proxy, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST `body` as JSON; the status and the parsed answer."""
    async with aiohttp.ClientSession() as client:
        async with client.post(proxy.url(path), json=body, headers=AUTH) as response:
            answer: dict[str, Any] = await response.json()
            return response.status, answer


def openai_error(answer: dict[str, Any]) -> dict[str, Any]:
    """The `error` of an answer in OpenAI's exact shape."""
    assert set(answer) == {"error"}
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["type"] == "invalid_request_error"
    error: dict[str, Any] = answer["error"]
    return error


GEN = "/v1/images/generations"
ASST = "/v1/assistants"
MOD_ASST = "/v1/assistants/asst_1"
MSG = "/v1/threads/thread_1/messages"
RUN = "/v1/threads/thread_1/runs"
UPLOAD = {"bytes": 10, "filename": "a.jsonl", "mime_type": "text/jsonl", "purpose": "batch"}

REFUSALS = [
    # images.generate
    ("prompt-required", GEN, {}, "prompt", "Missing required parameter: 'prompt'."),
    (
        "n-above-10",
        GEN,
        {"prompt": "otter", "n": 11},
        "n",
        "Invalid 'n': integer above maximum value. Expected a value <= 10, but got 11 instead.",
    ),
    ("n-below-1", GEN, {"prompt": "otter", "n": 0}, "n", "Expected a value >= 1, but got 0"),
    ("n-not-integer", GEN, {"prompt": "o", "n": "2"}, "n", "expected an integer, but got a str"),
    ("dall-e-3-n-1", GEN, {"prompt": "o", "model": "dall-e-3", "n": 2}, "n", "n=1"),
    (
        "dall-e-2-prompt-1000",
        GEN,
        {"prompt": "x" * 1001},
        "prompt",
        "'prompt' is too long. Maximum length is 1000 characters.",
    ),
    (
        "dall-e-3-prompt-4000",
        GEN,
        {"prompt": "x" * 4001, "model": "dall-e-3"},
        "prompt",
        "'prompt' is too long. Maximum length is 4000 characters.",
    ),
    (
        "dall-e-2-sizes",
        GEN,
        {"prompt": "o", "size": "1792x1024"},
        "size",
        "Invalid size '1792x1024'. Supported sizes are 256x256, 512x512, and 1024x1024.",
    ),
    (
        "dall-e-3-sizes",
        GEN,
        {"prompt": "o", "model": "dall-e-3", "size": "512x512"},
        "size",
        "Supported sizes are 1024x1024, 1792x1024, and 1024x1792.",
    ),
    ("quality-hd-dall-e-3-only", GEN, {"prompt": "o", "quality": "hd"}, "quality", "dall-e-3"),
    ("quality-values", GEN, {"prompt": "o", "quality": "ultra"}, "quality", "'ultra'"),
    ("style-dall-e-3-only", GEN, {"prompt": "o", "style": "vivid"}, "style", "dall-e-3"),
    (
        "style-values",
        GEN,
        {"prompt": "o", "model": "dall-e-3", "style": "flat"},
        "style",
        "Supported values are: 'vivid' and 'natural'.",
    ),
    (
        "response-format-values",
        GEN,
        {"prompt": "o", "response_format": "png"},
        "response_format",
        "Invalid value: 'png'. Supported values are: 'url' and 'b64_json'.",
    ),
    # moderations.create
    ("input-required", "/v1/moderations", {}, "input", "Missing required parameter: 'input'."),
    ("input-type", "/v1/moderations", {"input": 5}, "input", "expected one of a string or an"),
    (
        "input-part-field",
        "/v1/moderations",
        {"input": [{"type": "text"}]},
        "input[0].text",
        "Missing required parameter: 'input[0].text'.",
    ),
    (
        "input-part-type",
        "/v1/moderations",
        {"input": [{"type": "video", "video": "x"}]},
        "input[0].type",
        "Supported values are: 'image_url' and 'text'.",
    ),
    # assistants
    ("model-required", ASST, {"name": "x"}, "model", "Missing required parameter: 'model'."),
    (
        "name-256",
        ASST,
        {"model": "gpt-4o", "name": "n" * 257},
        "name",
        "Invalid 'name': string too long. Expected a string with maximum length 256, "
        "but got a string with length 257 instead.",
    ),
    ("description-512", ASST, {"model": "m", "description": "d" * 513}, "description", "512"),
    ("instructions-256000", ASST, {"model": "m", "instructions": "i" * 256_001}, None, "256000"),
    (
        "assistant-tools-128",
        ASST,
        {"model": "gpt-4o", "tools": CODE * 129},
        "tools",
        "Invalid 'tools': array too long. Expected an array with maximum length 128, "
        "but got an array with length 129 instead.",
    ),
    ("tool-type", ASST, {"model": "m", "tools": [{"type": "web"}]}, "tools[0].type", "'web'"),
    (
        "function-tool-needs-function",
        ASST,
        {"model": "m", "tools": [{"type": "function"}]},
        "tools[0].function",
        "Missing required parameter: 'tools[0].function'.",
    ),
    (
        "function-name-pattern",
        ASST,
        {"model": "m", "tools": [{"type": "function", "function": {"name": "get weather"}}]},
        "tools[0].function.name",
        "string does not match pattern",
    ),
    (
        "function-name-64",
        ASST,
        {"model": "m", "tools": [{"type": "function", "function": {"name": "f" * 65}}]},
        "tools[0].function.name",
        "maximum length 64",
    ),
    (
        "file-search-results-1-50",
        ASST,
        {"model": "m", "tools": [{"type": "file_search", "file_search": {"max_num_results": 51}}]},
        "tools[0].file_search.max_num_results",
        "Expected a value <= 50, but got 51 instead.",
    ),
    (
        "temperature-0-2",
        ASST,
        {"model": "m", "temperature": 2.5},
        "temperature",
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
        "but got 2.5 instead.",
    ),
    ("top-p-0-1", ASST, {"model": "m", "top_p": -0.1}, "top_p", "Expected a value >= 0"),
    (
        "metadata-16-pairs",
        ASST,
        {"model": "m", "metadata": {str(i): "v" for i in range(17)}},
        "metadata",
        "Invalid 'metadata': too many properties. Expected an object with at most 16 "
        "properties, but got an object with 17 properties instead.",
    ),
    ("metadata-key-64", ASST, {"model": "m", "metadata": {"k" * 65: "v"}}, "metadata", "64"),
    ("metadata-value-512", ASST, {"model": "m", "metadata": {"k": "v" * 513}}, "metadata", "512"),
    ("reasoning-effort", ASST, {"model": "m", "reasoning_effort": "max+"}, None, "'max+'"),
    (
        "assistant-closed",
        ASST,
        {"model": "m", "voice": "x"},
        "voice",
        "Unknown parameter: 'voice'.",
    ),
    ("modify-name-256", MOD_ASST, {"name": "n" * 257}, "name", "string too long"),
    ("modify-tools-128", MOD_ASST, {"tools": CODE * 129}, "tools", "maximum length 128"),
    ("modify-closed", MOD_ASST, {"voice": "x"}, "voice", "Unknown parameter: 'voice'."),
    # messages
    ("role-required", MSG, {"content": "hi"}, "role", "Missing required parameter: 'role'."),
    (
        "role-values",
        MSG,
        {"role": "system", "content": "hi"},
        "role",
        "Invalid value: 'system'. Supported values are: 'user' and 'assistant'.",
    ),
    ("content-required", MSG, {"role": "user"}, "content", "Missing required parameter"),
    ("content-not-empty", MSG, {"role": "user", "content": []}, "content", "empty array"),
    (
        "content-part-field",
        MSG,
        {"role": "user", "content": [{"type": "image_file"}]},
        "content[0].image_file",
        "Missing required parameter: 'content[0].image_file'.",
    ),
    (
        "attachment-tools",
        MSG,
        {"role": "user", "content": "x", "attachments": [{"file_id": "f", "tools": [FUNCTION]}]},
        "attachments[0].tools[0].type",
        "Supported values are: 'code_interpreter' and 'file_search'.",
    ),
    ("message-closed", MSG, {"role": "user", "content": "x", "name": "a"}, "name", "Unknown"),
    (
        "message-metadata",
        MSG,
        {"role": "user", "content": "x", "metadata": {str(i): "" for i in range(17)}},
        "metadata",
        "at most 16 properties",
    ),
    # runs
    ("assistant-id-required", RUN, {}, "assistant_id", "Missing required parameter"),
    ("run-tools-20", RUN, {"assistant_id": "a", "tools": CODE * 21}, "tools", "maximum length 20"),
    ("run-closed", RUN, {"assistant_id": "a", "messages": []}, "messages", "Unknown parameter"),
    ("run-temperature", RUN, {"assistant_id": "a", "temperature": 3}, "temperature", "<= 2"),
    ("run-top-p", RUN, {"assistant_id": "a", "top_p": 1.5}, "top_p", "<= 1"),
    ("max-prompt-tokens-256", RUN, {"assistant_id": "a", "max_prompt_tokens": 255}, None, ">= 256"),
    ("max-completion-tokens-256", RUN, {"assistant_id": "a", "max_completion_tokens": 1}, None, ""),
    (
        "truncation-strategy-type",
        RUN,
        {"assistant_id": "a", "truncation_strategy": {"type": "first_messages"}},
        "truncation_strategy.type",
        "Supported values are: 'auto' and 'last_messages'.",
    ),
    (
        "tool-choice",
        RUN,
        {"assistant_id": "a", "tool_choice": "sometimes"},
        "tool_choice",
        "Supported values are: 'none', 'auto', and 'required'.",
    ),
    ("run-reasoning-effort", RUN, {"assistant_id": "a", "reasoning_effort": "huge"}, None, ""),
    ("run-metadata-value", RUN, {"assistant_id": "a", "metadata": {"k": "v" * 513}}, None, "512"),
    (
        "run-additional-messages-closed",
        RUN,
        {"assistant_id": "a", "additional_messages": [{"role": "user", "content": "x", "a": 1}]},
        "additional_messages[0].a",
        "Unknown parameter: 'additional_messages[0].a'.",
    ),
    # uploads
    *[
        (
            f"upload-{field}-required",
            "/v1/uploads",
            {k: v for k, v in UPLOAD.items() if k != field},
            field,
            f"Missing required parameter: '{field}'.",
        )
        for field in UPLOAD
    ],
    (
        "upload-purposes",
        "/v1/uploads",
        {**UPLOAD, "purpose": "weights"},
        "purpose",
        "Supported values are: 'assistants', 'batch', 'fine-tune', and 'vision'.",
    ),
    (
        "upload-expiry-bounds",
        "/v1/uploads",
        {**UPLOAD, "expires_after": {"anchor": "created_at", "seconds": 60}},
        "expires_after.seconds",
        "Expected a value >= 3600, but got 60 instead.",
    ),
    ("upload-closed", "/v1/uploads", {**UPLOAD, "name": "x"}, "name", "Unknown parameter"),
]


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
async def test_documented_constraints_are_refused_before_upstream(
    proxy: Proxy,
    upstream: Upstream,
    path: str,
    body: dict[str, Any],
    param: str | None,
    words: str,
) -> None:
    """A documented constraint broken: OpenAI's 400 naming the field, and nothing upstream."""
    status, answer = await post_json(proxy, path, body)
    error = openai_error(answer)
    assert status == 400
    expected = param or next(iter(k for k in body if k not in {"model", "assistant_id"}))
    assert error["param"] == expected
    assert words in error["message"]
    assert upstream.state.received == []


ACCEPTED = [
    ("dall-e-2-bounds", GEN, {"prompt": "x" * 1000, "n": 10, "size": "256x256"}),
    ("dall-e-2-standard", GEN, {"prompt": "o", "quality": "standard", "response_format": "url"}),
    (
        "dall-e-3-hd",
        GEN,
        {"prompt": "x" * 4000, "model": "dall-e-3", "size": "1792x1024", "quality": "hd"},
    ),
    ("dall-e-3-style", GEN, {"prompt": "o", "model": "dall-e-3", "style": "natural", "n": 1}),
    ("nulls-are-defaults", GEN, {"prompt": "o", "n": None, "size": None, "model": None}),
    (
        "assistant-bounds",
        ASST,
        {
            "model": "gpt-4o",
            "name": "n" * 256,
            "description": "d" * 512,
            "tools": [*CODE * 127, FUNCTION],
            "metadata": {f"{i:064d}": "v" * 512 for i in range(16)},
            "temperature": 2,
            "top_p": 0,
        },
    ),
    ("modify-empty", MOD_ASST, {}),
    ("message-parts", MSG, {"role": "assistant", "content": [{"type": "text", "text": "hi"}]}),
    (
        "run-bounds",
        RUN,
        {
            "assistant_id": "a",
            "tools": CODE * 20,
            "max_prompt_tokens": 256,
            "max_completion_tokens": 256,
            "reasoning_effort": "high",
            "tool_choice": "required",
            "additional_messages": [{"role": "user", "content": "x"}],
        },
    ),
    ("moderation-texts", "/v1/moderations", {"input": ["a", "b"]}),
    ("upload", "/v1/uploads", UPLOAD),
]


@pytest.mark.parametrize(
    ("path", "body"), [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED]
)
async def test_requests_within_the_bounds_pass(
    proxy: Proxy, upstream: Upstream, path: str, body: dict[str, Any]
) -> None:
    """Values on the documented bounds are accepted and reach upstream."""
    status, _ = await post_json(proxy, path, body)
    assert status == 200
    assert upstream.state.received[-1].path == path  # after Tollgate's own moderation check


async def test_documented_leaves_unknown_image_models_to_upstream(
    proxy: Proxy, upstream: Upstream
) -> None:
    """Under `documented`, gpt-image-1 is not held to DALL·E's prompt, size or quality limits."""
    body = {"prompt": "x" * 5000, "model": "gpt-image-1", "size": "1536x1024", "quality": "high"}
    status, _ = await post_json(proxy, GEN, body)
    assert status == 200
    assert len(sent_on(upstream)) == 1


async def test_documented_still_applies_generic_constraints_to_unknown_models(
    proxy: Proxy, upstream: Upstream
) -> None:
    """An unknown model still needs a prompt and an `n` from 1 to 10."""
    status, answer = await post_json(proxy, GEN, {"model": "gpt-image-1", "n": 11, "prompt": "o"})
    assert (status, openai_error(answer)["param"]) == (400, "n")
    status, answer = await post_json(proxy, GEN, {"model": "gpt-image-1"})
    assert (status, openai_error(answer)["param"]) == (400, "prompt")
    assert upstream.state.received == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": "o", "size": "1536x1024"}, "size"),
        ({"prompt": "o", "quality": "high"}, "quality"),
        ({"prompt": "o", "style": "vivid"}, "style"),
    ],
)
async def test_strict_holds_unknown_image_models_to_dall_e_2(
    make_proxy: MakeProxy, upstream: Upstream, body: dict[str, Any], param: str
) -> None:
    """Under `strict`, an image model the reference does not describe gets dall-e-2's rules."""
    proxy = await make_proxy(validation="strict")
    status, answer = await post_json(proxy, GEN, {**body, "model": "gpt-image-1"})
    assert (status, openai_error(answer)["param"]) == (400, param)
    assert upstream.state.received == []


async def test_off_validates_nothing(make_proxy: MakeProxy, upstream: Upstream) -> None:
    """With validation `off`, n=11 reaches upstream; a body must still be a JSON object."""
    proxy = await make_proxy(validation="off")
    status, _ = await post_json(proxy, GEN, {"prompt": "o", "n": 11})
    assert status == 200
    headers = {**AUTH, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as client:
        async with client.post(proxy.url(GEN), data=b"[1]", headers=headers) as response:
            assert response.status == 400
    assert len(sent_on(upstream)) == 1


async def test_the_sdk_raises_bad_request_with_the_param(
    sdk: openai.AsyncOpenAI, upstream: Upstream
) -> None:
    """The official SDK sees openai.BadRequestError with `.param` and OpenAI's message."""
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk.images.generate(prompt="an otter", n=11)
    assert raised.value.param == "n"
    assert raised.value.code == "integer_above_max_value"
    assert "Expected a value <= 10, but got 11 instead." in raised.value.message
    assert upstream.state.received == []


async def test_validation_comes_before_the_key_permits(proxy: Proxy, upstream: Upstream) -> None:
    """Validation runs before permits: malformed is 400 even for a model the key may not use."""
    record = await issue(proxy, user="alice", allowed_models=["dall-e-2"])
    client = openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key=record["key"], max_retries=0)
    with pytest.raises(openai.BadRequestError) as malformed:
        await client.images.generate(prompt="an otter", model="dall-e-3", n=5)
    with pytest.raises(openai.PermissionDeniedError):
        await client.images.generate(prompt="an otter", model="dall-e-3")
    await client.close()
    assert malformed.value.param == "n"
    assert upstream.state.received == []
