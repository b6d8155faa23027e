"""The endpoint table: every documented operation found by its method and path, nothing else."""

from __future__ import annotations

import re

import pytest

from proxy.endpoints import ENDPOINTS, Endpoint, EndpointTable

TABLE = EndpointTable()


def concrete(endpoint: Endpoint) -> tuple[str, dict[str, str]]:
    """The endpoint's path with each parameter filled in, and those parameters."""
    params = {name: f"{name}_123" for name in re.findall(r"\{(\w+)\}", endpoint.pattern)}
    return endpoint.pattern.format(**params), params


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.operation)
def test_each_operation_is_found_by_its_method_and_path(endpoint: Endpoint) -> None:
    path, params = concrete(endpoint)
    match = TABLE.match(endpoint.method, path)
    assert match is not None
    assert (match.endpoint.operation, match.params) == (endpoint.operation, params)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.operation)
def test_near_misses_pass_through(endpoint: Endpoint) -> None:
    """Another method, a trailing slash, one segment more or a prefix is not the operation."""
    path, _ = concrete(endpoint)
    for method, near in [
        ("PATCH", path),
        (endpoint.method, path + "/"),
        (endpoint.method, path + "/more"),
        (endpoint.method, "/v2" + path.removeprefix("/v1")),
    ]:
        match = TABLE.match(method, near)
        assert match is None or match.endpoint.pattern != endpoint.pattern, (method, near)
