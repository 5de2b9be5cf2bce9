"""Issue 3, point 6: `policy diff OLD_DIR NEW_DIR [--log FILE]` replays recorded decisions
under both policy versions and prints every decision that would change, grouped by
reason. Exit code 0 no change, 1 changes found, 3 an invalid policy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from models import AuditEvent, database
from service.policy import policy_version
from tests.conftest import read_check
from tests.helpers import copy_policies, edit

CLIENT = "diag-tool"

# eve holds an approved grant for contoso (the `approved_request` fixture); frank holds none.
REQUESTS = [
    read_check(),  # allow (granted)
    read_check(resource="diagnostics/auditLogs"),  # allow (granted)
    read_check(action="write"),  # deny (read_only)
    read_check(principal="frank"),  # deny (no_active_grant)
    read_check(principal="mallory"),  # deny (unknown_principal)
    read_check(tenant_id="fabrikam"),  # deny (no_active_grant)
]


def groups(output: str) -> dict[str, list[str]]:
    """'  allow (granted) -> deny (x): 2' headers and the decisions listed under each."""
    found: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        header = re.match(r"^  (\S.* -> .*): (\d+)$", line)
        if header:
            current = header.group(1)
            found[current] = []
            assert int(header.group(2)) >= 1
        elif current and line.startswith("    "):
            found[current].append(line.strip())
    return found


@pytest.fixture
def requests_file(tmp_path) -> Path:
    path = tmp_path / "requests.yaml"
    path.write_text(yaml.safe_dump(REQUESTS, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def old_dir(tmp_path) -> Path:
    return copy_policies(tmp_path, "old")


def test_identical_policies_change_nothing(runner, approved_request, old_dir, requests_file, tmp_path):
    new_dir = copy_policies(tmp_path, "new")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(requests_file)])
    assert result.exit_code == 0, result.output
    version = policy_version(old_dir)
    assert f"replayed {len(REQUESTS)} decisions: policy {version} -> {version}" in result.output
    assert "no decision changes" in result.output


def test_removing_a_category_lists_every_changed_decision_by_reason(
    runner, approved_request, old_dir, requests_file, tmp_path
):
    new_dir = copy_policies(tmp_path, "new")
    edit(new_dir / "access.yaml", "  - signInLogs\n", "")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(requests_file)])
    assert result.exit_code == 1, result.output
    assert f"policy {policy_version(old_dir)} -> {policy_version(new_dir)}" in result.output
    assert "3 decisions change:" in result.output
    assert groups(result.output) == {
        "allow (granted) -> deny (category_not_allowed)": ["eve read diagnostics/signInLogs in contoso"],
        "deny (no_active_grant) -> deny (category_not_allowed)": [
            "frank read diagnostics/signInLogs in contoso",
            "eve read diagnostics/signInLogs in fabrikam",
        ],
    }
    # unchanged decisions are not listed
    assert "auditLogs" not in result.output and "mallory" not in result.output


def test_removing_the_grant_rule_turns_granted_reads_into_denies(
    runner, approved_request, old_dir, requests_file, tmp_path
):
    new_dir = copy_policies(tmp_path, "new")
    edit(new_dir / "access.yaml", '  - [grant, "diagnostics/*", read]\n', "")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(requests_file)])
    assert result.exit_code == 1, result.output
    found = groups(result.output)
    assert len(found) == 1, result.output
    (header, members), *_ = found.items()
    assert header.startswith("allow (granted) -> deny (")
    assert sorted(members) == [
        "eve read diagnostics/auditLogs in contoso",
        "eve read diagnostics/signInLogs in contoso",
    ]


def test_a_change_in_the_other_direction_is_shown_too(runner, approved_request, old_dir, tmp_path):
    """New categories turn category_not_allowed into allows."""
    requests = tmp_path / "requests.json"
    requests.write_text(
        json.dumps({"checks": [read_check(resource="diagnostics/mailboxContents", support_request_id=None)]}),
        encoding="utf-8",
    )
    new_dir = copy_policies(tmp_path, "new")
    edit(new_dir / "access.yaml", "categories:\n", "categories:\n  - mailboxContents\n")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(requests)])
    assert result.exit_code == 1, result.output
    assert groups(result.output) == {
        "deny (category_not_allowed) -> allow (granted)": ["eve read diagnostics/mailboxContents in contoso"]
    }


def test_the_ticket_of_a_request_is_shown(runner, approved_request, old_dir, tmp_path):
    ticket = approved_request["support_request_id"]
    requests = tmp_path / "requests.yaml"
    requests.write_text(yaml.safe_dump([read_check(support_request_id=ticket)]), encoding="utf-8")
    new_dir = copy_policies(tmp_path, "new")
    edit(new_dir / "access.yaml", "  - signInLogs\n", "")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(requests)])
    assert result.exit_code == 1, result.output
    assert f"eve read diagnostics/signInLogs in contoso ticket {ticket}" in result.output


def test_replays_the_decision_log_written_by_real_decisions(
    app, api, runner, approved_request, old_dir, tmp_path
):
    log = Path(app.config["DECISION_LOG"])
    before = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    for check in REQUESTS[:4]:
        assert api.post("/v1/decisions", CLIENT, check).status_code == 200
    answer = api.post("/v1/decisions/batch", CLIENT, {"checks": REQUESTS[4:]})
    assert answer.status_code == 200
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(before) + len(REQUESTS)  # one JSON line per decision
    assert all(json.loads(line)["input"]["principal"] for line in lines)

    new_dir = copy_policies(tmp_path, "new")
    edit(new_dir / "access.yaml", "  - signInLogs\n", "")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(log)])
    assert result.exit_code == 1, result.output
    assert f"replayed {len(lines)} decisions" in result.output
    assert (
        "eve read diagnostics/signInLogs in contoso"
        in groups(result.output)["allow (granted) -> deny (category_not_allowed)"]
    )

    # without --log the configured decision log is replayed
    default = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir)])
    assert default.exit_code == 1, default.output
    assert f"replayed {len(lines)} decisions" in default.output

    # with identical policies the same log replays without a change
    same = runner.invoke(args=["policy", "diff", str(old_dir), str(old_dir), "--log", str(log)])
    assert same.exit_code == 0, same.output
    assert "no decision changes" in same.output

    # a rotated copy of the log is read as the log is
    rotated = tmp_path / "decisions.log.1"
    rotated.write_text(log.read_text(encoding="utf-8"), encoding="utf-8")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(rotated)])
    assert result.exit_code == 1, result.output
    assert f"replayed {len(lines)} decisions" in result.output


def test_a_yaml_requests_file_with_an_impossible_date_is_a_usage_error(runner, old_dir, tmp_path):
    requests = tmp_path / "requests.yaml"
    requests.write_text("- principal: eve\n  tenant_id: contoso\n  at: 2026-02-30\n", encoding="utf-8")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(old_dir), "--log", str(requests)])
    assert result.exit_code == 2, result.output
    assert f"{requests}: cannot parse:" in result.output
    assert "'2026-02-30' is not a valid date" in result.output


def test_a_broken_decision_log_line_is_named_by_its_line_in_the_file(runner, old_dir, tmp_path):
    log = tmp_path / "decisions.log"
    good = json.dumps({"input": REQUESTS[0]})
    log.write_text(f"{good}\n\n{good}\n{{broken\n", encoding="utf-8")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(old_dir), "--log", str(log)])
    assert result.exit_code == 2, result.output
    assert f"{log}: line 4: cannot parse" in result.output


def test_a_decision_log_line_cut_inside_a_character_is_named_by_its_line(runner, old_dir, tmp_path):
    log = tmp_path / "decisions.log"
    good = json.dumps({"input": REQUESTS[0]}).encode()
    line = json.dumps({"input": {**REQUESTS[0], "principal": "j\u00fcrgen"}}, ensure_ascii=False).encode()
    log.write_bytes(good + b"\n" + line[: line.index("\u00fc".encode()) + 1])  # ends inside the ü
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(old_dir), "--log", str(log)])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert f"{log}: line 2: cannot parse" in result.output, result.output


def test_a_diff_records_nothing(app, runner, approved_request, old_dir, requests_file, tmp_path):
    """Replays are what-ifs: no audit event, no decision log line."""
    log = Path(app.config["DECISION_LOG"])
    log_before = log.read_text(encoding="utf-8") if log.exists() else ""
    with database.connection_context():
        events_before = AuditEvent.select().count()
    new_dir = copy_policies(tmp_path, "new")
    edit(new_dir / "access.yaml", "  - signInLogs\n", "")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(requests_file)])
    assert result.exit_code == 1, result.output
    with database.connection_context():
        assert AuditEvent.select().count() == events_before
    assert (log.read_text(encoding="utf-8") if log.exists() else "") == log_before


@pytest.mark.parametrize("which", ["new", "old"])
def test_an_invalid_policy_exits_3(runner, old_dir, requests_file, tmp_path, which):
    new_dir = copy_policies(tmp_path, "new")
    broken = new_dir if which == "new" else old_dir
    edit(broken / "access.yaml", '[grant, "diagnostics/*", read]', '[grant, "diagnostics/*", delete]')
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(requests_file)])
    assert result.exit_code == 3, result.output
    assert f"invalid policy in {broken}: access.yaml: rules[0]" in result.output  # which of the two


def test_a_missing_requests_file_is_a_usage_error(runner, old_dir, tmp_path):
    result = runner.invoke(
        args=["policy", "diff", str(old_dir), str(old_dir), "--log", str(tmp_path / "nope.yaml")]
    )
    assert result.exit_code == 2, result.output


def test_a_requests_file_that_is_not_utf8_is_a_usage_error(runner, old_dir, tmp_path):
    requests = tmp_path / "requests.yaml"
    requests.write_bytes("- {principal: j\u00fcrgen}\n".encode("latin-1"))
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(old_dir), "--log", str(requests)])
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 2
    assert f"{requests}: byte 15: not UTF-8 text" in result.output, result.output


def test_an_unusable_requests_file_is_not_reported_as_changes(runner, old_dir, tmp_path):
    requests = tmp_path / "requests.yaml"
    requests.write_text("- {principal: eve}\n", encoding="utf-8")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(old_dir), "--log", str(requests)])
    assert "entry 0: not a decision request" in result.output
    assert result.exit_code not in (0, 1), result.output


def test_without_a_decision_log_it_asks_for_a_requests_file(app, runner, old_dir):
    """SUPPORT_ACCESS_DECISION_LOG empty (no log): a clear error, not "Is a directory"."""
    app.config["DECISION_LOG"] = ""
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(old_dir)])
    assert result.exit_code == 2, result.output
    assert "no decision log" in result.output and "--log" in result.output


def test_a_shorter_retention_shows_a_closed_ticket_explained_no_more(
    runner, api, clock, approved_request, old_dir, tmp_path
):
    """Both policies decide against what the longer retention keeps: under 30 days a
    ticket closed two days ago explains the deny, under one day it no longer does."""
    ticket = approved_request["support_request_id"]
    assert api.post(f"/v1/support-requests/{ticket}/close", "eve").status_code == 200
    clock.advance(days=2)
    requests = tmp_path / "requests.yaml"
    requests.write_text(yaml.safe_dump([read_check()]), encoding="utf-8")
    new_dir = copy_policies(tmp_path, "new")
    edit(new_dir / "workflow.yaml", "retention: 30d", "retention: 1d")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(requests)])
    assert result.exit_code == 1, result.output
    assert groups(result.output) == {
        "deny (support_request_closed) -> deny (no_active_grant)": [
            "eve read diagnostics/signInLogs in contoso"
        ]
    }


def test_the_largest_group_of_changes_is_listed_first(runner, approved_request, old_dir, tmp_path):
    requests = tmp_path / "requests.yaml"
    checks = [read_check(), read_check(principal="frank"), read_check(tenant_id="fabrikam")]
    requests.write_text(yaml.safe_dump(checks), encoding="utf-8")
    new_dir = copy_policies(tmp_path, "new")
    edit(new_dir / "access.yaml", "  - signInLogs\n", "")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(requests)])
    assert result.exit_code == 1, result.output
    assert list(groups(result.output)) == [
        "deny (no_active_grant) -> deny (category_not_allowed)",  # 2
        "allow (granted) -> deny (category_not_allowed)",  # 1
    ]


@pytest.mark.parametrize(
    ("count", "more"), [(20, None), (21, "    ... and 1 more"), (25, "    ... and 5 more")]
)
def test_a_group_lists_twenty_decisions_and_counts_the_rest(
    runner, approved_request, old_dir, tmp_path, count, more
):
    requests = tmp_path / "requests.yaml"
    checks = [read_check(principal="frank", support_request_id=f"t{n}") for n in range(count)]
    requests.write_text(yaml.safe_dump(checks), encoding="utf-8")
    new_dir = copy_policies(tmp_path, "new")
    edit(new_dir / "access.yaml", "  - signInLogs\n", "")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(new_dir), "--log", str(requests)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    header = lines.index(f"  deny (no_active_grant) -> deny (category_not_allowed): {count}")
    listed = lines[header + 1 :]
    assert listed[:20] == [f"    frank read diagnostics/signInLogs in contoso ticket t{n}" for n in range(20)]
    assert listed[20:] == ([more] if more else [])


def test_a_decision_log_named_jsonl_is_read_as_json_lines(runner, approved_request, old_dir, tmp_path):
    log = tmp_path / "decisions.jsonl"
    log.write_text("".join(json.dumps({"input": check}) + "\n" for check in REQUESTS), encoding="utf-8")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(old_dir), "--log", str(log)])
    assert result.exit_code == 0, result.output
    assert f"replayed {len(REQUESTS)} decisions" in result.output


def test_a_yaml_file_whose_name_only_contains_log_is_read_as_yaml(
    runner, approved_request, old_dir, tmp_path
):
    requests = tmp_path / "weekly.login-checks.yaml"
    requests.write_text(yaml.safe_dump(REQUESTS), encoding="utf-8")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(old_dir), "--log", str(requests)])
    assert result.exit_code == 0, result.output
    assert f"replayed {len(REQUESTS)} decisions" in result.output


@pytest.mark.parametrize(
    "entry",
    [
        "just a string",
        {"principal": "eve", "tenant_id": "contoso", "action": "read"},  # no resource
        {"principal": 7, "tenant_id": "contoso", "action": "read", "resource": "diagnostics/signInLogs"},
    ],
    ids=["not a mapping", "no resource", "a number for a principal"],
)
def test_an_entry_that_is_no_decision_request_is_a_usage_error_naming_it(runner, old_dir, tmp_path, entry):
    requests = tmp_path / "requests.yaml"
    requests.write_text(yaml.safe_dump([read_check(), entry]), encoding="utf-8")
    result = runner.invoke(args=["policy", "diff", str(old_dir), str(old_dir), "--log", str(requests)])
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 2, result.output
    assert f"{requests}: entry 1: not a decision request" in result.output
