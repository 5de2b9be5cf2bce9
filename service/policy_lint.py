"""`policy check` lint: rules that load but are probably mistakes."""

from __future__ import annotations

from collections import Counter

from service.audit import ACTIVITIES
from service.policy import Policy

# Access kinds the decision engine produces (service/decisions.py); a rule for any other
# kind can never match.
ENGINE_ACCESS_KINDS = ("grant", "advanced_diagnostics")
MANAGE = "manage_support_access"  # the permission an approver needs (service/workflow.py)
# Permissions the service checks in the provider tenant only (service/viewer.py,
# workflow.py, decisions.py, decision_endpoint.py), with what they make of a holder.
PROVIDER_PERMISSIONS = {
    "work_tickets": "support engineers",
    "read_diagnostics": "subjects of data-access decisions",
    "evaluate_decisions": "decision clients",
    "operate": "operators",
}


def lint(policy: Policy) -> list[str]:
    """Warnings, each naming the file, the place and the problem."""
    return [
        *_unused_roles(policy),
        *_customer_roles_with_provider_actions(policy),
        *_rules_that_never_match(policy),
        *_duplicate_rules(policy),
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


def _customer_roles_with_provider_actions(policy: Policy) -> list[str]:
    """A customer role may be held in any tenant, the provider's included. An action
    the service checks only in the provider tenant does nothing in a customer's tenant,
    and makes the provider's holders of that role (its own Global Administrators, say)
    engineers or operators as a side effect: provider powers belong in provider roles.
    An action that a customer permission names too is no exception: then every customer
    role that approves would also operate, say, wherever it is held in the provider tenant."""
    provider_permission_of = {
        action: name for name, action in policy.permissions.items() if name in PROVIDER_PERMISSIONS
    }
    warnings = []
    for role in policy.roles.values():
        if role.scope != "customer":
            continue
        for action in sorted(role.actions & provider_permission_of.keys()):
            permission = provider_permission_of[action]
            warnings.append(
                f"roles.yaml: {role.name}: a customer role carries {action} (permissions.{permission}), "
                f"which counts only in the provider tenant: it makes the role's holders there "
                f"{PROVIDER_PERMISSIONS[permission]}; give it to a provider role"
            )
    return warnings


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


def _scenarios_without_approvers(policy: Policy) -> list[str]:
    warnings = []
    for scenario, requirements in policy.scenarios.items():
        for requirement in requirements:
            if requirement.approver_roles:
                eligible = any(policy.role_allows(role, MANAGE) for role in requirement.approver_roles)
            else:
                eligible = next(policy.roles_with(MANAGE), None) is not None
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
