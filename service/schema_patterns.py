"""JSON Schema patterns read as JSON Schema means them.

A schema's `pattern` is an ECMA-262 regular expression. Python's `re` reads most of one
alike, but its `$` also matches before a final newline (so "read\\n" passes "^[a-z]+$"),
and its `\\s`, `\\d` and `\\w` take other characters than ECMA-262's (U+001C-U+001F and
U+0085 as white space, every Unicode digit as `\\d`). The validator here reads `$` as the
end of the string (a `$` outside a [] set that no backslash escapes); our schemas spell
such sets out instead of using those escapes (tests/test_schema_patterns.py holds that)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema

# A token of a pattern: an escape, a [] set (a `]` first in it is one of its characters,
# as Python reads it), or any other character.
_TOKEN = re.compile(r"\\.|\[\^?\]?(?:\\.|[^\]])*\]?|.", re.DOTALL)


def python_pattern(pattern: str) -> str:
    """A schema pattern as a Python regular expression that matches the same strings:
    each `$` that ends the pattern's string (not escaped, not in a set) becomes `\\Z`.
    fastjsonschema replaces every `$` after no backslash, which turns `[$]` into an
    invalid set and leaves `\\\\$` (a backslash, then the end) matching before a newline."""
    return "".join("\\Z" if token == "$" else token for token in _TOKEN.findall(pattern))


def _ecma_pattern(validator, pattern: str, instance: Any, schema: dict):
    if validator.is_type(instance, "string") and not re.search(python_pattern(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# Draft 2020-12 with `pattern` (and `propertyNames`' patterns) read as above.
EcmaValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})
