"""The benchmark's data set and decision workload: generated from a seed, so every run
and every engine sees exactly the same tenants, grants and checks.

A grant is what our service calls a live grant: an approved support access request
whose ticket is open and assigned to the grant's engineer, with time left. Every
engine gets the same grants in its own form (rows in our database, g links for
pycasbin, entity attributes for Cedar, principal attributes for Cerbos).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
POLICY_DIR = REPO / "policies"
PROVIDER = "provider"
CLIENT = "bench-client"  # the Decision Client principal that calls the decision API
ENGINEER_ROLE = "Support Engineer"
CLIENT_ROLE = "Decision Client"
ADMIN_ROLE = "Service Support Administrator"
DENY_ACTIONS = ("write", "delete", "update")
UNKNOWN_CATEGORIES = ("mailboxContents", "userPasswords", "billingRecords")
CROSS_TENANT_SHARE = 0.2  # share of grants whose ticket was filed from another tenant


@dataclass(frozen=True)
class Size:
    name: str
    tenants: int
    engineers: int
    grants: int


SIZES = {
    "small": Size("small", 100, 50, 500),
    "large": Size("large", 10_000, 2_000, 100_000),
}


@dataclass(frozen=True)
class Check:
    """One decision request, and the answer the data set says it must get."""

    principal: str
    tenant_id: str
    action: str
    resource: str  # "diagnostics/<category>"
    expected: bool
    case: str  # granted | other_tenant | not_read | unknown_category

    @property
    def category(self) -> str:
        return self.resource.split("/", 1)[1]

    def body(self) -> dict:
        return {
            "principal": self.principal,
            "tenant_id": self.tenant_id,
            "action": self.action,
            "resource": self.resource,
        }


@dataclass(frozen=True)
class Grant:
    index: int
    engineer: str
    resource_tenant: str
    ticket_tenant: str  # == resource_tenant for a same-tenant ticket


@dataclass
class Dataset:
    size: Size
    seed: int
    tenants: list[str]
    engineers: list[str]
    categories: list[str]
    grants: list[Grant]
    grants_by_engineer: dict[str, list[str]] = field(default_factory=dict)

    def admin_of(self, tenant: str) -> str:
        return f"admin-{tenant}"

    def granted(self, engineer: str) -> list[str]:
        return self.grants_by_engineer.get(engineer, [])


def policy_categories(policy_dir: Path = POLICY_DIR) -> list[str]:
    access = yaml.safe_load((policy_dir / "access.yaml").read_text(encoding="utf-8"))
    return list(access["categories"])


def generate(size: Size, seed: int = 20261102) -> Dataset:
    """Tenants, engineers and live grants; each engineer holds grants.size/engineers
    grants in distinct tenants."""
    rng = random.Random(f"{seed}:{size.name}:dataset")
    tenants = [f"tenant-{i:05d}" for i in range(size.tenants)]
    engineers = [f"eng-{i:04d}" for i in range(size.engineers)]
    per_engineer, extra = divmod(size.grants, size.engineers)
    grants: list[Grant] = []
    by_engineer: dict[str, list[str]] = {}
    for n, engineer in enumerate(engineers):
        count = per_engineer + (1 if n < extra else 0)
        chosen = rng.sample(tenants, count)
        by_engineer[engineer] = chosen
        for tenant in chosen:
            ticket_tenant = tenant
            if rng.random() < CROSS_TENANT_SHARE:
                ticket_tenant = rng.choice(tenants)
            grants.append(Grant(len(grants), engineer, tenant, ticket_tenant))
    return Dataset(size, seed, tenants, engineers, policy_categories(), grants, by_engineer)


# --- workload ------------------------------------------------------------------------


def _check_for(ds: Dataset, rng: random.Random, engineer: str) -> Check:
    """70% reads in a granted tenant (allow); 30% denies: another tenant, an action
    other than read, a category the policy does not list (10% each)."""
    granted = ds.granted(engineer)
    roll = rng.random()
    category = rng.choice(ds.categories)
    if roll < 0.70:
        tenant = rng.choice(granted)
        return Check(engineer, tenant, "read", f"diagnostics/{category}", True, "granted")
    if roll < 0.80:
        held = set(granted)
        tenant = rng.choice(ds.tenants)
        while tenant in held:
            tenant = rng.choice(ds.tenants)
        return Check(engineer, tenant, "read", f"diagnostics/{category}", False, "other_tenant")
    if roll < 0.90:
        tenant = rng.choice(granted)
        action = rng.choice(DENY_ACTIONS)
        return Check(engineer, tenant, action, f"diagnostics/{category}", False, "not_read")
    tenant = rng.choice(granted)
    unknown = rng.choice(UNKNOWN_CATEGORIES)
    return Check(engineer, tenant, "read", f"diagnostics/{unknown}", False, "unknown_category")


def workload(ds: Dataset, count: int) -> list[Check]:
    """`count` single checks, principals drawn uniformly from the engineers."""
    rng = random.Random(f"{ds.seed}:{ds.size.name}:workload")
    return [_check_for(ds, rng, rng.choice(ds.engineers)) for _ in range(count)]


def batches(ds: Dataset, size: int, count: int) -> list[list[Check]]:
    """`count` batches of `size` checks. All checks of a batch are for one principal
    (a diagnostic tool checking what one engineer may read), because Cerbos'
    CheckResources takes one principal per request; every engine gets the same batches."""
    rng = random.Random(f"{ds.seed}:{ds.size.name}:batches:{size}")
    out = []
    for _ in range(count):
        engineer = rng.choice(ds.engineers)
        out.append([_check_for(ds, rng, engineer) for _ in range(size)])
    return out


# --- loading into our service's database ---------------------------------------------


def _bulk_insert(db, model, rows: list[dict]) -> None:
    """INSERT many rows of a peewee model with one executemany. The values go through
    the model fields' own db_value conversions (UTC datetimes, booleans, foreign keys);
    peewee's insert_many builds SQL text per value, which takes ~30 s for 100k grants."""
    if not rows:
        return
    fields = [model._meta.fields[name] for name in rows[0]]
    columns = ", ".join(f'"{f.column_name}"' for f in fields)
    marks = ", ".join([db.param] * len(fields))
    sql = f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES ({marks})'
    names = [f.name for f in fields]
    params = [tuple(f.db_value(row[n]) for f, n in zip(fields, names, strict=True)) for row in rows]
    db.cursor().executemany(sql, params)


def load_into_database(ds: Dataset, db_path: Path, now: datetime | None = None) -> dict[str, float]:
    """Create a fresh SQLite database at `db_path` holding the data set: the schema from
    our peewee models, the rows by bulk insert (one transaction per table). Returns row
    counts."""
    from models import AccessRequest, RoleAssignment, SupportRequest, Tenant, connect_database, database

    now = now or datetime.now(UTC)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    db = connect_database(f"sqlite:///{db_path}")
    created = now - timedelta(hours=2)
    approved = now - timedelta(minutes=30)
    same = json.dumps([{"party": "resource", "approvals": 1}])
    cross = json.dumps([{"party": "resource", "approvals": 1}, {"party": "support_request", "approvals": 1}])
    tenants = [{"id": PROVIDER, "name": "Support provider", "created_at": created}]
    tenants += [{"id": t, "name": f"Tenant {t}", "created_at": created} for t in ds.tenants]
    roles = [
        {"tenant_id": PROVIDER, "principal": e, "role": ENGINEER_ROLE, "created_at": created}
        for e in ds.engineers
    ]
    roles.append({"tenant_id": PROVIDER, "principal": CLIENT, "role": CLIENT_ROLE, "created_at": created})
    roles += [
        {"tenant_id": t, "principal": ds.admin_of(t), "role": ADMIN_ROLE, "created_at": created}
        for t in ds.tenants
    ]
    tickets, requests = [], []
    for g in ds.grants:
        ticket_id = f"sr-bench-{g.index:06d}"
        tickets.append(
            {
                "id": ticket_id,
                "tenant_id": g.ticket_tenant,
                "resource_tenant_id": g.resource_tenant,
                "title": f"bench ticket {g.index}",
                "status": "open",
                "allow_advanced_diagnostics": False,
                "assigned_engineer": g.engineer,
                "created_by": ds.admin_of(g.ticket_tenant),
                "created_at": created,
                "closed_at": None,
            }
        )
        requests.append(
            {
                "id": f"ar-bench-{g.index:06d}",
                "support_request": ticket_id,
                "engineer": g.engineer,
                "resource_tenant_id": g.resource_tenant,
                "support_request_tenant_id": g.ticket_tenant,
                "justification": "benchmark grant",
                "status": "approved",
                "requirements": same if g.ticket_tenant == g.resource_tenant else cross,
                "policy_version": "bench",
                "created_at": created,
                "expires_at": created + timedelta(hours=24),
                "approved_at": approved,
                "access_expires_at": approved + timedelta(hours=7, minutes=59),
                "finished_at": None,
                "finished_by": None,
                "support_request_view_status": "approved",
                "rejection_reason": None,
            }
        )
    with db.connection_context():
        for model, rows in (
            (Tenant, tenants),
            (RoleAssignment, roles),
            (SupportRequest, tickets),
            (AccessRequest, requests),
        ):
            with database.atomic():
                _bulk_insert(db, model, rows)
        db.execute_sql("ANALYZE")
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return {
        "tenants": len(tenants),
        "role_assignments": len(roles),
        "support_requests": len(tickets),
        "access_requests": len(requests),
    }
