"""Typed decoders for the decision request bodies, generated from the OpenAPI schemas.

fastjsonschema checks a batch of fifty decision checks in ~100 µs, a large share of the
request; msgspec parses and checks the same body into typed objects in a tenth of that.
The decoders are built from the served document's components.schemas (the subset of
JSON Schema the decision bodies use; anything else is refused when they are built, so
the two cannot drift apart). They only ever accept: a body a decoder refuses goes
through the reference path (orjson, then service.validation), which gives the error.
Everything a decoder accepts, the reference accepts with the same values (tested).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated, Any

import msgspec

from service.schema_patterns import python_pattern
from service.validation import openapi_document

_LENGTHS = {"minLength": "min_length", "maxLength": "max_length"}
_NOTES = {"description"}  # keywords that do not constrain


# The strings that matched each pattern. Patterns are checked after decoding, against
# this cache first: the values that carry one (action, resource) repeat across requests,
# and running the regex in msgspec cost more than the rest of decoding a batch. Bounded,
# so distinct values sent on purpose cannot grow it: past the bound, the regex runs.
MATCHED_BOUND = 4096


class _Pattern:
    def __init__(self, pattern: str):
        self.regex = re.compile(pattern)
        self.matched: set[str] = set()

    def allows(self, value: str) -> bool:
        if value in self.matched:
            return True
        if self.regex.search(value) is None:  # JSON Schema patterns are not anchored
            return False
        if len(self.matched) < MATCHED_BOUND:
            self.matched.add(value)
        return True


# struct type -> (its fields that carry a pattern, its fields that hold structs)
_CHECKS: dict[type, tuple[list[tuple[str, _Pattern]], list[str]]] = {}


def decode(name: str, raw: bytes) -> msgspec.Struct:
    """`raw` as the typed body `name`; raises (ValueError, msgspec.ValidationError) if the
    decoder cannot vouch for it - the reference path then names the problem."""
    body = decoder(name).decode(raw)
    _check_patterns(body)
    return body


@cache
def decoder(name: str) -> msgspec.json.Decoder:
    """Types, bounds and lengths; `decode` adds the patterns."""
    return msgspec.json.Decoder(_struct(name))


def _check_patterns(value: Any) -> None:
    if isinstance(value, list):
        for item in value:
            _check_patterns(item)
        return
    patterns, nested = _CHECKS[type(value)]
    for field, pattern in patterns:
        text = getattr(value, field)
        if text is not msgspec.UNSET and text is not None and not pattern.allows(text):
            raise ValueError(f"{field}: does not match its pattern")
    for field in nested:
        inner = getattr(value, field)
        if inner is not msgspec.UNSET:
            _check_patterns(inner)


def _schemas() -> dict[str, Any]:
    return openapi_document()["components"]["schemas"]


@cache
def _struct(name: str) -> type[msgspec.Struct]:
    schema = _schemas()[name]
    _only(schema, {"type", "additionalProperties", "required", "properties"} | _NOTES, name)
    if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
        raise ValueError(f"{name}: only closed objects (additionalProperties: false) are supported")
    required = schema.get("required", [])
    properties = schema["properties"]
    fields = [(field, _type(properties[field], f"{name}.{field}")) for field in required]
    fields += [
        (field, _type(spec, f"{name}.{field}") | msgspec.UnsetType, msgspec.UNSET)
        for field, spec in properties.items()
        if field not in required
    ]
    struct = msgspec.defstruct(name, fields, forbid_unknown_fields=True)
    patterns = [
        (field, _Pattern(python_pattern(spec["pattern"])))
        for field, spec in properties.items()
        if "pattern" in spec
    ]
    nested = [
        field for field, spec in properties.items() if "$ref" in spec or "$ref" in spec.get("items", {})
    ]
    _CHECKS[struct] = (patterns, nested)
    return struct


def _type(spec: dict[str, Any], where: str, field: bool = True) -> Any:
    """The msgspec type of a schema; `field`: a struct's own field (a pattern is checked
    there, by decode), not an array's items."""
    if "$ref" in spec:
        _only(spec, {"$ref"}, where)
        return _struct(spec["$ref"].rsplit("/", 1)[1])
    kind = spec.get("type")
    if isinstance(kind, list) and len(kind) == 2 and "null" in kind:  # e.g. [string, "null"]
        (other,) = (k for k in kind if k != "null")
        return _type({**spec, "type": other}, where, field) | None
    if kind == "string":
        _only(spec, {"type", "pattern", *_LENGTHS} | _NOTES, where)
        if "pattern" in spec and not field:  # checked by decode() on struct fields only
            raise ValueError(f"{where}: a pattern on array items is not supported by the fast decoder")
        meta = {_LENGTHS[k]: v for k, v in spec.items() if k in _LENGTHS}
        return Annotated[str, msgspec.Meta(**meta)] if meta else str
    if kind == "boolean":
        _only(spec, {"type"} | _NOTES, where)
        return bool
    if kind == "array":
        _only(spec, {"type", "items", "minItems", "maxItems"} | _NOTES, where)
        bounds = {"min_length": spec.get("minItems"), "max_length": spec.get("maxItems")}
        if spec["items"].get("type") == "array":  # _check_patterns walks one level of lists
            raise ValueError(f"{where}: arrays of arrays are not supported by the fast decoder")
        items = list[_type(spec["items"], f"{where}[]", field=False)]
        return Annotated[items, msgspec.Meta(**{k: v for k, v in bounds.items() if v is not None})]
    raise ValueError(f"{where}: schema type {kind!r} is not supported by the fast decoder")


def _only(spec: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"{where}: {sorted(unknown)} not supported by the fast decoder")


def as_plain(value: Any) -> Any:
    """A decoded body as the reference path would have it (dicts, lists; unset and null
    fields absent: validation.without_nulls)."""
    if isinstance(value, msgspec.Struct):
        fields = {field: getattr(value, field) for field in value.__struct_fields__}
        return {
            field: as_plain(item)
            for field, item in fields.items()
            if item is not msgspec.UNSET and item is not None
        }
    if isinstance(value, list):
        return [as_plain(item) for item in value]
    return value
