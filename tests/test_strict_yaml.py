"""service/strict_yaml.py: a key twice is refused, and large files parse with libyaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service import strict_yaml
from service.errors import PolicyError
from service.policy import load_policy
from tests.conftest import DIRECTORY_FILE
from tests.helpers import copy_policies, edit

POLICY_FILES = sorted((Path(__file__).parent.parent / "policies").rglob("*.yaml"))

needs_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")


def refusal(read, text: str) -> str:
    """The one-line error `read` refuses `text` with."""
    with pytest.raises(yaml.YAMLError) as refused:
        read(text)
    return strict_yaml.describe(refused.value)


@pytest.mark.parametrize("path", [DIRECTORY_FILE, *POLICY_FILES], ids=lambda p: Path(p).name)
def test_load_large_gives_what_load_gives(path):
    text = Path(path).read_text(encoding="utf-8")
    assert strict_yaml.load_large(text) == strict_yaml.load(text)


@needs_libyaml
def test_load_large_parses_with_libyaml(monkeypatch):
    def pure_python(text):
        raise AssertionError("parsed by the pure-Python loader")

    monkeypatch.setattr(strict_yaml, "load", pure_python)
    text = "tenants:\n  - {id: contoso, name: Contoso}\nrole_assignments: []\n"
    assert strict_yaml.load_large(text) == {
        "tenants": [{"id": "contoso", "name": "Contoso"}],
        "role_assignments": [],
    }


@pytest.mark.parametrize(
    "text",
    [
        "tenants: []\nrole_assignments: []\ntenants: []\n",  # a key twice
        "a:\n  b: 1\n  b: 2\n",  # a key twice, nested
        "x: {a: 1, a: 2}\n",  # a key twice, flow
        "tenants: [\n",  # unclosed
        "a: b: c\n",  # a mapping where none may start
        "a: x\ty\n",  # a tab libyaml would take
        "\t- a\n",
        "a: 2026-02-30\n",  # shaped like a date, but none: a YAML error, not a ValueError
        "a: [1, !!timestamp soon]\n",
    ],
)
def test_load_large_refuses_what_load_refuses_with_its_words(text):
    with pytest.raises(yaml.YAMLError) as by_load:
        strict_yaml.load(text)
    with pytest.raises(yaml.YAMLError) as by_load_large:
        strict_yaml.load_large(text)
    assert strict_yaml.describe(by_load_large.value) == strict_yaml.describe(by_load.value)


@pytest.mark.parametrize(
    "text",
    [
        "principal: [x,\n\ufeffalice]\n",  # libyaml drops the mark: a different principal
        "a: 1\n\ufeff",
        "r: {principal: alice?, role: Global Administrator}\n",
        "name: |#c\n  x\n",
        "name: >-#\n  x\n",
        "\ufeffa: 1\n",  # a mark at the very start is read alike: libyaml may take it
    ],
)
def test_load_large_reads_what_libyaml_reads_otherwise_as_load_does(text):
    """Texts a fuzzing of both parsers found libyaml to read differently, or to take where
    the strict loader refuses them: the same value, or the same refusal, as `load`."""
    try:
        expected = strict_yaml.load(text)
    except yaml.YAMLError as refused:
        with pytest.raises(yaml.YAMLError) as also_refused:
            strict_yaml.load_large(text)
        assert strict_yaml.describe(also_refused.value) == strict_yaml.describe(refused)
    else:
        assert strict_yaml.load_large(text) == expected


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_only_true_and_false_are_booleans_as_in_yaml_1_2(read):
    """YAML 1.1 (PyYAML's default) also reads yes/no/on/off as booleans: a policy's
    `distinct_approvers_across_parties: no` would quietly be false, a tenant `no` no string."""
    text = "a: no\nb: yes\nc: on\nd: Off\ne: true\nf: False\ng: [no, TRUE]\n"
    assert read(text) == {
        "a": "no",
        "b": "yes",
        "c": "on",
        "d": "Off",
        "e": True,
        "f": False,
        "g": ["no", True],
    }


def test_a_policy_boolean_written_no_is_refused_naming_the_place(tmp_path):
    directory = copy_policies(tmp_path)
    edit(
        directory / "workflow.yaml",
        "distinct_approvers_across_parties: false",
        "distinct_approvers_across_parties: no",
    )
    with pytest.raises(PolicyError) as refused:
        load_policy(directory)
    assert "distinct_approvers_across_parties: 'no' is not of type 'boolean'" in refused.value.message


def alias_bomb(levels: int = 9) -> str:
    """A "billion laughs": each level nine aliases of the one before (9**9 strings)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_aliases_that_expand_a_document_without_end_are_refused_at_their_place(read):
    """Every reader of the value (a schema check, its error message) walks the expansion:
    a policy file like this took 43 s and 1.7 GB, and held a running server's decisions."""
    assert refusal(read, alias_bomb()) == (  # l5, where the expansion passes the bound
        "line 6, column 5: invalid YAML: aliases expand the document by more than 1,000,000 characters"
    )


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
@pytest.mark.parametrize(
    ("text", "column"),
    [("a: &loop [1, *loop]\n", 4), ("a: &loop [1, [2, *loop]]\n", 14)],  # deeper down: where the alias is
)
def test_a_node_holding_itself_is_refused(read, text, column):
    message = refusal(read, text)
    assert message == f"line 1, column {column}: invalid YAML: an alias refers to a node that holds it"


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_aliases_a_person_writes_still_read(read):
    text = (
        "defaults: &defaults {approvals: 1, party: resource}\n"
        "same: {<<: *defaults, approvals: 2}\n"
        "roles: &roles [a, b]\n"
        "again: *roles\n"
        "pattern: 'diagnostics/*'\n"
    )
    assert read(text) == {
        "defaults": {"approvals": 1, "party": "resource"},
        "same": {"approvals": 2, "party": "resource"},
        "roles": ["a", "b"],
        "again": ["a", "b"],
        "pattern": "diagnostics/*",
    }


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
@pytest.mark.parametrize("levels", [101, 5_000, 200_000])
def test_nesting_past_a_hundred_levels_is_a_yaml_error_with_a_place(read, levels):
    """Past Python's recursion limit the schema check failed naming no file, and libyaml
    crashed the process (a segmentation fault) at 100,000 levels."""
    message = refusal(read, "a:\n  b: " + "[" * levels + "]" * levels + "\n")
    assert message == "line 2, column 104: invalid YAML: nested deeper than 100 levels"


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_a_hundred_levels_of_nesting_still_read(read):
    assert read("a: " + "[" * 99 + "1" + "]" * 99 + "\n") == {"a": eval("[" * 99 + "1" + "]" * 99)}  # noqa: S307


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_a_nul_byte_is_placed_by_line_and_column_in_one_line(read):
    assert refusal(read, "a: 1\nb: x\x00y\n") == (
        "line 2, column 5: invalid YAML: unacceptable character #x0000: special characters are not allowed"
    )


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_a_long_string_repeated_by_aliases_is_refused(read):
    """Few nodes, but each a long string: a policy file like this (under the 1 MiB file
    limit) held the schema check for minutes."""
    text = f"a: &s {'x' * 600_000}\nb: *s\nc: *s\n"
    message = refusal(read, text)
    assert (
        message
        == "line 1, column 1: invalid YAML: aliases expand the document by more than 1,000,000 characters"
    )


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_nesting_that_aliases_take_past_a_hundred_levels_is_refused(read):
    """Each line nests 60 levels as written; the second holds the first inside it."""
    text = "a: &a " + "[" * 60 + "1" + "]" * 60 + "\nb: " + "[" * 60 + "*a" + "]" * 60 + "\n"
    message = refusal(read, text)
    assert (
        message
        == "line 2, column 23: invalid YAML: nested deeper than 100 levels once its aliases are expanded"
    )


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "a: !!int x\n",
            "line 1, column 4: invalid YAML: cannot build this value: invalid literal for int()",
        ),
        ("a: !!int\n", "line 1, column 4: invalid YAML: cannot build this value: string index out of range"),
        (
            "a: " + "1" * 5000 + "\n",
            "line 1, column 4: invalid YAML: cannot build this value: Exceeds the limit",
        ),
        ("b: !!map [x]\n", "line 1, column 4: invalid YAML: expected a mapping node, but found sequence"),
        ("!!set ab\n", "line 1, column 1: invalid YAML: expected a mapping node, but found scalar"),
    ],
)
def test_a_value_its_tag_cannot_build_is_a_yaml_error_at_its_place(read, text, problem):
    """They were a bare ValueError, TypeError or IndexError: a traceback from the suite
    loader and the directory import."""
    assert refusal(read, text).startswith(problem)


@pytest.mark.parametrize("text", ["a: !\n", "a: !<!>\n", "[!<!>, x]\n", "[!!str, x]\n", "{a: !!str, b: 1}\n"])
def test_a_tag_without_a_value_reads_alike_in_both_loaders(text):
    """PyYAML reads such a value as None or refuses it; libyaml read it as ""."""
    try:
        expected = strict_yaml.load(text)
    except yaml.YAMLError as refused:
        assert refusal(strict_yaml.load_large, text) == strict_yaml.describe(refused)
    else:
        assert strict_yaml.load_large(text) == expected


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_a_mapping_merged_before_it_is_built_is_not_taken_for_a_key_twice(read):
    """PyYAML merges `<<:` in place, and builds `c` before `y` here: `y`, checked after
    `c` merged it, held b's `k` beside its own and was refused."""
    text = "b: &b {k: 1}\nx:\n  y: &a {<<: *b, k: 2}\nc: {<<: *a}\n"
    assert read(text) == {"b": {"k": 1}, "x": {"y": {"k": 2}}, "c": {"k": 2}}


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_aliases_that_add_exactly_the_bound_still_read(read):
    """The bound is what aliases may add: two repeats of 500,000 characters add 1,000,000."""
    text = f"a: &s {'x' * 500_000}\nb: *s\nc: *s\n"
    assert read(text) == {"a": "x" * 500_000, "b": "x" * 500_000, "c": "x" * 500_000}


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_aliases_used_as_keys_count_toward_the_bound(read):
    """A key is read as much as a value is (a schema check names it in its message)."""
    text = f"a: &s {'x' * 600_000}\nb: {{*s : 1}}\nc: {{*s : 1}}\n"
    assert refusal(read, text) == (
        "line 3, column 4: invalid YAML: aliases expand the document by more than 1,000,000 characters"
    )


def nested_repeats(first: str, levels: int) -> str:
    """`first` as l0, then each level a list of ten aliases of the level before."""
    lines = [f"l0: &l0 {first}"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_aliases_of_empty_lists_count_one_per_list(read):
    """No string in it, yet a million lists for every reader to walk."""
    assert refusal(read, nested_repeats("[]", 6)) == (
        "line 7, column 5: invalid YAML: aliases expand the document by more than 1,000,000 characters"
    )


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_aliases_of_empty_strings_count_one_per_string(read):
    assert refusal(read, nested_repeats("[" + ", ".join(["''"] * 9) + "]", 5)) == (
        "line 6, column 5: invalid YAML: aliases expand the document by more than 1,000,000 characters"
    )


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_a_hundred_levels_of_nesting_through_aliases_still_read(read):
    """The document (one level) holds b's 49 levels, which hold a's 50: a hundred in all."""
    text = f"a: &a {'[' * 50}1{']' * 50}\nb: {'[' * 49}*a{']' * 49}\n"
    a = 1
    for _ in range(50):
        a = [a]
    b = a
    for _ in range(49):
        b = [b]
    assert read(text) == {"a": a, "b": b}


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_an_unhashable_key_is_a_yaml_error_at_its_place(read):
    assert refusal(read, "a: 1\nb: {[x]: 1}\n") == "line 2, column 5: invalid YAML: found unhashable key"


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
def test_a_hundred_and_one_levels_of_nesting_are_refused(read):
    """The document (one level) holds a hundred levels of lists."""
    message = refusal(read, "a: " + "[" * 100 + "]" * 100 + "\n")
    assert message == "line 1, column 103: invalid YAML: nested deeper than 100 levels"


@needs_libyaml
def test_a_file_of_many_collections_each_shallow_parses_with_libyaml(monkeypatch):
    """Depth is how deep collections nest, not how many there are: a directory file of
    many tenants is a large file for libyaml, not for the pure-Python parser."""

    def pure_python(text):
        raise AssertionError("parsed by the pure-Python loader")

    monkeypatch.setattr(strict_yaml, "load", pure_python)
    tenants = [{"id": f"t{n}", "name": f"Tenant {n}"} for n in range(150)]
    text = "tenants:\n" + "".join(f"  - {{id: t{n}, name: Tenant {n}}}\n" for n in range(150))
    assert strict_yaml.load_large(text) == {"tenants": tenants}


@pytest.mark.parametrize("read", [strict_yaml.load, strict_yaml.load_large])
@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "---\n"])
def test_an_empty_document_reads_as_none(read, text):
    assert read(text) is None
