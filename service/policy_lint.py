"""`policy check` lint: rules that load but are probably mistakes."""

from __future__ import annotations

import re
from collections import Counter

from service.audit import ACTIVITIES
from service.policy import Policy

# Access kinds the decision engine produces (service/decisions.py); a rule for any other
# kind can never match.
ENGINE_ACCESS_KINDS = ("grant", "advanced_diagnostics")
# Casbin keeps the matcher with `r.obj` rewritten as `r_obj`: accept both spellings.
_REGEX_CALL = re.compile(r"regexMatch\(\s*r[._](\w+)\s*,\s*p[._](\w+)\s*\)")


def lint(policy: Policy) -> list[str]:
    """Warnings, each naming the file, the place and the problem."""
    return [
        *_unused_roles(policy),
        *_rules_that_never_match(policy),
        *_duplicate_rules(policy),
        *_unanchored_regexes(policy),
        *_scenarios_without_approvers(policy),
        *_cross_tenant_without_the_ticket_tenant(policy),
        *_support_trail_naming_nothing(policy),
    ]


def _unused_roles(policy: Policy) -> list[str]:
    used = set(policy.permissions.values())
    return [
        f"roles.yaml: {role.name}: carries {', '.join(sorted(role.actions))} but no permission uses it"
        for role in policy.roles.values()
        if role.actions and not role.actions & used
    ]


def _rules_that_never_match(policy: Policy) -> list[str]:
    warnings = []
    for kind in policy.access_kinds:
        if kind not in ENGINE_ACCESS_KINDS:
            warnings.append(
                f"access.yaml: access_kinds.{kind}: the engine never grants this kind "
                f"(it knows {', '.join(ENGINE_ACCESS_KINDS)}), so its rules can never match"
            )
    for rule in policy.access_rules:
        if rule.values[0] not in ENGINE_ACCESS_KINDS:
            warnings.append(f"{rule.source}: can never match: kind {rule.values[0]!r} is never granted")
    return warnings


def _duplicate_rules(policy: Policy) -> list[str]:
    counts = Counter(rule.values for rule in policy.access_rules)
    return [
        f"{rule.source}: duplicate rule {', '.join(rule.values)}"
        for rule in policy.access_rules
        if counts[rule.values] > 1
    ]


def _unanchored_regexes(policy: Policy) -> list[str]:
    """regexMatch is a search, not a full match: an unanchored pattern matches too much."""
    warnings = []
    for name, enforcer, rules in (
        ("access.conf", policy.access_enforcer, policy.access_rules),
        ("permissions.conf", policy.permission_enforcer, policy.permission_rules),
    ):
        matcher = enforcer.model["m"]["m"].value
        tokens = [t.split("_", 1)[1] for t in enforcer.model["p"]["p"].tokens]
        for _, p_field in _REGEX_CALL.findall(matcher):
            column = tokens.index(p_field) if p_field in tokens else None
            for rule in rules:
                pattern = rule.values[column] if column is not None else ""
                if not is_anchored(pattern):
                    warnings.append(
                        f"{rule.source}: unanchored regex {pattern!r} used by regexMatch in {name}"
                    )
    return warnings


def _scenarios_without_approvers(policy: Policy) -> list[str]:
    approvers = set(policy.roles_with("manage_support_access"))
    warnings = []
    for scenario, requirements in policy.scenarios.items():
        for requirement in requirements:
            eligible = (
                approvers & set(requirement.approver_roles) if requirement.approver_roles else approvers
            )
            if not eligible:
                warnings.append(
                    f"workflow.yaml: approval.scenarios.{scenario}: no role may approve for the "
                    f"{requirement.party} party, so such requests can never be approved"
                )
    return warnings


def _cross_tenant_without_the_ticket_tenant(policy: Policy) -> list[str]:
    """SPEC §1: a cross-tenant request needs an admin of both tenants. A scenario that
    drops the support request tenant's party loads (the rule is data) but is probably
    a mistake."""
    parties = {requirement.party for requirement in policy.scenarios.get("cross_tenant", ())}
    if "support_request" in parties:
        return []
    return [
        "workflow.yaml: approval.scenarios.cross_tenant: no support_request party, so the "
        "tenant the ticket came from never approves access to the other tenant's data"
    ]


def _support_trail_naming_nothing(policy: Policy) -> list[str]:
    """A misspelt activity hides its events from the admins who should see them."""
    warnings = []
    for index, pattern in enumerate(policy.support_trail):
        family = pattern[:-1] if pattern.endswith("*") else None
        if not any(a.startswith(family) if family else a == pattern for a in ACTIVITIES):
            warnings.append(
                f"workflow.yaml: audit.support_trail[{index}]: {pattern!r} names no audit activity "
                f"(they are {', '.join(sorted(ACTIVITIES))})"
            )
    return warnings


# A comment group, or verbose mode (where `#` starts a comment and whitespace is
# ignored): what is a group or an alternative there is past this simple reading.
_UNREADABLE_HERE = re.compile(r"\(\?#|\(\?[a-zA-Z]*x")


def is_anchored(pattern: str) -> bool:
    """Whether the pattern can only match a whole string: it begins with ^ and ends with
    an unescaped $, with no | outside a group (`^a|b$` is `^a` or `b$`: it matches
    `xb` and `ab...`). `^(?:a|b)$` is anchored. A pattern with a comment or in verbose
    mode is taken as unanchored (warned about: write it plainly)."""
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
