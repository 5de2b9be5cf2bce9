"""Schema patterns mean what JSON Schema (ECMA-262) says they mean, in every schema we
read with Python: the OpenAPI document and the policy schemas (service/schema_patterns.py)."""

from __future__ import annotations

import re

import pytest
import yaml

from service.policy import REPO_POLICY_DIR
from service.schema_patterns import EcmaValidator
from service.validation import openapi_document

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


def test_the_ambiguous_escape_check_finds_one():
    assert AMBIGUOUS.search(r"^\d{4}$") and AMBIGUOUS.search(r"[^,\s]") and not AMBIGUOUS.search(r"a\\s")
