"""Issue 3, point 4: `policy check` validates the schema and lints the policy: a role no
rule uses, a customer role carrying an action checked only in the provider tenant, a
rule that can never match, a duplicate rule, an approval scenario without
an eligible approver role and a support_trail entry naming no audit activity are
warnings; `--strict` makes them errors (exit code 3). An unanchored regex is refused at
load (tested here with the anchoring rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.policy import REPO_POLICY_DIR, Policy, load_policy
from service.policy_lint import lint
from service.regex_anchoring import is_anchored
from tests.helpers import append, copy_policies, edit, load_error

EXIT_OK, EXIT_INVALID = 0, 3


def warnings_of(output: str) -> list[str]:
    return [line[len("warning: ") :] for line in output.splitlines() if line.startswith("warning: ")]


def test_shipped_policy_has_no_warnings_and_passes_strict(runner):
    assert lint(load_policy(REPO_POLICY_DIR)) == []
    result = runner.invoke(args=["policy", "check", "--strict"])
    assert result.exit_code == EXIT_OK, result.output
    assert warnings_of(result.output) == []
    assert "0 warnings" in result.output
    assert load_policy(REPO_POLICY_DIR).version in result.output


def test_check_accepts_a_directory_argument(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    result = runner.invoke(args=["policy", "check", "--strict", str(policy_dir)])
    assert result.exit_code == EXIT_OK, result.output
    assert str(policy_dir) in result.output


def test_an_invalid_policy_fails_check_with_file_place_and_problem(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    edit(policy_dir / "workflow.yaml", "max_grant_duration: 8h", "max_grant_duration: eight hours")
    result = runner.invoke(args=["policy", "check", str(policy_dir)])
    assert result.exit_code == EXIT_INVALID, result.output
    assert f"invalid policy in {policy_dir}: workflow.yaml: timing.max_grant_duration:" in result.output


# Each variant: how to change a copy of the shipped policy, and the warning it must give.


def unused_role(policy_dir: Path) -> None:
    append(
        policy_dir / "roles.yaml",
        """  - name: Widget Administrator
    scope: customer
    actions:
      - contoso.widgets/allEntities/manage
""",
    )


def customer_role_with_provider_action(policy_dir: Path) -> None:
    edit(
        policy_dir / "roles.yaml",
        "      - microsoft.directory/auditLogs/allProperties/read\n",
        "      - microsoft.directory/auditLogs/allProperties/read\n      - supportAccess/service/operate\n",
    )


def duplicate_rule(policy_dir: Path) -> None:
    edit(
        policy_dir / "access.yaml",
        '  - [advanced_diagnostics, "diagnostics/*", read]',
        '  - [advanced_diagnostics, "diagnostics/*", read]\n  - [grant, "diagnostics/*", read]',
    )


def kind_never_granted(policy_dir: Path) -> None:
    edit(
        policy_dir / "access.yaml",
        "access_kinds:\n",
        "access_kinds:\n  break_glass: emergency access nobody implemented\n",
    )
    edit(
        policy_dir / "access.yaml",
        '  - [advanced_diagnostics, "diagnostics/*", read]',
        '  - [advanced_diagnostics, "diagnostics/*", read]\n'
        '  - [break_glass, "diagnostics/signInLogs", read]',
    )


def no_eligible_approver(policy_dir: Path) -> None:
    edit(
        policy_dir / "workflow.yaml",
        "{party: resource, approvals: 1}",
        "{party: resource, approvals: 1, approver_roles: [Global Reader]}",
    )


def cross_tenant_without_ticket_tenant(policy_dir: Path) -> None:
    edit(policy_dir / "workflow.yaml", "      - {party: support_request, approvals: 1}\n", "")


def misspelt_support_trail(policy_dir: Path) -> None:
    # An entry without `.*` names one activity exactly: a prefix of one names none.
    edit(
        policy_dir / "workflow.yaml",
        "diagnostics.read]",
        "diagnostic.read, support_requests.*, access_request.approve]",
    )


def unanchored_regex(policy_dir: Path) -> None:
    edit(policy_dir / "access.conf", "keyMatch(r.obj, p.obj)", "regexMatch(r.obj, p.obj)")


LINT_CASES = {
    "unused role": (
        unused_role,
        [
            "roles.yaml: Widget Administrator: carries contoso.widgets/allEntities/manage "
            "but no permission uses it"
        ],
    ),
    "customer role with a provider action": (
        customer_role_with_provider_action,
        [
            "roles.yaml: Global Administrator: a customer role carries supportAccess/service/operate "
            "(permissions.operate), which counts only in the provider tenant: it makes the role's "
            "holders there operators; give it to a provider role"
        ],
    ),
    "duplicate rule": (
        duplicate_rule,
        [
            "access.yaml rules[0]: duplicate rule grant, diagnostics/*, read",
            "access.yaml rules[2]: duplicate rule grant, diagnostics/*, read",
        ],
    ),
    "rule that can never match": (
        kind_never_granted,
        [
            "access.yaml: access_kinds.break_glass: the engine never grants this kind",
            "access.yaml rules[2]: can never match: kind 'break_glass' is never granted",
        ],
    ),
    "no eligible approver": (
        no_eligible_approver,
        ["workflow.yaml: approval.scenarios.cross_tenant: no role may approve for the resource party"],
    ),
    "cross-tenant without the ticket's tenant": (
        cross_tenant_without_ticket_tenant,
        ["workflow.yaml: approval.scenarios.cross_tenant: no support_request party"],
    ),
    "support trail naming no activity": (
        misspelt_support_trail,
        [
            "workflow.yaml: audit.support_trail[2]: 'diagnostic.read' names no audit activity",
            "workflow.yaml: audit.support_trail[3]: 'support_requests.*' names no audit activity",
            "workflow.yaml: audit.support_trail[4]: 'access_request.approve' names no audit activity",
        ],
    ),
}


@pytest.mark.parametrize(
    "variant",
    list(LINT_CASES),
)
def test_each_lint_warning_is_reported_and_strict_fails(runner, tmp_path, variant):
    change, expected = LINT_CASES[variant]
    policy_dir = copy_policies(tmp_path)
    change(policy_dir)

    result = runner.invoke(args=["policy", "check", str(policy_dir)])
    assert result.exit_code == EXIT_OK, result.output  # warnings alone do not fail
    found = warnings_of(result.output)
    for warning in expected:
        assert any(line.startswith(warning) for line in found), (warning, found)
    # only the warnings this change causes (the shipped policy is clean)
    assert len(found) == len(expected), found
    assert f"{len(expected)} warnings" in result.output

    strict = runner.invoke(args=["policy", "check", "--strict", str(policy_dir)])
    assert strict.exit_code == EXIT_INVALID, strict.output
    assert f"invalid policy: {len(expected)} warnings with --strict" in strict.output
    assert warnings_of(strict.output) == found


def test_no_eligible_approver_in_the_same_tenant_scenario(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    edit(
        policy_dir / "workflow.yaml",
        "    same_tenant:\n      - {party: resource, approvals: 1}",
        "    same_tenant:\n"
        "      - {party: resource, approvals: 1, approver_roles: [Security Reader, Reports Reader]}",
    )
    found = warnings_of(runner.invoke(args=["policy", "check", str(policy_dir)]).output)
    assert found == [
        "workflow.yaml: approval.scenarios.same_tenant: no role may approve for the resource party, "
        "so such requests can never be approved"
    ]


def test_approver_roles_with_one_eligible_role_is_not_a_warning(tmp_path):
    policy_dir = copy_policies(tmp_path)
    edit(
        policy_dir / "workflow.yaml",
        "{party: resource, approvals: 1}",
        "{party: resource, approvals: 1, approver_roles: [Global Reader, Global Administrator]}",
    )
    assert lint(load_policy(policy_dir)) == []


def test_a_role_without_actions_is_not_an_unused_role(tmp_path):
    """Global Reader carries no action on purpose (it is listed to be known by name)."""
    policy = load_policy(REPO_POLICY_DIR)
    assert policy.roles["Global Reader"].actions == frozenset()
    assert not any("Global Reader" in warning for warning in lint(policy))


def test_a_provider_role_may_carry_what_a_customer_tenant_admin_does(tmp_path):
    """The provider tenant is a tenant too: a provider role that approves or reads its
    logs there is not a warning; only the other way round is."""
    policy_dir = copy_policies(tmp_path)
    edit(
        policy_dir / "roles.yaml",
        "      - supportAccess/service/operate\n",
        "      - supportAccess/service/operate\n"
        "      - microsoft.azure.supportTickets/allEntities/allTasks\n"
        "      - microsoft.directory/auditLogs/allProperties/read\n",
    )
    assert lint(load_policy(policy_dir)) == []


def test_a_provider_permission_sharing_a_customer_permissions_action_warns_for_its_carriers(tmp_path):
    """Every customer role that approves would then operate wherever it is held in the
    provider tenant: the most dangerous form of the mistake, so it is not exempt."""
    policy_dir = copy_policies(tmp_path)
    edit(
        policy_dir / "workflow.yaml",
        "operate: supportAccess/service/operate",
        "operate: microsoft.azure.supportTickets/allEntities/allTasks",
    )
    warnings = lint(load_policy(policy_dir))
    assert (
        "roles.yaml: Global Administrator: a customer role carries "
        "microsoft.azure.supportTickets/allEntities/allTasks (permissions.operate), which counts only "
        "in the provider tenant: it makes the role's holders there operators; give it to a provider role"
    ) in warnings


def test_a_category_rule_duplicating_nothing_is_clean(tmp_path):
    """A narrower rule beside the wildcard is not a duplicate."""
    policy_dir = copy_policies(tmp_path)
    edit(
        policy_dir / "access.yaml",
        '  - [advanced_diagnostics, "diagnostics/*", read]',
        '  - [advanced_diagnostics, "diagnostics/*", read]\n  - [grant, "diagnostics/signInLogs", read]',
    )
    assert lint(load_policy(policy_dir)) == []


def test_a_regex_model_with_anchored_patterns_loads_and_is_clean(tmp_path):
    policy_dir = copy_policies(tmp_path)
    unanchored_regex(policy_dir)
    edit(
        policy_dir / "access.yaml",
        'rules:\n  - [grant, "diagnostics/*", read]\n  - [advanced_diagnostics, "diagnostics/*", read]',
        'rules:\n  - [grant, "^diagnostics/signInLogs$", read]\n'
        '  - [advanced_diagnostics, "^diagnostics/signInLogs$", read]',
    )
    assert lint(load_policy(policy_dir)) == []


@pytest.mark.parametrize(
    ("pattern", "anchored"),
    [
        ("^diagnostics/(?:signInLogs|auditLogs)$", True),
        ("^diagnostics/signInLogs|auditLogs$", False),  # `^…signInLogs` or `auditLogs$`: matches xauditLogs
        ("^diagnostics/[|]$", True),  # a | in a set is a character
        ("^diagnostics/[]|]$", True),
        ("^diagnostics/signInLogs\\$", False),  # an escaped $ is a dollar sign, not the end
        ("^diagnostics/\\|$", True),  # an escaped | is a character
        ("^diagnostics/(?#(|)signInLogs|x$", False),  # the ( in a comment is no group
    ],
)
def test_a_regex_is_anchored_only_when_it_can_match_nothing_but_a_whole_string(tmp_path, pattern, anchored):
    policy_dir = copy_policies(tmp_path)
    unanchored_regex(policy_dir)
    edit(
        policy_dir / "access.yaml",
        'rules:\n  - [grant, "diagnostics/*", read]\n  - [advanced_diagnostics, "diagnostics/*", read]',
        f"rules:\n  - [grant, '{pattern}', read]\n"
        "  - [advanced_diagnostics, '^diagnostics/signInLogs$', read]",
    )
    if anchored:
        assert lint(load_policy(policy_dir)) == []
        return
    assert load_error(policy_dir) == (
        f"access.yaml: rules[0]: {pattern!r} is not anchored (regexMatch in access.conf finds it at the "
        "start of a longer value): write ^...$, ^(?:a|b)$ for alternatives, with no verbose mode or "
        "comment group"
    )


def test_a_regex_in_verbose_mode_is_taken_as_unanchored():
    """In verbose mode `#` starts a comment: `#[` opens no set, so the | is top-level and
    the pattern matches every string."""
    pattern = "^(?x:#[\n)|b$"
    assert re.match(pattern, "anything")
    assert not is_anchored(pattern)


def test_check_and_test_ask_about_the_roles_they_need_not_every_role(runner, tmp_path, monkeypatch):
    """Each question about a role scans every permission row, so asking about every role
    grows with their square: with 2,000 roles added, `policy check` took 31 s and
    `policy test` 42 s. Finding an approver, or the decision client's role, stops at the
    first role that has the permission."""
    policy_dir = copy_policies(tmp_path)
    added = 300
    append(
        policy_dir / "roles.yaml",
        "".join(
            f"  - name: Extra Role {n}\n    scope: customer\n    actions:\n      - extra/r{n}/read\n"
            for n in range(added)
        ),
    )
    asked: list[tuple[str, str]] = []
    role_allows = Policy.role_allows
    monkeypatch.setattr(
        Policy,
        "role_allows",
        lambda self, role, permission: (
            asked.append((role, permission)) or role_allows(self, role, permission)
        ),
    )
    for command in ("check", "test"):
        asked.clear()
        result = runner.invoke(args=["policy", command, str(policy_dir)])
        assert result.exit_code == EXIT_OK, result.output
        extra_asked = {role for role, _ in asked if role.startswith("Extra Role ")}
        assert len(extra_asked) < added / 10, (command, len(extra_asked))
