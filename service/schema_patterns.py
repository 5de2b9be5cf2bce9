"""JSON Schema patterns read as JSON Schema means them.

A schema's `pattern` is an ECMA-262 regular expression. Python's `re` reads most of one
alike, but its `$` also matches before a final newline (so "read\\n" passes "^[a-z]+$"),
and its `\\s`, `\\d` and `\\w` take other characters than ECMA-262's (U+001C-U+001F and
U+0085 as white space, every Unicode digit as `\\d`). The validator here reads `$` as the
end of the string, as fastjsonschema does; our schemas spell such sets out instead of
using those escapes (tests/test_schema_patterns.py holds that)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema

_DOLLAR = re.compile(r"(?<!\\)\$")  # an unescaped `$`, even in a [] set, as fastjsonschema


def python_pattern(pattern: str) -> str:
    """A schema pattern as a Python regular expression that matches the same strings."""
    return _DOLLAR.sub(r"\\Z", pattern)


def _ecma_pattern(validator, pattern: str, instance: Any, schema: dict):
    if validator.is_type(instance, "string") and not re.search(python_pattern(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# Draft 2020-12 with `pattern` (and `propertyNames`' patterns) read as above.
EcmaValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})
