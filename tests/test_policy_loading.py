"""Policy as code (SPEC §3): loading and validating policies/, the content-hash version,
the approval rule as data, and the built-in roles."""

from __future__ import annotations

import csv
import os
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from service import create_app
from service import policy as policy_module
from service.errors import PolicyError
from service.policy import REPO_POLICY_DIR, load_policy, matcher_tree
from service.policy_store import PolicyStore
from tests.conftest import SECRET, START, auth, read_check
from tests.helpers import append, load_error

ROLES_TSV = Path(__file__).with_name("data") / "support-ticket-roles.tsv"
MANAGE = "manage_support_access"


def copy_policies(tmp_path: Path, name: str = "policies") -> Path:
    target = tmp_path / name
    shutil.copytree(REPO_POLICY_DIR, target)
    return target


def edit(directory: Path, file: str, old: str, new: str) -> None:
    path = directory / file
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def edit_yaml(directory: Path, file: str, change) -> None:
    path = directory / file
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def shipped():
    return load_policy(REPO_POLICY_DIR)


# --- the shipped policy ------------------------------------------------------------------------


def test_shipped_policy_loads(shipped):
    assert shipped.version
    assert shipped.allowed_actions == frozenset({"read"})
    assert "signInLogs" in shipped.categories
    cross = [(r.party, r.approvals) for r in shipped.requirements(cross_tenant=True)]
    assert sorted(cross) == [("resource", 1), ("support_request", 1)]
    same = [(r.party, r.approvals) for r in shipped.requirements(cross_tenant=False)]
    assert same == [("resource", 1)]
    assert shipped.timing.pending_ttl.total_seconds() == 24 * 3600
    assert shipped.timing.max_grant_duration.total_seconds() == 8 * 3600
    assert shipped.timing.retention.days == 30


def test_provider_roles_are_defined(shipped):
    for name in ("Support Engineer", "Decision Client", "Support Access Operator"):
        assert shipped.roles[name].scope == "provider"
    assert shipped.role_allows("Support Engineer", "read_diagnostics")
    assert shipped.role_allows("Decision Client", "evaluate_decisions")
    assert shipped.role_allows("Support Access Operator", "operate")
    assert not shipped.role_allows("Support Access Operator", "read_diagnostics")
    assert not shipped.role_allows("Support Access Operator", MANAGE)


# --- the built-in roles (tests/data/support-ticket-roles.tsv) ------------------------------------


def tsv_rows() -> list[dict[str, str]]:
    with ROLES_TSV.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def carriers() -> list[dict[str, str]]:
    return [row for row in tsv_rows() if row["carries_support_ticket_action"] == "yes"]


def test_tsv_lists_45_carriers():
    assert len(carriers()) == 45


@pytest.mark.parametrize("row", carriers(), ids=lambda row: row["display_name"])
def test_support_ticket_role_can_manage(shipped, row):
    assert shipped.role_allows(row["display_name"], MANAGE)
    assert shipped.roles[row["display_name"]].scope == "customer"


@pytest.mark.parametrize("name", ["Global Reader", "Security Reader", "Reports Reader"])
def test_reader_roles_cannot_manage(shipped, name):
    assert name in shipped.roles
    assert not shipped.role_allows(name, MANAGE)


def test_exactly_the_45_roles_can_manage(shipped):
    assert set(shipped.roles_with(MANAGE)) == {row["display_name"] for row in carriers()}


@pytest.mark.parametrize("row", tsv_rows(), ids=lambda row: row["display_name"])
def test_template_ids_match_the_tsv(shipped, row):
    name, template_id = row["display_name"], row["template_id"]
    assert shipped.roles[name].template_id == template_id
    assert shipped.canonical_role(template_id) == name
    assert shipped.canonical_role(template_id.upper()) == name


@pytest.mark.parametrize("row", tsv_rows(), ids=lambda row: row["display_name"])
def test_log_readers_match_the_tsv(shipped, row):
    assert shipped.role_allows(row["display_name"], "read_audit_logs") == (row["log_reader"] == "yes")


def test_key_roles_named_in_the_spec(shipped):
    assert shipped.canonical_role("f023fd81-a637-4b56-95fd-791ac0226033") == "Service Support Administrator"
    assert shipped.canonical_role("62e90394-69f5-4237-9190-012177145e10") == "Global Administrator"
    for name in (
        "Helpdesk Administrator",
        "Security Administrator",
        "User Administrator",
        "Exchange Administrator",
        "SharePoint Administrator",
        "Teams Administrator",
        "Intune Administrator",
        "Application Administrator",
        "Billing Administrator",
    ):
        assert shipped.role_allows(name, MANAGE), name
    assert shipped.canonical_role("No Such Role") is None


# --- broken policies ------------------------------------------------------------------------------


def test_yaml_syntax_error(tmp_path):
    directory = copy_policies(tmp_path)
    edit(directory, "workflow.yaml", "pending_ttl: 24h", "pending_ttl: [24h")
    message = load_error(directory)
    assert "workflow.yaml" in message
    assert "line" in message
    assert "YAML" in message


def template_id_of_aliases(directory: Path, levels: int) -> None:
    """Give a role a template id (a string, by the schema) that is a list of lists of
    aliases: 81 words, then nine times as many at each further level."""
    aliases = "[&a [" + ", ".join(["abcdefgh"] * 9) + "]" + ", *a" * 8 + "]"
    for depth in range(levels):
        aliases = f"[&l{depth} {aliases}" + f", *l{depth}" * 8 + "]"
    edit(
        directory,
        "roles.yaml",
        "template_id: d2562ede-74db-457e-a7b6-544e236ebb61",
        f"template_id: {aliases}",
    )


def test_an_error_quoting_a_huge_value_is_cut_short(tmp_path):
    """The message goes to the API, the log and the audit log: a schema error quotes the
    offending value whole, and aliases can make that ~700 KB from a few lines."""
    directory = copy_policies(tmp_path)
    template_id_of_aliases(directory, levels=3)  # ~60,000 quoted words
    message = load_error(directory)
    assert message.startswith("roles.yaml: ") and "more characters)" in message
    assert len(message) < 3_000


def test_aliases_expanding_a_policy_file_without_end_are_refused_at_their_place(tmp_path):
    """A "billion laughs": every reader of the value (the schema check, and the message
    quoting it) walked the expansion: 43 s and 1.7 GB, holding a running server's
    decisions while the watcher reloaded. Now the file is refused as it is read."""
    directory = copy_policies(tmp_path)
    template_id_of_aliases(directory, levels=8)  # 81 * 9**8 words
    message = load_error(directory)
    assert message.startswith("roles.yaml: line ")
    assert message.endswith("invalid YAML: aliases expand the document by more than 1,000,000 characters")


def test_roles_carrying_too_many_actions_in_all_are_refused_before_casbin_reads_them(tmp_path):
    """One list of 1,000 actions under 51 roles (an alias each: a 15 KB file) is 51,000
    rows; Casbin's add_policy compares each row with every one before it (40 such
    roles took 77 s to load)."""
    directory = copy_policies(tmp_path)
    actions = ", ".join(f"a{number}" for number in range(1000))
    roles = "  - {name: r0, scope: customer, actions: &actions [" + actions + "]}\n"
    roles += "".join(
        f"  - {{name: r{number}, scope: customer, actions: *actions}}\n" for number in range(1, 51)
    )
    append(directory / "roles.yaml", roles)
    assert load_error(directory) == "roles.yaml: roles: the roles carry 51,053 actions in all, over 50,000"


def test_unknown_top_level_key(tmp_path):
    directory = copy_policies(tmp_path)
    edit_yaml(directory, "access.yaml", lambda d: d.update(colour="blue"))
    message = load_error(directory)
    assert "access.yaml" in message and "colour" in message


def test_unknown_key_in_a_role(tmp_path):
    directory = copy_policies(tmp_path)
    edit_yaml(directory, "roles.yaml", lambda d: d["roles"][2].update(colour="blue"))
    message = load_error(directory)
    assert "roles.yaml" in message and "roles[2]" in message and "colour" in message


def test_unknown_key_in_workflow_timing(tmp_path):
    directory = copy_policies(tmp_path)
    edit_yaml(directory, "workflow.yaml", lambda d: d["timing"].update(grace="1h"))
    message = load_error(directory)
    assert "workflow.yaml" in message and "timing" in message and "grace" in message


@pytest.mark.parametrize(
    ("file", "change", "place"),
    [
        ("access.yaml", lambda d: d["categories"].__setitem__(1, "auditLogs\n"), "categories[1]"),
        ("access.yaml", lambda d: d["access_kinds"].update({"grant\n": "x"}), "access_kinds"),
        ("roles.yaml", lambda d: d["roles"][0]["actions"].append("approve\n"), "roles[0].actions[1]"),
        (
            "roles.yaml",
            lambda d: d["roles"][0].update(template_id=d["roles"][0]["template_id"] + "\n"),
            "roles[0]",
        ),
    ],
)
def test_a_value_ending_in_a_newline_breaks_its_pattern(tmp_path, file, change, place):
    """A schema's `$` ends the string, as JSON Schema (ECMA-262) reads it: Python's `$`
    alone would also match before a final newline, and "auditLogs\n" was a category."""
    directory = copy_policies(tmp_path)
    edit_yaml(directory, file, change)
    message = load_error(directory)
    assert file in message and place in message


@pytest.mark.parametrize("action", ["write", "delete", "*"])
def test_access_rule_with_non_read_action(tmp_path, action):
    directory = copy_policies(tmp_path)
    edit_yaml(directory, "access.yaml", lambda d: d["rules"].append(["grant", "diagnostics/*", action]))
    message = load_error(directory)
    assert "access.yaml" in message and "rules[2]" in message and repr(action) in message


def test_allowed_actions_cannot_be_widened(tmp_path):
    directory = copy_policies(tmp_path)
    edit_yaml(directory, "access.yaml", lambda d: d.update(allowed_actions=["read", "write"]))
    message = load_error(directory)
    assert message.endswith(
        "access.yaml: allowed_actions[1]: 'read' was expected: access is read-only (SPEC §3): "
        "only read can ever be allowed"
    ), message


def test_read_only_holds_even_if_the_schema_is_loosened(tmp_path, monkeypatch):
    """SPEC §3: only read can ever be allowed, whatever else the policies say, and the
    schemas under policies/schema are files a pull request can change too."""
    loosened = yaml.safe_load((REPO_POLICY_DIR / "schema" / "access.schema.yaml").read_text())
    loosened["properties"]["allowed_actions"]["items"] = {"type": "string"}
    loosened["properties"]["rules"]["items"] = {"type": "array"}
    monkeypatch.setitem(policy_module._schemas, "access.yaml", loosened)
    directory = copy_policies(tmp_path)
    edit_yaml(directory, "access.yaml", lambda d: d.update(allowed_actions=["read", "write"]))
    message = load_error(directory)
    assert "access.yaml: allowed_actions[1]: 'write' can never be allowed: access is read-only" in message


def test_access_rule_with_unknown_category(tmp_path):
    directory = copy_policies(tmp_path)
    edit_yaml(
        directory, "access.yaml", lambda d: d["rules"].insert(0, ["grant", "diagnostics/mailboxes", "read"])
    )
    message = load_error(directory)
    assert "access.yaml" in message and "rules[0]" in message and "mailboxes" in message


def test_access_rule_with_unknown_kind(tmp_path):
    directory = copy_policies(tmp_path)
    edit_yaml(directory, "access.yaml", lambda d: d["rules"].append(["friendship", "diagnostics/*", "read"]))
    message = load_error(directory)
    assert "access.yaml" in message and "rules[2]" in message and "friendship" in message


def test_permission_whose_action_no_role_carries(tmp_path):
    directory = copy_policies(tmp_path)
    edit(
        directory,
        "workflow.yaml",
        "manage_support_access: microsoft.azure.supportTickets/allEntities/allTasks",
        "manage_support_access: microsoft.azure.supportTickets/allEntities/allTaskz",
    )
    message = load_error(directory)
    assert "workflow.yaml" in message
    assert "permissions.manage_support_access" in message
    assert "allTaskz" in message


def test_a_key_twice_in_a_yaml_mapping_is_refused(tmp_path):
    """PyYAML would keep the second `cross_tenant:` silently: the rule a reviewer read
    first (both tenants approve) would be replaced by one approval."""
    directory = copy_policies(tmp_path)
    edit(
        directory,
        "workflow.yaml",
        "    same_tenant:",
        "    cross_tenant:\n      - {party: resource, approvals: 1}\n    same_tenant:",
    )
    message = load_error(directory)
    assert "workflow.yaml" in message and "duplicate key 'cross_tenant'" in message
    assert "line 25, column 5" in message and "first at line 22" in message


def test_a_key_twice_in_a_flow_mapping_is_refused(tmp_path):
    directory = copy_policies(tmp_path)
    edit(directory, "workflow.yaml", "approvals: 1", "approvals: 1, approvals: 5")
    assert "duplicate key 'approvals'" in load_error(directory)


def test_a_model_key_twice_in_a_section_is_refused(tmp_path):
    """Casbin keeps the last `m =`: an appended matcher would silently replace the one
    reviewed (here: every Support Engineer an operator)."""
    directory = copy_policies(tmp_path)
    path = directory / "permissions.conf"
    path.write_text(path.read_text(encoding="utf-8") + "m = g(r.sub, p.sub, r.dom)\n", encoding="utf-8")
    message = load_error(directory)
    assert message == "permissions.conf: [matchers]: 'm' is set twice (Casbin would use the last one)"


@pytest.mark.parametrize("value", ["99999999999999999999d", "5000000d", "36501d", "876025h"])
def test_a_duration_past_a_hundred_years_is_refused(tmp_path, value):
    """Too long to be meant, and grant ends or retention cut-offs it adds up to would
    leave the dates Python and the database hold (a load crash, or a 500 later)."""
    directory = copy_policies(tmp_path)
    edit(directory, "workflow.yaml", "max_grant_duration: 8h", f"max_grant_duration: {value}")
    message = load_error(directory)
    assert message.startswith("workflow.yaml: timing.max_grant_duration: ")
    assert "longer than 36500 days" in message


def test_the_longest_duration_loads(tmp_path):
    directory = copy_policies(tmp_path)
    edit(directory, "workflow.yaml", "retention: 30d", "retention: 36500d")
    assert load_policy(directory).timing.retention.days == 36_500


def regex_policy(tmp_path: Path, rules: list[list[str]]) -> Path:
    """The shipped policy with access.conf matching resources by regexMatch, and `rules`."""
    directory = copy_policies(tmp_path)
    edit(directory, "access.conf", "keyMatch(r.obj, p.obj)", "regexMatch(r.obj, p.obj)")
    edit_yaml(directory, "access.yaml", lambda d: d.update(rules=rules))
    return directory


def test_a_regular_expression_that_does_not_compile_fails_the_load(tmp_path):
    """regexMatch patterns are evaluated for every listed resource at load, so a broken
    one is a load error naming the file, not a 500 on every decision."""
    rules = [["grant", "^diagnostics/(sign.*$", "read"], ["advanced_diagnostics", "^diagnostics/.*$", "read"]]
    message = load_error(regex_policy(tmp_path, rules))
    assert message.startswith("access.conf: [matchers]: matcher fails for grant, diagnostics/")
    assert "missing )" in message


def test_a_valid_regular_expression_loads_and_answers(tmp_path):
    policy = load_policy(regex_policy(tmp_path, [["grant", "^diagnostics/sign.*$", "read"]]))
    assert policy.access_allows("grant", "diagnostics/signInLogs", "read") is not None
    assert policy.access_allows("grant", "diagnostics/auditLogs", "read") is None


def test_an_unexpected_failure_while_loading_is_a_load_error(tmp_path, monkeypatch):
    """A check the loader lacks must still end as a failed load (kept out, reported as
    one), never as an error of another kind escaping the policy store."""

    def broken(document):
        raise KeyError("scope")

    monkeypatch.setattr(policy_module, "_build_roles", broken)
    message = load_error(copy_policies(tmp_path))
    assert message.endswith("the policy does not load: KeyError('scope')")


@pytest.mark.parametrize("value", ["24x", "24", "h24", "0h", "1.5h"])
def test_bad_duration(tmp_path, value):
    directory = copy_policies(tmp_path)
    edit(directory, "workflow.yaml", "pending_ttl: 24h", f'pending_ttl: "{value}"')
    message = load_error(directory)
    assert "workflow.yaml" in message and "timing.pending_ttl" in message and value in message


@pytest.mark.parametrize(
    "matcher",
    [
        "m = g(r.sub, p.sub, r.dom) && (r.act == p.act",
        "m = r.sub === p.sub",
        "m = r.nope == p.act",
    ],
)
def test_broken_casbin_matcher(tmp_path, matcher):
    directory = copy_policies(tmp_path)
    edit(
        directory,
        "access.conf",
        "m = g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj) && r.act == p.act",
        matcher,
    )
    message = load_error(directory)
    assert "access.conf" in message and "matchers" in message


@pytest.mark.parametrize(
    ("old", "new"),
    [("keyMatch(r.obj, p.obj)", "keyMatchTypo(r.obj, p.obj)"), ("r.act == p.act", "r.action == p.act")],
)
def test_matcher_with_undefined_name_after_g(tmp_path, old, new):
    directory = copy_policies(tmp_path)
    edit(directory, "access.conf", old, new)
    message = load_error(directory)
    assert "access.conf" in message and "matchers" in message


@pytest.mark.parametrize(
    "condition",
    [
        'regexMatch(r.act, "(")',
        "keyMatch2(r.act, 5)",
        'regexMatch(p.act, "[")',
        # fails on the row of the last role carrying the support-ticket action: Casbin stops at the
        # first row that allows, so the check must not
        '(p.sub != "Windows 365 Administrator" || regexMatch(r.act, "("))',
        # behind another g(...), which holds for one role's rows: the load's own links must
        # not make it hold on every row, or what follows is never reached
        '(g(p.sub, "Global Administrator", "*") || regexMatch(p.act, "("))',
        '!(!g(p.sub, "Global Administrator", "*") && regexMatch(p.act, "("))',
    ],
)
def test_a_permissions_matcher_failing_past_the_link_call_fails_the_load(tmp_path, runner, condition):
    """A real question gets past g(r.sub, p.sub, r.dom) only on its own role's rows, so a
    single probe never reached what follows: such a policy was served, and every call
    then failed (a 500). The load evaluates the whole matcher on every row now."""
    directory = copy_policies(tmp_path)
    edit(directory, "permissions.conf", "&& r.act == p.act", f"&& r.act == p.act && {condition}")

    message = load_error(directory)

    assert message.startswith("permissions.conf: [matchers]: matcher fails for"), message
    result = runner.invoke(args=["policy", "check", str(directory)])
    assert result.exit_code == 3, result.output
    assert "permissions.conf: [matchers]" in result.output


def test_a_permissions_matcher_failing_at_request_time_is_a_503_not_a_500(api, app, monkeypatch):
    """What the load cannot reach (a matcher may name r.sub only in the link call, so
    nothing should be left) still fails closed, as the policy being unavailable."""
    policy = app.extensions["policy_store"].current

    def failing(*question):
        raise ValueError("unbalanced parenthesis")

    monkeypatch.setattr(policy.permission_enforcer, "enforce", failing)
    policy._role_cache.clear()

    answer = api.get("/v1/support-requests", "bob")

    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "policy_unavailable"


def _load_error_within(directory: Path, seconds: float = 20) -> str:
    """load_error, failing the test instead of hanging it if the load blocks."""
    found: list[str] = []
    worker = threading.Thread(target=lambda: found.append(load_error(directory)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the load blocked"
    return found[0]


@pytest.mark.parametrize("name", ["access.conf", "roles.yaml"])
def test_a_fifo_in_place_of_a_policy_file_is_refused_without_blocking(tmp_path, name):
    directory = copy_policies(tmp_path)
    (directory / name).unlink()
    os.mkfifo(directory / name)
    assert _load_error_within(directory) == f"{name}: not a regular file (a device, FIFO or socket)"


def test_a_link_to_a_device_in_place_of_a_policy_file_is_refused(tmp_path):
    directory = copy_policies(tmp_path)
    (directory / "access.yaml").unlink()
    (directory / "access.yaml").symlink_to("/dev/zero")
    assert _load_error_within(directory) == "access.yaml: not a regular file (a device, FIFO or socket)"


def test_a_directory_in_place_of_a_policy_file_is_named(tmp_path):
    directory = copy_policies(tmp_path)
    (directory / "workflow.yaml").unlink()
    (directory / "workflow.yaml").mkdir()
    assert _load_error_within(directory) == "workflow.yaml: is a directory, not a file"


def test_a_policy_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path):
    directory = copy_policies(tmp_path)
    path = directory / "access.yaml"
    limit = policy_module.MAX_POLICY_FILE_BYTES
    path.write_bytes(path.read_bytes() + b"# padding\n" * (limit // 10))
    assert _load_error_within(directory) == f"access.yaml: over {limit:,} bytes, too large for a policy file"
    path.write_bytes(path.read_bytes()[:limit])  # exactly the limit ("at most"): read (and still valid YAML)
    assert path.stat().st_size == limit
    assert load_policy(directory).version == policy_module.policy_version(directory)


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "access.conf",
            "[matchers]\n",
            "[matchers]\nm2 = r.act == p.act\n",
            "access.conf: [matchers]: 'm2' is not read by the service: this section takes 'm' only",
        ),
        (
            "permissions.conf",
            "[request_definition]\n",
            "[request_definition]\nr2 = sub\n",
            "permissions.conf: [request_definition]: 'r2' is not read by the service: "
            "this section takes 'r' only",
        ),
        (
            "access.conf",
            "[matchers]\n",
            "[extra]\nx = 1\n\n[matchers]\n",
            "access.conf: [extra]: not a section the service reads (it reads [request_definition], "
            "[policy_definition], [role_definition], [policy_effect], [matchers])",
        ),
        (
            "permissions.conf",
            "[request_definition]\n",
            "m = true\n[request_definition]\n",
            "permissions.conf: the top of the file: 'm' is outside any section",
        ),
    ],
)
def test_a_model_key_or_section_the_service_never_reads_is_refused(tmp_path, file, old, new, expected):
    """Casbin evaluates `m2` only for a caller that names it: a reviewer would read it as
    one more condition that never applies."""
    directory = copy_policies(tmp_path)
    edit(directory, file, old, new)
    assert load_error(directory) == expected


@pytest.mark.parametrize("file", ["access.conf", "access.yaml"])
def test_a_policy_file_may_start_with_a_byte_order_mark(tmp_path, file):
    directory = copy_policies(tmp_path)
    path = directory / file
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_policy(directory).version == policy_module.policy_version(directory)


def test_casbin_model_missing_a_section(tmp_path):
    directory = copy_policies(tmp_path)
    edit(directory, "permissions.conf", "[policy_effect]\ne = some(where (p.eft == allow))\n", "")
    message = load_error(directory)
    assert "permissions.conf" in message
    assert "[policy_effect]: section missing" in message  # as the file names it, not Casbin's [e]


@pytest.mark.parametrize(
    ("file", "old", "new", "field"),
    [
        ("access.conf", "&& r.act == p.act", '&& r.act == p.act && r.dom != "contoso"', "r.dom"),
        ("access.conf", "&& r.act == p.act", '&& r.act == p.act || r.sub == "eve"', "r.sub"),
        ("permissions.conf", "g(r.sub, p.sub, r.dom)", "g(r.sub, p.sub)", "r.sub"),
    ],
)
def test_a_matcher_may_use_principal_and_tenant_only_in_the_link_call(tmp_path, file, old, new, field):
    """The service resolves a principal's links in a tenant itself and asks the model once
    per link: a condition on r.sub or r.dom anywhere else would be silently ignored."""
    directory = copy_policies(tmp_path)
    edit(directory, file, old, new)
    message = load_error(directory)
    assert f"{file}: [matchers]: {field} may be used only as g(r.sub, p.sub, r.dom)" in message


def test_a_party_listed_twice_is_named(tmp_path):
    directory = copy_policies(tmp_path)
    edit(
        directory,
        "workflow.yaml",
        "{party: support_request, approvals: 1}",
        "{party: resource, approvals: 1}",
    )
    message = load_error(directory)
    expected = (
        "workflow.yaml: approval.scenarios.cross_tenant: party 'resource' is listed twice (at [0] and [1])"
    )
    assert expected in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("[role_definition]", "[role_definition", "access.conf: invalid Casbin model: "),
        ("g = _, _, _", "g _, _, _", "access.conf: invalid Casbin model: "),
        (
            "e = some(where (p.eft == allow))",
            "e = some(where (p.eft == alow))",
            "access.conf: [policy_effect]: Casbin knows no effect 'some(where (p.eft == alow))'",
        ),
        ("p = sub, obj, act", "p = sub, obj", "access.conf: [policy_definition]: must be p = sub, obj, act"),
        ("&& r.act == p.act", "&& r.act == p.act && 1 / 0", "access.conf: [matchers]: matcher fails for "),
    ],
)
def test_a_casbin_model_casbin_refuses_is_named(tmp_path, old, new, expected):
    directory = copy_policies(tmp_path)
    edit(directory, "access.conf", old, new)
    assert expected in load_error(directory)


LINK_NOT_REQUIRED = (
    "access.conf: [matchers]: g(r.sub, p.sub, r.dom) must be required (a top-level && term): "
    "without it a rule applies to every role or access kind"
)


def not_compared(file: str, field: str) -> str:
    request = "r." + field.split(".", 1)[1]
    return (
        f"{file}: [matchers]: {field} is not compared with the request in a term the matcher requires "
        f"(a top-level && term: {request} == {field}, or a matching function given {request} and "
        f"then {field}, as keyMatch({request}, {field}); in an || every alternative must compare it), "
        f"so a rule could apply whatever {field} it lists"
    )


ACCESS_MATCHER = "m = g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj) && r.act == p.act"
PERMISSIONS_MATCHER = "m = g(r.sub, p.sub, r.dom) && r.act == p.act"


@pytest.mark.parametrize(
    ("file", "matcher", "expected"),
    [
        ("access.conf", "m = keyMatch(r.obj, p.obj) && r.act == p.act", LINK_NOT_REQUIRED),
        (
            "access.conf",
            "m = g(r.sub, p.sub, r.dom) || keyMatch(r.obj, p.obj) && r.act == p.act",
            LINK_NOT_REQUIRED,
        ),
        ("access.conf", "m = g(r.sub, p.sub, r.dom) && r.act == p.act", not_compared("access.conf", "p.obj")),
        ("permissions.conf", "m = g(r.sub, p.sub, r.dom)", not_compared("permissions.conf", "p.act")),
        # a term naming the rule's field and a request field does not bind it by that alone
        (
            "access.conf",
            'm = g(r.sub, p.sub, r.dom) && (keyMatch(r.obj, p.obj) || r.act == "read") && r.act == p.act',
            not_compared("access.conf", "p.obj"),
        ),
        (
            "access.conf",
            "m = g(r.sub, p.sub, r.dom) && !keyMatch(r.obj, p.obj) && r.act == p.act",
            not_compared("access.conf", "p.obj"),
        ),
        (
            "access.conf",
            'm = g(r.sub, p.sub, r.dom) && (r.act == p.act && p.obj != "")',
            not_compared("access.conf", "p.obj"),
        ),
        (
            "access.conf",
            'm = g(r.sub, p.sub, r.dom) && keyMatch(r.obj, "diagnostics/*") && p.obj != r.obj + "x" '
            "&& r.act == p.act",
            not_compared("access.conf", "p.obj"),
        ),
        (
            "permissions.conf",
            'm = g(r.sub, p.sub, r.dom) && (r.act == p.act || p.sub == "Support Engineer")',
            not_compared("permissions.conf", "p.act"),
        ),
        # forms that name both fields yet hold beyond what a rule lists (a second review)
        *(
            (
                "access.conf",
                f"m = g(r.sub, p.sub, r.dom) && {term} && r.act == p.act",
                not_compared("access.conf", "p.obj"),
            )
            for term in (
                'r.obj in (p.obj, "diagnostics/riskDetections")',
                "r.obj in p.obj",
                'keyMatch(r.obj, "*" + p.obj)',
                'regexMatch(r.obj, p.obj + "|.*")',
                "(p.obj == p.obj) == (r.obj == r.obj)",
                'r.obj == (r.obj if p.obj else "")',
                "keyMatch(p.obj, r.obj)",
                "keyMatch2(r.act, p.obj)",  # the rule's resource tested against the action
                "r.act == p.obj",
                # URL routes: `:x` and `{x}` are parameters, the rest an unchecked regular expression
                "keyMatch2(r.obj, p.obj)",
                "keyMatch4(r.obj, p.obj)",
                "globMatch(r.obj, p.obj)",  # braces, [!x], ** and a leading */ are past these checks
            )
        ),
        (
            "permissions.conf",
            'm = g(r.sub, p.sub, r.dom) && r.act in (p.act, "supportAccess/service/operate")',
            not_compared("permissions.conf", "p.act"),
        ),
    ],
)
def test_a_matcher_letting_a_rule_apply_beyond_what_it_lists_is_refused(
    runner, tmp_path, file, matcher, expected
):
    """Fail closed. These were lint warnings, and a policy that only warns is served: a
    permissions.conf cut short after the link call gave every role every action (an
    engineer an operator). Only `policy check --strict` refused them, never a reload."""
    directory = copy_policies(tmp_path)
    edit(directory, file, ACCESS_MATCHER if file == "access.conf" else PERMISSIONS_MATCHER, matcher)
    assert load_error(directory) == expected
    result = runner.invoke(args=["policy", "check", str(directory)])
    assert result.exit_code == 3 and expected in result.output, result.output


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        # Casbin names a field by its place: the resource dropped, every rule read every resource
        ("access.conf", "p = sub, obj, act", "p = sub, act, act", "found sub, act, act"),
        ("access.conf", "p = sub, obj, act", "p = sub, act, obj", "found sub, act, obj"),
        ("permissions.conf", "p = sub, act", "p = act, sub", "found act, sub"),
    ],
)
def test_a_rule_definition_other_than_the_yaml_files_fields_is_refused(tmp_path, file, old, new, expected):
    directory = copy_policies(tmp_path)
    edit(directory, file, old, new)
    fields = "sub, obj, act" if file == "access.conf" else "sub, act"
    assert load_error(directory) == f"{file}: [policy_definition]: must be p = {fields}, {expected}"


@pytest.mark.parametrize(
    ("file", "matcher"),
    [
        (
            "access.conf",
            'm = g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj) && r.act == p.act && "eval(p_obj)" != ""',
        ),
        ("permissions.conf", "m = g(r.sub, p.sub, r.dom) && r.act == p.act && eval(p.act)"),
    ],
)
def test_eval_in_a_matcher_is_refused_even_in_a_string(tmp_path, file, matcher):
    """Casbin pastes each rule's value in place of eval(p.x), found anywhere in the text:
    with one quote in a YAML value, one rule matched every request, past every check."""
    directory = copy_policies(tmp_path)
    edit(directory, file, ACCESS_MATCHER if file == "access.conf" else PERMISSIONS_MATCHER, matcher)
    assert (
        load_error(directory)
        == f"{file}: [matchers]: eval() is not allowed: a rule's value would run as code"
    )


def test_eval_with_a_space_is_refused_and_a_word_ending_in_eval_is_not(tmp_path):
    directory = copy_policies(tmp_path)
    edit(directory, "permissions.conf", PERMISSIONS_MATCHER, PERMISSIONS_MATCHER + " && eval (p.act)")
    assert load_error(directory).endswith("eval() is not allowed: a rule's value would run as code")
    edit(directory, "permissions.conf", " && eval (p.act)", ' && r.act != "retrieval(x)"')
    assert load_policy(directory).role_allows("Support Access Operator", "operate")


@pytest.mark.parametrize(
    "window", ['timeMatch("_", "2099-01-01 00:00:00")', 'timeMatch("2020-01-01 00:00:00", "_")']
)
def test_time_match_is_refused(runner, tmp_path, window):
    """The service asks each question once per policy version and keeps the answer: a
    time window in the matcher went on allowing after its end, until the next reload
    (and a worker loading later answered otherwise under the same version)."""
    directory = copy_policies(tmp_path)
    edit(directory, "access.conf", ACCESS_MATCHER, f"{ACCESS_MATCHER} && {window}")
    expected = "access.conf: [matchers]: timeMatch is not allowed: the service asks each question once"
    assert load_error(directory).startswith(expected)
    result = runner.invoke(args=["policy", "check", str(directory)])
    assert result.exit_code == 3 and expected in result.output, result.output


@pytest.mark.parametrize(
    ("matcher", "problem"),
    [
        (
            "m = g(r.sub, p.sub, r.dom)&&keyMatch(r.obj, p.obj) && r.act == p.act",
            "not an expression: invalid syntax (Casbin reads && and || as and and or with no spaces "
            "around them: put spaces around each)",
        ),
        (
            "m = g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj) && r.act==p.act&&true",
            "unknown name 'p.actandtrue' (Casbin reads && and || as and and or with no spaces around "
            "them: put spaces around each)",
        ),
        (
            'm = g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj) && r.act == p.act && r.obj != "a#b"',
            "not an expression: unterminated string literal (detected at line 1) (Casbin ends the "
            "matcher at its first #, a comment, inside a string too)",
        ),
        (
            "m = g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj) && r.act == p.act; r.obj == 'x'",
            "not an expression: more than one statement (Casbin would evaluate the first alone)",
        ),
        (
            "m = assert g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj) && r.act == p.act",
            "not an expression: a statement, not an expression",
        ),
        ("m = r.act = p.act", "not an expression: a statement, not an expression"),
        ("m = # to do", "not an expression: empty"),
        (
            "m = g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj) && r.act == p.actt # reads only",
            "unknown name 'p.actt'",
        ),
        (
            'm = g(r.sub, p.sub, r.dom) && keyMatc(r.obj, p.obj) && r.act == p.act && r.obj != "a&&b"',
            "unknown function 'keyMatc'",
        ),
    ],
)
def test_a_matcher_is_read_as_casbin_reads_it(tmp_path, matcher, problem):
    """The checks read the text Casbin evaluates: it turns && into `and` with no spaces, so
    `)&&keyMatch` is `)andkeyMatch`; it cuts the matcher at its first #; it evaluates the
    first statement alone."""
    directory = copy_policies(tmp_path)
    edit(directory, "access.conf", ACCESS_MATCHER, matcher)
    assert load_error(directory) == f"access.conf: [matchers]: {problem}"


@pytest.mark.parametrize("spelling", [str.lower, str.upper])
def test_a_role_named_with_another_roles_template_id_is_refused(tmp_path, spelling):
    """Roles are given by display name or template id, the name tried first: such a role
    took every assignment of AI Administrator made by its template id."""
    directory = copy_policies(tmp_path)
    template_id = "d2562ede-74db-457e-a7b6-544e236ebb61"  # AI Administrator's
    name = spelling(template_id)
    impostor = f"  - name: {name}\n    scope: customer\n    actions: [supportAccess/service/operate]\n"
    edit(directory, "roles.yaml", "roles:\n", "roles:\n" + impostor)
    problem = f"{name!r} is the template id of 'AI Administrator'"
    assert load_error(directory) == f"roles.yaml: roles[0].name: {problem}"


def test_a_key_pattern_with_a_star_before_its_end_is_refused(tmp_path):
    """keyMatch ignores all that follows the first *: `supportAccess/*/read` carried every
    action under supportAccess/ (a Support Engineer could operate the service)."""
    directory = copy_policies(tmp_path)
    key_matcher = "m = g(r.sub, p.sub, r.dom) && keyMatch(r.act, p.act)"
    edit(directory, "permissions.conf", PERMISSIONS_MATCHER, key_matcher)
    read = "      - supportAccess/diagnostics/read\n"
    edit(directory, "roles.yaml", read, read + "      - supportAccess/*/read\n")
    roles = yaml.safe_load((directory / "roles.yaml").read_text())["roles"]
    index = next(i for i, role in enumerate(roles) if role["name"] == "Support Engineer")
    place = f"roles[{index}].actions[{roles[index]['actions'].index('supportAccess/*/read')}]"
    assert load_error(directory) == (
        f"roles.yaml: {place}: 'supportAccess/*/read' has a * before its end "
        "(keyMatch in permissions.conf ignores all that follows the first *)"
    )


@pytest.mark.parametrize("file", ["access.conf", "permissions.conf"])
@pytest.mark.parametrize("links", ["_, _", "_, _, _, _"])
def test_a_link_definition_other_than_principal_role_tenant_is_refused(tmp_path, file, links):
    """The service calls g(r.sub, p.sub, r.dom). Under `g = _, _` Casbin ignores the
    tenant, and the load's check of every permission row evaluated one role's rows only."""
    directory = copy_policies(tmp_path)
    edit(directory, file, "g = _, _, _", f"g = {links}")
    expected = "must be g = _, _, _ (principal, role or access kind, tenant), found g = " + links
    assert load_error(directory) == f"{file}: [role_definition]: {expected}"


@pytest.mark.parametrize(
    ("file", "matcher"),
    [
        ("access.conf", "m = (g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj)) && r.act == p.act"),
        ("access.conf", "m = g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj) && p.act == r.act"),
        ("access.conf", "m = g(r.sub, p.sub, r.dom) && keyMatch(r.obj, p.obj) && keyMatch(r.act, p.act)"),
        ("permissions.conf", 'm = (g(r.sub, p.sub, r.dom) && r.act != "") && r.act == p.act'),
        ("permissions.conf", "m = !(r.act != p.act) && g(r.sub, p.sub, r.dom) && keyMatch(r.act, p.act)"),
        ("permissions.conf", "m = g(r.sub, p.sub, r.dom) && (r.act == p.act || keyMatch(r.act, p.act))"),
        (
            "access.conf",
            "m = g(r.sub, p.sub, r.dom) && (p.obj == r.obj || keyMatch(r.obj, p.obj)) && r.act == p.act",
        ),
        (
            "access.conf",
            "m = g(r.sub, p.sub, r.dom) && ((keyMatch(r.obj, p.obj) && r.act == p.act) "
            "|| (r.obj == p.obj && r.act == p.act))",
        ),
    ],
)
def test_a_matcher_binding_every_field_loads_however_it_is_written(tmp_path, file, matcher):
    directory = copy_policies(tmp_path)
    edit(directory, file, ACCESS_MATCHER if file == "access.conf" else PERMISSIONS_MATCHER, matcher)
    assert load_policy(directory).version == policy_module.policy_version(directory)


@pytest.mark.parametrize("name", ["permissions.conf", "access.conf"])
def test_an_effect_that_allows_without_a_matching_rule_is_refused(tmp_path, name):
    """Casbin's deny-override effect allows every request no rule denies: in
    permissions.conf a Global Reader would manage support access (and be an operator)."""
    directory = copy_policies(tmp_path)
    edit(directory, name, "e = some(where (p.eft == allow))", "e = !some(where (p.eft == deny))")
    expected = f"{name}: [policy_effect]: '!some(where (p.eft == deny))' allows what no rule allows"
    assert expected in load_error(directory)


def test_a_casbin_model_that_is_not_utf8_is_named(tmp_path):
    directory = copy_policies(tmp_path)
    path = directory / "access.conf"
    path.write_bytes(path.read_bytes().replace(b"# Data access", b"# Data acc\xe9ss", 1))
    assert load_error(directory) == "access.conf: byte 10: not UTF-8 text"


def test_casbin_request_shape_is_checked(tmp_path):
    directory = copy_policies(tmp_path)
    edit(directory, "access.conf", "r = sub, dom, obj, act", "r = sub, obj, act")
    message = load_error(directory)
    assert "access.conf" in message and "request" in message


def test_duplicate_role(tmp_path):
    directory = copy_policies(tmp_path)
    edit(directory, "roles.yaml", "name: Agent ID Administrator", "name: AI Administrator")
    message = load_error(directory)
    assert "roles.yaml" in message and "roles[1]" in message and "AI Administrator" in message


def test_a_template_id_used_twice_is_refused(tmp_path):
    directory = copy_policies(tmp_path)
    global_admin = "62e90394-69f5-4237-9190-012177145e10"
    service_support_admin = "f023fd81-a637-4b56-95fd-791ac0226033"
    edit(directory, "roles.yaml", service_support_admin, global_admin)
    message = load_error(directory)
    assert "roles.yaml" in message and ".template_id" in message
    assert f"template id {global_admin} already used by 'Global Administrator'" in message


def test_same_tenant_cannot_need_a_support_request_party(tmp_path):
    directory = copy_policies(tmp_path)
    edit_yaml(
        directory,
        "workflow.yaml",
        lambda d: d["approval"]["scenarios"]["same_tenant"].append(
            {"party": "support_request", "approvals": 1}
        ),
    )
    message = load_error(directory)
    assert "workflow.yaml" in message and "approval.scenarios.same_tenant" in message


def test_resource_tenant_must_always_approve(tmp_path):
    directory = copy_policies(tmp_path)
    edit_yaml(
        directory,
        "workflow.yaml",
        lambda d: d["approval"]["scenarios"].update(
            cross_tenant=[{"party": "support_request", "approvals": 1}]
        ),
    )
    message = load_error(directory)
    assert "workflow.yaml" in message and "approval.scenarios.cross_tenant" in message


def test_self_approval_cannot_be_turned_on(tmp_path):
    directory = copy_policies(tmp_path)
    edit(directory, "workflow.yaml", "allow_self_approval: false", "allow_self_approval: true")
    message = load_error(directory)
    assert "workflow.yaml" in message and "allow_self_approval" in message


@pytest.mark.parametrize(
    "file", ["roles.yaml", "access.yaml", "workflow.yaml", "access.conf", "permissions.conf"]
)
def test_missing_file(tmp_path, file):
    directory = copy_policies(tmp_path)
    (directory / file).unlink()
    assert file in load_error(directory)


def test_missing_directory(tmp_path):
    assert "nowhere" in load_error(tmp_path / "nowhere")


def test_empty_yaml_file(tmp_path):
    directory = copy_policies(tmp_path)
    (directory / "access.yaml").write_text("", encoding="utf-8")
    assert "access.yaml" in load_error(directory)


# --- policy check CLI and startup --------------------------------------------------------------------


def test_policy_check_accepts_a_good_directory(runner, tmp_path):
    directory = copy_policies(tmp_path)
    result = runner.invoke(args=["policy", "check", str(directory)])
    assert result.exit_code == 0, result.output
    assert load_policy(directory).version in result.output


def test_policy_check_refuses_an_invalid_directory(runner, tmp_path):
    directory = copy_policies(tmp_path)
    edit(directory, "workflow.yaml", "pending_ttl: 24h", "pending_ttl: 24x")
    result = runner.invoke(args=["policy", "check", str(directory)])
    assert result.exit_code == 3, result.output
    assert "workflow.yaml" in result.output and "timing.pending_ttl" in result.output


def test_policy_check_refuses_yaml_syntax_error(runner, tmp_path):
    directory = copy_policies(tmp_path)
    edit(directory, "roles.yaml", "roles:", "roles: [")
    result = runner.invoke(args=["policy", "check", str(directory)])
    assert result.exit_code == 3, result.output
    assert "roles.yaml" in result.output


def app_config(tmp_path: Path, policy_dir: Path) -> dict:
    return {
        "TESTING": True,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'start.db'}",
        "JWT_SECRET": SECRET,
        "POLICY_DIR": str(policy_dir),
        "DECISION_LOG": str(tmp_path / "start-decisions.log"),
        "CLOCK": lambda: START,
    }


def test_an_app_starting_on_an_invalid_policy_is_up_but_serves_nothing_until_it_loads(
    tmp_path, monkeypatch, caplog
):
    """No last good copy either: nothing of the policy is served, /readyz says not ready,
    the log says what is wrong, and a fixed file is picked up without a restart."""
    from service import starting

    monkeypatch.setattr(starting, "RETRY_INTERVAL", 0.0)
    directory = copy_policies(tmp_path)
    good = (directory / "access.yaml").read_text(encoding="utf-8")
    edit_yaml(directory, "access.yaml", lambda d: d["rules"].append(["grant", "diagnostics/*", "write"]))

    client = create_app(app_config(tmp_path, directory)).test_client()

    assert "access.yaml" in caplog.text and "write" in caplog.text
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    answer = client.post("/v1/decisions", json={}, headers=auth("diag-tool"))
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "policy_unavailable"
    assert "access.yaml" not in answer.get_data(as_text=True)  # the cause stays in the log

    (directory / "access.yaml").write_text(good, encoding="utf-8")

    assert client.get("/readyz").status_code == 200
    served = client.post("/v1/decisions", json={}, headers=auth("diag-tool"))
    assert served.status_code == 403  # answered by the policy now (no directory here: no role)


def test_app_starts_on_a_good_copy(tmp_path):
    directory = copy_policies(tmp_path)
    app = create_app(app_config(tmp_path, directory))
    assert app.extensions["policy_store"].current.version == load_policy(directory).version


# --- the version is a content hash -----------------------------------------------------------------


def test_same_content_same_version(tmp_path, shipped):
    first, second = copy_policies(tmp_path, "a"), copy_policies(tmp_path, "b")
    assert load_policy(first).version == load_policy(second).version == shipped.version
    assert load_policy(first).version == load_policy(first).version


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        ("workflow.yaml", "retention: 30d", "retention: 31d"),
        ("roles.yaml", "# Directory roles", "# directory roles"),
        ("access.yaml", "  - signInLogs\n", "  - signInLogs\n  - mailboxes\n"),
        ("access.conf", "[matchers]", "[matchers] "),
        ("permissions.conf", "# Who may", "#Who may"),
    ],
)
def test_one_byte_changes_the_version(tmp_path, shipped, file, old, new):
    directory = copy_policies(tmp_path)
    edit(directory, file, old, new)
    assert load_policy(directory).version != shipped.version


def test_served_version_is_the_content_hash(api, shipped):
    served = api.get("/v1/policy", "ops").get_json()
    assert served["version"] == shipped.version


# --- a failed reload keeps the last good policy ---------------------------------------------------------


def test_failed_reload_keeps_last_good_policy(tmp_path):
    directory = copy_policies(tmp_path)
    store = PolicyStore(directory)
    good = store.reload(START)
    edit(directory, "workflow.yaml", "pending_ttl: 24h", "pending_ttl: [24h")
    with pytest.raises(PolicyError):
        store.reload(START)
    assert store.current is good
    assert "workflow.yaml" in store.last_reload_error
    edit(directory, "workflow.yaml", "pending_ttl: [24h", "pending_ttl: 12h")
    fixed = store.reload(START)
    assert fixed.version != good.version
    assert store.current is fixed and store.last_reload_error is None


class TestReloadOverHttp:
    @pytest.fixture
    def policy_dir(self, tmp_path):
        return copy_policies(tmp_path)

    def test_broken_reload_is_reported_and_old_policy_serves(self, api, policy_dir):
        before = api.get("/v1/policy", "ops").get_json()
        edit(policy_dir, "access.yaml", '[grant, "diagnostics/*", read]', '[grant, "diagnostics/*", write]')
        answer = api.post("/v1/policy/reload", "ops")
        assert answer.status_code >= 400
        assert "access.yaml" in answer.get_json()["error"]["message"]
        after = api.get("/v1/policy", "ops").get_json()
        assert after["version"] == before["version"]
        assert after["last_reload_error"] and "access.yaml" in after["last_reload_error"]
        decision = api.post("/v1/decisions", "diag-tool", read_check(action="write")).get_json()
        assert decision["reason"] == "read_only"
        assert decision["policy_version"] == before["version"]

    def test_good_reload_switches_version(self, api, policy_dir):
        before = api.get("/v1/policy", "ops").get_json()["version"]
        edit(policy_dir, "workflow.yaml", "retention: 30d", "retention: 31d")
        answer = api.post("/v1/policy/reload", "ops")
        assert answer.status_code == 200, answer.get_json()
        after = api.get("/v1/policy", "ops").get_json()
        assert after["version"] == load_policy(policy_dir).version != before
        assert after["last_reload_error"] is None
        decision = api.post("/v1/decisions", "diag-tool", read_check()).get_json()
        assert decision["policy_version"] == after["version"]

    def test_only_operators_reload(self, api):
        assert api.post("/v1/policy/reload", "alice").status_code == 403


# --- the approval rule is data ------------------------------------------------------------------------------


class TestDistinctApproversAcrossParties:
    """`distinct_approvers_across_parties` is part of the rule a request was filed under,
    like the approvals it needs: a reload does not change it for requests already filed."""

    @pytest.fixture
    def policy_dir(self, tmp_path):
        directory = copy_policies(tmp_path)
        edit(
            directory,
            "workflow.yaml",
            "distinct_approvers_across_parties: false",
            "distinct_approvers_across_parties: true",
        )
        return directory

    @staticmethod
    def approve(api, request_id: str, who: str, tenant: str):
        return api.post(f"/v1/access-requests/{request_id}/approve", who, {"tenant_id": tenant})

    @staticmethod
    def allow_one_approver_for_both(api, policy_dir: Path) -> None:
        old, new = "distinct_approvers_across_parties: true", "distinct_approvers_across_parties: false"
        edit(policy_dir, "workflow.yaml", old, new)
        assert api.post("/v1/policy/reload", "ops").status_code == 200

    def test_a_request_keeps_the_rule_it_was_filed_under(self, api, policy_dir, access_request):
        self.allow_one_approver_for_both(api, policy_dir)
        request_id = access_request["id"]
        assert self.approve(api, request_id, "dana", "contoso").status_code == 200
        again = self.approve(api, request_id, "dana", "fabrikam")
        assert again.status_code == 403, again.get_json()
        assert again.get_json()["error"]["code"] == "distinct_approvers_required"
        assert self.approve(api, request_id, "bob", "fabrikam").get_json()["status"] == "approved"

    def test_one_person_under_two_spellings_is_one_approver(self, api, access_request):
        """`dana` and `DANA` may be one person signed in twice: the second approval
        would make one person approve for both parties."""
        assignment = {"principal": "DANA", "role": "Global Administrator"}
        assert api.put("/v1/tenants/fabrikam/role-assignments", "ops", assignment).status_code in (200, 201)
        request_id = access_request["id"]
        assert self.approve(api, request_id, "dana", "contoso").status_code == 200
        again = self.approve(api, request_id, "DANA", "fabrikam")
        assert again.status_code == 403, again.get_json()
        assert again.get_json()["error"]["code"] == "distinct_approvers_required"

    def test_a_request_filed_after_the_change_follows_the_new_rule(
        self, api, policy_dir, ticket, access_request
    ):
        self.approve(api, access_request["id"], "alice", "contoso")
        self.approve(api, access_request["id"], "bob", "fabrikam")
        assert api.post(f"/v1/support-requests/{ticket['id']}/close", "bob").status_code == 200
        self.allow_one_approver_for_both(api, policy_dir)
        body = {"tenant_id": "fabrikam", "resource_tenant_id": "contoso", "title": "again"}
        second = api.post("/v1/support-requests", "bob", body).get_json()
        assert (
            api.post(f"/v1/support-requests/{second['id']}/assign", "eve", {"engineer": "eve"}).status_code
            == 200
        )
        filed = api.post(
            "/v1/access-requests", "eve", {"support_request_id": second["id"], "justification": "x"}
        )
        request_id = filed.get_json()["id"]
        assert self.approve(api, request_id, "dana", "contoso").status_code == 200
        assert self.approve(api, request_id, "dana", "fabrikam").get_json()["status"] == "approved"


class TestTwoResourceApprovers:
    """workflow.yaml: cross-tenant needs two distinct resource-tenant approvers plus one
    support-request-tenant approver. No Python changes."""

    @pytest.fixture
    def policy_dir(self, tmp_path):
        directory = copy_policies(tmp_path)

        def two_resource(document):
            document["approval"]["scenarios"]["cross_tenant"] = [
                {"party": "resource", "approvals": 2},
                {"party": "support_request", "approvals": 1},
            ]

        edit_yaml(directory, "workflow.yaml", two_resource)
        return directory

    @staticmethod
    def approve(api, request_id: str, who: str, tenant: str):
        return api.post(f"/v1/access-requests/{request_id}/approve", who, {"tenant_id": tenant})

    def test_required_approvals_lists_two_resource_entries(self, access_request):
        required = sorted((e["tenant_id"], e["party"]) for e in access_request["required_approvals"])
        assert required == [
            ("contoso", "resource"),
            ("contoso", "resource"),
            ("fabrikam", "support_request"),
        ]

    def test_needs_alice_and_alice2_and_bob(self, api, access_request):
        request_id = access_request["id"]
        assert self.approve(api, request_id, "alice", "contoso").get_json()["status"] == "pending"
        assert self.approve(api, request_id, "bob", "fabrikam").get_json()["status"] == "pending"
        assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is False
        final = self.approve(api, request_id, "alice2", "contoso")
        assert final.status_code == 200, final.get_json()
        body = final.get_json()
        assert body["status"] == "approved"
        assert sorted(a["approver"] for a in body["approvals"]) == ["alice", "alice2", "bob"]
        assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["reason"] == "granted"

    def test_two_resource_approvals_without_support_request_party_stay_pending(self, api, access_request):
        request_id = access_request["id"]
        self.approve(api, request_id, "alice", "contoso")
        answer = self.approve(api, request_id, "alice2", "contoso")
        assert answer.get_json()["status"] == "pending"

    def test_same_approver_twice_is_409(self, api, access_request):
        request_id = access_request["id"]
        assert self.approve(api, request_id, "alice", "contoso").status_code == 200
        again = self.approve(api, request_id, "alice", "contoso")
        assert again.status_code == 409
        assert set(again.get_json()["error"]) == {"code", "message"}
        self.approve(api, request_id, "bob", "fabrikam")
        current = api.get(f"/v1/access-requests/{request_id}", "alice").get_json()
        assert current["status"] == "pending"

    def test_approval_of_an_admin_who_lost_the_role_no_longer_counts(self, api, access_request):
        request_id = access_request["id"]
        assert self.approve(api, request_id, "alice", "contoso").status_code == 200
        url = "/v1/tenants/contoso/role-assignments/alice/Global%20Administrator"
        assert api.delete(url, "ops").status_code == 204
        assert self.approve(api, request_id, "alice2", "contoso").get_json()["status"] == "pending"
        assert self.approve(api, request_id, "bob", "fabrikam").get_json()["status"] == "pending"
        final = self.approve(api, request_id, "dana", "contoso")
        assert final.status_code == 200, final.get_json()
        assert final.get_json()["status"] == "approved"

    def reject(self, api, request_id: str, who: str, tenant: str):
        return api.post(f"/v1/access-requests/{request_id}/reject", who, {"tenant_id": tenant})

    def test_a_party_still_short_of_approvals_may_reject(self, api, access_request):
        request_id = access_request["id"]
        assert self.approve(api, request_id, "alice", "contoso").status_code == 200
        answer = self.reject(api, request_id, "alice2", "contoso")
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["status"] == "rejected"

    def test_a_party_that_approved_in_full_cannot_reject(self, api, access_request):
        request_id = access_request["id"]
        self.approve(api, request_id, "alice", "contoso")
        self.approve(api, request_id, "alice2", "contoso")
        answer = self.reject(api, request_id, "dana", "contoso")
        assert answer.status_code == 409
        assert answer.get_json()["error"]["code"] == "already_approved"
        # Once an approval lapses (its approver lost the role) the party is short again.
        url = "/v1/tenants/contoso/role-assignments/alice/Global%20Administrator"
        assert api.delete(url, "ops").status_code == 204
        answer = self.reject(api, request_id, "dana", "contoso")
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["status"] == "rejected"

    def test_policy_version_differs_from_shipped(self, api, shipped, policy_dir):
        served = api.get("/v1/policy", "ops").get_json()["version"]
        assert served == load_policy(policy_dir).version != shipped.version

    def test_same_tenant_still_needs_one(self, api):
        created = api.post("/v1/support-requests", "alice", {"tenant_id": "contoso", "title": "same"})
        ticket_id = created.get_json()["id"]
        api.post(f"/v1/support-requests/{ticket_id}/assign", "eve", {"engineer": "eve"})
        request = api.post(
            "/v1/access-requests", "eve", {"support_request_id": ticket_id, "justification": "logs"}
        ).get_json()
        assert request["required_approvals"] == [{"tenant_id": "contoso", "party": "resource"}]
        assert self.approve(api, request["id"], "alice", "contoso").get_json()["status"] == "approved"


class TestApproverRoles:
    """workflow.yaml `approver_roles`: only the listed roles approve for a party (by display
    name or template id), and an approval counts only while its approver holds one."""

    @pytest.fixture(params=["Global Administrator", "62e90394-69f5-4237-9190-012177145e10"])
    def policy_dir(self, tmp_path, request):
        directory = copy_policies(tmp_path)
        old = "    cross_tenant:\n      - {party: resource, approvals: 1}"
        listed = f"approver_roles: [{request.param}]"
        new = f"    cross_tenant:\n      - {{party: resource, approvals: 1, {listed}}}"
        edit(directory, "workflow.yaml", old, new)
        return directory

    @staticmethod
    def approve(api, request_id: str, who: str, tenant: str):
        return api.post(f"/v1/access-requests/{request_id}/approve", who, {"tenant_id": tenant})

    def test_an_admin_without_a_listed_role_may_not_approve(self, api, access_request):
        answer = self.approve(api, access_request["id"], "alice2", "contoso")  # Service Support Administrator
        assert answer.status_code == 403, answer.get_json()
        assert answer.get_json()["error"]["code"] == "not_eligible_approver"
        assert "Global Administrator" in answer.get_json()["error"]["message"]
        assert self.approve(api, access_request["id"], "bob", "fabrikam").get_json()["status"] == "pending"
        current = api.get(f"/v1/access-requests/{access_request['id']}", "alice").get_json()
        assert [a["approver"] for a in current["approvals"]] == ["bob"]
        assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is False

    def test_an_admin_without_a_listed_role_may_not_reject(self, api, access_request):
        """API.md: reject follows approve's rules."""
        url = f"/v1/access-requests/{access_request['id']}/reject"
        answer = api.post(url, "alice2", {"tenant_id": "contoso", "reason": "no"})
        assert answer.status_code == 403, answer.get_json()
        assert answer.get_json()["error"]["code"] == "not_eligible_approver"
        current = api.get(f"/v1/access-requests/{access_request['id']}", "alice").get_json()
        assert current["status"] == "pending"
        by_a_listed_role = api.post(url, "alice", {"tenant_id": "contoso", "reason": "no"})
        assert by_a_listed_role.get_json()["status"] == "rejected"

    def test_a_listed_role_approves(self, api, access_request):
        assert self.approve(api, access_request["id"], "alice", "contoso").status_code == 200
        final = self.approve(api, access_request["id"], "bob", "fabrikam")  # that party lists no roles
        assert final.get_json()["status"] == "approved", final.get_json()
        assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["reason"] == "granted"

    def test_an_approval_stops_counting_when_its_role_is_no_longer_a_listed_one(self, api, access_request):
        assert self.approve(api, access_request["id"], "alice", "contoso").status_code == 200
        # alice stays a contoso admin, but no longer in a role the resource party lists.
        body = {"principal": "alice", "role": "Service Support Administrator"}
        assert api.put("/v1/tenants/contoso/role-assignments", "ops", body).status_code == 201
        url = "/v1/tenants/contoso/role-assignments/alice/Global%20Administrator"
        assert api.delete(url, "ops").status_code == 204
        answer = self.approve(api, access_request["id"], "bob", "fabrikam")
        assert answer.get_json()["status"] == "pending", answer.get_json()
        assert api.post("/v1/decisions", "diag-tool", read_check()).get_json()["allowed"] is False


# --- a file replaced while the policy is read --------------------------------------------


def test_a_file_replaced_while_the_policy_is_read_is_read_again(tmp_path, monkeypatch):
    """The version must name what was loaded: the store snapshots by it."""
    directory = copy_policies(tmp_path)
    build_enforcer = policy_module._build_enforcer
    replaced = []

    def build_while_someone_edits(*args):
        if not replaced:  # after the YAML files were read, before the version is checked
            edit(directory, "access.yaml", "  - signInLogs\n", "  - signInLogs\n  - riskyUsers\n")
            replaced.append(True)
        return build_enforcer(*args)

    monkeypatch.setattr(policy_module, "_build_enforcer", build_while_someone_edits)
    loaded = load_policy(directory)
    assert "riskyUsers" in loaded.categories  # the new file's content ...
    assert loaded.version == policy_module.policy_version(directory)  # ... under its version


def test_the_last_good_snapshot_never_holds_files_other_than_those_loaded(tmp_path, monkeypatch):
    """A file broken between the load and the snapshot's save must not become the 'last
    good' policy that a restarting worker falls back to: the snapshot holds the bytes that
    were loaded, not the files as they are when it is saved."""
    directory = copy_policies(tmp_path)
    snapshot = tmp_path / "last-good"

    def load_then_break(*args, **kwargs):
        loaded = load_policy(*args, **kwargs)
        (directory / "access.yaml").write_text("allowed_actions: [read\n", encoding="utf-8")
        return loaded

    monkeypatch.setattr("service.policy_store.load_policy", load_then_break)
    store = PolicyStore(directory, snapshot)
    good = store.reload(START)
    monkeypatch.undo()
    assert store.current is good
    assert (snapshot / "files" / "access.yaml").read_bytes() == good.files["access.yaml"]
    restarted = PolicyStore(directory, snapshot)
    with pytest.raises(PolicyError):
        restarted.reload(START)
    assert restarted.start_from_snapshot(START, PolicyError("broken")) is True
    assert restarted.current.version == good.version


def test_an_unreadable_policy_file_is_a_policy_error_naming_it(tmp_path, monkeypatch):
    """Not a crash: a worker starting then falls back to the last good policy."""
    directory = copy_policies(tmp_path)
    open_file = os.open

    def refuse_access_yaml(path, *args, **kwargs) -> int:
        if Path(path).name == "access.yaml":  # chmod would not do: CI runs as root
            raise PermissionError(13, "Permission denied")
        return open_file(path, *args, **kwargs)

    monkeypatch.setattr(policy_module.os, "open", refuse_access_yaml)
    assert "access.yaml: cannot read file: Permission denied" in load_error(directory)


@pytest.mark.parametrize("blank", ["", "  ", "\t"])
def test_a_blank_matcher_is_empty_not_an_index_error(blank):
    """Casbin's own parse of blanks raises IndexError (a 'does not load' naming no file)."""
    with pytest.raises(SyntaxError, match="^empty$"):
        matcher_tree(blank)
