"""The `Call`: what a request asks for, parsed once from its endpoint, path and fields."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.call import Call, build_call
from proxy.endpoints import EndpointTable

TABLE = EndpointTable()


def call_of(method: str, path: str, values: dict[str, Any], **kwargs: Any) -> Call:
    match = TABLE.match(method, path)
    assert match is not None
    return build_call(match.endpoint, match.params, values, **kwargs)


def asked(call: Call) -> tuple[object, ...]:
    return (call.model, call.prompt, call.n, call.size, call.quality, call.stream)


def test_fields_sent_are_read_as_sent() -> None:
    body = {"model": "dall-e-3", "prompt": "an otter", "n": 1, "size": "1792x1024"}
    call = call_of("POST", "/v1/images/generations", {**body, "quality": "hd", "stream": True})
    assert call.operation == "images.generate"
    assert call.documented
    assert call.fields_complete
    assert asked(call) == ("dall-e-3", "an otter", 1, "1792x1024", "hd", True)


@pytest.mark.parametrize("absent", [{}, {"model": None, "n": None, "size": None}])
def test_absent_or_null_fields_take_the_documented_defaults(absent: dict[str, Any]) -> None:
    call = call_of("POST", "/v1/images/generations", {"prompt": "an otter", **absent})
    assert asked(call) == ("dall-e-2", "an otter", 1, "1024x1024", "standard", False)


def test_values_of_the_wrong_type_are_not_read() -> None:
    """A wrong type is validation's to refuse; the call reads nothing it could misprice."""
    values = {"model": 3, "prompt": ["x"], "n": True, "size": 1024, "quality": {}, "stream": 1}
    call = call_of("POST", "/v1/images/generations", values)
    assert asked(call) == (None, None, None, None, None, False)


def test_form_text_is_read_as_forms_send_it() -> None:
    values = {"prompt": "an otter", "n": "3", "stream": "true"}
    call = call_of("POST", "/v1/images/edits", values, fields_complete=False)
    assert asked(call) == ("dall-e-2", "an otter", 3, "1024x1024", None, True)
    assert not call.fields_complete
    assert call_of("POST", "/v1/images/edits", {"n": "three"}).n is None


def test_a_model_in_the_path_is_the_model() -> None:
    call = call_of("GET", "/v1/models/gpt-4o", {})
    assert (call.operation, call.model, dict(call.params)) == (
        "models.retrieve",
        "gpt-4o",
        {"model": "gpt-4o"},
    )


def test_an_operation_without_fields_or_defaults_reads_nothing() -> None:
    call = call_of("GET", "/v1/models", {})
    assert call.operation == "models.list"
    assert asked(call) == (None, None, None, None, None, False)
