"""Load a policy directory into an immutable, validated `Policy`.

A policy is built whole or not at all: every file is parsed and validated, both Casbin
models are compiled, and only then is a `Policy` returned. Callers swap the reference
to a new policy atomically, so a half-built policy is never visible.
"""

from __future__ import annotations

import ast
import hashlib
import io
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import casbin
import jsonschema
import yaml
from casbin.effect import ALLOW_AND_DENY_EFFECT, DENY_OVERRIDE_EFFECT, get_effector

from service import strict_yaml
from service.errors import PolicyError, PolicyLoadError, PolicyValidationError
from service.regex_anchoring import is_anchored
from service.schema_patterns import EcmaValidator

log = logging.getLogger("support_access")

REPO_POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
SCHEMA_DIR = REPO_POLICY_DIR / "schema"

YAML_FILES = ("roles.yaml", "access.yaml", "workflow.yaml")
MAX_POLICY_FILE_BYTES = 1024 * 1024
# Role × action rows, each evaluated on load: the shipped roles carry ~50, and a roles.yaml
# that lists one long `actions` list under many roles (an alias each) would load for minutes.
MAX_PERMISSION_ROWS = 50_000
# Casbin's short names for the sections of a model file, and the headings the file uses.
MODEL_SECTIONS = {
    "r": "request_definition",
    "p": "policy_definition",
    "g": "role_definition",
    "e": "policy_effect",
    "m": "matchers",
}
MODEL_KEYS = {heading: key for key, heading in MODEL_SECTIONS.items()}  # "matchers" -> "m"
MODEL_FILES = {"permissions.conf": ("sub", "dom", "act"), "access.conf": ("sub", "dom", "obj", "act")}
# The fields of a rule (p row), as the YAML files give them: roles.yaml (role, action),
# access.yaml (access kind, resource, action).
RULE_FIELDS = {"permissions.conf": ("sub", "act"), "access.conf": ("sub", "obj", "act")}
PARTIES = ("resource", "support_request")
READ_ONLY_ACTIONS = frozenset({"read"})  # the only actions a policy may allow (SPEC §3)
RESOURCE_PREFIX = "diagnostics/"  # diagnostic resources are named diagnostics/<category>
_DURATION = re.compile(r"^([1-9][0-9]*)(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Any timing longer than this is a typo, and times it would add up to (a grant's end, a
# retention cut-off) must stay within the dates Python and the database can hold.
LONGEST_DURATION = timedelta(days=36_500)


@dataclass(frozen=True)
class Role:
    name: str
    template_id: str | None
    scope: str  # "customer" or "provider"
    actions: frozenset[str]


@dataclass(frozen=True)
class Requirement:
    party: str  # "resource" or "support_request"
    approvals: int
    # If set, only holders of these roles (in the party's tenant) may approve for the party.
    approver_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Timing:
    pending_ttl: timedelta
    max_grant_duration: timedelta
    retention: timedelta


@dataclass(frozen=True)
class Rule:
    """One Casbin p row and where it came from, for explain trails and coverage."""

    source: str  # e.g. "access.yaml rules[0]"
    values: tuple[str, ...]


@dataclass
class Policy:
    directory: Path
    version: str
    loaded_at: datetime
    files: dict[str, bytes] = field(repr=False)  # what was loaded, by file name: the snapshot saves it
    roles: dict[str, Role]
    role_by_template_id: dict[str, str]
    permissions: dict[str, str]
    scenarios: dict[str, tuple[Requirement, ...]]
    distinct_approvers_across_parties: bool
    timing: Timing
    support_trail: tuple[str, ...]  # audit activities non-log-reader admins see
    allowed_actions: frozenset[str]
    categories: frozenset[str]
    diagnostic_resources: frozenset[str]  # "diagnostics/<category>" of every category
    access_kinds: tuple[str, ...]
    permission_rules: tuple[Rule, ...]
    access_rules: tuple[Rule, ...]
    permission_enforcer: casbin.Enforcer = field(repr=False)
    access_enforcer: casbin.Enforcer = field(repr=False)
    # Casbin's Enforcer is not thread-safe; the caches below make the lock rarely taken.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _role_cache: dict = field(default_factory=dict, repr=False)
    _access_cache: dict = field(default_factory=dict, repr=False)
    # Rule coverage (`policy test --coverage`): the rule ids evaluated, when recording.
    hits: set[str] | None = field(default=None, repr=False)

    def hit(self, rule_id: str) -> None:
        if self.hits is not None:
            self.hits.add(rule_id)

    # --- roles ---------------------------------------------------------------------

    def canonical_role(self, name_or_template_id: str) -> str | None:
        """The display name of a role given by display name or template id."""
        if name_or_template_id in self.roles:
            return name_or_template_id
        return self.role_by_template_id.get(name_or_template_id.lower())

    def any_role_allows(self, links: Iterable[tuple[str, str]], tenant: str, permission: str) -> bool:
        """Does one of the role links ((tenant, role) pairs) held in `tenant` carry `permission`?"""
        for held_in, role in links:  # a loop, not any(...): this runs for every decision
            if held_in == tenant and self.role_allows(role, permission):
                return True
        return False

    def role_allows(self, role: str, permission: str) -> bool:
        """Does `role` carry the action that `permission` (workflow.yaml) names?

        Evaluated with permissions.conf: with no g links loaded, g(role, p.sub) holds
        exactly when role == p.sub, so the answer depends on the role alone and is cached.
        """
        action = self.permissions[permission]
        key = (role, action)
        cached = self._role_cache.get(key)
        if cached is None:
            try:
                with self._lock:
                    cached = bool(self.permission_enforcer.enforce(role, "*", action))
            except Exception as exc:  # a matcher failing on this role alone (the load checked the rest)
                log.error("permissions.conf: the matcher fails for %s, %s: %s", role, action, exc)
                raise PolicyError(
                    "permissions.conf: the policy in force cannot answer; see the service log"
                ) from exc
            self._role_cache[key] = cached
        if self.hits is not None:
            self.hits.update((f"role:{role}", f"permission:{permission}"))
            if cached:
                self.hits.add(f"role_action:{role}:{action}")
        return cached

    def roles_with(self, permission: str) -> Iterator[str]:
        """The roles carrying `permission`, in roles.yaml's order, found as they are asked
        for: each question scans every permission row, so a caller that needs one of them
        (or whether there is one) stops early, and not after roles × rows evaluations
        (`policy test` of a roles.yaml of 2,000 roles took 40 s)."""
        return (name for name in self.roles if self.role_allows(name, permission))

    # --- data access ---------------------------------------------------------------

    def access_allows(self, kind: str, resource: str, action: str) -> Rule | None:
        """The access.yaml rule that lets access `kind` perform `action` on `resource`."""
        key = (kind, resource, action)
        if key not in self._access_cache:
            with self._lock:
                allowed, matched = self.access_enforcer.enforce_ex(kind, "*", resource, action)
            rule = None
            if allowed:
                rule = next(r for r in self.access_rules if list(r.values) == list(matched))
            self._access_cache[key] = rule
        rule = self._access_cache[key]
        if rule is not None and self.hits is not None:
            self.hits.add(f"access_rule:{rule.source}")
        return rule

    def requirements(self, cross_tenant: bool) -> tuple[Requirement, ...]:
        scenario = "cross_tenant" if cross_tenant else "same_tenant"
        self.hit(f"scenario:{scenario}")
        return self.scenarios[scenario]


# --- loading ---------------------------------------------------------------------


LOAD_ATTEMPTS = 3


def load_policy(directory: str | Path, now: datetime | None = None) -> Policy:
    """Read, validate and compile every file of a policy directory.

    Each file is read once; the version is the hash of what was read. The files are
    hashed again after the load: if one was replaced meanwhile, what was read may mix old
    files with new ones, a policy no one wrote, so the load starts again."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PolicyLoadError(f"{directory}: policy directory not found")
    for _ in range(LOAD_ATTEMPTS):
        files = _read_files(directory)
        version = _version_of(files)
        try:
            policy = _load(directory, files, version, now)
        except PolicyError:
            raise
        except Exception as exc:  # a check we lack: still a failed load, reported as one
            raise PolicyLoadError(f"{directory}: the policy does not load: {exc!r}") from exc
        if policy_version(directory) == version:
            return policy
    raise PolicyLoadError(f"{directory}: the policy files kept changing while they were read")


def _load(directory: Path, files: dict[str, bytes | None], version: str, now: datetime | None) -> Policy:
    documents = {name: _parse_yaml(files, name) for name in YAML_FILES}
    for name, document in documents.items():
        _validate_schema(name, document)
    roles, by_template = _build_roles(documents["roles.yaml"])
    workflow, access = documents["workflow.yaml"], documents["access.yaml"]
    _check_permissions(workflow, roles)
    access_rules = _check_access_rules(access)
    permission_rules = _permission_rules(documents["roles.yaml"])
    if len(permission_rules) > MAX_PERMISSION_ROWS:
        problem = f"the roles carry {len(permission_rules):,} actions in all, over {MAX_PERMISSION_ROWS:,}"
        raise PolicyValidationError("roles.yaml", "roles", problem)
    permission_enforcer = _build_enforcer(files, "permissions.conf", permission_rules)
    access_enforcer = _build_enforcer(files, "access.conf", access_rules)
    approval = workflow["approval"]
    policy = Policy(
        directory=directory,
        version=version,
        loaded_at=now or datetime.now(UTC),
        files={name: data for name, data in files.items() if data is not None},
        roles=roles,
        role_by_template_id=by_template,
        permissions=dict(workflow["permissions"]),
        scenarios={
            name: tuple(
                Requirement(
                    r["party"],
                    r["approvals"],
                    tuple(map(_role_name(roles, by_template), r.get("approver_roles", []))),
                )
                for r in reqs
            )
            for name, reqs in approval["scenarios"].items()
        },
        distinct_approvers_across_parties=approval["distinct_approvers_across_parties"],
        timing=_timing(workflow["timing"]),
        support_trail=tuple(workflow["audit"]["support_trail"]),
        allowed_actions=frozenset(access["allowed_actions"]),
        categories=frozenset(access["categories"]),
        diagnostic_resources=frozenset(RESOURCE_PREFIX + category for category in access["categories"]),
        access_kinds=tuple(access["access_kinds"]),
        permission_rules=permission_rules,
        access_rules=access_rules,
        permission_enforcer=permission_enforcer,
        access_enforcer=access_enforcer,
    )
    _ask_every_access_question(policy)
    _evaluate_every_permission_row(files, permission_rules, policy.permissions.values())
    return policy


def _ask_every_access_question(policy: Policy) -> None:
    """Ask access.conf, now, every question a decision can ask it: each access kind about
    each listed resource and allowed action (decisions deny anything else before asking).
    A matcher that fails on some of them (an invalid regular expression under
    regexMatch, say) then fails the load, naming the file, and not every decision
    later; and the answers are cached before the first request.

    permissions.conf is checked by _evaluate_every_permission_row: asking it all ~300
    real questions now would triple the time of a load (~130 ms)."""
    for kind in policy.access_kinds:
        for resource in sorted(policy.diagnostic_resources):
            for action in sorted(policy.allowed_actions):
                try:
                    policy.access_allows(kind, resource, action)
                except Exception as exc:
                    problem = f"matcher fails for {kind}, {resource}, {action}: {exc}"
                    raise PolicyValidationError("access.conf", "[matchers]", problem) from exc


def _evaluate_every_permission_row(files: dict[str, bytes | None], rules: tuple[Rule, ...], actions) -> None:
    """Evaluate permissions.conf's whole matcher on every p row, for every action a
    question can ask (workflow.yaml's permissions), so that a matcher that fails there
    (an invalid regular expression, a function given a wrong argument) fails the load,
    naming the file, rather than every request later. A real question (a role, as
    r.sub) gets past `g(r.sub, p.sub, ...)` only on that role's rows, and the rest of the
    matcher is never evaluated on the others: asking all ~300 would cost ~130 ms a load.
    So a throw-away enforcer, in which one role is linked to every role, asks one
    question per action with that role: g holds on every row, and the rest is evaluated
    on each (~6 questions, a few ms). Its effect is allow-and-deny, which Casbin cannot
    settle before the last row: with the policy's own (allow on the first match) it would
    stop at the first row that allows."""
    if not rules:
        return
    probe = _build_enforcer(files, "permissions.conf", rules)
    probe.set_effector(get_effector(ALLOW_AND_DENY_EFFECT))
    subject = rules[0].values[0]
    links = _LinkedToEveryRole(subject, {rule.values[0] for rule in rules})
    probe.get_model()["g"]["g"].rm = probe.rm_map["g"] = links
    for action in sorted(set(actions)):
        try:
            probe.enforce(subject, "*", action)
        except Exception as exc:
            problem = f"matcher fails for {subject}, {action}: {exc}"
            raise PolicyValidationError("permissions.conf", "[matchers]", problem) from exc


class _LinkedToEveryRole(casbin.rbac.RoleManager):
    """The load check's links: `subject` holds every role in tenant "*" (what the check
    asks as r.dom), and any other name only itself, as Casbin's own role manager holds
    them given those links. Casbin's compares each role with every other on each link and
    each question (it also walks all of the subject's roles to answer one): a roles.yaml
    of 2,000 roles took 4.3 s."""

    def __init__(self, subject: str, roles: set[str]):
        self.subject, self.roles = subject, roles

    def has_link(self, name1: str, name2: str, *domain: str) -> bool:
        return name1 == name2 or (name1 == self.subject and name2 in self.roles and domain == ("*",))


def _role_name(roles: dict[str, Role], by_template: dict[str, str]):
    return lambda name: name if name in roles else by_template[name.lower()]


def policy_version(directory: Path) -> str:
    """A content hash of every file that shapes decisions."""
    return _version_of(_read_files(directory))


def _read_files(directory: Path) -> dict[str, bytes | None]:
    """Every policy file's bytes, by name; None for a file that is not there (parsing it
    names the missing file)."""
    files: dict[str, bytes | None] = {}
    for name in sorted((*YAML_FILES, *MODEL_FILES)):
        try:
            files[name] = read_policy_file(directory / name, name)
        except FileNotFoundError:
            files[name] = None
    return files


def _version_of(files: dict[str, bytes | None]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0")
        digest.update(files[name] or b"")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def read_policy_file(path: Path, name: str) -> bytes:
    """A policy file's bytes: a regular file (or a link to one) of at most
    MAX_POLICY_FILE_BYTES, else a PolicyLoadError naming it. A FIFO would block the
    reader for good (the watcher's thread, and so every reload after it), a link to
    /dev/zero fill the memory, a 100 MB file take a minute to parse. Opened without
    blocking, and checked once open: a FIFO put in its place after a check would block.
    Raises FileNotFoundError for a file that is not there (the caller names it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise PolicyLoadError(f"{name}: cannot read file: {exc.strerror or exc}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise PolicyLoadError(f"{name}: is a directory, not a file")
        raise PolicyLoadError(f"{name}: not a regular file (a device, FIFO or socket)")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(MAX_POLICY_FILE_BYTES + 1)
        except OSError as exc:
            raise PolicyLoadError(f"{name}: cannot read file: {exc.strerror or exc}") from exc
    if len(data) > MAX_POLICY_FILE_BYTES:
        problem = f"over {MAX_POLICY_FILE_BYTES:,} bytes, too large for a policy file"
        raise PolicyLoadError(f"{name}: {problem}")
    return data


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    amount, unit = int(match.group(1)), _UNITS[match.group(2)]
    if amount > LONGEST_DURATION / timedelta(**{unit: 1}):
        raise ValueError(f"{text!r} is longer than {LONGEST_DURATION.days} days")
    return timedelta(**{unit: amount})


def _timing(timing: dict[str, str]) -> Timing:
    durations = {}
    for name, text in timing.items():
        try:
            durations[name] = parse_duration(text)
        except ValueError as exc:
            raise PolicyValidationError("workflow.yaml", f"timing.{name}", str(exc)) from exc
    return Timing(**durations)


def _text(files: dict[str, bytes | None], name: str) -> str:
    """A policy file's text, from the bytes read once for the whole load."""
    data = files[name]
    if data is None:
        raise PolicyLoadError(f"{name}: cannot read file: No such file or directory")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyLoadError(f"{name}: byte {exc.start}: not UTF-8 text") from exc


def _parse_yaml(files: dict[str, bytes | None], name: str) -> Any:
    text = _text(files, name)
    try:
        return strict_yaml.load(text)
    except yaml.YAMLError as exc:
        raise PolicyLoadError(f"{name}: {strict_yaml.describe(exc)}") from exc


_schemas: dict[str, dict] = {}


def _schema(name: str) -> dict:
    if name not in _schemas:
        path = SCHEMA_DIR / name.replace(".yaml", ".schema.yaml")
        _schemas[name] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return _schemas[name]


def json_path(parts) -> str:
    """['roles', 3, 'actions'] -> 'roles[3].actions' (the place in a file)."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def first_repeat(values: list) -> tuple[int, int] | None:
    """(index, index of its first occurrence) of the first value given twice, if any."""
    seen: dict = {}
    for index, value in enumerate(values):
        first = seen.setdefault(value, index)
        if first != index:
            return index, first
    return None


def _validate_schema(name: str, document: Any) -> None:
    validator = EcmaValidator(_schema(name))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        problem = error.message
        why = error.schema.get("description") if isinstance(error.schema, dict) else None
        if error.validator in ("const", "enum") and why:
            problem += f": {why}"  # why only that value: e.g. access is read-only
        raise PolicyValidationError(name, json_path(error.absolute_path), problem)


def _build_roles(document: dict) -> tuple[dict[str, Role], dict[str, str]]:
    roles: dict[str, Role] = {}
    by_template: dict[str, str] = {}
    for index, entry in enumerate(document["roles"]):
        place = f"roles[{index}]"
        name, template_id = entry["name"], entry.get("template_id")
        if name in roles:
            raise PolicyValidationError("roles.yaml", f"{place}.name", f"duplicate role {name!r}")
        if template_id:
            if template_id in by_template:
                problem = f"template id {template_id} already used by {by_template[template_id]!r}"
                raise PolicyValidationError("roles.yaml", f"{place}.template_id", problem)
            by_template[template_id] = name
        roles[name] = Role(name, template_id, entry["scope"], frozenset(entry["actions"]))
    owners = {template_id.lower(): name for template_id, name in by_template.items()}
    for index, name in enumerate(roles):
        owner = owners.get(name.lower(), name)
        if owner != name:
            # A role is given by display name or template id, the name tried first: this
            # one would take every assignment of the other made by its template id.
            problem = f"{name!r} is the template id of {owner!r}"
            raise PolicyValidationError("roles.yaml", f"roles[{index}].name", problem)
    return roles, by_template


def _permission_rules(document: dict) -> tuple[Rule, ...]:
    """One p row per role and action it carries, named by the action's place in
    roles.yaml (its first, if listed twice): a load error about a row names that place."""
    rules: list[Rule] = []
    for index, entry in enumerate(document["roles"]):
        places: dict[str, int] = {}
        for place, action in enumerate(entry["actions"]):
            places.setdefault(action, place)
        source = f"roles.yaml roles[{index}].actions"
        rules += [Rule(f"{source}[{places[action]}]", (entry["name"], action)) for action in sorted(places)]
    return tuple(rules)


def _check_permissions(workflow: dict, roles: dict[str, Role]) -> None:
    carried = {action for role in roles.values() for action in role.actions}
    for permission, action in workflow["permissions"].items():
        if action not in carried:
            problem = f"no role in roles.yaml carries action {action!r}"
            raise PolicyValidationError("workflow.yaml", f"permissions.{permission}", problem)
    for scenario, requirements in workflow["approval"]["scenarios"].items():
        parties = [r["party"] for r in requirements]
        place = f"approval.scenarios.{scenario}"
        if repeated := first_repeat(parties):
            index, first = repeated
            problem = f"party {parties[index]!r} is listed twice (at [{first}] and [{index}])"
            raise PolicyValidationError("workflow.yaml", place, problem)
        if "resource" not in parties:
            problem = "the resource tenant must always approve"
            raise PolicyValidationError("workflow.yaml", place, problem)
        if scenario == "same_tenant" and "support_request" in parties:
            problem = "same-tenant requests have one tenant: use party 'resource' only"
            raise PolicyValidationError("workflow.yaml", place, problem)
        for index, requirement in enumerate(requirements):
            for name in requirement.get("approver_roles", []):
                if name not in roles and name.lower() not in {r.template_id for r in roles.values()}:
                    where = f"{place}[{index}].approver_roles"
                    raise PolicyValidationError("workflow.yaml", where, f"unknown role {name!r}")


def _check_access_rules(access: dict) -> tuple[Rule, ...]:
    # SPEC §3: only `read` can ever be allowed, "whatever else the policies say". The
    # schema says so too; this holds even if a change to the schema loosens it.
    for index, action in enumerate(access["allowed_actions"]):
        if action not in READ_ONLY_ACTIONS:
            problem = f"{action!r} can never be allowed: access is read-only"
            raise PolicyValidationError("access.yaml", f"allowed_actions[{index}]", problem)
    rules = []
    for index, (kind, resource, action) in enumerate(access["rules"]):
        place = f"rules[{index}]"
        if kind not in access["access_kinds"]:
            problem = f"unknown access kind {kind!r} (access_kinds: {', '.join(access['access_kinds'])})"
            raise PolicyValidationError("access.yaml", place, problem)
        category = resource.split("/", 1)[1]
        if resource.startswith("^"):
            pass  # a regular expression for a regexMatch model: see _check_rule_patterns
        elif category != "*" and category not in access["categories"]:
            raise PolicyValidationError("access.yaml", place, f"unknown category {category!r}")
        if action not in access["allowed_actions"]:
            problem = f"action {action!r} is not allowed: access is read-only"
            raise PolicyValidationError("access.yaml", place, problem)
        rules.append(Rule(f"access.yaml rules[{index}]", (kind, resource, action)))
    return tuple(rules)


def _build_enforcer(files: dict[str, bytes | None], name: str, rules: tuple[Rule, ...]) -> casbin.Enforcer:
    # Without a byte-order mark, as some editors write (the YAML files may have one too).
    text = _text(files, name).removeprefix("\ufeff")
    config = _KeysOnce(name)
    try:
        config._parse_buffer(io.StringIO(text))
        model = casbin.Enforcer.new_model(text=text)  # what was checked, not the file read again
    except PolicyError:
        raise
    except Exception as exc:  # casbin raises bare exceptions for bad model text
        raise PolicyLoadError(f"{name}: invalid Casbin model: {exc}") from exc
    for section, heading in MODEL_SECTIONS.items():
        if section not in model.keys():
            raise PolicyValidationError(name, f"[{heading}]", "section missing")
    tokens = tuple(t.split("_", 1)[1] for t in model["r"]["r"].tokens)
    if tokens != MODEL_FILES[name]:
        problem = f"request must be r = {', '.join(MODEL_FILES[name])}, found {', '.join(tokens)}"
        raise PolicyValidationError(name, "[request_definition]", problem)
    fields = tuple(t.split("_", 1)[1] for t in model["p"]["p"].tokens)
    if fields != RULE_FIELDS[name]:
        # Casbin names a field by its place: `p = sub, act, act` would take the action for
        # the resource, so that every rule reads every resource; swapped, none matches.
        problem = f"must be p = {', '.join(RULE_FIELDS[name])}, found {', '.join(fields)}"
        raise PolicyValidationError(name, "[policy_definition]", problem)
    link_fields = [part.strip() for part in model["g"]["g"].value.split(",")]
    if link_fields != ["_", "_", "_"]:
        # The service calls it as g(r.sub, p.sub, r.dom): a principal, a role or access
        # kind, a tenant. Casbin would ignore the tenant of `_, _`, and the load's check
        # of every permission row could not link a role to every role under another.
        found = ", ".join(link_fields)
        problem = f"must be g = _, _, _ (principal, role or access kind, tenant), found g = {found}"
        raise PolicyValidationError(name, "[role_definition]", problem)
    effect = model["e"]["e"].value
    try:
        get_effector(effect)
    except RuntimeError as exc:  # casbin.Enforcer would raise it bare
        problem = f"Casbin knows no effect {effect.replace('p_eft', 'p.eft')!r}"
        raise PolicyValidationError(name, "[policy_effect]", problem) from exc
    if effect == DENY_OVERRIDE_EFFECT:
        # Allows whatever no rule denies: every role would carry every action, every
        # access kind read every resource. Default deny (SPEC §6) needs an allow to match.
        problem = "'!some(where (p.eft == deny))' allows what no rule allows: the service denies by default"
        raise PolicyValidationError(name, "[policy_effect]", problem)
    enforcer = casbin.Enforcer(model, _RulesAdapter(rules))  # rules have RULE_FIELDS' fields
    for link_type in enforcer.rm_map:
        # Casbin's role manager for g with a domain matches role names with an equality
        # function, comparing each name it meets with every name it holds: the first
        # question of a roles.yaml of 2,000 roles took ~1 s. Without one it looks names
        # up, with the same answers.
        enforcer.add_named_matching_func(link_type, None)
    _check_matcher(name, enforcer, rules, config.get("matchers::m"))
    try:  # evaluate the matcher once now, so a broken matcher fails the load, not a decision
        enforcer.enforce(*(["_probe_"] * len(tokens)))
    except Exception as exc:
        raise PolicyValidationError(name, "[matchers]", f"matcher does not evaluate: {exc}") from exc
    return enforcer


def _check_rule_patterns(name: str, model, tree: ast.Expression, rules: tuple[Rule, ...]) -> None:
    """A rule's value that the matcher reads as a pattern must mean what it lists:
    under regexMatch(r.x, p.x) anchored (`^...$`: regexMatch finds a match at the start
    of a longer value); under keyMatch(r.x, p.x) with `*` only at its end (keyMatch
    ignores everything after the first `*`: `a/*/read` is every action under `a/`).
    These were a lint warning and nothing, and a policy that only warns is served."""
    tokens = list(model["p"]["p"].tokens)
    for node in ast.walk(tree):
        function = getattr(getattr(node, "func", None), "id", None)
        if function not in PATTERN_PROBLEMS or len(node.args) != 2:
            continue
        field = getattr(node.args[1], "id", None)
        for rule in rules if field in tokens else ():
            pattern = rule.values[tokens.index(field)]
            problem = PATTERN_PROBLEMS[function](pattern, name)
            if problem:
                file, place = rule.source.split(" ", 1)
                raise PolicyValidationError(file, place, f"{pattern!r} {problem}")


def _regex_problem(pattern: str, model_file: str) -> str | None:
    if is_anchored(pattern):
        return None
    return (
        f"is not anchored (regexMatch in {model_file} finds it at the start of a longer value): "
        "write ^...$, ^(?:a|b)$ for alternatives, with no verbose mode or comment group"
    )


def _key_problem(pattern: str, model_file: str) -> str | None:
    if "*" not in pattern[:-1]:
        return None
    return f"has a * before its end (keyMatch in {model_file} ignores all that follows the first *)"


PATTERN_PROBLEMS = {"regexMatch": _regex_problem, "keyMatch": _key_problem}


class _RulesAdapter(casbin.persist.Adapter):
    """The p rows of a policy, loaded as Casbin's own adapters load theirs: appended to
    the model, each once. `add_policy` compares each new row with every row before it,
    so a roles.yaml of 40 roles sharing 1,000 actions took 77 s to load."""

    def __init__(self, rules: tuple[Rule, ...]):
        self.rows = [list(values) for values in dict.fromkeys(rule.values for rule in rules)]

    def load_policy(self, model) -> None:
        model.model["p"]["p"].policy.extend(self.rows)


class _KeysOnce(casbin.config.Config):
    """Casbin's own model-file reader, refusing a key set twice in one section: Casbin
    keeps the last, so a second `m = ...` pasted below the first would silently replace
    the matcher a reviewer read. It refuses keys and sections the service never reads
    too: an `m2 = ...` under [matchers] reads like one more condition, and Casbin
    evaluates it only when a caller names it (an EnforceContext), which the service never
    does."""

    def __init__(self, file_name: str):
        super().__init__()
        self.file_name = file_name

    def add_config(self, section: str, option: str, value: str) -> None:
        key = MODEL_KEYS.get(section)
        if key is None and not section:
            problem = f"{option!r} is outside any section"
            raise PolicyValidationError(self.file_name, "the top of the file", problem)
        if key is None:
            known = ", ".join(f"[{heading}]" for heading in MODEL_SECTIONS.values())
            problem = f"not a section the service reads (it reads {known})"
            raise PolicyValidationError(self.file_name, f"[{section}]", problem)
        if option != key:
            problem = f"{option!r} is not read by the service: this section takes {key!r} only"
            raise PolicyValidationError(self.file_name, f"[{section}]", problem)
        if option in self._data.get(section or self.DEFAULT_SECTION, {}):
            problem = f"{option!r} is set twice (Casbin would use the last one)"
            raise PolicyValidationError(self.file_name, f"[{section}]", problem)
        super().add_config(section, option, value)


def matcher_tree(value: str) -> ast.Expression:
    """A model's matcher (as Casbin holds it: `r.sub` reads `r_sub`, comments cut off) as
    the expression tree Casbin evaluates: the text it rewrites (`&&` and `||` into `and`
    and `or` with no spaces added, `!` into `not`), parsed as it parses it. Checking any
    other reading of the text could pass what Casbin runs differently. Raises
    SyntaxError if that text is not one expression (Casbin evaluates the first statement
    and ignores the rest)."""
    try:
        text = casbin.Enforcer._get_expression(value).expr.strip()
    except AttributeError as exc:  # Casbin took the first statement's value, and it has none
        raise SyntaxError("a statement, not an expression") from exc
    except IndexError as exc:  # only blanks: Casbin found no statement
        raise SyntaxError("empty") from exc
    module = ast.parse(text)
    if not module.body:
        raise SyntaxError("empty")
    if not isinstance(module.body[0], ast.Expr):
        raise SyntaxError("a statement, not an expression")
    if len(module.body) > 1:
        raise SyntaxError("more than one statement (Casbin would evaluate the first alone)")
    return ast.Expression(module.body[0].value)


def _check_matcher(name: str, enforcer: casbin.Enforcer, rules: tuple[Rule, ...], raw_matcher: str) -> None:
    """Every name in the matcher must be a request or policy field or a known function.
    (`raw_matcher` is the file's text of it, before Casbin cut its comment off.)

    Evaluating the matcher once is not enough: `&&` short-circuits, so a typo after a
    false `g(...)` would only fail later, on a decision.
    """
    model = enforcer.get_model()
    if re.search(r"\beval\s*\(", model["m"]["m"].value):
        # Casbin finds eval(p.x) anywhere in the text, in a string too, and pastes each
        # rule's value in as code: a quote in a YAML value then rewrites the matcher (one
        # rule matching every request), past every check here. The service needs no eval.
        raise PolicyValidationError(
            name, "[matchers]", "eval() is not allowed: a rule's value would run as code"
        )
    try:
        tree = matcher_tree(model["m"]["m"].value)
    except SyntaxError as exc:
        problem = f"not an expression: {exc.msg}{_matcher_hint(raw_matcher)}"
        raise PolicyValidationError(name, "[matchers]", problem) from exc
    functions = set(model["g"].keys()) | PURE_FUNCTIONS
    fields = set(model["r"]["r"].tokens) | set(model["p"]["p"].tokens)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "timeMatch":
            raise PolicyValidationError(name, "[matchers]", TIME_MATCH_PROBLEM)
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in functions):
            function = ast.unparse(node.func)
            problem = f"unknown function {function!r}{_matcher_hint(raw_matcher, function)}"
            raise PolicyValidationError(name, "[matchers]", problem)
        if isinstance(node, ast.Name) and node.id not in functions | fields | {"True", "False"}:
            field = node.id.replace("_", ".", 1)
            problem = f"unknown name {field!r}{_matcher_hint(raw_matcher, field)}"
            raise PolicyValidationError(name, "[matchers]", problem)
    _check_link_fields(name, tree)
    _check_rules_bind(name, model, tree)
    _check_rule_patterns(name, model, tree, rules)


# The functions of Casbin's a matcher may call (beside g): each answers from its
# arguments alone. Not timeMatch, which reads the machine's clock (TIME_MATCH_PROBLEM),
# nor a function a later pycasbin adds before it is looked at.
PURE_FUNCTIONS = frozenset(
    ("keyMatch", "keyMatch2", "keyMatch3", "keyMatch4", "keyMatch5", "regexMatch", "globMatch", "ipMatch")
)
TIME_MATCH_PROBLEM = (
    "timeMatch is not allowed: the service asks each question once per policy version and "
    "keeps the answer, so a time window would hold until the next reload, and timeMatch "
    "reads the machine's local clock; limit time with workflow.yaml timing"
)


def _matcher_hint(raw_matcher: str, bad_name: str | None = None) -> str:
    """Why a matcher that reads well may not parse as Casbin reads it (`bad_name`: the
    unknown name the error is about, if it is about one)."""
    glued = re.search(r"\w(&&|\|\|)|(&&|\|\|)\w", raw_matcher)
    if glued and (bad_name is None or re.search(r"\w(and|or)|(and|or)\w", bad_name)):
        return " (Casbin reads && and || as and and or with no spaces around them: put spaces around each)"
    before_comment = raw_matcher.partition("#")[0]
    in_a_string = "#" in raw_matcher and (before_comment.count('"') % 2 or before_comment.count("'") % 2)
    if in_a_string and bad_name is None:
        return " (Casbin ends the matcher at its first #, a comment, inside a string too)"
    return ""


def _check_rules_bind(name: str, model, tree: ast.Expression) -> None:
    """Each field of a rule must hold the request to what the rule lists, in a term the
    matcher requires (a top-level `&&` term): the link call for p.sub, a comparison with
    a request field for each other one (`_binds`). Otherwise a rule applies whatever it
    lists: with `m = g(r.sub, p.sub, r.dom)` alone (a file cut short, say) every role
    would carry every action, and with `(keyMatch(r.obj, p.obj) || r.act == "read")` a
    grant would read every category."""
    terms = _and_terms(tree.body)
    if not any(ast.unparse(term) == LINK_CALL for term in terms):
        problem = (
            "g(r.sub, p.sub, r.dom) must be required (a top-level && term): "
            "without it a rule applies to every role or access kind"
        )
        raise PolicyValidationError(name, "[matchers]", problem)
    for token in model["p"]["p"].tokens[1:]:  # p.sub is the link call's
        if not any(_binds(term, token) for term in terms):
            field, request = token.replace("_", ".", 1), "r." + token.split("_", 1)[1]
            problem = (
                f"{field} is not compared with the request in a term the matcher requires "
                f"(a top-level && term: {request} == {field}, or a matching function given {request} "
                f"and then {field}, as keyMatch({request}, {field}); in an || every alternative "
                f"must compare it), so a rule could apply whatever {field} it lists"
            )
            raise PolicyValidationError(name, "[matchers]", problem)


# Casbin's functions that match a request's value (first) against a rule's pattern, of
# those whose patterns the load checks (_check_rule_patterns). Not keyMatch2-5 (URL
# routes: `:x` and `{x}` are parameters, the rest an unchecked regular expression), nor
# globMatch (braces, [!x], ** and a leading */), nor ipMatch (addresses).
MATCHING_FUNCTIONS = frozenset(PATTERN_PROBLEMS)


def _binds(term: ast.expr, field: str) -> bool:
    """Does `term` hold only where the rule's `field` (p.x) matches the request's own
    (r.x)? Only these forms are taken as such: `r.x == p.x` (either way round), a
    matching function given r.x and then p.x (`keyMatch(r.obj, p.obj)`), alternatives
    (`||`) each of which binds, and a group (`&&`) of which one term binds. Anything else
    could hold whatever the rule lists: `r.obj in p.obj` is a substring test,
    `keyMatch(r.obj, "*" + p.obj)` matches every path, `keyMatch2(r.act, p.obj)` tests
    the rule's resource against the action, `(keyMatch(r.obj, p.obj) || r.act ==
    "read")` holds for any resource read."""
    request_field = "r_" + field.split("_", 1)[1]
    if isinstance(term, ast.BoolOp):
        values = [_binds(value, field) for value in term.values]
        return all(values) if isinstance(term.op, ast.Or) else any(values)
    if isinstance(term, ast.Compare) and len(term.ops) == 1 and isinstance(term.ops[0], ast.Eq):
        return {_field_name(term.left), _field_name(term.comparators[0])} == {field, request_field}
    if isinstance(term, ast.Call) and getattr(term.func, "id", None) in MATCHING_FUNCTIONS:
        return [_field_name(arg) for arg in term.args] == [request_field, field]
    return False


def _field_name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else None


# What the service evaluates a matcher with: it finds the principal's links in the tenant
# itself (its role assignments, or its live grants and advanced-diagnostics tickets),
# then asks the model once per link's role or access kind, cached per policy version.
# So r.sub and r.dom reach the model only through this call; anywhere else a condition on
# them would be tested against the role or access kind (r.sub) and "*" (r.dom), never
# the real principal or tenant, and would not do what it says.
LINK_CALL = "g(r_sub, p_sub, r_dom)"


def _check_link_fields(name: str, tree: ast.AST) -> None:
    in_link_call = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node) == LINK_CALL:
            in_link_call.update(id(arg) for arg in node.args)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in ("r_sub", "r_dom") and id(node) not in in_link_call:
            field = node.id.replace("_", ".", 1)
            problem = (
                f"{field} may be used only as g(r.sub, p.sub, r.dom): the service finds the "
                "principal's links in the tenant itself and asks the model once per link"
            )
            raise PolicyValidationError(name, "[matchers]", problem)


def _and_terms(node: ast.expr) -> list[ast.expr]:
    """The terms a matcher requires: its top-level `&&` terms (in parentheses too: `(a &&
    b) && c` requires a, b and c), or the matcher itself."""
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return [term for value in node.values for term in _and_terms(value)]
    return [node]
