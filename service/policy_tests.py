"""Policy test suites: `policies/tests/*_test.yaml`, run by the service's own engine.

A suite sets up fixtures (directory, tickets, access requests with the approvals they
received and when, a fixed `now`) and lists cases. Each case starts from a fresh database
holding only the fixtures, then makes its calls through the service's HTTP API (the same
app, policy, workflow and decision code that serve production) and compares the answer
with what the case expects.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from models import AccessRequest, RoleAssignment, SupportRequest, Tenant, connect_database
from service import strict_yaml
from service.auth import Caller, mint_token
from service.clock import FakeClock, parse_iso
from service.directory import DEFAULT_PROVIDER, check_principal, check_role, check_tenant_id, has_permission
from service.errors import ApiError, BadRequest, PolicyValidationError
from service.policy import SCHEMA_DIR, Policy, first_repeat, json_path
from service.schema_patterns import EcmaValidator
from service.strict_yaml import UniqueKeyLoader

DEFAULT_NOW = "2026-01-05T09:00:00Z"
CLIENT = "policy-test-client"  # the decision client every suite gets


class _Loader(UniqueKeyLoader):
    """YAML without implicit timestamps: suite times stay strings and are parsed as UTC
    (and, as every file a person edits, without a key twice and with YAML 1.2's booleans:
    service/strict_yaml.py)."""


strict_yaml.drop_implicit_resolver(_Loader, strict_yaml.TIMESTAMP_TAG)


class SuiteError(PolicyValidationError):
    """A suite file that cannot be read or breaks the suite schema."""


@dataclass
class Case:
    suite: str
    name: str
    spec: dict[str, Any]


@dataclass
class Suite:
    path: Path
    name: str
    now: datetime
    fixtures: dict[str, Any]
    cases: list[Case]


@dataclass
class CaseResult:
    case: Case
    passed: bool
    expected: dict[str, Any]
    actual: dict[str, Any]
    trail: list[Any] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"FAIL {self.case.suite} :: {self.case.name}"]
        lines.append(f"  expected: {json.dumps(self.expected, sort_keys=True)}")
        lines.append(f"  actual:   {json.dumps(self.actual, sort_keys=True)}")
        for entry in self.trail:
            lines.append(f"  trail:    {json.dumps(entry, sort_keys=True)}")
        return "\n".join(lines)


@cache
def _suite_schema() -> dict[str, Any]:
    return yaml.safe_load((SCHEMA_DIR / "suite.schema.yaml").read_text(encoding="utf-8"))


# The schema's `time` pattern lets 2026-02-30 through; its format is checked by parsing
# (jsonschema checks formats only with a checker, and its own date-time needs a package).
_TIMES = jsonschema.FormatChecker(formats=())
# Fixtures default to an hour before `now`, and the workflow adds and subtracts timings of
# up to 36,500 days (the policy's limit): near year 1 or 9999 that overflows.
YEARS = (1970, 8999)


@_TIMES.checks("date-time", raises=ValueError)
def _is_time(text: Any) -> bool:
    if isinstance(text, str) and not YEARS[0] <= parse_iso(text).year <= YEARS[1]:
        raise ValueError(f"a suite's times lie in the years {YEARS[0]} to {YEARS[1]}")
    return True


@cache
def _suite_validator() -> jsonschema.Draft202012Validator:
    return EcmaValidator(_suite_schema(), format_checker=_TIMES)


def _schema_problem(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(place, problem) of the schema error to report. A step's one-call rule is a oneOf,
    whose own message (the whole step "is not valid under any of the given schemas")
    does not say what is wrong."""
    place = json_path(error.absolute_path)
    step = _suite_schema()["$defs"]["step"]
    for cause in _lineage(error):
        if cause.validator == "oneOf" and cause.schema == step and isinstance(cause.instance, dict):
            verbs = [branch["required"][0] for branch in step["oneOf"]]
            given = [verb for verb in verbs if verb in cause.instance]
            place = json_path(cause.absolute_path)
            if not given:
                return place, f"no call: a step makes exactly one of {', '.join(verbs)}"
            return place, f"{' and '.join(given)}: a step makes exactly one call"
    if error.validator == "format":
        return place, f"{error.instance!r} is not a valid time ({error.cause})"
    return place, error.message


def _lineage(error: jsonschema.ValidationError):
    """The error, then each error it is part of (best_match may pick a oneOf's branch)."""
    while error is not None:
        yield error
        error = error.parent


def suite_paths(policy_dir: Path) -> list[Path]:
    """The suites in the directory's tests/ folder, and files meant as suites but named
    otherwise (*_test.yml), which load_suite refuses: a CI run must not lose one silently."""
    meant = ("_test.yaml", "_test.yml")
    return sorted(
        path for path in (Path(policy_dir) / "tests").glob("*") if path.name.lower().endswith(meant)
    )


def load_suite(path: Path) -> Suite:
    name = path.name
    if not name.endswith("_test.yaml"):  # the pytest collector (conftest.py) finds only these
        raise SuiteError(name, "file", "suites are named *_test.yaml: rename it")
    try:
        document = strict_yaml.load(path.read_text(encoding="utf-8"), loader=_Loader)
    except OSError as exc:
        raise SuiteError(name, "file", f"cannot read suite: {exc}") from exc
    except UnicodeDecodeError as exc:  # as policy files are refused (service/policy.py)
        raise SuiteError(name, f"byte {exc.start}", "not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        raise SuiteError(name, *strict_yaml.describe(exc).split(": ", 1)) from exc
    error = next(iter(_suite_validator().iter_errors(document)), None)
    if error is not None:
        error = jsonschema.exceptions.best_match(_suite_validator().iter_errors(document))
        raise SuiteError(name, *_schema_problem(error))
    cases = [Case(name, case["name"], case) for case in document["cases"]]
    if repeated := first_repeat([case.name for case in cases]):
        index, first = repeated
        problem = f"{cases[index].name!r} is also the name of cases[{first}]"
        raise SuiteError(name, f"cases[{index}].name", problem)
    fixtures = document.get("fixtures", {})
    _check_fixture_ids(name, fixtures)
    _check_principals(name, fixtures, document["cases"])
    requests = [entry["id"] for entry in fixtures.get("access_requests", [])]
    for index, case in enumerate(document["cases"]):
        _check_expect(name, f"cases[{index}]", case, requests)
    now = parse_iso(document.get("now", DEFAULT_NOW))
    return Suite(path, document["name"], now, fixtures, cases)


def _check_fixture_ids(file: str, fixtures: dict[str, Any]) -> None:
    """Ids are unique (the database would refuse the second), and an access request's
    ticket is a fixture ticket with an engineer to file it."""
    for kind in ("tickets", "access_requests"):
        entries = fixtures.get(kind, [])
        if repeated := first_repeat([entry["id"] for entry in entries]):
            index, first = repeated
            problem = f"{entries[index]['id']!r} is also the id of fixtures.{kind}[{first}]"
            raise SuiteError(file, f"fixtures.{kind}[{index}].id", problem)
    engineers = {ticket["id"]: ticket.get("assigned_engineer") for ticket in fixtures.get("tickets", [])}
    for index, entry in enumerate(fixtures.get("access_requests", [])):
        ticket = entry["ticket"]
        if ticket not in engineers:
            raise SuiteError(
                file, f"fixtures.access_requests[{index}].ticket", f"no fixture ticket is {ticket!r}"
            )
        if not engineers[ticket]:
            problem = f"ticket {ticket!r} has no assigned engineer to file it"
            raise SuiteError(file, f"fixtures.access_requests[{index}].ticket", problem)


def _check_principals(file: str, fixtures: dict[str, Any], cases: list[dict[str, Any]]) -> None:
    """Whoever approves a fixture request, acts in a step or is asked about in a decision
    holds a role in the fixtures, or gets one from an earlier step of the case. A misspelt
    principal holds none, so a case expecting a refusal or a deny would pass whatever the
    policy says. A decision about a principal unknown on purpose expects unknown_principal."""
    with_roles = {entry["principal"] for entry in fixtures.get("directory", {}).get("role_assignments", [])}

    def check(principal: str, known: set[str], place: str) -> None:
        if principal not in known and principal != CLIENT:
            problem = f"{principal!r} holds no role in fixtures.directory.role_assignments (misspelt?)"
            raise SuiteError(file, place, problem)

    for index, entry in enumerate(fixtures.get("access_requests", [])):
        for number, approval in enumerate(entry.get("approvals", [])):
            place = f"fixtures.access_requests[{index}].approvals[{number}].approver"
            check(approval["approver"], with_roles, place)
    for index, case in enumerate(cases):
        known = set(with_roles)
        for number, step in enumerate(case.get("steps", [])):
            check(step["as"], known, f"cases[{index}].steps[{number}].as")
            body = step.get("request", {}).get("body")
            if isinstance(body, dict) and isinstance(body.get("principal"), str):
                known.add(body["principal"])  # e.g. a step assigns it a role
        decision = case.get("decision")
        if decision and case["expect"].get("reason") != "unknown_principal":
            check(decision["principal"], known, f"cases[{index}].decision.principal")


DECISION_ANSWER = ("allowed", "reason")
STEP_ANSWER = ("listed", "activities")
ANY_ANSWER = ("status", "error_code")  # of the last step, or of a decision that was refused
REQUEST_STATE = ("request_status", "support_request_view")
ACTS_ON_REQUEST = ("approve", "reject", "revoke", "cancel", "file_access_request")


def _check_expect(file: str, place: str, case: dict[str, Any], requests: list[str]) -> None:
    """Refuse an expectation nothing in the case answers: it could only fail (compared
    with null), or with `request` alone, pass without comparing anything."""
    expect = case["expect"]
    for key in expect:
        if key in DECISION_ANSWER and "decision" not in case:
            raise SuiteError(file, f"{place}.expect.{key}", "the case asks no decision")
        if key in STEP_ANSWER and "steps" not in case:
            raise SuiteError(file, f"{place}.expect.{key}", "the case makes no step")
        if key in ANY_ANSWER and "steps" not in case and "decision" not in case:
            raise SuiteError(file, f"{place}.expect.{key}", "the case makes no step and asks no decision")
    states = [key for key in REQUEST_STATE if key in expect]
    if "request" in expect:
        # A request a step files gets an id unknown in advance: `request` names a fixture.
        if not states:
            problem = "names the access request whose request_status or support_request_view is expected"
            raise SuiteError(file, f"{place}.expect.request", f"{problem}, but the case expects neither")
        if expect["request"] not in requests:
            problem = f"no fixture access request is {expect['request']!r}"
            raise SuiteError(file, f"{place}.expect.request", problem)
    elif states and len(requests) != 1:  # else the case looks at the one a step acted on
        if not any(verb in step for step in case.get("steps", []) for verb in ACTS_ON_REQUEST):
            problem = f"which access request? name it with request (the fixtures hold {len(requests)}"
            raise SuiteError(file, f"{place}.expect.{states[0]}", f"{problem} and no step acts on one)")


class SuiteRunner:
    """Runs cases against one policy directory with one app; a fresh database per case."""

    def __init__(self, policy_dir: str | Path, record_coverage: bool = False):
        from service import build_app

        self.workdir = tempfile.TemporaryDirectory(prefix="policy-test-")
        self.secret = secrets.token_urlsafe(32)
        self.clock = FakeClock(parse_iso(DEFAULT_NOW))
        self.app = build_app(
            {
                "TESTING": True,
                "DATABASE_URL": f"sqlite:///{self.workdir.name}/app.db",
                "JWT_SECRET": self.secret,
                "POLICY_DIR": str(policy_dir),
                "DECISION_LOG": "",
                "CLOCK": self.clock,
            }
        )
        self.policy: Policy = self.app.extensions["policy_store"].current
        self.provider = self.app.config["PROVIDER_TENANT"] or DEFAULT_PROVIDER
        self.coverage: set[str] | None = set() if record_coverage else None
        self.client = self.app.test_client()
        self._databases = 0

    def close(self) -> None:
        self.workdir.cleanup()

    def run(self, suite: Suite, case: Case) -> CaseResult:
        self._fresh_database()
        self.clock.current = suite.now
        with self.app.app_context():
            self._load_fixtures(suite)
        self.app.extensions["decision_index"].load(suite.now)
        self.policy.hits = self.coverage  # record only what the case itself evaluates
        try:
            return self._run_case(suite, case)
        finally:
            self.policy.hits = None

    # --- fixtures ---------------------------------------------------------------

    def _fresh_database(self) -> None:
        # The read journal goes with the database: its position is kept in the database,
        # so a fresh one would import the earlier cases' reads into this case's audit log.
        journal = self.app.extensions["read_journal"]
        journal.close()
        shutil.rmtree(journal.directory, ignore_errors=True)
        self._databases += 1
        connect_database(f"sqlite:///{self.workdir.name}/case{self._databases}.db")

    def _load_fixtures(self, suite: Suite) -> None:
        from service import workflow
        from service.viewer import viewer_for

        fixtures, now, file = suite.fixtures, suite.now, suite.path.name
        directory = fixtures.get("directory", {})
        tenants = {self.provider, *directory.get("tenants", [])}
        for index, tenant in enumerate(directory.get("tenants", [])):
            with _refused_as_suite_error(file):
                check_tenant_id(tenant, f"fixtures.directory.tenants[{index}]")
        for tenant in tenants:
            Tenant.create(id=tenant, name=tenant, created_at=now)
        places: dict[tuple[str, str, str], str] = {}  # assignment -> its place in the suite
        for index, entry in enumerate(directory.get("role_assignments", [])):
            place = f"fixtures.directory.role_assignments[{index}]"
            _check_tenant(file, f"{place}.tenant", entry["tenant"], tenants)
            with _refused_as_suite_error(file):  # what `directory import` refuses
                check_principal(entry["principal"], f"{place}.principal")
                role = check_role(self.policy, self.provider, entry["tenant"], entry["role"], f"{place}.role")
            assignment = (entry["tenant"], entry["principal"], role)
            if assignment in places:
                raise SuiteError(file, place, f"the same assignment as {places[assignment]}")
            places[assignment] = place
        client_role = next(self.policy.roles_with("evaluate_decisions"), None)
        assignments = [*places, *([(self.provider, CLIENT, client_role)] if client_role else [])]
        for tenant, principal, role in dict.fromkeys(assignments):  # a suite may assign the client
            RoleAssignment.create(tenant_id=tenant, principal=principal, role=role, created_at=now)
        for index, ticket in enumerate(fixtures.get("tickets", [])):
            for key in ("tenant", "resource_tenant"):
                if key in ticket:
                    _check_tenant(file, f"fixtures.tickets[{index}].{key}", ticket[key], tenants)
            engineer = ticket.get("assigned_engineer")
            # As `assign` refuses: the service never assigns a ticket to anyone else.
            if engineer and not has_permission(self.policy, engineer, self.provider, "work_tickets"):
                place = f"fixtures.tickets[{index}].assigned_engineer"
                raise SuiteError(file, place, f"{engineer!r} is not a support engineer")
            SupportRequest.create(
                id=ticket["id"],
                tenant_id=ticket["tenant"],
                resource_tenant_id=ticket.get("resource_tenant", ticket["tenant"]),
                title=f"fixture {ticket['id']}",
                status=ticket.get("status", "open"),
                allow_advanced_diagnostics=ticket.get("allow_advanced_diagnostics", False),
                assigned_engineer=ticket.get("assigned_engineer"),
                created_by="fixture",
                created_at=_time(ticket.get("created_at"), now - timedelta(hours=1)),
                closed_at=now if ticket.get("status") == "closed" else None,
            )
        for entry in fixtures.get("access_requests", []):
            self._load_access_request(suite, entry, workflow, viewer_for)

    def _load_access_request(self, suite: Suite, entry: dict, workflow, viewer_for) -> None:
        """File the request as its engineer and replay its approvals through the workflow,
        each at its own time, so fixtures obey the same rules as real requests."""
        ticket = SupportRequest.get(SupportRequest.id == entry["ticket"])  # load_suite: it has an engineer
        created_at = _time(entry.get("created_at"), suite.now - timedelta(minutes=30))
        engineer = viewer_for(self.policy, Caller(ticket.assigned_engineer, None), self.provider)
        was_open = ticket.status
        SupportRequest.update(status="open").where(SupportRequest.id == ticket.id).execute()
        body = {"support_request_id": ticket.id, "justification": "fixture"}
        try:
            request = workflow.create_access_request(self.policy, engineer, body, created_at, self.provider)
        except ApiError as exc:  # e.g. a second live request for the ticket
            place = f"fixtures.access_requests.{entry['id']}"
            raise SuiteError(suite.path.name, place, f"refused ({exc.status}): {exc.message}") from exc
        AccessRequest.update(id=entry["id"]).where(AccessRequest.id == request.id).execute()
        for number, approval in enumerate(entry.get("approvals", [])):
            approver = viewer_for(self.policy, Caller(approval["approver"], None), self.provider)
            at = _time(approval.get("at"), created_at)
            try:
                workflow.approve(self.policy, approver, entry["id"], approval["tenant"], at)
            except ApiError as exc:  # the fixture asks for what the policy does not allow
                place = f"fixtures.access_requests.{entry['id']}.approvals[{number}]"
                raise SuiteError(suite.path.name, place, f"refused ({exc.status}): {exc.message}") from exc
        SupportRequest.update(status=was_open).where(SupportRequest.id == ticket.id).execute()
        if "status" in entry:
            view = "approved" if entry["status"] == "revoked" else entry["status"]
            AccessRequest.update(status=entry["status"], support_request_view_status=view).where(
                AccessRequest.id == entry["id"]
            ).execute()

    # --- cases ------------------------------------------------------------------

    def _run_case(self, suite: Suite, case: Case) -> CaseResult:
        spec, expected = case.spec, case.spec["expect"]
        self.clock.current = _time(spec.get("at"), suite.now)
        actual: dict[str, Any] = {}
        trail: list[Any] = []
        last_request = self._only_request()
        for step in spec.get("steps", []):
            answer, touched = self._step(_named(step, last_request))
            last_request = touched or last_request
            body = answer.get_json(silent=True) or {}
            actual["status"] = answer.status_code
            actual["error_code"] = body.get("error", {}).get("code") if "error" in body else None
            items = body.get("items")
            if isinstance(items, list):  # a list answer; anything else (an error) has none
                actual["listed"] = [item.get("id") for item in items]
                actual["activities"] = sorted({item.get("activity") for item in items if "activity" in item})
            else:
                actual["listed"] = actual["activities"] = None
            if "error" in body:
                trail.append({"step": _step_name(step), "error": body["error"]})
            if "expect_status" in step and step["expect_status"] != answer.status_code:
                trail.append({"step": _step_name(step), "expected_status": step["expect_status"]})
                actual["step_failed"] = _step_name(step)
        if "decision" in spec:
            self._check_decision_tenant(suite, case)
            answer = self._call("POST", "/v1/decisions", CLIENT, {**spec["decision"], "explain": True})
            body = answer.get_json()
            if answer.status_code != 200:
                error = body.get("error") or {}
                actual.update(status=answer.status_code, error=error, error_code=error.get("code"))
            else:
                actual.update(allowed=body["allowed"], reason=body["reason"])
                trail.extend(body.get("explain", []))
        name = expected.get("request", last_request)
        if ("request_status" in expected or "support_request_view" in expected) and name:
            with self.app.app_context():
                from service import workflow

                workflow.sweep(self.clock())
                request = AccessRequest.get_or_none(AccessRequest.id == name)
            if request is not None:
                actual["request_status"] = request.status
                actual["support_request_view"] = request.support_request_view_status
        compared = {key: actual.get(key) for key in expected if key != "request"}
        expected_values = {key: value for key, value in expected.items() if key != "request"}
        passed = compared == expected_values and "step_failed" not in actual
        return CaseResult(case, passed, expected_values, compared, trail)

    def _check_decision_tenant(self, suite: Suite, case: Case) -> None:
        """A decision names a tenant the fixtures or the case's steps created. A misspelt
        one is unknown, so a case expecting a deny would pass whatever the policy says;
        a tenant unknown on purpose expects unknown_tenant."""
        tenant, expect = case.spec["decision"]["tenant_id"], case.spec["expect"]
        if not ("allowed" in expect or "reason" in expect) or expect.get("reason") == "unknown_tenant":
            return  # the answer is not compared (a decision expected to be refused), or unknown on purpose
        with self.app.app_context():
            known = Tenant.get_or_none(Tenant.id == tenant) is not None
        if not known:
            place = f"cases[{suite.cases.index(case)}].decision.tenant_id"
            problem = f"unknown tenant {tenant!r}: list it in fixtures.directory.tenants (misspelt?)"
            raise SuiteError(suite.path.name, place, problem)

    def _only_request(self) -> str | None:
        with self.app.app_context():
            ids = [r.id for r in AccessRequest.select(AccessRequest.id)]
        return ids[0] if len(ids) == 1 else None

    def _step(self, step: dict):
        if "at" in step:
            self.clock.current = parse_iso(step["at"])
        who = step["as"]
        if "approve" in step or "reject" in step:
            verb = "approve" if "approve" in step else "reject"
            args = step[verb]
            body = {k: v for k, v in args.items() if k != "access_request"}
            url = f"/v1/access-requests/{args['access_request']}/{verb}"
            return self._call("POST", url, who, body), args["access_request"]
        for verb in ("revoke", "cancel"):
            if verb in step:
                name = step[verb]["access_request"]
                return self._call("POST", f"/v1/access-requests/{name}/{verb}", who, None), name
        if "close" in step:
            return self._call(
                "POST", f"/v1/support-requests/{step['close']['ticket']}/close", who, None
            ), None
        if "assign" in step:
            args = step["assign"]
            url = f"/v1/support-requests/{args['ticket']}/assign"
            return self._call("POST", url, who, {"engineer": args["engineer"]}), None
        if "file_access_request" in step:
            args = step["file_access_request"]
            body = {"support_request_id": args["ticket"], "justification": args.get("justification", "test")}
            answer = self._call("POST", "/v1/access-requests", who, body)
            created = answer.get_json(silent=True) or {}
            return answer, created.get("id")
        request = step["request"]
        return self._call(request["method"], request["path"], who, request.get("body")), None

    def _call(self, method: str, path: str, who: str, body):
        token = mint_token(self.secret, who, "policy-test", timedelta(hours=1), datetime.now(UTC))
        headers = {"Authorization": f"Bearer {token}"}
        return self.client.open(path, method=method, headers=headers, json=body)


def _check_tenant(file: str, place: str, tenant: str, tenants: set[str]) -> None:
    if tenant not in tenants:  # a typo would test a tenant nobody set up
        raise SuiteError(file, place, f"unknown tenant {tenant!r}: list it in fixtures.directory.tenants")


@contextmanager
def _refused_as_suite_error(file: str):
    """A directory check's refusal ("<place>: <problem>") as an invalid suite."""
    try:
        yield
    except BadRequest as exc:
        raise SuiteError(file, *exc.message.split(": ", 1)) from exc


def _named(step: dict, last_request: str | None) -> dict:
    """Replace the access request name "@last" with the request the case touched last."""
    return {
        key: {k: (last_request if v == "@last" else v) for k, v in value.items()}
        if isinstance(value, dict)
        else value
        for key, value in step.items()
    }


def _time(text: str | None, default: datetime) -> datetime:
    return parse_iso(text) if text else default


def _step_name(step: dict) -> str:
    verb = next(key for key in step if key not in ("as", "at", "expect_status"))
    return f"{step['as']} {verb}"


# --- coverage ------------------------------------------------------------------


def coverage_units(policy: Policy) -> dict[str, list[str]]:
    """Every rule a suite can exercise, per policy file."""
    used_actions = set(policy.permissions.values())
    return {
        "roles.yaml": [f"role:{name}" for name in policy.roles],
        "permissions.conf": [
            f"role_action:{rule.values[0]}:{rule.values[1]}"
            for rule in policy.permission_rules
            if rule.values[1] in used_actions
        ],
        "access.yaml": ["read_only", "categories", *(f"access_rule:{r.source}" for r in policy.access_rules)],
        "workflow.yaml": [
            *(f"permission:{name}" for name in policy.permissions),
            *(f"scenario:{name}" for name in policy.scenarios),
            "approval:allow_self_approval",
            "approval:distinct_approvers_across_parties",
            "audit:support_trail",
            *(f"timing:{name}" for name in ("pending_ttl", "max_grant_duration", "retention")),
        ],
    }


def coverage_report(policy: Policy, hits: set[str]) -> tuple[float, list[str]]:
    """(total percent, report lines) for the rules the suites exercised."""
    lines, total, covered = [], 0, 0
    for file, units in coverage_units(policy).items():
        missed = [unit for unit in units if unit not in hits]
        done = len(units) - len(missed)
        percent = 100.0 * done / len(units) if units else 100.0
        lines.append(f"{file:<18} {done:>4}/{len(units):<4} {percent:6.1f}%")
        lines += [f"    not exercised: {unit}" for unit in missed]
        total, covered = total + len(units), covered + done
    percent = 100.0 * covered / total if total else 100.0
    lines.append(f"{'total':<18} {covered:>4}/{total:<4} {percent:6.1f}%")
    return percent, lines
