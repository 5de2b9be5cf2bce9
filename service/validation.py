"""Request bodies are validated against the schemas of the served OpenAPI document,
so the document and the implementation cannot drift apart."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from service.errors import BadRequest
from service.policy import json_path

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")


@cache
def openapi_document() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    components = openapi_document()["components"]
    schema = {"$ref": f"#/components/schemas/{name}", "components": components}
    return jsonschema.Draft202012Validator(schema)


def validate(name: str, value: Any) -> dict[str, Any]:
    """Check `value` against components.schemas[name]; a 400 naming the field if not."""
    error = next(iter(_validator(name).iter_errors(value)), None)
    if error is not None:
        raise BadRequest(_describe(error), code="invalid_field")
    return value


def _describe(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = [f for f in error.validator_value if f not in error.instance]
        return f"{json_path([*path, missing[0]])}: missing required field"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"{json_path([*path, extra[0]])}: unknown field"
    where = json_path(path) if path else "body"
    if error.validator == "type":
        return f"{where}: must be of type {error.validator_value}"
    if error.validator == "pattern":
        return f"{where}: {error.instance!r} is not in the expected form ({error.validator_value})"
    if error.validator in ("minItems", "maxItems", "minLength", "maxLength"):
        return f"{where}: {error.validator} is {error.validator_value}"
    return f"{where}: {error.message}"
