"""YAML that refuses a mapping holding the same key twice, with YAML 1.2's booleans.

PyYAML keeps the last of two equal keys without a word. In a file a person edits that
hides a change from its reviewer: a second `cross_tenant:` block pasted further down
would silently replace the approval rule read first. Policies, their test suites and
directory files are all read with this loader.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError

MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeys:
    """Refuses a mapping that holds a key twice (mixed into a SafeLoader)."""

    def construct_mapping(self, node, deep=False):
        first_at: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue  # `<<: *defaults`: the keys after it are meant to override
            key = self.construct_object(key_node, deep=True)
            try:
                first = first_at.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: SafeLoader's own check refuses it
            if first is not key_node:
                problem = f"found duplicate key {key!r} (first at line {first.start_mark.line + 1})"
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark, problem, key_node.start_mark
                )
        return super().construct_mapping(node, deep)

    def construct_yaml_timestamp(self, node):
        """PyYAML's, but a value shaped like a date that is none (2026-02-30, or any text
        tagged !!timestamp) is a YAML error with its place, not a bare ValueError."""
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, AttributeError) as exc:  # AttributeError: no match at all
            problem = f"{node.value!r} is not a valid date or time"
            raise ConstructorError(None, None, problem, node.start_mark) from exc


TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
BOOL_TAG = "tag:yaml.org,2002:bool"
# YAML 1.2's booleans. PyYAML follows YAML 1.1, where yes/no/on/off (any case) and y/n
# are booleans too: `distinct_approvers_across_parties: no` would quietly read as false,
# and a tenant named `no` or `on` would not be a string.
YAML12_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


def drop_implicit_resolver(loader: type, tag: str) -> None:
    """Plain scalars no longer resolve to `tag` in `loader` (its parents keep theirs)."""
    loader.yaml_implicit_resolvers = {
        first: [(found, regexp) for found, regexp in resolvers if found != tag]
        for first, resolvers in loader.yaml_implicit_resolvers.items()
    }


def _yaml12_booleans(loader: type) -> None:
    drop_implicit_resolver(loader, BOOL_TAG)
    loader.add_implicit_resolver(BOOL_TAG, YAML12_BOOL, list("tTfF"))


class UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    pass


UniqueKeyLoader.add_constructor(TIMESTAMP_TAG, _UniqueKeys.construct_yaml_timestamp)
_yaml12_booleans(UniqueKeyLoader)

# libyaml's parser, where PyYAML was built with it: the same nodes, built into the same
# objects by the same (Python) constructor, about ten times faster to parse.
FastUniqueKeyLoader = (
    type("FastUniqueKeyLoader", (_UniqueKeys, yaml.CSafeLoader), {}) if yaml.__with_libyaml__ else None
)
if FastUniqueKeyLoader is not None:
    FastUniqueKeyLoader.add_constructor(TIMESTAMP_TAG, _UniqueKeys.construct_yaml_timestamp)
    _yaml12_booleans(FastUniqueKeyLoader)


def load(text: str) -> Any:
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


_LIBYAML_DIFFERS = re.compile(r"[\t\ufeff?]|[|>][-+0-9]*#")


def load_large(text: str) -> Any:
    """`load` for a file that may be large (a directory file of 10,000 tenants took ~10 s
    of pure-Python parsing): parsed by libyaml when it is there, into the same values, by
    the same constructor (so a key twice is refused alike). Its errors are `load`'s: a
    document libyaml refuses is parsed again by `load`, for `load`'s message and place.
    A document holding what libyaml was found to read differently goes to `load` alone
    (comparing the two on every character below U+3000, and fuzzing): a tab (libyaml
    takes one inside a plain scalar), a byte-order mark past the first character
    (libyaml drops one at the start of a line inside [...] or {...}, so `\ufeffalice`
    would become `alice`), a `?` (`alice?` inside {...}), and a block scalar's header with
    a comment right after it (`|#`)."""
    if FastUniqueKeyLoader is None or _LIBYAML_DIFFERS.search(text.removeprefix("\ufeff")):
        return load(text)
    try:
        return yaml.load(text, Loader=FastUniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError:
        return load(text)  # raises the error, worded and placed as `load` words it


def describe(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where it is, then what: `line 3, column 5: invalid YAML:
    found duplicate key 'approvals' (first at line 2)`."""
    mark = getattr(exc, "problem_mark", None)
    place = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{place}: invalid YAML: {problem}"
