"""Whether a regular expression can match only a whole string: what a rule's pattern
must be when a matcher tests it with regexMatch, which finds a match at the start of a
longer value (`^diagnostics/signInLogs` also matches `diagnostics/signInLogsRaw`)."""

from __future__ import annotations

import re

# A comment group, or verbose mode (where `#` starts a comment and whitespace is
# ignored): what is a group or an alternative there is past this simple reading.
_UNREADABLE_HERE = re.compile(r"\(\?#|\(\?[a-zA-Z]*x")


def is_anchored(pattern: str) -> bool:
    """Whether the pattern can only match a whole string: it begins with ^ and ends with
    an unescaped $, with no | outside a group (`^a|b$` is `^a` or `b$`: it matches
    `xb` and `ab...`). `^(?:a|b)$` is anchored. A pattern with a comment or in verbose
    mode is taken as unanchored (refused: write it plainly)."""
    trailing_backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
    ends = pattern.endswith("$") and trailing_backslashes % 2 == 0
    plain = not _UNREADABLE_HERE.search(pattern)
    return pattern.startswith("^") and ends and plain and not _top_level_alternation(pattern)


def _top_level_alternation(pattern: str) -> bool:
    depth, in_class, index = 0, False, 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2  # an escaped character, whatever it is
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class, index = True, index + 1
            index += pattern.startswith("^", index)
            index += pattern.startswith("]", index)  # a ] first in a set is one of its characters
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
        index += 1
    return False
