"""OpenAI's wording for a refused field: a pydantic `ValidationError` becomes one `InvalidRequest`.

OpenAI reports one problem a request, with `param` naming the field by its path
(`tools[3].function.name`) and a message such as "Invalid 'n': integer above maximum value.
Expected a value <= 10, but got 11 instead.". Where a field accepts one of several shapes
(a string or an array), the shape the client evidently meant is the one reported on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from proxy.errors import InvalidRequest
from proxy.schemas import SCHEMAS, UploadedFile
from proxy.schemas.base import Part

_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})
_EXPECTED: Mapping[str, str] = MappingProxyType(
    {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "string_type": "a string",
        "bool_type": "a boolean",
        "bool_parsing": "a boolean",
        "list_type": "an array",
        "dict_type": "an object",
        "model_type": "an object",
        "model_attributes_type": "an object",
        "is_instance_of": "a file",
        "none_required": "null",
    }
)


_KINDS: tuple[tuple[type, str], ...] = (
    (UploadedFile, "a file"),
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a decimal"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
    (type(None), "null"),
)


def _kind(value: object) -> str:
    """A JSON value's type, as OpenAI names it in messages."""
    return next((name for kind, name in _KINDS if isinstance(value, kind)), "a value")


def _model_names(roots: tuple[type[BaseModel], ...]) -> set[str]:
    """The class names of every model of a part: pydantic's tags for their union branches."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        model = todo.pop()
        seen.add(model.__name__)
        todo.extend(model.__subclasses__())
    return seen


_BRANCH_TAGS = frozenset(_model_names((Part,)) | {schema.name for schema in SCHEMAS.values()})


def _is_tag(part: str) -> bool:
    """pydantic names a union's branch in the location: `str`, `list[str]`, `Tool`, ..."""
    return "[" in part or part in _TYPE_NAMES or part in _BRANCH_TAGS


def _path(error: ErrorDetails) -> tuple[str | int, ...]:
    """The field's location without pydantic's union branch tags (an unknown key is kept)."""
    loc = error["loc"]
    last = len(loc) - 1
    kept = tuple(
        part
        for at, part in enumerate(loc)
        if isinstance(part, int)
        or not _is_tag(part)
        or (at == last and error["type"] == "extra_forbidden")
    )
    extra = (error.get("ctx") or {}).get("field")
    return (*kept, extra) if isinstance(extra, str) else kept


def render_path(path: tuple[str | int, ...]) -> str:
    """`("tools", 3, "function")` as OpenAI writes it: `tools[3].function`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _expected(error: ErrorDetails) -> str | None:
    """What the field should have been, when the error is a wrong JSON type."""
    if error["type"] == "literal_error" and not isinstance(error["input"], str):
        return "a string"  # every enumerated value in the schemas is a string
    return _EXPECTED.get(error["type"])


def _number(value: object) -> str:
    return "integer" if isinstance(value, int) else "decimal"


def _bound(value: object) -> object:
    """A bound as the reference writes it: `2`, not pydantic's `2.0`."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _above(param: str, error: ErrorDetails) -> str:
    bound = _bound(error["ctx"].get("le", error["ctx"].get("lt")))
    return (
        f"Invalid '{param}': {_number(error['input'])} above maximum value. "
        f"Expected a value <= {bound}, but got {error['input']} instead."
    )


def _below(param: str, error: ErrorDetails) -> str:
    bound = _bound(error["ctx"].get("ge", error["ctx"].get("gt")))
    return (
        f"Invalid '{param}': {_number(error['input'])} below minimum value. "
        f"Expected a value >= {bound}, but got {error['input']} instead."
    )


def _string_long(param: str, error: ErrorDetails) -> str:
    return (
        f"Invalid '{param}': string too long. Expected a string with maximum length "
        f"{error['ctx']['max_length']}, but got a string with length {len(error['input'])} "
        "instead."
    )


def _array_long(param: str, error: ErrorDetails) -> str:
    return (
        f"Invalid '{param}': array too long. Expected an array with maximum length "
        f"{error['ctx']['max_length']}, but got an array with length {len(error['input'])} "
        "instead."
    )


def _array_short(param: str, error: ErrorDetails) -> str:
    return (
        f"Invalid '{param}': empty array. Expected an array with minimum length "
        f"{error['ctx']['min_length']}, but got an empty array instead."
    )


def _supported(expected: str) -> str:
    """pydantic's `'a', 'b' or 'c'` as OpenAI's `'a', 'b', and 'c'`."""
    head, sep, last = expected.rpartition(" or ")
    if not sep:
        return expected
    return f"{head}, and {last}" if "," in head else f"{head} and {last}"


def _literal(param: str, error: ErrorDetails) -> str:
    del param
    return (
        f"Invalid value: '{error['input']}'. "
        f"Supported values are: {_supported(error['ctx']['expected'])}."
    )


def _pattern(param: str, error: ErrorDetails) -> str:
    return (
        f"Invalid '{param}': string does not match pattern. Expected a string that matches "
        f"the pattern '{error['ctx']['pattern']}'."
    )


def _properties(param: str, error: ErrorDetails) -> str:
    ctx = error["ctx"]
    return (
        f"Invalid '{param}': too many properties. Expected an object with at most "
        f"{ctx['maximum']} properties, but got an object with {ctx['actual']} properties instead."
    )


def _metadata_key(param: str, error: ErrorDetails) -> str:
    ctx = error["ctx"]
    return (
        f"Invalid '{param}': metadata key '{ctx['key']}' is too long. Expected a key with "
        f"maximum length {ctx['maximum']}, but got a key with length {len(ctx['key'])} instead."
    )


def _metadata_value(param: str, error: ErrorDetails) -> str:
    ctx = error["ctx"]
    return (
        f"Invalid '{param}': the value of metadata key '{ctx['key']}' is too long. Expected a "
        f"string with maximum length {ctx['maximum']}, but got a string with length "
        f"{ctx['actual']} instead."
    )


Wording = tuple[str, Callable[[str, ErrorDetails], str]]
_WORDING: Mapping[str, Wording] = MappingProxyType(
    {
        "missing": (
            "missing_required_parameter",
            lambda p, e: f"Missing required parameter: '{p}'.",
        ),
        "missing_nested": (
            "missing_required_parameter",
            lambda p, e: f"Missing required parameter: '{p}'.",
        ),
        "extra_forbidden": ("unknown_parameter", lambda p, e: f"Unknown parameter: '{p}'."),
        "less_than_equal": ("integer_above_max_value", _above),
        "less_than": ("integer_above_max_value", _above),
        "greater_than_equal": ("integer_below_min_value", _below),
        "greater_than": ("integer_below_min_value", _below),
        "string_too_long": ("string_above_max_length", _string_long),
        "too_long": ("array_above_max_length", _array_long),
        "too_short": ("empty_array", _array_short),
        "literal_error": ("invalid_value", _literal),
        "string_pattern_mismatch": ("invalid_value", _pattern),
        "object_above_max_properties": ("object_above_max_properties", _properties),
        "metadata_key_too_long": ("string_above_max_length", _metadata_key),
        "metadata_value_too_long": ("string_above_max_length", _metadata_value),
    }
)


def _code(kind: str, error: ErrorDetails) -> str:
    """`integer_above_max_value` turns `decimal_...` for a decimal input."""
    if kind.startswith("integer_") and isinstance(error["input"], float):
        return "decimal_" + kind.removeprefix("integer_")
    return kind


def _type_refusal(param: str, errors: list[ErrorDetails]) -> InvalidRequest:
    """A wrong JSON type; a field of several shapes lists them all."""
    expected = list(dict.fromkeys(e for e in map(_expected, errors) if e))
    wanted = expected[0] if len(expected) == 1 else "one of " + " or ".join(expected)
    got = _kind(errors[0]["input"])
    message = f"Invalid type for '{param}': expected {wanted}, but got {got} instead."
    return InvalidRequest(message, param=param, code="invalid_type")


def _pick(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """The errors of the first bad field, narrowed to the shape the client meant.

    Of a union's branch errors, the deepest got furthest, and a value error (the right type,
    a wrong value) says more than a type mismatch at the same depth.
    """
    first = _path(errors[0])[:1]
    same = [e for e in errors if _path(e)[:1] == first]
    deepest = max(len(_path(e)) for e in same)
    at_depth = [e for e in same if len(_path(e)) == deepest]
    values = [e for e in at_depth if _expected(e) is None]
    return values[:1] or at_depth


def refusal(exc: ValidationError) -> InvalidRequest:
    """One OpenAI-worded 400 for the first problem pydantic found."""
    errors = _pick(exc.errors(include_url=False))
    error, param = errors[0], render_path(_path(errors[0]))
    if _expected(error) is not None:
        return _type_refusal(param, errors)
    code, words = _WORDING.get(error["type"], ("invalid_value", _fallback))
    return InvalidRequest(words(param, error), param=param or None, code=_code(code, error))


def _fallback(param: str, error: ErrorDetails) -> str:
    return f"Invalid '{param}': {error['msg']}."
