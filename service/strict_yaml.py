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
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.error import MarkedYAMLError

MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_DEPTH = 100  # levels of nesting; the policy files use fewer than ten


class _UniqueKeys:
    """Mixed into a SafeLoader: refuses a mapping that holds a key twice and nesting past
    MAX_DEPTH (pure-Python composer only; load_large checks libyaml's), and places a
    scalar its tag cannot build."""

    def construct_object(self, node, deep=False):
        """PyYAML's, but a scalar its tag cannot build (`!!int x`, an integer of 5,000
        digits) is a YAML error at its place, not a bare ValueError or IndexError. (Only
        scalars: from a collection such an error would be a bug of ours, not the file's.)"""
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            if not isinstance(node, yaml.ScalarNode):
                raise
            raise ConstructorError(None, None, f"cannot build this value: {exc}", node.start_mark) from None

    def flatten_mapping(self, node):
        """Check a mapping's keys before PyYAML merges `<<:` into it, in place: PyYAML
        flattens every mapping as it builds it, and first each mapping merged into it
        (which may not be built yet). Checked after, a mapping merged into one built
        earlier would hold the keys it merged beside its own."""
        checked = self.__dict__.setdefault("_checked", set())
        if id(node) not in checked:
            checked.add(id(node))
            self._refuse_a_key_twice(node)
        super().flatten_mapping(node)

    def _refuse_a_key_twice(self, node: yaml.MappingNode) -> None:
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

    _depth = 0

    def compose_node(self, parent, index):
        """The pure-Python composer's, refusing nesting past MAX_DEPTH (each level is two
        Python frames here and more in whatever reads the value: a schema check would end
        in a RecursionError naming no file)."""
        opens = self.check_event(yaml.CollectionStartEvent)  # a scalar or an alias nests nothing
        self._depth += opens
        try:
            if self._depth > MAX_DEPTH:
                problem = f"nested deeper than {MAX_DEPTH} levels"
                raise ComposerError(None, None, problem, self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= opens

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


# Aliases repeat a node: a few lines of them can stand for billions of values (a "billion
# laughs"), or a long string thousands of times, and every reader of the document walks
# the expansion (a schema check, and its error message, took 43 s and 1.7 GB for one). A
# document's aliases may add this much: characters of strings, and one per collection.
EXPANSION_ALLOWED = 1_000_000


def load(text: str, loader: type = UniqueKeyLoader) -> Any:
    return _load_with(loader, text)


def _load_with(loader_class: type, text: str) -> Any:
    """yaml.load, refusing what no file a person writes needs: aliases that expand the
    document past EXPANSION_ALLOWED or MAX_DEPTH, and a node holding itself (the loader
    refuses nesting past MAX_DEPTH as written). Each is a YAML error with its place."""
    try:
        loader = loader_class(text)  # the pure-Python reader checks every character here
    except yaml.reader.ReaderError as exc:  # a NUL byte, say: placed by line and column
        problem = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise MarkedYAMLError(None, None, problem, _mark_at(text, exc.position)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if "*" in text:  # an alias is written *name; a file without one has no repeats
            _refuse_alias_bombs(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _mark_at(text: str, index: int) -> yaml.Mark:
    line = text.count("\n", 0, index)
    column = index - (text.rfind("\n", 0, index) + 1)
    return yaml.Mark("<unicode string>", index, line, column, None, None)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _refuse_alias_bombs(root: yaml.Node) -> None:
    """Walk the node graph once (aliases are shared nodes) and refuse: a node that holds
    itself (`&a [*a]`); aliases that add more than EXPANSION_ALLOWED (a repeat adds all
    its node stands for, so each node's size is counted once); and nesting past
    MAX_DEPTH once aliases are expanded (the composer counts only what is written)."""
    sizes: dict[int, int] = {}  # id(node): what it stands for, aliases expanded
    heights: dict[int, int] = {}  # id(node): levels of collections in it, aliases expanded
    open_nodes: set[int] = set()  # the node being walked and its parents
    added = 0
    stack: list[tuple[yaml.Node, yaml.Node, bool]] = [(root, root, False)]
    while stack:
        node, parent, walked = stack.pop()
        if walked:
            open_nodes.discard(id(node))
            children = _children(node)
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            heights[id(node)] = 1 + max((heights[id(child)] for child in children), default=0)
            if heights[id(node)] > MAX_DEPTH:
                problem = f"nested deeper than {MAX_DEPTH} levels once its aliases are expanded"
                raise MarkedYAMLError(None, None, problem, node.start_mark)
        elif id(node) in open_nodes:
            raise MarkedYAMLError(None, None, "an alias refers to a node that holds it", parent.start_mark)
        elif id(node) in sizes:
            added += sizes[id(node)]
            if added > EXPANSION_ALLOWED:
                problem = f"aliases expand the document by more than {EXPANSION_ALLOWED:,} characters"
                raise MarkedYAMLError(None, None, problem, parent.start_mark)
        elif isinstance(node, yaml.ScalarNode):
            sizes[id(node)], heights[id(node)] = max(1, len(node.value)), 0
        else:
            open_nodes.add(id(node))
            stack.append((node, parent, True))
            stack.extend((child, node, False) for child in reversed(_children(node)))


_LIBYAML_DIFFERS = re.compile(r"[\t\ufeff?!]|[|>][-+0-9]*#")


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
    a comment right after it (`|#`), and a `!` (a tag with no value, `a: !` or `[!!str, x]`,
    is None or refused by PyYAML, "" to libyaml; these files need no tags)."""
    if FastUniqueKeyLoader is None or _LIBYAML_DIFFERS.search(text.removeprefix("\ufeff")):
        return load(text)
    try:
        if _deeper_than(MAX_DEPTH, text):
            return load(text)  # which refuses it, at its place
        return _load_with(FastUniqueKeyLoader, text)
    except yaml.YAMLError:
        return load(text)  # raises the error, worded and placed as `load` words it


def _deeper_than(limit: int, text: str) -> bool:
    """Whether the text nests past `limit`, from libyaml's events (no nodes built: about
    an eighth of a load). libyaml builds nodes recursively in C: 100,000 levels of `[`
    crashed the process instead of raising an error."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > limit:
                return True
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return False


def describe(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where it is, then what: `line 3, column 5: invalid YAML:
    found duplicate key 'approvals' (first at line 2)`."""
    mark = getattr(exc, "problem_mark", None)
    place = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{place}: invalid YAML: {problem}"
