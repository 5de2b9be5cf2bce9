"""Tenants and role assignments: who holds which role where, and what that permits.

Role assignments are the g links of permissions.conf. They stay in an indexed table and
are looked up per principal, so a check costs the same with 10 or 100,000 assignments;
what a role permits is answered by the policy (Casbin, cached per policy version).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from peewee import chunked

from models import DirectorySetting, RoleAssignment, SupportRequest, Tenant, transaction
from service import audit, strict_yaml
from service.errors import BadRequest, Conflict
from service.policy import Policy
from service.validation import openapi_document

DEFAULT_PROVIDER = "provider"  # the provider tenant until a directory file names another
PROVIDER_SETTING = "provider_tenant"  # its DirectorySetting row
PROVIDER_MOVED = "directory.provider_tenant"  # the `change` of the directory.changed event moving it


@dataclass(frozen=True)
class DirectoryFile:
    provider_tenant: str  # the file's `provider_tenant`, else the provider tenant when read
    tenants: dict[str, str]  # id -> name
    assignments: set[tuple[str, str, str]]  # (tenant, principal, role)
    names_provider: bool = True  # False: the file has no `provider_tenant`
    lists_provider: bool = False  # True: the provider tenant is under `tenants`, with its name

    def names_tenant(self, tenant: str) -> bool:
        """Unlisted, the provider tenant has a default name here, which renames nothing."""
        return tenant != self.provider_tenant or self.lists_provider


def provider_tenant(configured: str | None) -> str:
    """The support provider's own tenant, where provider roles are held (API.md
    "Directory"): SUPPORT_ACCESS_PROVIDER_TENANT when it is set; else the one a directory
    file named (`provider_tenant:`, kept by `import_directory`); else "provider"."""
    if configured:
        return configured
    row = DirectorySetting.get_or_none(DirectorySetting.name == PROVIDER_SETTING)
    return row.value if row else DEFAULT_PROVIDER


# The checks below are the same over HTTP and in `directory import`: a value one of them
# takes, the other must take too, and a value neither can reach must not be stored.


def check_tenant_id(tenant_id: str, field: str) -> None:
    """Refuse (400) a tenant id that no endpoint would take: every body and path bounds
    tenant_id as the OpenAPI document's TenantIdPath does, and no path can hold a '/' in
    one (`/v1/tenants/a%2Fb` is a 404): an imported 'a/b' could never be managed."""
    components = openapi_document()["components"]
    _check_text(tenant_id, components["parameters"]["TenantIdPath"]["schema"], field)
    if "/" in tenant_id:
        raise BadRequest(
            f"{field}: must not contain '/' (no URL path can name such a tenant)", code="invalid_field"
        )


def check_principal(principal: str, field: str) -> None:
    """Refuse (400) a principal longer than a role assignment holds, as the OpenAPI
    document's RoleAssignmentPut does (PostgreSQL would refuse it: a 500)."""
    components = openapi_document()["components"]
    _check_text(principal, components["schemas"]["RoleAssignmentPut"]["properties"]["principal"], field)


def person_key(principal: str) -> str:
    """What two principal ids share if they may name one person: the id Unicode-
    normalised (NFKC) and case-folded. Used only where taking two ids as one person
    refuses more, never allows more: the requesting engineer approving its own request,
    and approvals that must come from different people. `Eve` and `ｅve` (full-width)
    are two principals to the directory, and an identity provider's ids are often
    case-insensitive: one person signed in as each could otherwise approve its own
    request, or count twice."""
    return unicodedata.normalize("NFKC", principal).casefold()


def check_tenant_name(name: str, field: str) -> None:
    """Refuse (400) a tenant name the OpenAPI document's TenantPut would not take, or
    that _check_text refuses (`directory import` has no body schema to do it)."""
    components = openapi_document()["components"]
    _check_text(name, components["schemas"]["TenantPut"]["properties"]["name"], field)


def _check_text(value: str, schema: dict, field: str) -> None:
    """Within the schema's lengths; no NUL (PostgreSQL cannot store it); not blank, and no
    space at either end: ' lead' beside 'lead' would be two tenants a person reads as one
    (and a form that trims its fields would act for the other)."""
    low, high = schema["minLength"], schema["maxLength"]
    if not low <= len(value) <= high:
        raise BadRequest(f"{field}: must have {low} to {high} characters", code="invalid_field")
    if "\x00" in value:
        raise BadRequest(f"{field}: must not contain a NUL character", code="invalid_field")
    if not value.strip():
        raise BadRequest(f"{field}: must not be blank", code="invalid_field")
    if value != value.strip():
        raise BadRequest(f"{field}: must not begin or end with a space", code="invalid_field")


def tenant_exists(tenant_id: str) -> bool:
    return Tenant.select().where(Tenant.id == tenant_id).exists()


def roles_of(principal: str) -> list[tuple[str, str]]:
    """(tenant, role) pairs held by `principal`."""
    return roles_by_principal({principal})[principal]


def roles_by_principal(principals: set[str]) -> dict[str, list[tuple[str, str]]]:
    """(tenant, role) pairs held by each of `principals`, a few hundred principals a query."""
    found: dict[str, list[tuple[str, str]]] = {principal: [] for principal in principals}
    for batch in chunked(sorted(principals), 500):
        query = RoleAssignment.select(RoleAssignment.principal, RoleAssignment.tenant_id, RoleAssignment.role)
        for a in query.where(RoleAssignment.principal.in_(batch)):
            found[a.principal].append((a.tenant_id, a.role))
    return found


def has_permission(policy: Policy, principal: str, tenant_id: str, permission: str) -> bool:
    """Does `principal` hold, in `tenant_id`, a role carrying `permission`'s action?"""
    return any(
        tenant == tenant_id and policy.role_allows(role, permission) for tenant, role in roles_of(principal)
    )


# --- changes ---------------------------------------------------------------------


def _seen_by(tenant_id: str, provider: str) -> list[str]:
    """Who sees a directory change: its tenant, and the provider, whose operators make
    every change (an import's events are seen by both too)."""
    return sorted({tenant_id, provider})


def put_tenant(tenant_id: str, name: str, actor, now: datetime, provider: str) -> bool:
    """Create or rename a tenant; True if it was created."""
    with transaction():
        tenant = Tenant.get_or_none(Tenant.id == tenant_id)
        if tenant and tenant.name == name:
            return False
        if tenant:
            Tenant.update(name=name).where(Tenant.id == tenant_id).execute()
        else:
            Tenant.create(id=tenant_id, name=name, created_at=now)
        change = {"change": "tenant.created" if not tenant else "tenant.renamed", "name": name}
        if tenant:
            change["previous_name"] = tenant.name
        audit.record(
            "directory.changed", actor, tenant_id, _seen_by(tenant_id, provider), tenant_id, change, now
        )
        return tenant is None


def put_role_assignment(
    policy: Policy, provider: str, tenant_id: str, principal: str, role: str, actor, now: datetime
) -> bool:
    """Assign a role (by display name or template id); True if it was created."""
    canonical = check_role(policy, provider, tenant_id, role, "role")
    with transaction():
        if RoleAssignment.get_or_none(tenant_id=tenant_id, principal=principal, role=canonical):
            return False
        RoleAssignment.create(tenant_id=tenant_id, principal=principal, role=canonical, created_at=now)
        details = {"change": "role_assignment.added", "principal": principal, "role": canonical}
        audit.record(
            "directory.changed", actor, tenant_id, _seen_by(tenant_id, provider), principal, details, now
        )
        return True


def holds_role(policy: Policy, tenant_id: str, principal: str, role: str) -> bool:
    """Does `principal` hold `role` (display name or template id) in `tenant_id`?"""
    return RoleAssignment.select().where(_assignment(policy, tenant_id, principal, role)).exists()


def delete_role_assignment(
    policy: Policy, provider: str, tenant_id: str, principal: str, role: str, actor, now: datetime
) -> bool:
    canonical = policy.canonical_role(role) or role
    with transaction():
        deleted = RoleAssignment.delete().where(_assignment(policy, tenant_id, principal, role)).execute()
        if deleted:
            details = {"change": "role_assignment.removed", "principal": principal, "role": canonical}
            seen_by = _seen_by(tenant_id, provider)
            audit.record("directory.changed", actor, tenant_id, seen_by, principal, details, now)
            _drop_lapsed_approvals_of(policy, [(tenant_id, principal)], now)
            if tenant_id == provider:
                _end_access_of_former_engineers(policy, [principal], provider, actor, now)
        return bool(deleted)


def _end_access_of_former_engineers(policy: Policy, principals, provider: str, actor, now: datetime) -> None:
    from service.workflow import end_access_of_former_engineers  # workflow imports this module

    end_access_of_former_engineers(policy, principals, provider, actor, now)


def _drop_lapsed_approvals_of(policy: Policy, removed: list[tuple[str, str]], now: datetime) -> None:
    from service.workflow import drop_lapsed_approvals_of  # workflow imports this module

    drop_lapsed_approvals_of(policy, removed, now)


def _assignment(policy: Policy, tenant_id: str, principal: str, role: str):
    """The role assignment row(s), the role given by display name or template id (a role
    the policy no longer knows by its stored name)."""
    canonical = policy.canonical_role(role) or role
    return (
        (RoleAssignment.tenant_id == tenant_id)
        & (RoleAssignment.principal == principal)
        & (RoleAssignment.role == canonical)
    )


def check_role(policy: Policy, provider: str, tenant_id: str, role: str, field: str) -> str:
    canonical = policy.canonical_role(role)
    if canonical is None:
        raise BadRequest(f"{field}: unknown role {role!r}", code="unknown_role")
    if policy.roles[canonical].scope == "provider" and tenant_id != provider:
        message = f"{field}: {canonical!r} is a provider role and can only be held in {provider!r}"
        raise BadRequest(message, code="provider_role")
    return canonical


# --- the directory file ------------------------------------------------------------


def read_directory_file(
    path: str | Path, policy: Policy, configured_provider: str | None, complete: bool = False
) -> DirectoryFile:
    """Parse and validate a directory YAML file (API.md "Directory"). A file may assign
    roles in tenants imported before, unless it is to be `complete` (imported with
    --prune, which removes what it does not list): then it must list them. Its
    `provider_tenant` (default: the current one) must be SUPPORT_ACCESS_PROVIDER_TENANT
    when that is set (`configured_provider`); `import_directory` checks that it may
    become the provider tenant otherwise."""
    try:
        document = strict_yaml.load_large(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadRequest(f"{path}: cannot read directory file: {exc}") from exc
    except UnicodeDecodeError as exc:  # as policy files are refused (service/policy.py)
        raise BadRequest(f"{path}: byte {exc.start}: not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        raise BadRequest(f"{path}: {strict_yaml.describe(exc)}") from exc
    if not isinstance(document, dict):
        raise BadRequest(f"{path}: a directory file is a mapping")
    unknown = set(document) - {"provider_tenant", "tenants", "role_assignments"}
    if unknown:
        raise BadRequest(f"{path}: unknown key {sorted(unknown)[0]!r}")
    for key in ("tenants", "role_assignments"):
        if not isinstance(document.get(key) or [], list):
            raise BadRequest(f"{path}: {key}: must be a list")
    if "provider_tenant" in document:
        provider = document["provider_tenant"]
        if not isinstance(provider, str) or not provider.strip():
            raise BadRequest(f"{path}: provider_tenant: must be a non-empty string")
        check_tenant_id(provider, f"{path}: provider_tenant")
    else:
        provider = provider_tenant(configured_provider)
    if configured_provider and provider != configured_provider:
        message = (
            f"{path}: provider_tenant is {provider!r} but the service runs with {configured_provider!r} "
            "(SUPPORT_ACCESS_PROVIDER_TENANT)"
        )
        raise BadRequest(message)
    if not configured_provider:  # said before any role in it is checked (and again on import)
        _refuse_moving_the_provider(provider_tenant(None), provider, f"{path}: ")
    tenants = {provider: "Support provider"}
    listed_at: dict[str, int] = {}
    for index, entry in enumerate(document.get("tenants") or []):
        tenant_id, name = _fields(path, f"tenants[{index}]", entry, ("id", "name"))
        check_tenant_id(tenant_id, f"{path}: tenants[{index}].id")
        check_tenant_name(name, f"{path}: tenants[{index}].name")
        if tenant_id in listed_at:  # which of two names is meant? Ask, rather than guess.
            raise BadRequest(
                f"{path}: tenants[{index}].id: tenant {tenant_id!r} is listed already, "
                f"at tenants[{listed_at[tenant_id]}]"
            )
        listed_at[tenant_id] = index
        tenants[tenant_id] = name
    assignments = set()
    for index, entry in enumerate(document.get("role_assignments") or []):
        place = f"role_assignments[{index}]"
        tenant, principal, role = _fields(path, place, entry, ("tenant", "principal", "role"))
        check_principal(principal, f"{path}: {place}.principal")
        if tenant not in tenants and (complete or not tenant_exists(tenant)):
            listed = " (with --prune the file is the whole directory: list it)" if complete else ""
            raise BadRequest(f"{path}: {place}.tenant: unknown tenant {tenant!r}{listed}")
        canonical = check_role(policy, provider, tenant, role, f"{path}: {place}.role")
        assignments.add((tenant, principal, canonical))
    return DirectoryFile(provider, tenants, assignments, "provider_tenant" in document, provider in listed_at)


def _fields(path, place: str, entry: Any, names: tuple[str, ...]) -> list[str]:
    if not isinstance(entry, dict):
        raise BadRequest(f"{path}: {place}: expected a mapping with the keys {', '.join(names)}")
    problems = [f"missing key {name!r}" for name in names if name not in entry]
    problems += [f"unknown key {key!r}" for key in sorted(map(str, entry)) if key not in names]
    if problems:  # both, for a misspelt key: missing 'name', unknown 'nmae'
        raise BadRequest(f"{path}: {place}: {', '.join(problems)} (expected {', '.join(names)})")
    values = [entry[name] for name in names]
    for name, value in zip(names, values, strict=True):
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(f"{path}: {place}.{name}: must be a non-empty string")
    return values


# The role assignments an import's event lists by name, per tenant (the counts cover all):
# enough for a person's edit of the file, bounded for a first import of a whole directory.
IMPORT_EVENT_ASSIGNMENTS = 100


def import_directory(
    file: DirectoryFile,
    prune: bool,
    policy: Policy,
    actor,
    now: datetime,
    configured_provider: str | None = None,
) -> dict[str, int]:
    """Apply a directory file in one transaction; idempotent. Counts what changed.

    Each changed tenant gets its own `directory.changed` event with its own counts, so
    no tenant's audit view shows another tenant's changes. An engineer whose provider
    roles the prune removes loses its access in the same transaction. The file's
    provider tenant becomes the service's (`_take_provider_tenant`).
    """
    counts = {"tenants_added": 0, "tenants_renamed": 0, "assignments_added": 0, "assignments_removed": 0}
    per_tenant: dict[str, dict[str, int]] = {}
    changes: dict[str, dict[str, Any]] = {}  # each tenant's event: who gained or lost which role

    def note(tenant: str, key: str, amount: int = 1) -> None:
        counts[key] += amount
        tenant_counts = per_tenant.setdefault(tenant, dict.fromkeys(counts, 0))
        tenant_counts[key] += amount

    def name_change(tenant: str, name: str, previous: str | None) -> None:
        changes.setdefault(tenant, {}).update({"name": name, "previous_name": previous})

    def assignment_change(tenant: str, principal: str, role: str, change: str) -> None:
        listed = changes.setdefault(tenant, {}).setdefault("assignments", [])
        if len(listed) < IMPORT_EVENT_ASSIGNMENTS:
            listed.append({"principal": principal, "role": role, "change": change})

    with transaction():
        _take_provider_tenant(file, configured_provider, actor, now)
        existing_tenants = {t.id: t.name for t in Tenant.select()}
        added_tenants = []
        for tenant_id, name in file.tenants.items():
            if tenant_id not in existing_tenants:
                added_tenants.append((tenant_id, name, now))
                note(tenant_id, "tenants_added")
                name_change(tenant_id, name, None)
            elif existing_tenants[tenant_id] != name and file.names_tenant(tenant_id):
                Tenant.update(name=name).where(Tenant.id == tenant_id).execute()
                note(tenant_id, "tenants_renamed")
                name_change(tenant_id, name, existing_tenants[tenant_id])
        _insert_rows(Tenant, ("id", "name", "created_at"), added_tenants)
        existing = {(a.tenant_id, a.principal, a.role): a.id for a in RoleAssignment.select()}
        added = sorted(file.assignments - set(existing))
        _insert_rows(
            RoleAssignment,
            ("tenant_id", "principal", "role", "created_at"),
            [(tenant, principal, role, now) for tenant, principal, role in added],
        )
        for tenant, principal, role in added:
            note(tenant, "assignments_added")
            assignment_change(tenant, principal, role, "added")
        if prune:
            stale = sorted(set(existing) - file.assignments)
            ids = [existing[key] for key in stale]
            for chunk in range(0, len(ids), 500):
                RoleAssignment.delete().where(RoleAssignment.id.in_(ids[chunk : chunk + 500])).execute()
            for tenant, principal, role in stale:
                note(tenant, "assignments_removed")
                assignment_change(tenant, principal, role, "removed")
        events = []
        for tenant, tenant_counts in sorted(per_tenant.items()):
            details = {
                "change": "directory.imported",
                "prune": prune,
                **tenant_counts,
                **changes.get(tenant, {}),
            }
            visible = _seen_by(tenant, file.provider_tenant)
            events.append(audit.build("directory.changed", actor, tenant, visible, tenant, details, now))
        audit.record_all(events)
        if prune:
            _drop_lapsed_approvals_of(policy, [(tenant, principal) for tenant, principal, _ in stale], now)
            removed = [principal for tenant, principal, _ in stale if tenant == file.provider_tenant]
            _end_access_of_former_engineers(policy, removed, file.provider_tenant, actor, now)
    return counts


def _take_provider_tenant(file: DirectoryFile, configured: str | None, actor, now: datetime) -> None:
    """Make the file's `provider_tenant` the provider tenant, unless it is already; under
    the write lock, so two imports cannot both move it. SUPPORT_ACCESS_PROVIDER_TENANT,
    when set, decides instead (the file was held to it) and is kept, so that a process
    without it (a CLI shell, another instance) does not go on with another one."""
    current = provider_tenant(None)
    new = configured or file.provider_tenant
    if new == current:
        return
    if not configured:
        if not file.names_provider:  # read as the provider tenant when the file was read
            raise Conflict(f"the provider tenant became {current!r} while the file was read: import again")
        _refuse_moving_the_provider(current, new)
    DirectorySetting.delete().where(DirectorySetting.name == PROVIDER_SETTING).execute()
    DirectorySetting.create(name=PROVIDER_SETTING, value=new)
    details = {"change": PROVIDER_MOVED, "provider_tenant": new, "previous": current}
    audit.record("directory.changed", actor, new, [new, current], new, details, now)


def _refuse_moving_the_provider(current: str, new: str, place: str = "") -> None:
    """A directory file may move the provider tenant only from one that holds no role
    assignment (moving it would take every engineer's, operator's and decision client's
    powers away at once) to one that is no customer's yet: a customer tenant's readers
    would see the provider's audit events (directory changes, policy reloads)."""
    if new == current:
        return
    if _holds_roles(current):
        message = f"the provider tenant is {current!r}, which holds role assignments"
    elif _holds_roles(new) or _has_tickets(new):
        message = f"{new!r} is a customer tenant already (it holds role assignments or support requests)"
    else:
        return
    message = f"{place}provider_tenant: {message}; a directory file cannot make {new!r} the provider tenant"
    raise Conflict(message, code="provider_tenant_in_use")


def _holds_roles(tenant_id: str) -> bool:
    return RoleAssignment.select().where(RoleAssignment.tenant_id == tenant_id).exists()


def _has_tickets(tenant_id: str) -> bool:
    named = (SupportRequest.tenant_id == tenant_id) | (SupportRequest.resource_tenant_id == tenant_id)
    return SupportRequest.select().where(named).exists()


SQLITE_MAX_VARIABLES = 999  # SQLITE_MAX_VARIABLE_NUMBER's default before SQLite 3.32


def _insert_rows(model, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """INSERT `rows` (values in `columns` order) a few hundred at a time: a create() per
    row spent seconds on a directory of 10,000 tenants."""
    fields = [model._meta.fields[name] for name in columns]
    # At most 999 bound parameters a statement: SQLite before 3.32 (Debian 10, Ubuntu
    # 18.04, RHEL 8) refuses more ("too many SQL variables").
    for batch in chunked(rows, SQLITE_MAX_VARIABLES // len(fields)):
        model.insert_many(batch, fields=fields).execute()
