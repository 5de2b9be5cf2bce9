"""Request bodies are validated against the schemas of the served OpenAPI document,
so the document and the implementation cannot drift apart.

The schemas are compiled to Python with fastjsonschema: about thirty times faster than
interpreting them, which matters for a batch of 1,000 decision checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import fastjsonschema
import jsonschema
import orjson
import yaml
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from service import strict_yaml
from service.errors import BadRequest, UnsupportedMediaType
from service.policy import json_path
from service.schema_patterns import EcmaValidator

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")


@cache
def openapi_document() -> dict[str, Any]:
    """Parsed by libyaml where PyYAML has it (strict_yaml's loader, which also refuses a
    key twice): ~35 ms against ~250 ms on a slow host, paid by each worker. It is our own
    document, which a test holds both parsers read alike, so `load_large`'s guard is not
    needed."""
    loader = strict_yaml.FastUniqueKeyLoader or strict_yaml.UniqueKeyLoader
    return yaml.load(OPENAPI_PATH.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 (safe)


def prepare(name: str) -> None:
    """Compile the validator of components.schemas[name] now rather than at its first body."""
    _validator(name)


@cache
def _validator(name: str):
    components = openapi_document()["components"]
    return fastjsonschema.compile({"$ref": f"#/components/schemas/{name}", "components": components})


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The whole body, for the Flask routes and the decision fast path alike: at most
    `limit` bytes, else RequestEntityTooLarge (413). Read through Werkzeug's input stream
    (`get_input_stream`: it stops at Content-Length, or for a chunked body where the
    server ends it) limited at one byte more: limited at `limit` itself, under a server
    that ends the stream (granian) it refused any read at the limit, so a body of
    exactly 2 MiB, which API.md accepts, got a 413."""
    raw = get_input_stream(environ, max_content_length=limit + 1).read()
    if len(raw) > limit:
        raise RequestEntityTooLarge()
    return raw


def refuse_unless_json(environ: dict[str, Any]) -> None:
    """415 unless the body is sent as JSON, for the Flask routes and the decision fast
    path alike: `application/json` or an `application/...+json` type (as Flask's
    `is_json`), and not encoded. Bodies are read as sent: a compressed one (a
    Content-Encoding other than identity) would be bytes that are not JSON, and is
    refused by name (RFC 9110), not answered as bad JSON nor read as JSON after all."""
    media = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise UnsupportedMediaType("the body must be JSON (Content-Type: application/json)")
    coding = environ.get("HTTP_CONTENT_ENCODING", "").strip()
    if coding and coding.lower() != "identity":
        raise UnsupportedMediaType(
            f"the body must not be encoded (Content-Encoding: {coding} is not supported)"
        )


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as the JSON object it must be (API.md "Errors"), for both the Flask
    routes and the decision fast path. An empty body is {}: an action whose body may be
    left out gets its missing fields named by `validate`."""
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body: not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        kind = (
            "null"
            if body is None
            else {list: "an array", str: "a string", bool: "a boolean"}.get(type(body), "a number")
        )
        raise BadRequest(f"body: must be a JSON object, not {kind}", code="invalid_json")
    return body


def validate(name: str, value: Any) -> dict[str, Any]:
    """Check `value` against components.schemas[name]; a 400 naming the field if not.
    Returns it with null fields left out (see without_nulls)."""
    try:
        _validator(name)(value)
    except fastjsonschema.JsonSchemaValueException:
        raise BadRequest(_first_problem(name, value), code="invalid_field") from None
    nul = _nul_at(value, [])
    if nul is not None:
        raise BadRequest(f"{json_path(nul)}: must not contain a NUL character", code="invalid_field")
    return without_nulls(value)


def without_nulls(value: Any) -> Any:
    """`value` with every null field of its objects left out. The schemas allow null only
    on optional fields, where it means what leaving the field out means: clients that
    send every field of their model send null for the ones they do not set."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def _children(value: Any) -> Iterable[tuple[Any, Any]]:
    """(key or index, value) of a JSON object's or array's members; none for a scalar."""
    if isinstance(value, dict):
        return value.items()
    return enumerate(value) if isinstance(value, list) else ()


def _nul_at(value: Any, path: list) -> list | None:
    """Where a string holds U+0000, which PostgreSQL cannot store in text (psycopg2
    refuses it), so it is refused on every database alike."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    for key, item in _children(value):
        found = _nul_at(item, [*path, key])
        if found is not None:
            return found
    return None


def refuse_nul_characters(path: str, parameters: Iterable[tuple[str, str]]) -> None:
    """A 400 for U+0000 in a URL's path, or in query or form parameters (see _nul_at)."""
    if "\x00" in path:
        raise BadRequest("path: must not contain a NUL character", code="invalid_field")
    for name, value in parameters:
        if "\x00" in value:
            raise BadRequest(f"{name}: must not contain a NUL character", code="invalid_query")


def refuse_undecodable_url(environ: dict[str, Any], form: bytes = b"") -> None:
    """A 400 for a URL path, a query parameter or an URL-encoded form field whose bytes
    are not UTF-8. Werkzeug decodes a path with errors="replace", so `/v1/tenants/x%80`
    and `/v1/tenants/x%FF` would both name the tenant 'x\ufffd', and it keeps an
    undecodable parameter as its percent-escapes ('x%FE'): an id the caller never sent."""
    try:
        path = environ.get("PATH_INFO", "")  # WSGI: the decoded bytes, as latin-1
        if not path.isascii():
            path.encode("latin-1").decode("utf-8")
        # Werkzeug's development server (and test client) decodes PATH_INFO itself, with
        # replacement characters: only the request target as sent (RAW_URI, also set by
        # gunicorn) still shows the bytes.
        target = environ.get("RAW_URI", "").partition("?")[0]
        if "%" in target or not target.isascii():
            unquote_to_bytes(target.encode("latin-1")).decode("utf-8")
        query = environ.get("QUERY_STRING", "").encode("latin-1")
    except UnicodeError:
        raise BadRequest("path: not valid UTF-8", code="invalid_field") from None
    for raw, where, code in ((query, "query", "invalid_query"), (form, "form", "invalid_field")):
        name = _undecodable_parameter(raw)
        if name is not None:
            raise BadRequest(f"{name or where}: not valid UTF-8", code=code)


def _undecodable_parameter(raw: bytes) -> str | None:
    """The name of the first `name=value` pair of `raw` (a query string or an URL-encoded
    form) that does not decode as UTF-8, or None."""
    if raw.isascii() and b"%" not in raw:
        return None
    for pair in raw.split(b"&"):
        name, _, value = pair.partition(b"=")
        try:
            unquote_to_bytes(name).decode("utf-8")
            unquote_to_bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")
    return None


@cache
def _explainer(name: str) -> jsonschema.Draft202012Validator:
    components = openapi_document()["components"]
    return EcmaValidator({"$ref": f"#/components/schemas/{name}", "components": components})


# For one object, report an unknown field before a wrong one before a missing one.
_PRIORITY = {"additionalProperties": 0, "type": 1, "required": 2}


# Problems looked at to find the first. jsonschema yields them lazily, a keyword's before
# those of the values below it and in document order, so a bound finds the same first
# problem and keeps a 2 MB batch of a million bad checks from taking half a minute.
EXPLAINED_PROBLEMS = 100
NESTING_SHOWN = 64  # levels below which a too-deep value is looked for, to name its field


def _first_problem(name: str, value: Any) -> str:
    """The invalid body's first problem in document order (only runs on bad input, so the
    slower, more thorough validator is fine here)."""
    try:
        errors = list(islice(_explainer(name).iter_errors(value), EXPLAINED_PROBLEMS))
    except RecursionError:  # jsonschema's messages repr() values nested past the recursion limit
        path = _deeply_nested_at(value)
        return f"{json_path(path) if path else 'body'}: nested too deeply"

    def order(error: jsonschema.ValidationError):
        path = list(error.absolute_path)
        container = path if error.validator in ("required", "additionalProperties") else path[:-1]
        return (
            [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in container],
            _PRIORITY.get(error.validator, 3),
        )

    return _describe(min(errors, key=order)) if errors else "body: invalid"


def _deeply_nested_at(value: Any) -> list:
    """The path (at most two steps, to name the field) to the first value nested more than
    NESTING_SHOWN levels down; walked with a stack, as recursion is what failed."""
    stack = [(value, [])]
    while stack:
        item, path = stack.pop()
        if len(path) > NESTING_SHOWN:
            return path[:2]
        stack.extend((child, [*path, key]) for key, child in reversed(list(_children(item))))
    return []


_BOUNDS = {
    "minItems": ("at least", "items"),
    "maxItems": ("at most", "items"),
    "minLength": ("at least", "characters"),
    "maxLength": ("at most", "characters"),
}


# The schemas' pattern for text that must say something: a character that is not white
# space. Spelled out, not `\S`: a JSON Schema pattern is an ECMA-262 regular expression,
# whose `\s` is this set, while Python's `\s` also takes U+001C-U+001F and U+0085 and
# leaves out U+FEFF. Spelled out, both read it alike, so a client that checks a body
# against the document and the service agree on what is blank.
NOT_BLANK = r"[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"


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
        expected = error.validator_value  # a type name, or a list of them ("null" for nullable)
        kinds = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where}: must be of type {kinds}"
    if error.validator == "pattern" and error.validator_value == NOT_BLANK:
        return f"{where}: must not be blank"
    if error.validator == "pattern":
        return f"{where}: {error.instance!r} is not in the expected form ({error.validator_value})"
    if error.validator in _BOUNDS:
        bound, unit = _BOUNDS[error.validator]
        return f"{where}: must have {bound} {error.validator_value} {unit}"
    return f"{where}: {error.message}"
