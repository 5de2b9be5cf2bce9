"""Peer: cedarpy (the Cedar engine from Rust) with a Cedar policy equivalent to
access.yaml, the policy set and the entities parsed once into reusable handles.

Entities: one `Engineer` per engineer with attribute `grants` (the set of tenants it holds
a live grant in) and one `Diagnostics` resource per tenant and listed category, with
attributes `tenant` and `category`. A request is
`Engineer::"e"`, `Action::"<action>"`, `Diagnostics::"<tenant>/<category>"`.
An unlisted category has no resource entity, and the policy also checks the category,
so it is denied; only `read` is ever permitted.
"""

from __future__ import annotations

import json

from bench.dataset import Check, Dataset

NAME = "cedarpy"


def available() -> str | None:
    try:
        import cedarpy  # noqa: F401
    except ImportError as exc:
        return f"cedarpy is not importable ({exc}); install it with pip install -r bench/requirements.txt"
    if not hasattr(cedarpy, "Entities") or not hasattr(cedarpy, "PolicySet"):
        return "this cedarpy has no pre-parsed Entities/PolicySet handles (need cedarpy >= 4.8)"
    return None


def version() -> str:
    from importlib.metadata import version as v

    return v("cedarpy")


def policy_text(categories: list[str]) -> str:
    return (
        'permit (principal is Engineer, action == Action::"read", resource is Diagnostics)\n'
        "when { principal.grants.contains(resource.tenant) && "
        f"{json.dumps(categories)}.contains(resource.category) }};\n"
    )


def entities_json(ds: Dataset, grants: dict[str, list[str]] | None = None) -> str:
    grants = grants if grants is not None else ds.grants_by_engineer
    entities = [
        {"uid": {"type": "Engineer", "id": e}, "attrs": {"grants": grants.get(e, [])}, "parents": []}
        for e in ds.engineers
    ]
    entities += [
        {
            "uid": {"type": "Diagnostics", "id": f"{t}/{c}"},
            "attrs": {"tenant": t, "category": c},
            "parents": [],
        }
        for t in ds.tenants
        for c in ds.categories
    ]
    return json.dumps(entities)


class CedarEngine:
    def __init__(self, ds: Dataset):
        import cedarpy

        self.ds = ds
        self.cedarpy = cedarpy
        self.policies = cedarpy.PolicySet.from_str(policy_text(ds.categories))
        self.grants = {e: list(ts) for e, ts in ds.grants_by_engineer.items()}
        self.entities = cedarpy.Entities.from_json_str(entities_json(ds, self.grants))
        self._is_authorized = cedarpy.is_authorized

    def check(self, c: Check) -> bool:
        request = {
            "principal": f'Engineer::"{c.principal}"',
            "action": f'Action::"{c.action}"',
            "resource": f'Diagnostics::"{c.tenant_id}/{c.resource[12:]}"',
        }
        return self._is_authorized(request, self.policies, self.entities).allowed

    def _rebuild(self) -> None:
        # Entity handles are immutable: a changed grant set means parsing the entities anew.
        self.entities = self.cedarpy.Entities.from_json_str(entities_json(self.ds, self.grants))

    def grant(self, engineer: str, tenant: str) -> None:
        self.grants.setdefault(engineer, []).append(tenant)
        self._rebuild()

    def revoke(self, engineer: str, tenant: str) -> None:
        self.grants[engineer].remove(tenant)
        self._rebuild()

    def close(self) -> None:
        pass


def open_engine(ds: Dataset) -> CedarEngine:
    return CedarEngine(ds)
