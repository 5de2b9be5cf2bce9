"""Peer: a plain pycasbin enforcer with policies/access.conf, the access.yaml rules as
p rows and every live grant as a g link (engineer, "grant", tenant).

access.yaml's `diagnostics/*` rule is expanded into one p row per listed category, so
that (as in our engine) a category the policy does not list is denied; the model file
itself is used unchanged. Read-only holds because the only p rows are `read` rows.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.dataset import POLICY_DIR, Check, Dataset

NAME = "pycasbin"


def available() -> str | None:
    try:
        import casbin  # noqa: F401
    except ImportError as exc:
        return f"pycasbin is not importable: {exc}"
    return None


def version() -> str:
    from importlib.metadata import version as v

    return v("pycasbin")


def p_rows() -> list[list[str]]:
    access = yaml.safe_load((POLICY_DIR / "access.yaml").read_text(encoding="utf-8"))
    rows = []
    for kind, resource, action in access["rules"]:
        if resource.endswith("/*"):
            prefix = resource[:-1]
            rows += [[kind, prefix + category, action] for category in access["categories"]]
        else:
            rows.append([kind, resource, action])
    return rows


def write_policy_csv(ds: Dataset, path: Path) -> Path:
    """p rows and g links in Casbin's CSV policy format (loaded by its file adapter, which
    builds the role graph once: adding 100k links one by one takes minutes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in p_rows():
            f.write("p, " + ", ".join(row) + "\n")
        for g in ds.grants:
            f.write(f"g, {g.engineer}, grant, {g.resource_tenant}\n")
    return path


class CasbinEngine:
    def __init__(self, ds: Dataset, scratch: Path):
        import casbin

        csv = write_policy_csv(ds, scratch / f"casbin-{ds.size.name}.csv")
        self.enforcer = casbin.Enforcer(str(POLICY_DIR / "access.conf"), str(csv))
        self.enforcer.enable_auto_save(False)  # changes stay in memory, like a grant store
        self._enforce = self.enforcer.enforce

    def check(self, c: Check) -> bool:
        return bool(self._enforce(c.principal, c.tenant_id, c.resource, c.action))

    def grant(self, engineer: str, tenant: str) -> None:
        self.enforcer.add_grouping_policy(engineer, "grant", tenant)

    def revoke(self, engineer: str, tenant: str) -> None:
        self.enforcer.remove_grouping_policy(engineer, "grant", tenant)

    def close(self) -> None:
        pass


def open_engine(ds: Dataset, scratch: Path) -> CasbinEngine:
    return CasbinEngine(ds, scratch)
