"""Schema patterns mean what JSON Schema (ECMA-262) says they mean, in every schema we
read with Python: the OpenAPI document and the policy schemas (service/schema_patterns.py).
And a rule's pattern under regexMatch must be anchored (service/regex_anchoring.py)."""

from __future__ import annotations

import re

import pytest
import yaml

from service.policy import REPO_POLICY_DIR, load_policy
from service.regex_anchoring import is_anchored
from service.schema_patterns import EcmaValidator, python_pattern
from service.validation import openapi_document
from tests.helpers import copy_policies, edit, load_error

# Escapes that Python's `re` and ECMA-262 read as different sets of characters.
AMBIGUOUS = re.compile(r"(?<!\\)(?:\\\\)*\\[sSdDwWbB]")


def patterns(node, where: str = "#"):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield f"{where}/pattern", value
            else:
                yield from patterns(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from patterns(value, f"{where}/{index}")


def schemas() -> dict[str, object]:
    found = {"service/openapi.yaml": openapi_document()}
    for path in sorted((REPO_POLICY_DIR / "schema").glob("*.yaml")):
        found[f"policies/schema/{path.name}"] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return found


@pytest.mark.parametrize("name", list(schemas()))
def test_no_pattern_uses_an_escape_python_reads_differently(name):
    document = schemas()[name]
    found = list(patterns(document))
    assert found, f"{name} has no patterns: the walk is wrong"
    assert [(where, p) for where, p in found if AMBIGUOUS.search(p)] == []


@pytest.mark.parametrize(("value", "valid"), [("read", True), ("read\n", False), ("\nread", False)])
def test_a_dollar_ends_the_string(value, valid):
    assert EcmaValidator({"type": "string", "pattern": "^[a-z]+$"}).is_valid(value) is valid
    assert EcmaValidator({"propertyNames": {"pattern": "^[a-z]+$"}}).is_valid({value: 1}) is valid


def test_request_body_patterns_read_alike_by_fastjsonschema_and_the_fast_path():
    """Request bodies are checked by fastjsonschema (service/validation.py), which makes
    every `$` after no backslash the end, and decision bodies by the fast path, which reads
    patterns as python_pattern does. The two differ on a `$` in a [] set or after `\\\\`:
    the OpenAPI document must hold no such pattern, or one body could pass one check only."""
    fastjsonschema_reading = re.compile(r"(?<!\\)\$")
    found = list(patterns(openapi_document()))
    assert found
    assert [
        (where, p) for where, p in found if fastjsonschema_reading.sub(r"\\Z", p) != python_pattern(p)
    ] == []


def test_the_ambiguous_escape_check_finds_one():
    assert AMBIGUOUS.search(r"^\d{4}$") and AMBIGUOUS.search(r"[^,\s]") and not AMBIGUOUS.search(r"a\\s")


def test_a_pattern_may_match_anywhere_in_the_string():
    """JSON Schema's `pattern` is not anchored: "[a-z]" is "holds a letter"."""
    validator = EcmaValidator({"type": "string", "pattern": "[a-z]"})
    assert validator.is_valid("1a") and not validator.is_valid("12")


def test_a_pattern_ignores_what_is_not_a_string():
    """Only strings are matched: the type is another keyword's to check."""
    assert EcmaValidator({"pattern": "^[a-z]+$"}).is_valid(7)
    assert [
        error.message for error in EcmaValidator({"type": "string", "pattern": "^[a-z]+$"}).iter_errors(7)
    ] == ["7 is not of type 'string'"]


def test_an_escaped_dollar_is_a_dollar_sign():
    validator = EcmaValidator({"pattern": "^a\\$$"})
    assert validator.is_valid("a$") and not validator.is_valid("a") and not validator.is_valid("a$\n")


def test_a_dollar_after_an_escaped_backslash_ends_the_string():
    """`^a\\\\$` is an a, a backslash, then the end: not also before a final newline."""
    validator = EcmaValidator({"pattern": "^a\\\\$"})
    assert validator.is_valid("a\\") and not validator.is_valid("a\\\n")


def test_a_dollar_in_a_set_is_a_dollar_sign():
    """In a [] set `$` is one of its characters (before, it became an invalid `[\\Z]`)."""
    validator = EcmaValidator({"pattern": "^[$]$"})
    assert validator.is_valid("$") and not validator.is_valid("$\n") and not validator.is_valid("a")
    assert EcmaValidator({"pattern": "^[a$]+$"}).is_valid("a$a") and not EcmaValidator(
        {"pattern": "^[^$]+$"}
    ).is_valid("a$")


def test_a_mismatch_names_the_value_and_the_pattern():
    errors = list(EcmaValidator({"pattern": "^[a-z]+$"}).iter_errors("Read"))
    assert [error.message for error in errors] == ["'Read' does not match '^[a-z]+$'"]


def regex_rule_policy(tmp_path, pattern: str):
    """The shipped policy with access.conf matching resources by regexMatch, its grant
    rule's resource `pattern`."""
    directory = copy_policies(tmp_path)
    edit(directory / "access.conf", "keyMatch(r.obj, p.obj)", "regexMatch(r.obj, p.obj)")
    edit(
        directory / "access.yaml",
        'rules:\n  - [grant, "diagnostics/*", read]\n  - [advanced_diagnostics, "diagnostics/*", read]',
        f"rules:\n  - [grant, '{pattern}', read]\n"
        "  - [advanced_diagnostics, '^diagnostics/signInLogs$', read]",
    )
    return directory


@pytest.mark.parametrize(
    ("pattern", "longer"),
    [
        ("^diagnostics/[a]|x$", "diagnostics/a-and-more"),  # a set closed before the |
        ("^diagnostics/(a)|x$", "diagnostics/a-and-more"),  # a group closed before the |
        (
            "^diagnostics/[^](]|x$",
            "diagnostics/z-and-more",
        ),  # ] first in a negated set is one of its characters
        ("^diagnostics/[](]|x$", "diagnostics/(-and-more"),  # ] first in a set is one of its characters
    ],
)
def test_a_regex_rule_with_a_top_level_alternative_is_refused(tmp_path, pattern, longer):
    """Each matches a resource that only begins like a listed one (regexMatch is re.match):
    the ( in the sets opens no group, the | is top-level."""
    assert re.match(pattern, longer)
    message = load_error(regex_rule_policy(tmp_path, pattern))
    assert message.startswith(f"access.yaml: rules[0]: {pattern!r} is not anchored")


def test_a_regex_rule_ending_in_an_escaped_backslash_is_anchored(tmp_path):
    pattern = "^diagnostics/signInLogs\\\\$"  # a backslash, then the end
    policy = load_policy(regex_rule_policy(tmp_path, pattern))
    assert policy.access_allows("grant", "diagnostics/signInLogs\\", "read") is not None


@pytest.mark.parametrize(
    "pattern",
    [
        "diagnostics/signInLogs$",
        "^diagnostics/signInLogs",
        "^(?ix:#[\n)|b$",  # verbose mode after another flag: #[ is a comment, the | top-level
    ],
)
def test_a_pattern_without_both_anchors_is_not_anchored(pattern):
    assert not is_anchored(pattern)
