"""Issue 3, points 1-3: policy test suites in YAML, `policy test`, rule coverage, and the
pytest collector that turns every suite case into a test item (so `make test` goes red).

Changed or broken policy directories are copies of policies/ under tmp_path."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from service.policy import REPO_POLICY_DIR
from service.policy_tests import load_suite, suite_paths
from tests.helpers import append, copy_policies, edit

REPO = REPO_POLICY_DIR.parent
EXIT_OK, EXIT_INVALID, EXIT_FAILED, EXIT_COVERAGE = 0, 3, 4, 5

# Appended to read_only_test.yaml (which ends with its `cases` list): two cases whose
# expectations are wrong, one a deny that expects an allow, one an allow that expects a deny.
WRONG_CASES = """
  - name: a deliberately wrong expectation
    decision: {principal: eve, tenant_id: contoso, action: write, resource: diagnostics/signInLogs}
    expect: {allowed: true, reason: granted}

  - name: an allow that the case thinks is a deny
    decision: {principal: eve, tenant_id: contoso, action: read, resource: diagnostics/signInLogs}
    expect: {allowed: false, reason: no_active_grant}
"""


def counts(output: str) -> tuple[int, int]:
    match = re.search(r"^(\d+) passed, (\d+) failed$", output, re.MULTILINE)
    assert match, output
    return int(match.group(1)), int(match.group(2))


def all_cases(policy_dir: Path):
    return [
        (suite, case)
        for path in suite_paths(policy_dir)
        for suite in [load_suite(path)]
        for case in suite.cases
    ]


@pytest.fixture(autouse=True)
def scratch_on_tmpfs(monkeypatch, tmp_path_factory):
    """The suite runner keeps one SQLite file per case in a temporary directory. On a busy
    disk every fsync is slow, so put that directory on tmpfs when the machine has one."""
    tmp_path_factory.getbasetemp()  # pytest's own tmp_path stays where it was
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield None
        return
    scratch = tempfile.mkdtemp(prefix="policy-suites-", dir=shm)
    monkeypatch.setattr(tempfile, "tempdir", scratch)
    yield scratch
    shutil.rmtree(scratch, ignore_errors=True)


# --- policy test: the shipped policies -------------------------------------------


def test_shipped_suites_all_pass_with_full_rule_coverage(runner):
    result = runner.invoke(args=["policy", "test", "--coverage", "--threshold", "100"])
    assert result.exit_code == EXIT_OK, result.output
    passed, failed = counts(result.output)
    assert (passed, failed) == (len(all_cases(REPO_POLICY_DIR)), 0)
    assert "FAIL" not in result.output
    assert "not exercised" not in result.output
    # one coverage line per policy file, each at 100%
    for file in ("roles.yaml", "permissions.conf", "access.yaml", "workflow.yaml", "total"):
        line = next(line for line in result.output.splitlines() if line.strip().startswith(file))
        assert line.rstrip().endswith("100.0%"), line


def test_every_shipped_policy_file_has_a_suite_that_exercises_it():
    """The suites cover each scenario the issue names (cross-/same-tenant, roles,
    read-only, lifecycle): at least one suite per area, and no empty suite."""
    names = {path.name for path in suite_paths(REPO_POLICY_DIR)}
    assert {"cross_tenant_test.yaml", "same_tenant_test.yaml", "roles_test.yaml"} <= names
    for path in suite_paths(REPO_POLICY_DIR):
        assert load_suite(path).cases, path


# --- policy test: failing cases, invalid policies, coverage drops -----------------


def test_a_failing_case_exits_4_and_prints_name_expected_actual_and_trail(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    append(policy_dir / "tests" / "read_only_test.yaml", WRONG_CASES)
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--filter", "read_only_test"])
    assert result.exit_code == EXIT_FAILED, result.output
    out = result.output
    passed, failed = counts(out)
    assert failed == 2 and passed == len(load_suite(REPO_POLICY_DIR / "tests" / "read_only_test.yaml").cases)

    wrong = out[out.index("FAIL read_only_test.yaml :: a deliberately wrong expectation") :]
    wrong = wrong.split("\nFAIL ")[0].split("\n")
    assert wrong[1].strip() == 'expected: {"allowed": true, "reason": "granted"}'
    assert wrong[2].strip() == 'actual:   {"allowed": false, "reason": "read_only"}'
    assert any(line.strip().startswith("trail:") and "access.yaml allowed_actions" in line for line in wrong)

    # the explain trail names the rule that matched (the allow came from access.yaml rules[0])
    allow = out[out.index("FAIL read_only_test.yaml :: an allow that the case thinks is a deny") :]
    allow = allow.split("\nFAIL ")[0]
    assert 'expected: {"allowed": false, "reason": "no_active_grant"}' in allow
    assert 'actual:   {"allowed": true, "reason": "granted"}' in allow
    assert '"rule": "access.yaml rules[0]"' in allow
    assert '"policy": "p, grant, diagnostics/*, read"' in allow


def test_a_failing_step_shows_the_status_expected_and_the_error_in_the_trail(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    append(
        policy_dir / "tests" / "cross_tenant_test.yaml",
        """
  - name: bob may approve for contoso (wrong)
    steps:
      - {as: bob, approve: {access_request: ar1, tenant_id: contoso}}
    expect: {status: 200}
""",
    )
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--filter", "bob may approve"])
    assert result.exit_code == EXIT_FAILED, result.output
    assert counts(result.output) == (0, 1)
    assert "FAIL cross_tenant_test.yaml :: bob may approve for contoso (wrong)" in result.output
    assert 'expected: {"status": 200}' in result.output
    assert 'actual:   {"status": 403}' in result.output
    assert re.search(r'trail:.*"step": "bob approve"', result.output), result.output


def test_a_step_answered_otherwise_than_its_expect_status_fails_the_case(runner, tmp_path):
    """A step's expect_status is an expectation of its own: the case fails even when its
    last step answers as the case expects."""
    policy_dir = copy_policies(tmp_path)
    append(
        policy_dir / "tests" / "cross_tenant_test.yaml",
        """
  - name: bob's approval for contoso is expected to pass (wrong)
    steps:
      - {as: bob, approve: {access_request: ar1, tenant_id: contoso}, expect_status: 200}
      - {as: alice, approve: {access_request: ar1, tenant_id: contoso}}
    expect: {status: 200}
""",
    )
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--filter", "expected to pass (wrong)"])
    assert result.exit_code == EXIT_FAILED, result.output
    assert counts(result.output) == (0, 1)


def test_coverage_counts_the_read_only_rule_and_the_categories(runner):
    """A case that asks no decision exercises neither access.yaml's read-only rule nor its
    categories: the coverage says so."""
    case = "the requesting engineer cannot approve its own request"  # steps only
    result = runner.invoke(args=["policy", "test", "--filter", case, "--coverage"])
    assert result.exit_code == EXIT_OK, result.output
    assert counts(result.output) == (1, 0)
    assert "not exercised: read_only" in result.output
    assert "not exercised: categories" in result.output


GRANT_RULE = '[grant, "diagnostics/*", read]'
BROKEN_POLICIES = {  # name: (file, text, replaced by, what the error names)
    "invalid YAML": ("roles.yaml", "roles:\n", "roles: [\n", "roles.yaml: line"),
    "schema violation": (
        "workflow.yaml",
        "pending_ttl: 24h",
        "pending_ttl: 24 hours",
        "workflow.yaml: timing",
    ),
    "write rule": ("access.yaml", GRANT_RULE, GRANT_RULE.replace("read", "write"), "access.yaml: rules[0]"),
    "unknown approver role": (
        "workflow.yaml",
        "{party: support_request, approvals: 1}",
        "{party: support_request, approvals: 1, approver_roles: [Nobody]}",
        "workflow.yaml: approval.scenarios.cross_tenant[1].approver_roles",
    ),
    "matcher syntax": ("access.conf", "keyMatch(r.obj, p.obj)", "keyMatch(r.obj, p.obj", "access.conf"),
    "request shape": ("permissions.conf", "r = sub, dom, act", "r = sub, act", "permissions.conf"),
    "unknown category": (
        "access.yaml",
        GRANT_RULE,
        GRANT_RULE.replace("*", "mail"),
        "access.yaml: rules[0]: unknown category",
    ),
}


def test_each_case_sees_only_its_own_audit_events(runner, tmp_path):
    """A fresh database per case means a fresh audit log: a read allowed in one case
    must not show in the next case's audit view (the read journal goes with the database)."""
    policy_dir = copy_policies(tmp_path)
    append(
        policy_dir / "tests" / "lifecycle_test.yaml",
        """
  - name: zz an allowed read is recorded
    decision: {principal: eve, tenant_id: contoso, action: read, resource: diagnostics/signInLogs}
    expect: {allowed: true, reason: granted}

  - name: zz the next case starts without it
    steps:
      - as: sam
        request: {method: GET, path: "/v1/audit-events?tenant_id=contoso&activity=diagnostics.read"}
    expect: {status: 200, activities: []}
""",
    )
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--filter", "zz "])
    assert result.exit_code == EXIT_OK, result.output
    assert counts(result.output) == (2, 0)


def test_a_list_expectation_fails_on_an_answer_that_is_no_list(runner, tmp_path):
    """`listed: []` must not pass on a refused call (an error body has no items)."""
    policy_dir = copy_policies(tmp_path)
    append(
        policy_dir / "tests" / "lifecycle_test.yaml",
        """
  - name: zz an empty list expected where the call is refused
    steps:
      - {as: eve, request: {method: GET, path: "/v1/audit-events?tenant_id=contoso"}}
    expect: {listed: [], activities: []}
""",
    )
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--filter", "zz "])
    assert result.exit_code == EXIT_FAILED, result.output
    assert '"activities": null, "listed": null' in result.output


@pytest.mark.parametrize("broken", BROKEN_POLICIES, ids=list(BROKEN_POLICIES))
def test_an_invalid_policy_file_exits_3_and_names_the_file(runner, tmp_path, broken):
    file, old, new, named = BROKEN_POLICIES[broken]
    policy_dir = copy_policies(tmp_path)
    edit(policy_dir / file, old, new)
    result = runner.invoke(args=["policy", "test", str(policy_dir)])
    assert result.exit_code == EXIT_INVALID, result.output
    assert f"invalid policy in {policy_dir}: " in result.output and named in result.output, result.output
    assert "passed" not in result.output  # no case runs against a policy that does not load


def test_a_matcher_naming_an_undefined_field_is_an_invalid_policy(runner, tmp_path):
    """The matcher is checked whole on load, not only as far as g() lets it run."""
    policy_dir = copy_policies(tmp_path)
    edit(policy_dir / "access.conf", "keyMatch(r.obj, p.obj)", "keyMatch(r.obj, p.nothing)")
    result = runner.invoke(args=["policy", "check", str(policy_dir)])
    assert result.exit_code == EXIT_INVALID, result.output
    assert "access.conf" in result.output


def test_a_policy_file_that_is_not_utf8_exits_3(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    path = policy_dir / "access.yaml"
    path.write_bytes(path.read_bytes() + "# Zugriff f\u00fcr Techniker\n".encode("latin-1"))
    result = runner.invoke(args=["policy", "test", str(policy_dir)])
    assert result.exit_code == EXIT_INVALID, result.output
    assert "access.yaml" in result.output


def test_a_missing_model_file_exits_3(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    (policy_dir / "permissions.conf").unlink()
    result = runner.invoke(args=["policy", "test", str(policy_dir)])
    assert result.exit_code == EXIT_INVALID, result.output
    assert "permissions.conf" in result.output


def test_a_coverage_drop_exits_5_and_lists_what_was_not_exercised(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    (policy_dir / "tests" / "roles_test.yaml").unlink()
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--threshold", "100"])
    assert result.exit_code == EXIT_COVERAGE, result.output
    passed, failed = counts(result.output)
    assert failed == 0 and passed == len(all_cases(policy_dir))
    assert "not exercised: role:AI Administrator" in result.output
    assert "not exercised: role_action:Windows 365 Administrator:" in result.output
    assert re.search(r"coverage \d+\.\d% is below the threshold 100%", result.output), result.output
    # the files the remaining suites still cover fully are reported so
    access = next(line for line in result.output.splitlines() if line.strip().startswith("access.yaml"))
    assert access.rstrip().endswith("100.0%")

    # the threshold is a percentage, not "any miss": a low bar passes the same suites
    percent = float(re.search(r"coverage (\d+\.\d)% is below", result.output).group(1))
    lower = runner.invoke(args=["policy", "test", str(policy_dir), "--threshold", str(int(percent))])
    assert lower.exit_code == EXIT_OK, lower.output
    # and a bar a tenth of a point above what was reached is missed
    higher = runner.invoke(args=["policy", "test", str(policy_dir), "--threshold", f"{percent + 0.1:.1f}"])
    assert higher.exit_code == EXIT_COVERAGE, higher.output


def test_a_failing_case_wins_over_a_coverage_drop(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    append(policy_dir / "tests" / "read_only_test.yaml", WRONG_CASES)
    result = runner.invoke(
        args=["policy", "test", str(policy_dir), "--filter", "deliberately", "--threshold", "100"]
    )
    assert result.exit_code == EXIT_FAILED, result.output


# --- --filter ------------------------------------------------------------------------


def test_filter_runs_only_the_matching_cases(runner):
    text = "Global Reader"
    expected = [case for _, case in all_cases(REPO_POLICY_DIR) if text in case.name]
    assert expected
    result = runner.invoke(args=["policy", "test", "--filter", text])
    assert result.exit_code == EXIT_OK, result.output
    assert counts(result.output) == (len(expected), 0)


def test_filter_by_suite_file_name(runner):
    result = runner.invoke(args=["policy", "test", "--filter", "same_tenant_test"])
    assert result.exit_code == EXIT_OK, result.output
    assert counts(result.output) == (
        len(load_suite(REPO_POLICY_DIR / "tests" / "same_tenant_test.yaml").cases),
        0,
    )


def test_filter_leaves_a_failing_case_out(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    append(policy_dir / "tests" / "read_only_test.yaml", WRONG_CASES)
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--filter", "writing is denied"])
    assert result.exit_code == EXIT_OK, result.output
    assert counts(result.output) == (1, 0)


def test_filter_matching_nothing_runs_nothing_and_fails(runner):
    """A typo in a CI job's --filter must not pass silently."""
    result = runner.invoke(args=["policy", "test", "--filter", "no case is called like this"])
    assert counts(result.output) == (0, 0)
    assert result.exit_code == 6, result.output
    assert "no case is called like this" in result.output


def test_a_policy_directory_without_suites_fails_the_test_command(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    for suite in (policy_dir / "tests").glob("*_test.yaml"):
        suite.unlink()
    result = runner.invoke(args=["policy", "test", str(policy_dir)])
    assert result.exit_code == 6, result.output


# --- invalid suites ------------------------------------------------------------------

READ_ONLY_EXPECT = "expect: {allowed: false, reason: read_only}"
SUITE_NAME = "name: read-only and data categories\n"
BROKEN_SUITES = {  # name: (text of read_only_test.yaml, replaced by, what the error names)
    "unknown case key": (
        READ_ONLY_EXPECT,
        READ_ONLY_EXPECT.replace("expect", "expected"),
        "read_only_test.yaml",
    ),
    "unknown top-level key": (SUITE_NAME, SUITE_NAME + "owner: security\n", "read_only_test.yaml"),
    "unknown expect key": (READ_ONLY_EXPECT, READ_ONLY_EXPECT[:-1] + ", colour: red}", "read_only_test.yaml"),
    "bad time": ("now: 2026-11-02T09:00:00Z", "now: yesterday", "read_only_test.yaml: now"),
    "a key twice": (
        READ_ONLY_EXPECT,
        READ_ONLY_EXPECT[:-1] + ", allowed: true}",
        "duplicate key 'allowed'",
    ),
}


@pytest.mark.parametrize("broken", BROKEN_SUITES, ids=list(BROKEN_SUITES))
def test_an_invalid_suite_exits_3_and_names_the_suite(runner, tmp_path, broken):
    old, new, named = BROKEN_SUITES[broken]
    policy_dir = copy_policies(tmp_path)
    edit(policy_dir / "tests" / "read_only_test.yaml", old, new)
    result = runner.invoke(args=["policy", "test", str(policy_dir)])
    assert result.exit_code == EXIT_INVALID, result.output
    assert "invalid suite:" in result.output and named in result.output, result.output


def test_a_suite_with_an_unknown_role_exits_3(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    edit(
        policy_dir / "tests" / "read_only_test.yaml",
        "role: Support Access Operator}",
        "role: Support Access Wizard}",
    )
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--filter", "read_only_test"])
    assert result.exit_code == EXIT_INVALID, result.output
    assert "Support Access Wizard" in result.output


def test_a_fixture_approval_the_policy_refuses_is_reported_not_a_crash(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    edit(
        policy_dir / "tests" / "read_only_test.yaml",
        "{tenant: contoso, approver: alice,",
        "{tenant: contoso, approver: carol,",
    )
    edit(
        policy_dir / "tests" / "read_only_test.yaml",
        "      - {tenant: contoso, principal: alice, role: Global Administrator}\n",
        "      - {tenant: contoso, principal: alice, role: Global Administrator}\n"
        "      - {tenant: contoso, principal: carol, role: Global Reader}\n",
    )
    result = runner.invoke(args=["policy", "test", str(policy_dir), "--filter", "read_only_test"])
    assert result.exit_code in (EXIT_INVALID, EXIT_FAILED), repr(result.exception)
    assert "read_only_test.yaml" in result.output


def test_two_cases_with_one_name_are_an_invalid_suite(runner, tmp_path):
    policy_dir = copy_policies(tmp_path)
    append(
        policy_dir / "tests" / "read_only_test.yaml",
        """
  - name: writing is denied even with a grant
    decision: {principal: eve, tenant_id: contoso, action: write, resource: diagnostics/signInLogs}
    expect: {allowed: false, reason: read_only}
""",
    )
    result = runner.invoke(args=["policy", "test", str(policy_dir)])
    assert result.exit_code == EXIT_INVALID, result.output


# --- the pytest collector (root conftest.py): `make test` runs the suites ------------


def run_pytest(*args: str, tmp_path: Path) -> tuple[int, ET.Element, str]:
    """pytest in a child process, with the repository's root conftest.py as a plugin
    (suites copied under tmp_path are outside the repository's conftest scope)."""
    report = tmp_path / "report.xml"
    command = [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-p", "conftest"]
    command += ["--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"), f"--junitxml={report}"]
    env = {**os.environ, "TMPDIR": tempfile.gettempdir()}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    root = ET.parse(report).getroot() if report.exists() else ET.Element("none")
    return done.returncode, root, done.stdout + done.stderr


def test_collector_makes_one_test_per_case_and_a_failing_case_fails(tmp_path):
    policy_dir = copy_policies(tmp_path)
    suite = policy_dir / "tests" / "read_only_test.yaml"
    append(suite, WRONG_CASES)
    code, report, output = run_pytest(str(suite), tmp_path=tmp_path)
    assert code == 1, output
    cases = report.findall(".//testcase")
    names = {case.get("name"): case for case in cases}
    expected = [case.name for case in load_suite(suite).cases]
    assert sorted(names) == sorted(expected), output  # one item per case, named after it
    failed = {name for name, case in names.items() if case.find("failure") is not None}
    assert failed == {"a deliberately wrong expectation", "an allow that the case thinks is a deny"}
    passed = {name for name, case in names.items() if not list(case)}
    assert len(passed) == len(expected) - 2 and "writing is denied even with a grant" in passed
    message = names["a deliberately wrong expectation"].find("failure").text
    assert 'expected: {"allowed": true, "reason": "granted"}' in message
    assert 'actual:   {"allowed": false, "reason": "read_only"}' in message


def test_collector_turns_an_invalid_policy_red(tmp_path):
    policy_dir = copy_policies(tmp_path)
    edit(policy_dir / "access.yaml", '[grant, "diagnostics/*", read]', '[grant, "diagnostics/*", write]')
    code, report, output = run_pytest(str(policy_dir / "tests" / "same_tenant_test.yaml"), tmp_path=tmp_path)
    assert code not in (0, 5), output  # 5 would be "no tests collected"
    cases = report.findall(".//testcase")
    assert cases and all(case.find("error") is not None or case.find("failure") is not None for case in cases)
    assert "access.yaml" in output


def test_collector_reports_an_invalid_suite(tmp_path):
    """In one line, as `policy test` says it; a *_test.yml is refused, not skipped."""
    policy_dir = copy_policies(tmp_path)
    suite = policy_dir / "tests" / "same_tenant_test.yaml"
    edit(suite, "name: same-tenant", "nmae: same-tenant")
    code, _, output = run_pytest(str(suite), tmp_path=tmp_path)
    assert code not in (0, 5), output
    assert "same_tenant_test.yaml" in output
    assert "invalid suite: same_tenant_test.yaml: " in output and "Traceback" not in output
    misnamed = suite.rename(suite.with_suffix(".yml"))  # collected to be refused, not skipped
    code, _, output = run_pytest(str(misnamed), tmp_path=tmp_path)
    assert code not in (0, 5), output
    assert "invalid suite: same_tenant_test.yml: file: suites are named *_test.yaml" in output


def test_collector_reports_a_fixture_the_service_refuses_in_one_line(tmp_path):
    policy_dir = copy_policies(tmp_path)
    suite = policy_dir / "tests" / "lifecycle_test.yaml"
    edit(suite, "assigned_engineer: eve", "assigned_engineer: evee")
    code, report, output = run_pytest(str(suite), tmp_path=tmp_path)
    assert code == 1, output
    failures = [case.find("failure") for case in report.findall(".//testcase")]
    assert failures and all(failure is not None for failure in failures), output
    expected = "invalid suite: lifecycle_test.yaml: fixtures.tickets[0].assigned_engineer: 'evee'"
    assert all(failure.text.startswith(expected) for failure in failures), failures[0].text


def test_repository_pytest_run_collects_every_shipped_case():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "policies/tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    items = [line for line in done.stdout.splitlines() if "_test.yaml::" in line]
    assert len(items) == len(all_cases(REPO_POLICY_DIR)), done.stdout


def test_make_test_runs_the_policy_gate():
    """CI runs `make test`: it must run pytest (suites as items) and the strict policy
    check plus the coverage gate, so an invalid file, a failing case or a coverage drop
    turns it red (the exit codes are proven above)."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    test_target = re.search(r"^test:.*?(?=^\S)", makefile, re.MULTILINE | re.DOTALL).group(0)
    assert "pytest" in test_target and "policy-test" in test_target
    gate = re.search(r"^policy-test:.*?(?=^\S|\Z)", makefile, re.MULTILINE | re.DOTALL).group(0)
    assert "policy check --strict" in gate
    assert re.search(r"policy test --coverage --threshold 100\b", gate)
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert "policies/tests" in pyproject  # testpaths: plain `pytest` collects the suites


def test_the_documented_command_line_works(tmp_path):
    env = {
        **os.environ,
        "SUPPORT_ACCESS_JWT_SECRET": "policy-check",
        "SUPPORT_ACCESS_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "SUPPORT_ACCESS_DECISION_LOG": str(tmp_path / "decisions.log"),
        "TMPDIR": tempfile.gettempdir(),
    }
    flask = [sys.executable, "-m", "flask", "--app", "service", "policy"]
    check = subprocess.run([*flask, "check", "--strict"], cwd=REPO, env=env, capture_output=True, text=True)
    assert check.returncode == EXIT_OK, check.stderr
    test = subprocess.run(
        [*flask, "test", "--filter", "same_tenant_test"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert test.returncode == EXIT_OK, test.stderr
    assert re.search(r"^\d+ passed, 0 failed$", test.stdout, re.MULTILINE), test.stdout


def test_the_make_policy_test_environment_works():
    """`make policy-test` runs the commands with an in-memory database."""
    env = {**os.environ, "SUPPORT_ACCESS_JWT_SECRET": "policy-check"}
    env["SUPPORT_ACCESS_DATABASE_URL"] = "sqlite:///:memory:"
    command = [sys.executable, "-m", "flask", "--app", "service", "policy", "check", "--strict"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_OK, done.stderr[-2000:]
    assert "0 warnings" in done.stdout
