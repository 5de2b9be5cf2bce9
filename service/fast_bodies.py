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

from service.validation import openapi_document

_STRING_KEYWORDS = {"minLength": "min_length", "maxLength": "max_length", "pattern": "pattern"}
_NOTES = {"description"}  # keywords that do not constrain
# As fastjsonschema does: `$` means the end of the string, not "before a final newline"
# as in Python's re (an unescaped `$`, even in a [] set).
_END_OF_STRING = re.compile(r"(?<!\\)\$")


@cache
def decoder(name: str) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(_struct(name))


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
    return msgspec.defstruct(name, fields, forbid_unknown_fields=True)


def _type(spec: dict[str, Any], where: str) -> Any:
    if "$ref" in spec:
        _only(spec, {"$ref"}, where)
        return _struct(spec["$ref"].rsplit("/", 1)[1])
    kind = spec.get("type")
    if kind == "string":
        _only(spec, {"type", *_STRING_KEYWORDS} | _NOTES, where)
        meta = {_STRING_KEYWORDS[k]: v for k, v in spec.items() if k in _STRING_KEYWORDS}
        if "pattern" in meta:
            meta["pattern"] = _END_OF_STRING.sub(r"\\Z", meta["pattern"])
        return Annotated[str, msgspec.Meta(**meta)] if meta else str
    if kind == "boolean":
        _only(spec, {"type"} | _NOTES, where)
        return bool
    if kind == "array":
        _only(spec, {"type", "items", "minItems", "maxItems"} | _NOTES, where)
        bounds = {"min_length": spec.get("minItems"), "max_length": spec.get("maxItems")}
        items = list[_type(spec["items"], f"{where}[]")]
        return Annotated[items, msgspec.Meta(**{k: v for k, v in bounds.items() if v is not None})]
    raise ValueError(f"{where}: schema type {kind!r} is not supported by the fast decoder")


def _only(spec: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"{where}: {sorted(unknown)} not supported by the fast decoder")


def as_plain(value: Any) -> Any:
    """A decoded body as the reference path would have it (dicts, lists; unset fields absent)."""
    if isinstance(value, msgspec.Struct):
        return {
            field: as_plain(getattr(value, field))
            for field in value.__struct_fields__
            if getattr(value, field) is not msgspec.UNSET
        }
    if isinstance(value, list):
        return [as_plain(item) for item in value]
    return value
