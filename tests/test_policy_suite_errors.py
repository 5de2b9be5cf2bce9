"""Mistakes in a policy test suite are an invalid suite (exit 3): one line that names the
file, the place in it and the problem, never a traceback, and never a case that runs (and
may pass) without testing what it claims.

Each broken suite is a copy of policies/ under tmp_path with one mistake put in."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.policy import REPO_POLICY_DIR
from service.policy_tests import load_suite, suite_paths
from tests.helpers import append, copy_policies, edit
from tests.test_policy_suites import EXIT_INVALID, run_pytest, scratch_on_tmpfs  # noqa: F401 (autouse)

SUITE = "read_only_test.yaml"  # 15 cases: a case appended to it is cases[15]
LIFECYCLE = "lifecycle_test.yaml"  # 17 cases; fixture access requests `granted`, `waiting`

# A case whose second step is `step` (the first one is fine).
STEP_CASE = """
  - name: zz a broken step
    steps:
      - {as: ops, request: {method: GET, path: /v1/policy}}
      - %s
    expect: {status: 200}
"""
DECISION = "decision: {principal: eve, tenant_id: contoso, action: read, resource: diagnostics/signInLogs}"
VERBS = "approve, reject, revoke, cancel, close, assign, file_access_request, request"
ALICE = "      - {tenant: contoso, principal: alice, role: Global Administrator}\n"
AR1 = "access_request: ar1, tenant_id: contoso"
TICKET = "    - {id: t1, tenant: fabrikam, resource_tenant: contoso, assigned_engineer: eve}\n"
RO, LC = f"invalid suite: {SUITE}:", f"invalid suite: {LIFECYCLE}:"  # the start of an error line


def invalid_suite(runner, policy_dir: Path, line: str) -> None:
    """`policy test` stops at exit 3 with exactly `line` (no traceback, no summary)."""
    result = runner.invoke(args=["policy", "test", str(policy_dir)])
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no crash
    assert result.exit_code == EXIT_INVALID, result.output
    assert line in result.output.splitlines(), result.output
    assert "Traceback" not in result.output and " passed, " not in result.output


# name: (suite file, [(text, replaced by)] or text appended, the error line)
BROKEN = {
    # --- steps: exactly one call each
    "a step with only a time": (
        SUITE,
        STEP_CASE % "{as: alice, at: 2026-11-02T09:10:00Z}",
        f"{RO} cases[15].steps[1]: no call: a step makes exactly one of {VERBS}",
    ),
    "a step with only an expected status": (
        SUITE,
        STEP_CASE % "{as: alice, expect_status: 200}",
        f"{RO} cases[15].steps[1]: no call: a step makes exactly one of {VERBS}",
    ),
    "a step with two calls": (
        SUITE,
        STEP_CASE % f"{{as: alice, approve: {{{AR1}}}, reject: {{{AR1}}}}}",
        f"{RO} cases[15].steps[1]: approve and reject: a step makes exactly one call",
    ),
    # --- times that match the pattern but do not exist
    "a suite time that does not exist": (
        SUITE,
        [("now: 2026-11-02T09:00:00Z", "now: 2026-02-30T09:00:00Z")],
        f"{RO} now: '2026-02-30T09:00:00Z' is not a valid time (day is out of range for month)",
    ),
    "a case time that does not exist": (
        SUITE,
        f"\n  - name: zz a case at no time\n    at: 2026-13-45T99:00:00Z\n    {DECISION}\n"
        "    expect: {allowed: true}\n",
        f"{RO} cases[15].at: '2026-13-45T99:00:00Z' is not a valid time (month must be in 1..12)",
    ),
    "a step time that does not exist": (
        SUITE,
        STEP_CASE % "{as: ops, at: 2026-11-02T24:00:00Z, request: {method: GET, path: /v1/policy}}",
        f"{RO} cases[15].steps[1].at: '2026-11-02T24:00:00Z' is not a valid time (hour must be in 0..23)",
    ),
    "a fixture time that does not exist": (
        SUITE,
        [("assigned_engineer: eve}", "assigned_engineer: eve, created_at: 2026-02-31T08:00:00Z}")],
        f"{RO} fixtures.tickets[0].created_at: '2026-02-31T08:00:00Z' is not a valid time"
        " (day is out of range for month)",
    ),
    "an approval time that does not exist": (
        SUITE,
        [("approver: alice, at: 2026-11-02T08:10:00Z", "approver: alice, at: 2026-11-31T08:10:00Z")],
        f"{RO} fixtures.access_requests[0].approvals[0].at: '2026-11-31T08:10:00Z'"
        " is not a valid time (day is out of range for month)",
    ),
    "a time that overflows the workflow's timings": (
        SUITE,
        [("now: 2026-11-02T09:00:00Z", "now: 0001-01-01T00:10:00Z")],
        f"{RO} now: '0001-01-01T00:10:00Z' is not a valid time"
        " (a suite's times lie in the years 1970 to 8999)",
    ),
    # --- case names
    "two cases with one name": (
        SUITE,
        f"\n  - name: writing is denied even with a grant\n    {DECISION}\n    expect: {{allowed: true}}\n",
        f"{RO} cases[15].name: 'writing is denied even with a grant' is also the name of cases[7]",
    ),
    # --- expectations the case cannot meet
    "a decision expected without a decision": (
        SUITE,
        "\n  - name: zz no decision\n    expect: {allowed: true, reason: granted}\n",
        f"{RO} cases[15].expect.allowed: the case asks no decision",
    ),
    "a step's answer expected without steps": (
        SUITE,
        f"\n  - name: zz no steps\n    {DECISION}\n    expect: {{allowed: true, listed: []}}\n",
        f"{RO} cases[15].expect.listed: the case makes no step",
    ),
    "a status expected without a step or a decision": (
        SUITE,
        "\n  - name: zz nothing answers\n    expect: {status: 200}\n",
        f"{RO} cases[15].expect.status: the case makes no step and asks no decision",
    ),
    "a request status without a request to look at": (
        LIFECYCLE,
        "\n  - name: zz which request\n    expect: {request_status: pending}\n",
        f"{LC} cases[17].expect.request_status: which access request? name it"
        " with request (the fixtures hold 2 and no step acts on one)",
    ),
    "a request that is no fixture": (
        LIFECYCLE,
        "\n  - name: zz a typo\n    expect: {request: waitin, request_status: pending}\n",
        f"{LC} cases[17].expect.request: no fixture access request is 'waitin'",
    ),
    "a request named and nothing expected of it": (
        LIFECYCLE,
        "\n  - name: zz nothing compared\n    expect: {request: waiting}\n",
        f"{LC} cases[17].expect.request: names the access request whose"
        " request_status or support_request_view is expected, but the case expects neither",
    ),
    # --- fixture ids
    "two tickets with one id": (
        SUITE,
        [(TICKET, TICKET + "    - {id: t1, tenant: fabrikam, assigned_engineer: eve}\n")],
        f"{RO} fixtures.tickets[1].id: 't1' is also the id of fixtures.tickets[0]",
    ),
    "two access requests with one id": (
        LIFECYCLE,
        [("{id: waiting, ticket: t2,", "{id: granted, ticket: t2,")],
        f"{LC} fixtures.access_requests[1].id: 'granted' is also the id of fixtures.access_requests[0]",
    ),
    "an access request for a ticket that is no fixture": (
        SUITE,
        [("      ticket: t1\n", "      ticket: t2\n")],
        f"{RO} fixtures.access_requests[0].ticket: no fixture ticket is 't2'",
    ),
    # --- fixtures the directory would refuse (service/directory.py)
    "a role in an undeclared tenant": (
        SUITE,
        [(ALICE, ALICE + "      - {tenant: contosso, principal: zed, role: Global Reader}\n")],
        f"{RO} fixtures.directory.role_assignments[1].tenant: unknown tenant"
        " 'contosso': list it in fixtures.directory.tenants",
    ),
    "a provider role in a customer tenant": (
        SUITE,
        [(ALICE, ALICE + "      - {tenant: contoso, principal: zed, role: Support Engineer}\n")],
        f"{RO} fixtures.directory.role_assignments[1].role: 'Support Engineer' is a"
        " provider role and can only be held in 'provider'",
    ),
    "a role assigned twice (by name, then by template id)": (
        SUITE,
        [
            (
                ALICE,
                ALICE
                + "      - {tenant: contoso, principal: alice, role: 62e90394-69f5-4237-9190-012177145e10}\n",
            )
        ],
        f"{RO} fixtures.directory.role_assignments[1]: the same assignment as"
        " fixtures.directory.role_assignments[0]",
    ),
    "a ticket in an undeclared tenant": (
        SUITE,
        [(TICKET, TICKET + "    - {id: t9, tenant: contosoo}\n")],
        f"{RO} fixtures.tickets[1].tenant: unknown tenant 'contosoo': list it in fixtures.directory.tenants",
    ),
    "a ticket about an undeclared tenant": (
        SUITE,
        [(TICKET, TICKET + "    - {id: t9, tenant: contoso, resource_tenant: nowhere}\n")],
        f"{RO} fixtures.tickets[1].resource_tenant: unknown tenant 'nowhere': list it"
        " in fixtures.directory.tenants",
    ),
    # --- fixtures the workflow would refuse
    "a ticket assigned to no support engineer": (
        SUITE,
        [("assigned_engineer: eve}", "assigned_engineer: evee}")],
        f"{RO} fixtures.tickets[0].assigned_engineer: 'evee' is not a support engineer",
    ),
    # --- principals that hold no role: a misspelt one makes a negative case pass
    "a decision about a misspelt principal": (
        SUITE,
        """
  - name: zz a misspelt principal
    decision: {principal: evee, tenant_id: contoso, action: read, resource: diagnostics/signInLogs}
    expect: {allowed: false}
""",
        f"{RO} cases[15].decision.principal: 'evee' holds no role in fixtures.directory.role_assignments"
        " (misspelt?)",
    ),
    "a decision about a misspelt tenant": (
        SUITE,
        """
  - name: zz a misspelt tenant
    decision: {principal: eve, tenant_id: contosso, action: read, resource: diagnostics/signInLogs}
    expect: {allowed: false}
""",
        f"{RO} cases[15].decision.tenant_id: unknown tenant 'contosso': list it in"
        " fixtures.directory.tenants (misspelt?)",
    ),
    "a decision about a misspelt tenant, its answer expected beside a step's status": (
        SUITE,
        (STEP_CASE % "{as: ops, request: {method: GET, path: /v1/policy}}").replace(
            "    expect: {status: 200}",
            f"    {DECISION.replace('contoso', 'contosso')}\n    expect: {{status: 200, allowed: false}}",
        ),
        f"{RO} cases[15].decision.tenant_id: unknown tenant 'contosso': list it in"
        " fixtures.directory.tenants (misspelt?)",
    ),
    "aliases expanding the suite without end": (
        SUITE,
        "x-lol: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"x-lol{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]\n" for n in range(1, 9)),
        f"{RO} line 89, column 9: invalid YAML: aliases expand the document"
        " by more than 1,000,000 characters",
    ),
    "a step by a misspelt principal": (
        SUITE,
        STEP_CASE % "{as: opps, request: {method: GET, path: /v1/policy}}",
        f"{RO} cases[15].steps[1].as: 'opps' holds no role in"
        " fixtures.directory.role_assignments (misspelt?)",
    ),
    "a fixture approval by a misspelt approver": (
        SUITE,
        [("approver: alice,", "approver: alicia,")],
        f"{RO} fixtures.access_requests[0].approvals[0].approver: 'alicia' holds no role in"
        " fixtures.directory.role_assignments (misspelt?)",
    ),
    "a second live access request for a ticket": (
        SUITE,
        [("cases:\n", "    - {id: ar2, ticket: t1}\ncases:\n")],
        f"{RO} fixtures.access_requests.ar2: refused (409): access request ar1 is already"
        " approved for this support request",
    ),
}


@pytest.mark.parametrize("broken", BROKEN, ids=list(BROKEN))
def test_a_suite_mistake_is_an_invalid_suite_named_in_one_line(runner, tmp_path, broken):
    file, change, line = BROKEN[broken]
    policy_dir = copy_policies(tmp_path)
    if isinstance(change, str):
        append(policy_dir / "tests" / file, change)
    else:
        for old, new in change:
            edit(policy_dir / "tests" / file, old, new)
    invalid_suite(runner, policy_dir, line)


def test_a_principal_a_step_gives_a_role_may_act_in_later_steps(runner, tmp_path):
    """Only principals holding no role anywhere in the case are refused as misspelt."""
    policy_dir = copy_policies(tmp_path)
    append(
        policy_dir / "tests" / SUITE,
        """
  - name: zz a principal given a role by a step
    steps:
      - as: ops
        request:
          method: PUT
          path: /v1/tenants/contoso/role-assignments
          body: {principal: zed, role: Global Reader}
        expect_status: 201
      - {as: zed, request: {method: GET, path: /v1/support-requests}}
    expect: {status: 200}
""",
    )
    result = runner.invoke(args=["policy", "test", str(policy_dir)])
    assert result.exit_code == 0, result.output


def test_a_refused_decision_may_be_expected_by_its_status_and_error_code(runner, tmp_path):
    """A decision the API refuses (400) answers a status and an error code, as a step does."""
    policy_dir = copy_policies(tmp_path)
    refused = DECISION.replace("tenant_id: contoso", "tenant_id: " + "t" * 300)
    case = "\n  - name: zz a refused decision\n    {}\n    expect: {{status: 400, error_code: {}}}\n"
    append(policy_dir / "tests" / SUITE, case.format(refused, "invalid_field"))
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--filter", "zz a refused"])
    assert result.exit_code == 0, result.output
    assert "1 passed, 0 failed" in result.output


def test_a_decision_about_a_tenant_unknown_on_purpose_expects_unknown_tenant(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    append(
        policy_dir / "tests" / SUITE,
        """
  - name: zz a tenant nobody set up
    decision: {principal: eve, tenant_id: nowhere, action: read, resource: diagnostics/signInLogs}
    expect: {allowed: false, reason: unknown_tenant}
  - name: zz a tenant a step sets up
    steps:
      - {as: ops, request: {method: PUT, path: /v1/tenants/northwind, body: {name: Northwind}}}
    decision: {principal: eve, tenant_id: northwind, action: read, resource: diagnostics/signInLogs}
    expect: {allowed: false, reason: no_active_grant}
""",
    )
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--filter", "zz a tenant"])
    assert result.exit_code == 0, result.output
    assert "2 passed" in result.output, result.output


def test_a_suite_named_yml_is_an_invalid_suite_not_skipped(runner, tmp_path):
    """A CI run must not silently lose a suite to its file name."""
    policy_dir = copy_policies(tmp_path)
    tests = policy_dir / "tests"
    (tests / "read_only_test.yaml").rename(tests / "read_only_test.yml")
    line = "invalid suite: read_only_test.yml: file: suites are named *_test.yaml: rename it"
    invalid_suite(runner, policy_dir, line)


def test_a_suite_that_is_not_utf8_is_an_invalid_suite(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    path = policy_dir / "tests" / SUITE
    size = len(path.read_bytes())
    path.write_bytes(path.read_bytes() + "# Zugriff f\u00fcr Techniker\n".encode("latin-1"))
    invalid_suite(runner, policy_dir, f"{RO} byte {size + 11}: not UTF-8 text")


def test_the_shipped_suites_load_without_a_mistake():
    paths = suite_paths(REPO_POLICY_DIR)
    assert paths and all(path.name.endswith("_test.yaml") for path in paths)
    for path in paths:
        load_suite(path)


def test_pytest_reports_a_suite_mistake_in_the_same_words(tmp_path):
    """The collector (root conftest.py) shows what `policy test` prints, at load (two calls
    in a step) and while fixtures are built (a provider role in a customer tenant)."""
    policy_dir = copy_policies(tmp_path)
    suite = policy_dir / "tests" / SUITE
    append(suite, STEP_CASE % "{as: ops, close: {ticket: t1}, assign: {ticket: t1, engineer: eve}}")
    code, _, output = run_pytest(str(suite), tmp_path=tmp_path)
    assert code not in (0, 5), output
    assert f"{SUITE}: cases[15].steps[1]: close and assign: a step makes exactly one call" in output

    policy_dir = copy_policies(tmp_path, "other")
    suite = policy_dir / "tests" / SUITE
    edit(suite, ALICE, ALICE + "      - {tenant: contoso, principal: zed, role: Support Engineer}\n")
    code, _, output = run_pytest(str(suite), tmp_path=tmp_path)
    assert code not in (0, 5), output
    problem = "'Support Engineer' is a provider role and can only be held in 'provider'"
    assert f"{SUITE}: fixtures.directory.role_assignments[1].role: {problem}" in output
